"""The shadow wave of a rollout: before any device serves the new version, some run it beside the champion.

`start_shadow` orders the spec's shadow groups (all their devices, or a share of each) to keep serving
the plan's previous version and run the challenger in shadow; `wait_for_shadow` reads their signed
shadow reports (`<prefix>.shadow`) until `rollout.shadow.evaluate_shadow` passes or fails them (or the
deadline runs out: a fail); `end_shadow` orders the same devices back to the champion alone;
`record_shadow` keeps the decision with the model version in MLflow (tags, and the whole decision as
`shadow/<rollout id>.json` of the version's run) and in the rollout's audit record.

Every order id is derived from the rollout id, so a retried task orders nothing twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from edgeloop.contract.shadow import ShadowReport
from edgeloop.rollout.audit import write_part
from edgeloop.rollout.shadow import ShadowDecision, ShadowTargets, evaluate_shadow
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.fleet.topics import TopicRecord

SHADOW_PART = 2  # the audit part's place: after the plan, before the first wave


@dataclass(frozen=True)
class ShadowOrders:
    """What a shadow wave ordered: per group, the ids of its orders (one group order, or one per chosen device)."""

    champion: str
    challenger: str
    started_at: float
    orders: dict[str, list[str]]
    devices: dict[str, list[str]]  # per group, the devices of a share (empty: the whole group)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ShadowOrders:
        return cls(**value)


def shadow_assignments(
    spec: PipelineSpec,
    plan: Mapping[str, Any],
    targets: ShadowTargets,
    enrolled: Mapping[str, list[str]],
    artifacts: Callable[[str, str], Any],
    *,
    end: bool = False,
) -> list[Any]:
    """The orders of a shadow wave (or, with `end`, the orders that end it): each target keeps serving the
    plan's previous version and runs the challenger beside it. `enrolled`: a group's device ids, for a share;
    `artifacts(group, version)`: the version's ArtifactRef (None for the baseline)."""
    from edgeloop.contract.messages import ShadowOrder, Target, new_assignment
    from edgeloop.rollout.orders import device_order_id
    from edgeloop.rollout.policy import select_share

    rollout_id, champion, challenger = plan["rollout_id"], str(plan["previous_version"]), str(plan["model_version"])
    out = []
    for group in targets.groups:
        shadow = None
        if not end:
            shadow = ShadowOrder(challenger, artifacts(group, challenger), targets.window_s)
        ident = f"{rollout_id}.{group}.{'se' if end else 's'}{challenger}"
        common = {"model_version": champion, "artifact": artifacts(group, champion), "pipeline": spec.name}
        if targets.share is None:
            target = Target("group", group)
            out.append(new_assignment(target, assignment_id=ident, issuer="rollout", shadow=shadow, **common))
            continue
        chosen = select_share(rollout_id, group, enrolled.get(group, []), targets.share).selected
        for device in chosen:
            out.append(
                new_assignment(
                    Target("device", device),
                    assignment_id=device_order_id(ident, device),
                    issuer="rollout",
                    shadow=shadow,
                    **common,
                )
            )
    return out


def shadow_reports(
    spec: PipelineSpec, records: Iterable[TopicRecord], registry: Any, orders: ShadowOrders
) -> tuple[list[ShadowReport], dict[str, int]]:
    """The shadow reports among `records` from the devices a shadow wave ordered (its groups, or for a share
    only the chosen devices), signed by their enrolled device; and the refused or unreadable ones by reason."""
    from edgeloop.contract.messages import RefusedReport
    from edgeloop.contract.shadow import BadShadowReport, parse_shadow_report

    chosen = {d for ds in orders.devices.values() for d in ds}
    by_share = {g for g, ds in orders.devices.items() if ds}
    reports: list[ShadowReport] = []
    refused: Counter[str] = Counter()
    for record in records:
        try:
            report = parse_shadow_report(record.value, registry)
        except (BadShadowReport, RefusedReport) as exc:
            refused[type(exc).__name__] += 1
            continue
        ordered = report.group_id in orders.orders and (report.group_id not in by_share or report.device_id in chosen)
        if ordered and report.pipeline == spec.name:
            reports.append(report)
    return reports, dict(refused)


def shadow_deadline_s(spec: PipelineSpec) -> float:
    """How long a shadow wave waits for its `min_windows`: two windows more than that, at most `rollout.timeout`."""
    policy = spec.rollout.shadow
    return min(spec.rollout.timeout.total_seconds(), policy.window.total_seconds() * (policy.min_windows + 2))


def start_shadow(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Any,
    plan: Mapping[str, Any],
    targets: ShadowTargets,
    registry: Any,
    artifacts: Callable[[str, str], Any],
) -> ShadowOrders:
    """Publish the shadow wave's orders (see the module docstring); `registry`: the enrolled devices."""
    from edgeloop.fleet.control import publish_assignments

    enrolled: dict[str, list[str]] = {g: [] for g in targets.groups}
    for device_id, entry in registry.devices.items():
        if entry.group_id in enrolled:
            enrolled[entry.group_id].append(device_id)
    assignments = shadow_assignments(spec, plan, targets, enrolled, artifacts)
    started_at = time.time()
    publish_assignments(spec, kafka_config, signer, assignments)
    orders: dict[str, list[str]] = {g: [] for g in targets.groups}
    devices: dict[str, list[str]] = {g: [] for g in targets.groups}
    for assignment in assignments:
        group = (
            assignment.target.id
            if assignment.target.kind == "group"
            else registry.devices[assignment.target.id].group_id
        )
        orders[group].append(assignment.id)
        if assignment.target.kind == "device":
            devices[group].append(assignment.target.id)
    return ShadowOrders(str(plan["previous_version"]), str(plan["model_version"]), started_at, orders, devices)


def wait_for_shadow(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    registry_reader: Callable[[], Any],
    orders: ShadowOrders,
    *,
    deadline_s: float | None = None,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> tuple[ShadowDecision, dict[str, int]]:
    """Poll the shadow reports until the decision is pass or fail; past the deadline a wait is a fail.

    Only reports of the ordered devices (a share) or groups count, from their enrolled device's key
    (`registry_reader()` is read each poll, so a device enrolled meanwhile counts); the reports kept from
    earlier polls are checked against that registry again."""
    from edgeloop.fleet.topics import TopicMissing, TopicTail

    policy = spec.rollout.shadow
    deadline = orders.started_at + (shadow_deadline_s(spec) if deadline_s is None else deadline_s)
    since_ms = int(orders.started_at * 1000) - 1000
    tail = TopicTail(kafka_config, spec.topic("shadow"))  # each poll reads only what was published since the last
    while True:
        try:
            records = tail.read(since_ms)
        except TopicMissing:
            records = []
        reports, refused = shadow_reports(spec, records, registry_reader(), orders)
        decision = evaluate_shadow(reports, orders.challenger, policy)
        if decision.state != "wait":
            return decision, refused
        if clock() >= deadline:
            reasons = [f"shadow deadline of {deadline - orders.started_at:.0f} s passed: {decision.reasons[0]}"]
            return replace(decision, state="fail", reasons=reasons), refused
        sleep(poll_s)


def end_shadow(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Any,
    plan: Mapping[str, Any],
    targets: ShadowTargets,
    orders: ShadowOrders,
    artifacts: Callable[[str, str], Any],
) -> list[str]:
    """Order the shadow wave's devices back to the champion alone; return the order ids."""
    from edgeloop.fleet.control import publish_assignments

    assignments = shadow_assignments(spec, plan, targets, orders.devices, artifacts, end=True)
    publish_assignments(spec, kafka_config, signer, assignments)
    return [a.id for a in assignments]


def record_shadow(
    spec: PipelineSpec, s3: Any, client: Any, rollout_id: str, decision: ShadowDecision, record: Mapping[str, Any]
) -> None:
    """Keep the decision in the rollout's audit record and with the model version in MLflow (tags, and the
    whole record as `shadow/<rollout id>.json` of the version's run). The same content on a retry."""
    from edgeloop.registry.tags import TAG_SHADOW_AGREEMENT, TAG_SHADOW_ROLLOUT, TAG_SHADOW_STATE

    write_part(s3, spec, rollout_id, SHADOW_PART, "shadow", dict(record))
    name, version = spec.registry.model_name, decision.challenger_version
    client.set_model_version_tag(name, version, TAG_SHADOW_STATE, decision.state)
    client.set_model_version_tag(name, version, TAG_SHADOW_AGREEMENT, str(decision.agreement))
    client.set_model_version_tag(name, version, TAG_SHADOW_ROLLOUT, rollout_id)
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        client.log_dict(run_id, dict(record), f"shadow/{rollout_id}.json")


def shadow_step(
    spec: PipelineSpec,
    clients: Any,
    plan: Mapping[str, Any],
    *,
    signer: Any = None,
    trusted: Any = None,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """The rollout DAG's shadow task: order, wait for the decision, end the shadow, record it.

    Return the record (`state` pass or fail, the numbers and reasons, who shadowed); the caller
    fails the run on a fail, before any device serves the challenger.
    """
    from edgeloop.connections import control_signer, control_trusted_keys
    from edgeloop.fleet.registry import read_registry
    from edgeloop.registry.client import mlflow_client
    from edgeloop.rollout.job import artifact_resolver, version_artifact
    from edgeloop.rollout.shadow import shadow_targets

    targets = shadow_targets(spec)
    if targets is None:
        raise ValueError(f"{spec.name}: rollout.shadow is not enabled")
    signer = signer or control_signer()
    trusted = trusted or control_trusted_keys()
    kafka = clients.kafka()
    resolver = artifact_resolver(spec)
    resolved: dict[str, Any] = {}

    def artifacts(group: str, version: str) -> Any:
        if version not in resolved:
            resolved[version] = version_artifact(spec, group, version, resolver)
        return resolved[version]

    def registry() -> Any:
        return read_registry(spec, kafka, trusted)

    orders = start_shadow(spec, kafka, signer, plan, targets, registry(), artifacts)
    try:
        decision, refused = wait_for_shadow(spec, kafka, registry, orders, poll_s=poll_s)
    finally:  # a wait that ends in an error (Kafka gone, the task timed out) still ends the shadow
        ended = end_shadow(spec, kafka, signer, plan, targets, orders, artifacts)
    record = {
        **decision.to_dict(),
        "champion_version": orders.champion,
        "groups": list(targets.groups),
        "share": targets.share,
        "window_s": targets.window_s,
        "orders": orders.orders,
        "shadowed_devices": orders.devices,  # per group, for a share (the decision's `devices` is a count)
        "ended_by": ended,
        "refused_reports": refused,
        "started_at": orders.started_at,
        "decided_at": time.time(),
    }
    record_shadow(spec, clients.s3(), mlflow_client(clients.mlflow_uri()), plan["rollout_id"], decision, record)
    return record
