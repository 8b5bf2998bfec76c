"""Shadow evaluation on the device: the challenger runs beside the champion, only the champion answers.

A `ShadowEvaluator` stands where the device's model stands (it is a `ServingModel`): every batch
of live inputs goes to both models, the champion's probabilities are returned and served, and
the challenger's answers are only compared with them. A challenger that raises or answers
nonsense costs an error in the report, never a served answer. Each window (`window_s`) closes
into a `ShadowReport` (`edgeloop.contract.shadow`): agreement, confidence difference, p95 latency
of both, challenger errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeloop.contract.messages import iso_ms
from edgeloop.contract.shadow import ShadowReport
from edgeloop.edge.device import ServingModel

MAX_LATENCY_SAMPLES = 10_000  # per window and model: enough for a p95, bounded on a busy device


class ShadowEvaluator:
    """The champion serves, the challenger is measured against it. Not thread-safe: one caller thread."""

    def __init__(
        self,
        champion: ServingModel,
        challenger: ServingModel,
        *,
        window_s: float,
        start: float,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s: {window_s} must be positive")
        self.champion = champion
        self.challenger = challenger
        self.window_s = window_s
        self.timer = timer
        self.window_start = start
        champion_index = {label: i for i, label in enumerate(champion.labels)}
        self._label_map = np.asarray([champion_index.get(label, -1) for label in challenger.labels], dtype=np.int64)
        self._challenger_width = len(challenger.labels)
        self._reset()

    # --- what the device serves: the champion ---------------------------------------------

    @property
    def version(self) -> str:
        return self.champion.version

    @property
    def labels(self) -> Sequence[str]:
        return self.champion.labels

    @property
    def reference(self) -> dict[str, Any]:
        """The champion's reference profile (local drift is measured against the model that serves)."""
        return dict(getattr(self.champion, "reference", None) or {})

    def predict_proba(self, rows: np.ndarray, /) -> np.ndarray:
        """The champion's probabilities for `rows`; the challenger's answer to the same rows is only recorded."""
        timer = self.timer
        began = timer()
        served = self.champion.predict_proba(rows)  # a champion that fails, fails as it would without shadow
        middle = timer()
        count = len(served)
        try:
            shadow = self.challenger.predict_proba(rows)
        except Exception:  # any failure of the model on trial is counted, never raised to the device
            self.errors += count
            self.records += count
            self._sample(self._champion_ms, middle - began, count)
            return served
        self._sample(self._champion_ms, middle - began, count)
        self._sample(self._challenger_ms, timer() - middle, count)
        self.records += count
        shadow = np.asarray(shadow, dtype=np.float64)
        if shadow.shape != (count, self._challenger_width) or not np.isfinite(shadow).all():
            self.errors += count
            return served
        served_arr = np.asarray(served, dtype=np.float64)
        champion_at = served_arr.argmax(axis=1)
        challenger_at = shadow.argmax(axis=1)
        self.answered += count
        # the same label, by name: the challenger's label index mapped to the champion's (-1: a label it lacks)
        self.agreements += int(np.count_nonzero(self._label_map[challenger_at] == champion_at))
        self.confidence_delta_sum += float(shadow.max(axis=1).sum() - served_arr.max(axis=1).sum())
        return served

    # --- the report -------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.window_start + self.window_s

    def close(self, now: float, *, device_id: str, group_id: str, pipeline: str) -> ShadowReport | None:
        """The report of the window that ended by `now` (None before its end, or when it saw no input);
        a new window starts at the end of the closed one."""
        if not self.due(now):
            return None
        start, end = self.window_start, self.window_start + self.window_s
        report = None
        if self.records:
            report = ShadowReport(
                device_id=device_id,
                group_id=group_id,
                pipeline=pipeline,
                champion_version=self.champion.version,
                challenger_version=self.challenger.version,
                window_start=iso_ms(start),
                window_end=iso_ms(end),
                records=self.records,
                answered=self.answered,
                agreements=self.agreements,
                challenger_errors=self.errors,
                mean_confidence_delta=round(self.confidence_delta_sum / self.answered, 4) if self.answered else None,
                champion_p95_ms=p95_ms(self._champion_ms),
                challenger_p95_ms=p95_ms(self._challenger_ms),
            )
        # a device that slept through several windows starts the one `now` is in
        self.window_start = end + self.window_s * ((now - end) // self.window_s)
        self._reset()
        return report

    def _reset(self) -> None:
        self.records = 0
        self.answered = 0
        self.agreements = 0
        self.errors = 0
        self.confidence_delta_sum = 0.0
        self._champion_ms: list[float] = []
        self._challenger_ms: list[float] = []

    @staticmethod
    def _sample(samples: list[float], seconds: float, count: int) -> None:
        if count and len(samples) < MAX_LATENCY_SAMPLES:
            samples.append(1000.0 * seconds / count)  # per input, so that batches and single rows compare


def p95_ms(samples: list[float]) -> float | None:
    return round(float(np.percentile(samples, 95)), 4) if samples else None
