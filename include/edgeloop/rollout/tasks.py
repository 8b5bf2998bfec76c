"""The tasks of the `rollout` DAG: one function each, typed results across the boundary.

The health gate after each wave stays an operator (`rollout.operators.RolloutGateOperator`, deferred to
the triggerer); it reads the apply task's XCom (`WaveApplied`) and writes a `GateRecord`. `promote` and
`rollback` read what the other tasks left in XCom through `rollout_records`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, Self

from edgeloop.rollout.plan import Wave, spec_waves
from edgeloop.spec import PipelineSpec
from edgeloop.xcom import JSON, XComResult, XComResultWithDetails, plain, xcom_fields

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import BatchMetrics, TaskMetrics

SHADOW_TASK_ID = "shadow"
APPROVAL_TASK_ID = "approve_production"


class TaskXCom(Protocol):
    """What the rollout tasks use of Airflow's task instance: another task's XCom, and pushing this one's."""

    def xcom_pull(self, task_ids: str, key: str = ...) -> Any: ...

    def xcom_push(self, key: str, value: Any) -> None: ...


def apply_task_id(wave: Wave) -> str:
    return f"apply_{wave.name}"


def gate_task_id(wave: Wave) -> str:
    return f"gate_{wave.name}"


@dataclass(frozen=True)
class RolloutPlanned:
    """The plan (`rollout.steps.plan_step`, also the audit's plan part): the version, the waves, who started it.

    `previous_version` is what a rollback restores; `policy` is present only when the spec has a rollout policy.
    """

    rollout_id: str
    model_version: str
    champion_at_plan: str | None
    previous_version: str
    waves: list[dict[str, JSON]]
    started_by: str
    triggered_by: str | None
    gate: dict[str, JSON]
    overrides: list[dict[str, JSON]]
    skip_canary_reason: str | None
    planned_at: str
    policy: dict[str, JSON] | None = None

    def wave(self, index: int) -> dict[str, JSON] | None:
        """The planned wave `index` (None: the plan has no such wave)."""
        return next((w for w in self.waves if w["index"] == index), None)

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self, omit_none=("policy",))

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


@dataclass(frozen=True)
class WaveApplied:
    """One wave's apply (`rollout.steps.wave_outcome`): its groups and order ids, when the soak starts, per group
    what the job did. `devices`: per group of a share wave, the devices it ordered (the gate reads only those);
    `policy`: per group, the rollout policy's decisions. Both are absent when empty."""

    wave: int
    groups: list[str]
    model_version: str
    assignment_ids: dict[str, str]
    applied_at: float
    results: list[dict[str, JSON]]
    started_at: float
    devices: dict[str, list[str]] | None = None
    policy: dict[str, JSON] | None = None

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self, omit_none=("devices", "policy"))

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


@dataclass(frozen=True)
class GateRecord(XComResultWithDetails):
    """A wave's health gate as its operator left it in XCom: the wave, pass or fail, why, when; the readings
    and the rest of the trigger's decision in `details`, unchanged."""

    wave: int
    state: str
    reasons: list[str]
    decided_at: float
    details: dict[str, JSON]

    @property
    def passed(self) -> bool:
        return self.state == "pass"


@dataclass(frozen=True)
class ShadowDecided(XComResult):
    """The shadow wave's record (`rollout.shadow_wave.shadow_step`): the decision with its numbers and reasons,
    and who shadowed (per group the order ids and, for a share, the devices)."""

    state: str
    challenger_version: str
    champion_version: str
    windows: int
    devices: int  # devices that sent a counted window
    records: int
    agreement: float | None
    mean_confidence_delta: float | None
    latency_ratio: float | None
    error_rate: float | None
    reasons: list[str]
    groups: list[str]
    share: float | None
    window_s: float
    orders: dict[str, list[str]]
    shadowed_devices: dict[str, list[str]]  # per group, the devices of a share (empty: the whole group)
    ended_by: list[str]
    refused_reports: dict[str, int]
    started_at: float
    decided_at: float


@dataclass(frozen=True)
class RolloutPromoted(XComResult):
    """A rollout every wave of which passed its gate: the version is the champion now."""

    rollout_id: str
    champion: str


@dataclass(frozen=True)
class RolloutRecords:
    """What the run's other tasks left in XCom: per wave index the apply and the gate (absent: they did not
    run), the human answer before the production waves and the shadow wave's record (None: none)."""

    applies: dict[int, WaveApplied]
    gates: dict[int, GateRecord]
    approval: dict[str, JSON] | None = None
    shadow: ShadowDecided | None = None

    def xcoms(self) -> tuple[dict[int, dict[str, JSON]], dict[int, dict[str, JSON]], dict[str, JSON] | None]:
        """The applies, gates and shadow record as the XCom dicts the audit and metrics steps read."""
        applies = {i: a.to_xcom() for i, a in self.applies.items()}
        gates = {i: g.to_xcom() for i, g in self.gates.items()}
        return applies, gates, self.shadow.to_xcom() if self.shadow else None


def rollout_records(spec: PipelineSpec, ti: TaskXCom) -> RolloutRecords:
    """Read the XComs of the spec's apply, gate, approval and shadow tasks in this run."""
    applies: dict[int, WaveApplied] = {}
    gates: dict[int, GateRecord] = {}
    for wave in spec_waves(spec):
        applied, gate = ti.xcom_pull(task_ids=apply_task_id(wave)), ti.xcom_pull(task_ids=gate_task_id(wave))
        if applied:
            applies[wave.index] = WaveApplied.from_xcom(applied)
        if gate:
            gates[wave.index] = GateRecord.from_xcom(gate)
    approval = ti.xcom_pull(task_ids=APPROVAL_TASK_ID, key="answer") if spec.rollout.approval_required else None
    shadow = ti.xcom_pull(task_ids=SHADOW_TASK_ID) if spec.rollout.shadow.enabled else None
    return RolloutRecords(applies, gates, approval, ShadowDecided.from_xcom(shadow) if shadow else None)


def plan(
    spec: PipelineSpec, clients: PipelineClients, params: Mapping[str, Any], *, run: Any, events: Any
) -> RolloutPlanned:
    """Decide what this rollout does and write the plan part; RolloutPlanError (or RolloutRefused) before any change.

    `run`: the DAG run (its id, type and who triggered it); `events`: the `model` asset events that started it,
    whose newest version is rolled out unless `params` names one.
    """
    from edgeloop.rollout.admission import RunOrigin
    from edgeloop.rollout.steps import model_version_from_events, plan_step

    version = model_version_from_events(events)
    planned = plan_step(spec, clients.s3(), clients.mlflow_uri(), run.run_id, params, version, RunOrigin.of(run))
    return RolloutPlanned.from_xcom(planned)


def apply_wave(
    spec: PipelineSpec, clients: PipelineClients, planned: RolloutPlanned, index: int, *, context: Any
) -> WaveApplied:
    """Run the jobs of wave `index` for its groups and write its apply part; skip the task when the plan left
    the wave without groups. `context`: the Airflow task context (the pod launcher runs its operator in it)."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.rollout.steps import apply_step

    wave = planned.wave(index)
    if not wave or not wave["groups"]:
        raise AirflowSkipException(f"no group of wave {index} is in this rollout")
    return WaveApplied.from_xcom(apply_step(spec, clients.s3(), planned.to_xcom(), index, context))


def shadow(spec: PipelineSpec, clients: PipelineClients, planned: RolloutPlanned, *, ti: TaskXCom) -> ShadowDecided:
    """Run the shadow wave and return its record; on a fail, keep the record in XCom (for the rollback's audit)
    and fail the task, before any device serves the challenger."""
    from airflow.exceptions import AirflowFailException

    from edgeloop.rollout.shadow_wave import shadow_step

    decided = ShadowDecided.from_xcom(shadow_step(spec, clients, planned.to_xcom()))
    if decided.state != "pass":
        ti.xcom_push(key="return_value", value=decided.to_xcom())
        raise AirflowFailException(f"shadow wave stopped version {planned.model_version}: {decided.reasons}")
    return decided


def _record_gates(spec: PipelineSpec, s3: Any, planned: RolloutPlanned, records: RolloutRecords) -> None:
    from edgeloop.rollout.steps import record_gate

    for gate in records.gates.values():
        record_gate(spec, s3, planned.rollout_id, gate.to_xcom())


def promote(
    spec: PipelineSpec,
    clients: PipelineClients,
    planned: RolloutPlanned,
    records: RolloutRecords,
    *,
    metrics: TaskMetrics,
) -> RolloutPromoted:
    """Record the gates; when every wave passed, make the version the champion and write the audit; skip otherwise."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.metrics.push import push_task_metrics
    from edgeloop.rollout.metrics import record_rollout_metrics
    from edgeloop.rollout.steps import all_gates_passed, promote_step

    s3, plan_xcom = clients.s3(), planned.to_xcom()
    applies, gates, shadowed = records.xcoms()
    _record_gates(spec, s3, planned, records)
    if not all_gates_passed(plan_xcom, gates):
        raise AirflowSkipException("not every wave passed its gate: nothing to promote")
    record = promote_step(spec, s3, clients.mlflow_uri(), plan_xcom, gates, approval=records.approval, shadow=shadowed)

    def fill(batch: BatchMetrics) -> None:
        record_rollout_metrics(batch, plan_xcom, applies, gates)
        batch.mark_success("rollout")

    push_task_metrics(spec, metrics, fill)
    return RolloutPromoted(rollout_id=planned.rollout_id, champion=str(record["champion"]))


def rollback(
    spec: PipelineSpec,
    clients: PipelineClients,
    planned: RolloutPlanned,
    records: RolloutRecords,
    *,
    context: Any,
    metrics: TaskMetrics,
) -> NoReturn:
    """Skip when every wave passed; else return the touched groups to the previous version, alert, write the
    audit and fail the task naming the groups and the reasons. `context`: as for `apply_wave`."""
    from airflow.exceptions import AirflowFailException, AirflowSkipException

    from edgeloop.metrics.push import push_task_metrics
    from edgeloop.rollout.metrics import record_rollout_metrics
    from edgeloop.rollout.steps import all_gates_passed, rollback_step

    plan_xcom = planned.to_xcom()
    applies, gates, shadowed = records.xcoms()
    if all_gates_passed(plan_xcom, gates):
        raise AirflowSkipException("every wave passed its gate: nothing to roll back")
    s3 = clients.s3()
    _record_gates(spec, s3, planned, records)
    record = rollback_step(
        spec, s3, clients.kafka(), plan_xcom, applies, gates, context, approval=records.approval, shadow=shadowed
    )
    rolled_back = [str(g) for g in record["rolled_back_groups"]]
    push_task_metrics(
        spec, metrics, lambda batch: record_rollout_metrics(batch, plan_xcom, applies, gates, rolled_back)
    )
    raise AirflowFailException(
        f"rollout {planned.rollout_id} rolled back groups {record['rolled_back_groups']} "
        f"to version {record['previous_version']}: {'; '.join(record['reasons'])}"
    )


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_plan(spec: PipelineSpec, context: Mapping[str, Any]) -> RolloutPlanned:
    from edgeloop.connections import PipelineClients

    run, events = context["dag_run"], context.get("triggering_asset_events")
    return plan(spec, PipelineClients(spec), context["params"], run=run, events=events)


def run_shadow(spec: PipelineSpec, planned: object, context: Mapping[str, Any]) -> ShadowDecided:
    from edgeloop.connections import PipelineClients

    return shadow(spec, PipelineClients(spec), RolloutPlanned.from_xcom(planned), ti=context["ti"])


def run_apply_wave(spec: PipelineSpec, planned: object, index: int, context: Mapping[str, Any]) -> WaveApplied:
    from edgeloop.connections import PipelineClients

    return apply_wave(spec, PipelineClients(spec), RolloutPlanned.from_xcom(planned), index, context=context)


def run_promote(spec: PipelineSpec, planned: object, context: Mapping[str, Any]) -> RolloutPromoted:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    plan_of_run, records = RolloutPlanned.from_xcom(planned), rollout_records(spec, context["ti"])
    return promote(spec, PipelineClients(spec), plan_of_run, records, metrics=TaskMetrics.of_task(context))


def run_rollback(spec: PipelineSpec, planned: object, context: Mapping[str, Any]) -> NoReturn:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    plan_of_run, records = RolloutPlanned.from_xcom(planned), rollout_records(spec, context["ti"])
    metrics = TaskMetrics.of_task(context)
    rollback(spec, PipelineClients(spec), plan_of_run, records, context=context, metrics=metrics)
