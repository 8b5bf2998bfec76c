"""Aliases of the pipeline's registered model: `challenger` (latest candidate) and `champion` (the fleet's).

MLflow has no compare-and-set for aliases. `set_champion` checks the alias it expects
to replace just before moving it, which catches a rollout that lost a race to another;
the rollout DAG runs one at a time per pipeline (max_active_runs=1), which is what
makes the check-then-set safe in practice.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from edgeloop.registry.client import mlflow_errors
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.tags import TAG_CHAMPION_SINCE, TAG_DATASET, TAG_PREVIOUS_CHAMPION
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
_KEEP = object()


def alias_version(client: MlflowClient, model_name: str, alias: str) -> Any | None:
    """The model version an alias points at; None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def set_champion(
    client: MlflowClient, spec: PipelineSpec, version: str | int, *, expected_current: Any = _KEEP
) -> dict[str, Any]:
    """Point `champion` at `version` (the rollout calls this once the fleet runs it).

    `expected_current`: the champion version the caller believes is current (None: no
    champion yet); when given and different, RegistryError and nothing moves. Returns
    `{"model_name", "version", "previous_version", "changed"}`; moving the alias to
    where it already points is a no-op (`changed` False).
    """
    name = spec.registry.model_name
    version = str(version)
    with mlflow_errors(client, f"moving the champion alias of {name} to version {version}"):
        target = client.get_model_version(name, version)
        current = alias_version(client, name, CHAMPION)
        current_version = str(current.version) if current is not None else None
        if expected_current is not _KEEP and current_version != (
            None if expected_current is None else str(expected_current)
        ):
            raise RegistryError(
                f"{name}: champion is version {current_version}, not {expected_current} as expected: "
                "another rollout moved it; nothing changed"
            )
        if current_version == version:
            return {"model_name": name, "version": version, "previous_version": current_version, "changed": False}
        if current_version is not None:
            client.set_model_version_tag(name, str(target.version), TAG_PREVIOUS_CHAMPION, current_version)
        client.set_model_version_tag(name, str(target.version), TAG_CHAMPION_SINCE, f"{time.time():.3f}")
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"model_name": name, "version": version, "previous_version": current_version, "changed": True}


def champion_training_data(client: MlflowClient, spec: PipelineSpec) -> dict[str, Any] | None:
    """Where the champion's training data is (`{"bucket", "train_key", "eval_key", "split_key", "version"}`).

    The drift stage uses the train part as its reference. None when there is no champion.
    """
    name = spec.registry.model_name
    with mlflow_errors(client, f"looking up the champion of {name}"):
        champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    if TAG_DATASET not in champion.tags:
        raise RegistryError(f"{name} version {champion.version}: no '{TAG_DATASET}' tag (not registered by edgeloop?)")
    location: dict[str, Any] = json.loads(champion.tags[TAG_DATASET])
    return {**location, "version": str(champion.version)}
