"""The deferrable health gate: polls device feedback during the soak without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

if TYPE_CHECKING:
    from edgeloop.fleet.control import FleetView


def gate_result(wave_index: int, decision: dict[str, Any]) -> dict[str, Any]:
    """What a wave's gate leaves in XCom (`rollout.tasks.GateRecord`): the decision, its wave and when."""
    return {"wave": wave_index, "decided_at": time.time(), **decision}


class RolloutGateTrigger(BaseTrigger):
    """Fire once the gate of a wave is decided: `fail` as soon as feedback crosses a threshold,
    `pass` or `fail` when the soak is over. With a `wave_index`, a pass ends the task here, with the
    gate's record as its XCom; a fail resumes the task on a worker, which fails it with the reasons."""

    def __init__(
        self,
        *,
        pipeline: str,
        groups: list[str],
        model_version: str,
        assignment_ids: dict[str, str],
        started_at: float,
        soak_seconds: float,
        poll_seconds: float = 5.0,
        trusted_keys: list[str] | None = None,
        devices: dict[str, list[str]] | None = None,
        wave_index: int | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.groups = groups
        self.model_version = model_version
        self.assignment_ids = assignment_ids
        self.started_at = started_at
        self.soak_seconds = soak_seconds
        self.poll_seconds = poll_seconds
        self.trusted_keys = trusted_keys or []
        self.devices = devices or {}  # per group a share wave reached: the only devices the gate reads
        # with the wave's index, a passed gate ends its task from here (no second start on a worker)
        self.wave_index = wave_index
        # the fleet as read so far (not serialized: a restarted trigger reads it anew)
        self._view: FleetView | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "groups": self.groups,
                "model_version": self.model_version,
                "assignment_ids": self.assignment_ids,
                "started_at": self.started_at,
                "soak_seconds": self.soak_seconds,
                "poll_seconds": self.poll_seconds,
                "trusted_keys": self.trusted_keys,
                "devices": self.devices,
                "wave_index": self.wave_index,
            },
        )

    def _check(self, spec: Any, kafka_config: dict[str, Any]) -> dict[str, Any]:
        from edgeloop.contract.keys import Keyring
        from edgeloop.fleet.control import FleetView
        from edgeloop.rollout.gate import evaluate_gate
        from edgeloop.rollout.job import read_group_readings

        elapsed = time.time() - self.started_at
        trusted = Keyring.from_text(" ".join(self.trusted_keys), "the gate's trusted keys")
        if self._view is None:
            self._view = FleetView(spec, kafka_config, trusted, groups=self.groups)
        readings, refused = read_group_readings(
            spec,
            kafka_config,
            self.groups,
            self.model_version,
            self.assignment_ids,
            window_s=elapsed,
            trusted=trusted,
            view=self._view,
            devices=self.devices,
            device_timeout_s=timeout.total_seconds() if (timeout := spec.rollout.device_timeout) else None,
        )
        decision = evaluate_gate(
            readings,
            spec.rollout.thresholds,
            spec.rollout.max_failure_ratio,
            soak_over=elapsed >= self.soak_seconds,
            abort=spec.rollout.abort,
            success_threshold=spec.rollout.success_threshold,
        )
        record = decision.to_dict() | {"elapsed_s": round(elapsed, 1), "refused_reports": refused}
        if decision.state == "pass":
            paused = self.pause_flag(spec)
            if paused is not None:  # a paused rollout does not advance; it still fails on its thresholds
                return record | {"state": "wait", "paused": paused}
        return record

    def pause_flag(self, spec: Any) -> dict[str, Any] | None:
        """The pipeline's pause flag (`rollout.pause`), read with its S3 connection."""
        from edgeloop.connections import PipelineClients
        from edgeloop.rollout.pause import pause_state

        return pause_state(PipelineClients(spec).s3(), spec)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.sdk import BaseHook

        from edgeloop.spec import default_pipelines_dir, load_spec

        spec = load_spec(default_pipelines_dir() / f"{self.pipeline}.yaml")
        connection = await BaseHook.aget_connection(spec.connections.kafka)
        kafka_config = dict(connection.extra_dejson)
        while True:
            try:
                decision = await asyncio.to_thread(self._check, spec, kafka_config)
            except Exception as exc:  # a broken read is retried until the soak ends, then reported
                if time.time() - self.started_at >= self.soak_seconds + 60:
                    yield TriggerEvent({"state": "fail", "reasons": [f"gate could not read feedback: {exc}"]})
                    return
                self.log.warning("gate check failed, retrying: %s", exc)
                await asyncio.sleep(self.poll_seconds)
                continue
            if decision["state"] == "pass" and self.wave_index is not None:
                yield TaskSuccessEvent(xcoms={"return_value": gate_result(self.wave_index, decision)})
                return
            if decision["state"] != "wait":
                yield TriggerEvent(decision)  # a failed gate resumes its task, which fails with the reasons
                return
            await asyncio.sleep(self.next_check_in(time.time()))

    def next_check_in(self, now: float) -> float:
        """Seconds to the next check: the poll interval, or less, so that a check starts as the soak ends."""
        soak_left = self.started_at + self.soak_seconds - now
        if 0 < soak_left < self.poll_seconds:
            return soak_left + 0.05  # just past the end: that check decides pass or fail
        return self.poll_seconds
