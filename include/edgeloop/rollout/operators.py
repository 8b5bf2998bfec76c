"""The deferrable health gate as an operator: defers to RolloutGateTrigger for the soak (a pass ends there)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from edgeloop.rollout.plan import Wave
    from edgeloop.spec import PipelineSpec


class RolloutGateOperator(BaseOperator):
    """Wait out the soak of one wave in the triggerer; fail the task (and so the rollout) on a failed gate."""

    def __init__(self, *, pipeline: str, wave_index: int, apply_task_id: str, soak_seconds: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.wave_index = wave_index
        self.apply_task_id = apply_task_id
        self.soak_seconds = soak_seconds

    @classmethod
    def for_wave(cls, spec: PipelineSpec, wave: Wave) -> RolloutGateOperator:
        """The health gate after `wave`: it reads that wave's apply task and soaks for the spec's time."""
        from edgeloop.rollout.tasks import apply_task_id, gate_task_id

        return cls(
            task_id=gate_task_id(wave),
            pipeline=spec.name,
            wave_index=wave.index,
            apply_task_id=apply_task_id(wave),
            soak_seconds=spec.rollout.soak.total_seconds(),
            trigger_rule="none_failed",
        )

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        from edgeloop.connections import control_trusted_keys
        from edgeloop.rollout.trigger import RolloutGateTrigger

        applied = context["ti"].xcom_pull(task_ids=self.apply_task_id)
        if not applied or not applied.get("groups"):
            raise AirflowSkipException(f"wave {self.wave_index} applied nothing in this rollout")
        trigger = RolloutGateTrigger(
            pipeline=self.pipeline,
            groups=list(applied["groups"]),
            model_version=str(applied["model_version"]),
            assignment_ids=dict(applied.get("assignment_ids", {})),
            started_at=float(applied["applied_at"]),
            soak_seconds=self.soak_seconds,
            poll_seconds=min(5.0, max(1.0, self.soak_seconds / 10)),
            trusted_keys=control_trusted_keys().hex_keys(),
            devices={g: list(d) for g, d in (applied.get("devices") or {}).items()},
            wave_index=self.wave_index,
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """A gate the trigger did not end: a failed one (or the event of a trigger from before `wave_index`)."""
        from airflow.sdk.exceptions import AirflowFailException

        from edgeloop.rollout.trigger import gate_result

        result = gate_result(self.wave_index, event)
        if event.get("state") != "pass":
            context["ti"].xcom_push(key="return_value", value=result)
            raise AirflowFailException(f"health gate of wave {self.wave_index} failed: {'; '.join(event['reasons'])}")
        return result
