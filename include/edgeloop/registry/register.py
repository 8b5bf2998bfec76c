"""Register a training candidate as a version of the pipeline's model, exactly once, and alias it `challenger`.

MLflow has no compare-and-set, so exactly-once comes from a tag and a tie-break:

1. Every version carries the candidate key (`edgeloop.candidate`: dataset version and
   digest, code version, training config). Look for versions with that key first: a
   retried task finds its earlier version and registers nothing.
2. Otherwise create a version (with all tags in the same call: the store writes the
   version and its tags in one transaction), then look again.
3. The lowest version number with the key wins; every caller deletes the others it
   sees and returns the winner.

Why it converges: the store numbers versions max+1 inside the inserting transaction
(a concurrent insert of the same number fails and retries), so once a caller sees its
own version N it also sees every committed version below N. The lowest version of
the key is therefore seen by every caller that created one, nobody deletes it, and
all of them return it. A caller that crashed between create and clean-up leaves an
extra version that the next call (the retry) deletes. Deleting is idempotent.

The alternative, a lock object in S3 created with a conditional put, needs a lease
and a takeover rule for a crashed holder, and a second system in the commit path;
this protocol needs only the registry itself.

`copy_version` registers an existing version again, ONNX file and gate decision included, so
the same model can be rolled out under a new number (the e2e stories and the rollout benchmark).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeloop.registry.aliases import CHALLENGER
from edgeloop.registry.client import mlflow_errors
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.tags import (
    COPIED_TAG_PREFIXES,
    TAG_ARTIFACT_FORMAT,
    TAG_ARTIFACT_OPSET,
    TAG_ARTIFACT_PATH,
    TAG_ARTIFACT_SHA256,
    TAG_ARTIFACT_SIZE,
    TAG_CANDIDATE,
    TAG_CODE_VERSION,
    TAG_CONFIG_DIGEST,
    TAG_COPY_NOTE,
    TAG_COPY_OF,
    TAG_DATASET,
    TAG_DATASET_DIGEST,
    TAG_DATASET_VERSION,
    TAG_EDGE,
    TAG_EDGE_FIT,
    TAG_EDGE_VIOLATIONS,
    TAG_MODEL_ID,
    TAG_PIPELINE,
    TAG_TRAINING_RUN,
    artifact_tags,
)
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def ensure_registered_model(client: MlflowClient, spec: PipelineSpec) -> None:
    """Create the pipeline's registered model unless it exists (safe when several callers race)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            spec.registry.model_name,
            tags={TAG_PIPELINE: spec.name},
            description=f"edgeloop pipeline {spec.name}: {spec.description}".strip()[:1000],
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def candidate_versions(client: MlflowClient, model_name: str, candidate: str) -> list[Any]:
    """Live versions of `model_name` tagged with `candidate`, lowest version number first."""
    found = client.search_model_versions(
        f"name = '{model_name}' and tags.`{TAG_CANDIDATE}` = '{candidate}'", max_results=200
    )
    return sorted(found, key=lambda v: int(v.version))


def _delete_version(client: MlflowClient, model_name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(model_name, version)
        log.info("deleted duplicate version %s of %s", version, model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # another caller deleting the same duplicate is fine, anything else is not


def version_tags(spec: PipelineSpec, trained: Mapping[str, Any]) -> dict[str, str]:
    """The tags a candidate's version carries: its identity, lineage, edge fitness and ONNX file.

    The ONNX file's tags (`edgeloop.artifact.sha256`, `.size`, `.opset`, `.format`, `.path`,
    the path relative to the training run) are there when training exported one.
    """
    try:
        edge = trained["edge"]
        artifact = trained.get("artifact")
        return {
            **(artifact_tags(artifact) if artifact else {}),
            TAG_PIPELINE: spec.name,
            TAG_CANDIDATE: str(trained["candidate"]),
            TAG_DATASET_VERSION: str(trained["dataset_version"]),
            TAG_DATASET_DIGEST: str(trained["dataset_digest"]),
            TAG_CODE_VERSION: str(trained["code_version"]),
            TAG_CONFIG_DIGEST: str(trained["config_digest"]),
            TAG_TRAINING_RUN: str(trained["run_id"]),
            TAG_MODEL_ID: str(trained["model_id"]),
            TAG_DATASET: json.dumps(trained["dataset"], sort_keys=True),
            TAG_EDGE: json.dumps(edge, sort_keys=True),
            TAG_EDGE_FIT: str(bool(edge["ok"])).lower(),
            TAG_EDGE_VIOLATIONS: "; ".join(edge.get("violations", [])),
        }
    except KeyError as exc:
        raise RegistryError(
            f"training result: missing {exc.args[0]!r} (expected the dict train_model returns)"
        ) from exc


def register_challenger(
    client: MlflowClient, spec: PipelineSpec, trained: Mapping[str, Any], *, alias: str = CHALLENGER
) -> dict[str, Any]:
    """Register the trained candidate once and point `alias` at it.

    Returns `{"model_name", "version", "model_uri", "created", "removed", "alias", "candidate",
    "dataset_version", "code_version", "run_id", "model_id", "edge", "dataset", "artifact"}`
    (`artifact`: the ONNX file's tags, None when the version has none);
    `created` is False when a version of this candidate existed already; `removed` lists
    duplicate versions this call deleted (left by racing or crashed registrations).
    """
    from mlflow.entities import LoggedModelStatus

    name = spec.registry.model_name
    tags = version_tags(spec, trained)
    candidate, model_id = tags[TAG_CANDIDATE], tags[TAG_MODEL_ID]
    with mlflow_errors(client, f"registering candidate {candidate} as a version of {name}"):
        ensure_registered_model(client, spec)
        versions = candidate_versions(client, name, candidate)
        created: str | None = None
        if not versions:
            logged = client.get_logged_model(model_id)
            if logged.status != LoggedModelStatus.READY:
                raise RegistryError(f"logged model {model_id} is {logged.status}, not READY: refusing to register it")
            mine = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=tags[TAG_TRAINING_RUN],
                tags=tags,
                description=f"dataset {tags[TAG_DATASET_VERSION]}, code {tags[TAG_CODE_VERSION]}",
                model_id=model_id,
            )
            created = str(mine.version)
            versions = candidate_versions(client, name, candidate)
            if created not in {str(v.version) for v in versions}:
                versions = sorted([*versions, mine], key=lambda v: int(v.version))
        winner, losers = versions[0], versions[1:]
        for loser in losers:
            _delete_version(client, name, str(loser.version))
        removed = [str(v.version) for v in losers]
        version = str(winner.version)
        if alias not in (winner.aliases or []):
            client.set_registered_model_alias(name, alias, version)
    recorded = {**tags, **dict(winner.tags or {})}  # the winner may come from another run of the same candidate
    return {
        "pipeline": spec.name,
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "created": created == version,
        "removed": removed,
        "alias": alias,
        "candidate": candidate,
        "dataset_version": recorded[TAG_DATASET_VERSION],
        "code_version": recorded[TAG_CODE_VERSION],
        "run_id": recorded[TAG_TRAINING_RUN],
        "model_id": recorded[TAG_MODEL_ID],
        "edge": json.loads(recorded[TAG_EDGE]),
        "dataset": json.loads(recorded[TAG_DATASET]),
        "artifact": recorded_artifact(recorded),
    }


def recorded_artifact(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The ONNX file a version's tags describe (sha256, size, opset, format, path), or None without them."""
    if TAG_ARTIFACT_SHA256 not in tags:
        return None
    return {
        "sha256": tags[TAG_ARTIFACT_SHA256],
        "size": int(tags.get(TAG_ARTIFACT_SIZE, "0")),
        "opset": tags.get(TAG_ARTIFACT_OPSET, ""),
        "format": tags.get(TAG_ARTIFACT_FORMAT, ""),
        "path": tags.get(TAG_ARTIFACT_PATH, ""),
    }


def copy_version(client: MlflowClient, model_name: str, version: str, note: str) -> str:
    """Register the model of `model_name` version `version` again as a new version and return its number.

    The copy has the same source, run and logged model, the records of the ONNX file (with the
    training run that logged it) and of the evaluation gate's decision, so a rollout admits it and
    publishes the same file; it is tagged with the version it copies and `note`. It carries no
    candidate key, so `register_challenger` never takes it for a duplicate. Raise RegistryError when
    the version names no model source or has no ONNX file recorded.
    """
    with mlflow_errors(client, f"copying {model_name} version {version}"):
        source = client.get_model_version(model_name, version)
        tags = dict(source.tags or {})
        if not source.source:
            raise RegistryError(f"{model_name} version {version} names no model source: nothing to copy")
        if recorded_artifact(tags) is None or TAG_TRAINING_RUN not in tags:
            raise RegistryError(
                f"{model_name} version {version} has no ONNX file recorded (tags edgeloop.artifact.* and "
                f"{TAG_TRAINING_RUN}): a copy of it could not be rolled out"
            )
        copied = {k: v for k, v in tags.items() if k.startswith(COPIED_TAG_PREFIXES) or k == TAG_TRAINING_RUN}
        # the registry does not return model_id on a version; its source is `models:/<model id>`
        model_id = getattr(source, "model_id", None) or str(source.source).removeprefix("models:/")
        copy = client.create_model_version(
            model_name,
            source.source,
            run_id=source.run_id,
            tags={**copied, TAG_COPY_OF: str(version), TAG_COPY_NOTE: note},
            model_id=model_id,
        )
    return str(copy.version)
