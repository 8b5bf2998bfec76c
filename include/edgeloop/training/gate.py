"""The evaluation gate: does the challenger deserve the fleet?

Challenger and champion are scored as the devices would run them: their ONNX files,
checked against the sha256 and size recorded on each version and loaded by the agent's
own loader (no pickle is loaded here), on the same held-out recent data (the
challenger's evaluation split: newest records of the triggering version, from devices
the challenger never trained on), overall and per edge group. A challenger without a
verified ONNX file is not scored and is rejected.
The challenger is promoted when it fits the device limits (measured on its ONNX file in
onnxruntime at training; a version without an ONNX file does not fit), beats the
champion by the spec's `margin` on the spec's `metric`, and no group with enough
records (`min_group_records`) loses more than `group_tolerance`.

Promotion does not move `champion`: the decision dict becomes a `model` asset event and
the rollout moves the alias once the fleet runs the version (`aliases.set_champion`).
The exception is the first model: with no champion at all, an edge-fit challenger
becomes champion here. A rejected challenger is tagged with the reasons and the
decision carries an alert for the pipeline's alerts topic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.registry.aliases import CHAMPION, alias_version
from edgeloop.registry.client import mlflow_errors
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.register import recorded_artifact
from edgeloop.registry.tags import (
    PARENT_RUN_TAG,
    TAG_AGAINST,
    TAG_CODE_VERSION,
    TAG_DATASET,
    TAG_DATASET_VERSION,
    TAG_DECISION,
    TAG_EDGE,
    TAG_FIRST_RUN,
    TAG_GATE_KEY,
    TAG_PIPELINE,
    TAG_REASON,
    TAG_RUN_KIND,
    TAG_TRAINING_RUN,
)
from edgeloop.spec import PipelineSpec, TrainingSpec
from edgeloop.training.dataset import read_split
from edgeloop.training.evaluate import evaluate_model
from edgeloop.training.images import model_inputs

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

S3Client = Any
ALERT_KIND = "model"
_EPSILON = 1e-9


@dataclass(frozen=True)
class GateSettings:
    min_group_records: int = 20  # groups with fewer held-out records are reported, not gated


def decide(
    training: TrainingSpec,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    edge: Mapping[str, Any],
    *,
    min_group_records: int = 20,
) -> list[str]:
    """Every reason not to promote (empty: promote). `challenger`/`champion` as `evaluate_model` returns them."""
    reasons = [f"edge fitness: {v}" for v in edge.get("violations", [])]
    if not edge.get("ok", False) and not reasons:
        reasons.append("edge fitness: not measured as fit")
    if champion is None:
        return reasons
    metric, margin, tolerance = training.metric, training.margin, training.group_tolerance
    new, old = float(challenger["score"]), float(champion["score"])
    if new + _EPSILON < old + margin:
        reasons.append(
            f"{metric} {new:.4f} does not beat the champion's {old:.4f} by the margin {margin:g} "
            f"(needs at least {old + margin:.4f})"
        )
    for group, values in sorted(challenger["groups"].items()):
        before = champion["groups"].get(group)
        if before is None or values["records"] < min_group_records:
            continue
        if float(values["score"]) + tolerance + _EPSILON < float(before["score"]):
            reasons.append(
                f"group {group}: {metric} {values['score']:.4f} is below the champion's {before['score']:.4f} "
                f"by more than the tolerance {tolerance:g} ({values['records']} records)"
            )
    return reasons


def model_asset_extra(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The extra of the `model` asset event a promote decision emits (what the rollout needs)."""
    keys = ("pipeline", "model_name", "version", "model_uri", "dataset_version", "code_version", "first_run")
    return {**{k: decision[k] for k in keys}, "model_version": decision["version"]}  # the rollout reads model_version


def _gate_run(client: MlflowClient, version: Any, decision: Mapping[str, Any], metric: str) -> str | None:
    """Log the comparison as a run nested under the challenger's training run (once per challenger/champion pair)."""
    from mlflow.entities import Metric, RunTag

    training_run = version.tags.get(TAG_TRAINING_RUN)
    if not training_run:
        return None
    experiment_id = client.get_run(training_run).info.experiment_id
    key = f"{decision['model_name']}:{decision['version']}:{decision['champion_version']}"
    existing = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_GATE_KEY}` = '{key}' and attributes.status = 'FINISHED'"
    )
    if existing:
        return str(existing[0].info.run_id)
    run = client.create_run(
        experiment_id,
        run_name=f"gate-v{decision['version']}",
        tags={
            PARENT_RUN_TAG: training_run,
            TAG_RUN_KIND: "gate",
            TAG_PIPELINE: str(decision["pipeline"]),
            TAG_GATE_KEY: key,
            TAG_DECISION: str(decision["decision"]),
            TAG_REASON: str(decision["reason"])[:5000],
        },
    )
    now = int(time.time() * 1000)
    metrics: dict[str, float] = {}
    for role in ("challenger", "champion"):
        result = decision.get(role)
        if result and result["score"] is not None:  # an unscored challenger (no verified ONNX file) logs none
            metrics[f"{role}_{metric}"] = float(result["score"])
            for group, values in result["groups"].items():
                metrics[f"{role}_{metric}.{group}"] = float(values["score"])
    metrics["promote"] = float(bool(decision["promote"]))
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag("edgeloop.gate.reasons", json.dumps(decision["reasons"])[:5000])],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


class EdgeModelScorer:
    """A version's ONNX file as `evaluate_model` calls it: `predict(frame)` gives the labels the device would."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, frame: Any) -> list[str]:
        import numpy as np

        proba = self.model.predict_proba(np.asarray(frame, dtype=np.float32))
        return [self.model.labels[i] for i in np.argmax(proba, axis=1)]


def edge_scorer(client: MlflowClient, s3: S3Client, spec: PipelineSpec, version: str) -> EdgeModelScorer:
    """The version's ONNX file, digest-checked and self-tested by the device's loader; raise ArtifactMissing,
    ArtifactDigestMismatch or ModelRefused naming what is wrong."""
    from edgeloop.edge.runtime import load_model
    from edgeloop.registry.artifacts import verified_edge_artifact

    data = verified_edge_artifact(client, s3, spec, version)
    return EdgeModelScorer(load_model(data, version, model_inputs(spec).columns))


def _score_champion(
    client: MlflowClient, s3: S3Client, spec: PipelineSpec, champion: Any, evaluation: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """The champion's result on the held-out data, or None and why it cannot score it (no verified ONNX file,
    a schema change)."""
    from edgeloop.edge.runtime import ModelRefused
    from edgeloop.registry.artifacts import ArtifactDigestMismatch, ArtifactMissing

    try:
        return evaluate_model(spec, edge_scorer(client, s3, spec, str(champion.version)), evaluation), None
    except (ArtifactMissing, ArtifactDigestMismatch, ModelRefused, KeyError, ValueError) as exc:
        return None, f"the champion (version {champion.version}) cannot be scored: {exc}"


@dataclass
class _Verdict:
    reasons: list[str]
    note: str = ""
    champion: dict[str, Any] | None = None
    champion_version: str | None = None
    first_run: bool = False
    champion_set: bool = False
    unchanged: bool = False


def _judge(
    client: MlflowClient,
    s3: S3Client,
    spec: PipelineSpec,
    version_id: str,
    tags: Mapping[str, str],
    challenger: dict[str, Any],
    evaluation: Any,
    settings: GateSettings,
) -> _Verdict:
    name = spec.registry.model_name
    edge = json.loads(tags[TAG_EDGE])
    if edge.get("ok") and recorded_artifact(tags) is None:  # devices run the ONNX file: nothing to roll out
        edge = {**edge, "ok": False, "violations": ["no ONNX file is recorded on the version"]}
    current = alias_version(client, name, CHAMPION)
    if current is None:  # the first model
        reasons = decide(spec.training, challenger, None, edge)
        if reasons:
            return _Verdict(reasons, first_run=True)
        client.set_registered_model_alias(name, CHAMPION, version_id)
        note = "first model: no champion yet, the edge-fit challenger becomes champion"
        return _Verdict([], note, first_run=True, champion_set=True)
    if str(current.version) == version_id:
        if tags.get(TAG_FIRST_RUN) == "true":  # a retry of the first model's gate: the same decision again
            return _Verdict([], tags.get(TAG_REASON, "first model"), first_run=True, champion_set=True)
        return _Verdict(
            [], "the challenger is the champion already", champion_version=str(current.version), unchanged=True
        )
    champion, unusable = _score_champion(client, s3, spec, current, evaluation)
    reasons = decide(spec.training, challenger, champion, edge, min_group_records=settings.min_group_records)
    if unusable:
        return _Verdict(reasons, unusable, champion_version=str(current.version))
    assert champion is not None
    metric, training = spec.training.metric, spec.training
    note = (
        f"{metric} {challenger['score']:.4f} beats the champion's {champion['score']:.4f} "
        f"by at least {training.margin:g} and no group regresses beyond {training.group_tolerance:g}"
    )
    return _Verdict(reasons, note, champion, str(current.version))


def _score_challenger(
    client: MlflowClient, s3: S3Client, spec: PipelineSpec, version_id: str, evaluation: Any
) -> tuple[dict[str, Any], str | None]:
    """The challenger's result from its verified ONNX file; without one, an unscored result and the reason."""
    from edgeloop.edge.runtime import ModelRefused
    from edgeloop.registry.artifacts import ArtifactDigestMismatch, ArtifactMissing

    try:
        return evaluate_model(spec, edge_scorer(client, s3, spec, version_id), evaluation), None
    except ArtifactMissing:
        reason = "edge fitness: no ONNX file is recorded on the version"
    except (ArtifactDigestMismatch, ModelRefused) as exc:
        reason = f"edge fitness: the ONNX file cannot be judged: {exc}"
    return {"metric": spec.training.metric, "score": None, "records": len(evaluation), "groups": {}}, reason


def evaluation_gate(
    client: MlflowClient,
    s3: S3Client,
    spec: PipelineSpec,
    registered: Mapping[str, Any],
    *,
    settings: GateSettings = GateSettings(),
) -> dict[str, Any]:
    """Evaluate the registered challenger against the champion and decide (see the module docstring).

    `registered` is what `register_challenger` returned (only `version` is required).
    Returns the decision: `decision` ("promote", "reject", or "unchanged" when the
    challenger is already the champion), `promote`, `reason(s)`, `first_run`,
    `champion_set`, both models' scores overall and per group, and `alert` (an
    alerts-topic message for a rejection, else None).
    """
    name = spec.registry.model_name
    version_id = str(registered["version"])
    with mlflow_errors(client, f"evaluating version {version_id} of {name}"):
        version = client.get_model_version(name, version_id)
        tags = dict(version.tags or {})
        if TAG_DATASET not in tags or TAG_EDGE not in tags:
            raise RegistryError(f"{name} version {version_id}: missing '{TAG_DATASET}'/'{TAG_EDGE}' tags")
        # the model's inputs on the held-out rows: for a camera pipeline, each row's frame from object storage
        evaluation = model_inputs(spec).attach(s3, read_split(s3, json.loads(tags[TAG_DATASET]), "eval")).frame
        challenger, unscored = _score_challenger(client, s3, spec, version_id, evaluation)
        if unscored is not None:
            verdict = _Verdict([unscored], unscored)
        else:
            verdict = _judge(client, s3, spec, version_id, tags, challenger, evaluation, settings)
        promote = not verdict.reasons and not verdict.unchanged
        word = "unchanged" if verdict.unchanged else ("promote" if promote else "reject")
        decision: dict[str, Any] = {
            "pipeline": spec.name,
            "model_name": name,
            "version": version_id,
            "model_uri": f"models:/{name}/{version_id}",
            "decision": word,
            "promote": promote,
            "reason": "; ".join(verdict.reasons) or verdict.note,
            "reasons": verdict.reasons,
            "first_run": verdict.first_run,
            "champion_set": verdict.champion_set,
            "champion_version": verdict.champion_version,
            "metric": spec.training.metric,
            "margin": spec.training.margin,
            "group_tolerance": spec.training.group_tolerance,
            "challenger": challenger,
            "champion": verdict.champion,
            "edge": json.loads(tags[TAG_EDGE]),
            "dataset_version": tags.get(TAG_DATASET_VERSION),
            "code_version": tags.get(TAG_CODE_VERSION),
            "eval_records": challenger["records"],
        }
        if not verdict.unchanged:
            new_tags = {
                TAG_DECISION: word,
                TAG_REASON: decision["reason"][:5000],
                TAG_AGAINST: str(verdict.champion_version),
            }
            if verdict.first_run and promote:
                new_tags[TAG_FIRST_RUN] = "true"
            for key, value in new_tags.items():
                if tags.get(key) != value:
                    client.set_model_version_tag(name, version_id, key, value)
        decision["gate_run_id"] = _gate_run(client, version, decision, spec.training.metric)
    decision["alert"] = rejection_alert(decision) if word == "reject" else None
    return decision


def rejection_alert(decision: Mapping[str, Any]) -> dict[str, Any]:
    """An alert (alerts-topic JSON object) saying why a challenger was not promoted."""
    champion = decision.get("champion") or {}
    return {
        "kind": ALERT_KIND,
        "pipeline": decision["pipeline"],
        "model_name": decision["model_name"],
        "version": decision["version"],
        "decision": "reject",
        "reason": decision["reason"],
        "metric": decision["metric"],
        "challenger_score": decision["challenger"]["score"],
        "champion_score": champion.get("score"),
        "champion_version": decision.get("champion_version"),
        "dataset_version": decision.get("dataset_version"),
    }
