"""The config_push DAG carries configuration only: a model reaches devices through the rollout and its gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import OPERATOR

from edgeloop.factory.stages import build_config_push
from edgeloop.spec import load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


class Run:
    run_id = "manual__push_1"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the publish task hands to push_assignment (no Kafka: the call is recorded)."""
    from edgeloop import connections
    from edgeloop.contract.messages import Target, new_assignment
    from edgeloop.fleet import control

    calls: list[dict[str, Any]] = []

    def push(spec: Any, kafka: Any, signer: Any, **kwargs: Any) -> Any:
        assert signer.key_id == OPERATOR.key_id
        calls.append(kwargs)
        return new_assignment(
            Target("group", kwargs["group"]),
            model_version=kwargs.get("model_version"),
            config=kwargs.get("config"),
            assignment_id=kwargs["assignment_id"],
            pipeline=spec.name,
        )

    monkeypatch.setattr(control, "push_assignment", push)
    monkeypatch.setattr(connections.PipelineClients, "kafka", lambda self: {"bootstrap.servers": "fake:9092"})
    monkeypatch.setenv("EDGELOOP_SIGNING_KEY", OPERATOR.private_pem().decode())
    return calls


def publish(params: dict[str, Any]) -> Any:
    dag = build_config_push(load_spec(DEMO))
    return dag.get_task("publish_assignment").python_callable(params=params, dag_run=Run())  # type: ignore[attr-defined]


def test_config_push_offers_no_model_version_param() -> None:
    dag = build_config_push(load_spec(DEMO))
    assert set(dag.params.keys()) == {"group", "config", "timeout_seconds"}


def test_a_model_version_in_the_run_conf_never_reaches_the_assignment(published: list[dict[str, Any]]) -> None:
    result = publish({"group": "line-canary", "config": {"telemetry_interval_s": 2.0}, "model_version": "7"})
    [call] = published
    assert call.get("model_version") is None
    assert call["config"] == {"telemetry_interval_s": 2.0}
    assert result["assignment"].get("model_version") is None


def test_a_push_without_configuration_is_refused_and_names_the_rollout(published: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=r"params.config: .*rollout DAG"):
        publish({"group": "line-canary", "config": {}, "model_version": "7"})
    assert published == []
