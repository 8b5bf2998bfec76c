"""Synthetic sensor data: class-conditional readings, machine states, drift.

One model for the seed training set (`edgeloop.training.seed`) and the fleet simulator's
devices (`edgeloop.simulator`), so clean groups do not drift from the seed.

Each device watches one machine whose hidden state (one of the spec's labels) moves
as a Markov chain; every reading is drawn from that state's distribution, plus a
fixed per-device bias (no two machines are alike) and a per-group ambient offset.
The demo spec (predictive maintenance, labels normal/wear/fault) gets a physical
profile; any other spec gets a generic Gaussian profile over its feature fields.

Drift (a firmware update that recalibrates a sensor) is `reading * gain + offset`
on one feature of one group; the machine state, so the true label, is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.spec import PipelineSpec

DEMO_FEATURES = ("vibration_rms", "vibration_peak", "temperature_c", "motor_current_a", "rpm", "acoustic_db")
DEMO_LABELS = ("normal", "wear", "fault")


@dataclass(frozen=True)
class SensorProfile:
    """Per-class distributions of the features and the machine-state chain.

    `means`/`stds` are (classes x features); features flagged `log_normal` are drawn
    as exp(N(log mean, std)) (std in log units). `transitions` is the per-reading
    Markov matrix (rows sum to 1). `crest_of` links a peak feature to an RMS
    feature: peak = rms * crest, with the crest factor drawn from `means`/`stds`.
    """

    name: str
    labels: tuple[str, ...]
    features: tuple[str, ...]
    means: np.ndarray
    stds: np.ndarray
    log_normal: np.ndarray
    transitions: np.ndarray
    device_spread: np.ndarray  # per-feature std of the fixed per-device bias (relative for log-normal features)
    group_offsets: dict[str, np.ndarray]
    crest_of: tuple[int, int] | None = None  # (peak index, rms index)

    def steady_state(self) -> np.ndarray:
        """Long-run share of each machine state (the chain's stationary distribution)."""
        values, vectors = np.linalg.eig(self.transitions.T)
        vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
        return np.asarray(vector / vector.sum(), dtype=np.float64)

    def initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(rng.choice(len(self.labels), size=n, p=self.steady_state()), dtype=np.int8)

    def device_bias(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(rng.normal(0.0, 1.0, size=(n, len(self.features))) * self.device_spread)

    def step_states(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Advance each machine one reading along the chain (vectorised)."""
        cumulative = np.cumsum(self.transitions[states], axis=1)
        draws = rng.random(len(states))[:, None]
        return np.asarray(np.minimum((draws > cumulative).sum(axis=1), len(self.labels) - 1), dtype=np.int8)

    def sample(
        self, states: np.ndarray, bias: np.ndarray, group_offset: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One reading per row: features drawn for each row's machine state (n x features)."""
        noise = rng.standard_normal((len(states), len(self.features)))
        raw: np.ndarray = self.means[states] + noise * self.stds[states]
        log_cols = self.log_normal
        raw[:, log_cols] = np.exp(raw[:, log_cols] + bias[:, log_cols])
        lin_cols = ~log_cols
        raw[:, lin_cols] += bias[:, lin_cols]
        if self.crest_of is not None:
            peak, rms = self.crest_of
            raw[:, peak] = raw[:, rms] * np.maximum(raw[:, peak], 1.0)
        raw += group_offset
        return raw


def _demo_profile(groups: Sequence[str]) -> SensorProfile:
    # Columns: vibration_rms (log-normal, mm/s), vibration_peak (crest factor, x rms),
    # temperature_c, motor_current_a, rpm, acoustic_db. Rows: normal, wear, fault.
    # RMS medians follow ISO 10816 zones (good < 2.8 mm/s, alarm 2.8-7.1, damage > 7.1).
    means = np.array(
        [
            [np.log(1.6), 3.0, 42.0, 11.5, 1480.0, 70.0],
            [np.log(3.8), 3.7, 51.0, 12.6, 1474.0, 75.0],
            [np.log(8.2), 4.8, 63.0, 14.8, 1455.0, 82.0],
        ]
    )
    stds = np.array(
        [
            [0.28, 0.35, 3.5, 0.9, 6.0, 2.2],
            [0.30, 0.45, 4.5, 1.1, 9.0, 2.8],
            [0.33, 0.70, 6.5, 1.6, 18.0, 3.5],
        ]
    )
    log_normal = np.array([True, False, False, False, False, False])
    # Mean dwell: normal ~60 readings, wear ~22, fault ~12 (steady state about 66/25/10 %). Short on
    # purpose: within one drift window (minutes of 1 Hz readings) each machine passes through the
    # steady mix, so a clean 20-device group is not flagged because three of its machines happen to
    # sit in "fault" for the whole window.
    transitions = np.array(
        [
            [1 - 1 / 60, 1 / 60, 0.0],
            [1 / 90, 1 - 1 / 90 - 1 / 30, 1 / 30],
            [1 / 12, 0.0, 1 - 1 / 12],
        ]
    )
    device_spread = np.array([0.08, 0.0, 1.5, 0.4, 3.0, 1.0])
    offsets = {}
    for index, group in enumerate(groups):
        # Plants differ in ambient temperature and background noise (deterministic per group name).
        seed = int.from_bytes(hashlib.sha256(group.encode()).digest()[:4], "big")
        local = np.random.default_rng(seed)
        ambient, noise = (local.uniform(-2.0, 4.0), local.uniform(-1.0, 1.5)) if index else (0.0, 0.0)
        offsets[group] = np.array([0.0, 0.0, ambient, 0.0, 0.0, noise])  # the first group is the reference
    return SensorProfile(
        name="predictive_maintenance",
        labels=DEMO_LABELS,
        features=DEMO_FEATURES,
        means=means,
        stds=stds,
        log_normal=log_normal,
        transitions=transitions,
        device_spread=device_spread,
        group_offsets=offsets,
        crest_of=(1, 0),
    )


def _generic_profile(features: Sequence[str], labels: Sequence[str], groups: Sequence[str]) -> SensorProfile:
    # Deterministic from the feature and label names: each class shifts each feature by a
    # different amount, so classes overlap but are separable with several features.
    n_classes, n_features = len(labels), len(features)
    seed = int.from_bytes(hashlib.sha256(("|".join(features) + "#" + "|".join(labels)).encode()).digest()[:4], "big")
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.3, 1.0, size=n_features)
    means = 10.0 + np.arange(n_classes)[:, None] * 2.5 * weights[None, :]
    stds = np.full((n_classes, n_features), 1.5)
    stay = 1 - 1 / 300
    transitions = np.full((n_classes, n_classes), (1 - stay) / max(n_classes - 1, 1))
    np.fill_diagonal(transitions, stay)
    return SensorProfile(
        name="generic",
        labels=tuple(labels),
        features=tuple(features),
        means=means,
        stds=stds,
        log_normal=np.zeros(n_features, dtype=bool),
        transitions=transitions,
        device_spread=np.full(n_features, 0.3),
        group_offsets={g: np.zeros(n_features) for g in groups},
    )


def sensor_profile(spec: PipelineSpec) -> SensorProfile:
    """The demo profile when the spec has the demo's features and labels, else a generic one."""
    groups = [g.name for g in spec.groups]
    labels = spec.annotation.labels
    if tuple(spec.features) == DEMO_FEATURES and tuple(labels) == DEMO_LABELS:
        return _demo_profile(groups)
    return _generic_profile(spec.features, labels, groups)


@dataclass(frozen=True)
class DriftInjection:
    """Recalibrate one feature of one group: reading * gain + offset, from a time or a record count on."""

    group: str
    feature: str
    offset: float = 0.0
    gain: float = 1.0
    at_s: float | None = None
    after_records: int | None = None

    def active(self, elapsed_s: float, group_records: int) -> bool:
        if self.at_s is None and self.after_records is None:
            return True
        if self.at_s is not None and elapsed_s >= self.at_s:
            return True
        return self.after_records is not None and group_records >= self.after_records


def check_drift(spec: PipelineSpec, drift: Sequence[DriftInjection]) -> None:
    """Raise ValueError naming a drift injection whose group or feature is not in the spec."""
    groups = {g.name for g in spec.groups}
    for index, item in enumerate(drift):
        if item.group not in groups:
            raise ValueError(f"drift[{index}].group: {item.group!r} is not a group of {spec.name}")
        if item.feature not in spec.features:
            raise ValueError(f"drift[{index}].feature: {item.feature!r} is not a feature of {spec.name}")


def apply_drift(readings: np.ndarray, features: Sequence[str], injections: Sequence[DriftInjection]) -> np.ndarray:
    """Apply active injections of one group to its readings (in place; returns them)."""
    for item in injections:
        column = features.index(item.feature)
        readings[:, column] = readings[:, column] * item.gain + item.offset
    return readings
