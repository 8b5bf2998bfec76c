"""What the plugin lets a user write: admins only, Kubernetes values from the deployment's allowlist, real approvers."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.generator.generator_kit import (
    ADMIN,
    BOB,
    DEMO_SPEC,
    FAKE_ACCESS,
    PREFIX,
    VIEWER,
    FakeKafka,
    fake_sources,
    make_client,
    messages,
)

from edgeloop.deployment import DeploymentInvalid, DeploymentSettings, KubernetesAllowlist
from edgeloop.generator.app import GeneratorSettings, create_app
from edgeloop.generator.templates import TEMPLATES
from edgeloop.spec import load_spec

JOB_IMAGE = "registry.example.com/edgeloop/bundle@sha256:" + "a" * 64
AGENT_IMAGE = "registry.example.com/edgeloop/agent@sha256:" + "b" * 64
PRODUCTION = DeploymentSettings(
    kubernetes=KubernetesAllowlist(
        job_images=[JOB_IMAGE],
        agent_images=[AGENT_IMAGE],
        namespaces=["edge-prod", "edge"],
        service_accounts=["edgeloop-rollout-prod"],
        kubernetes_conn_ids=["kubernetes_prod"],
        agent_secrets=["agent-keys-prod"],
    )
)
ALLOWED_IN_PRODUCTION = {
    "image": JOB_IMAGE,
    "agent_image": AGENT_IMAGE,
    "namespace": "edge-prod",
    "service_account": "edgeloop-rollout-prod",
    "kubernetes_conn_id": "kubernetes_prod",
    "agent_secret": "agent-keys-prod",
}


def kafka() -> FakeKafka:
    records = [TEMPLATES["predictive_maintenance"].example_record(i) for i in range(20)]
    return FakeKafka(topics={"plant1.telemetry": messages(records)}, state={"plant1": {"line-canary": 5, "north": 40}})


def draft_of(client: TestClient, **change: Any) -> dict[str, Any]:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=ADMIN).json()["draft"]
    return {**draft, "name": "plant1", **change}


def demo_text(**rollout: str) -> str:
    text = DEMO_SPEC.read_text()
    for key, value in rollout.items():
        line = f"  {key}: {value}\n"
        marker = f"  {key}: "
        if marker in text:
            start = text.index(marker)
            text = text[:start] + line + text[text.index("\n", start) + 1 :]
        else:
            text = text.replace("rollout:\n", f"rollout:\n{line}", 1)
    return text


def stored(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/api/pipelines/factory_maintenance", headers=ADMIN).json())


# --- who may write ----------------------------------------------------------------------------


def test_a_dag_editor_who_is_no_admin_may_not_write_specs(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka())
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    current = stored(client)
    for method, path, body in [
        ("POST", "/api/pipelines", {"text": demo_text().replace("name: factory_maintenance", "name: bobs", 1)}),
        (
            "PUT",
            "/api/pipelines/factory_maintenance",
            {"text": current["text"] + "# bob\n", "version": current["version"]},
        ),
        ("DELETE", f"/api/pipelines/factory_maintenance?version={current['version']}", None),
    ]:
        response = client.request(method, path, json=body, headers=BOB)
        assert response.status_code == 403, (method, response.text)
        assert response.json()["message"] == "writing pipeline specs needs an Airflow admin"
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before
    assert client.get("/api/session", headers=BOB).json()["can_edit"] is False
    assert client.get("/api/session", headers=ADMIN).json()["can_edit"] is True
    # reading and checking stay open to him
    assert client.post("/api/validate", json={"text": current["text"]}, headers=BOB).json()["valid"]


def test_an_admin_writes(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka())
    current = stored(client)
    text = current["text"].replace("soak: 60s", "soak: 2m")
    response = client.put(
        "/api/pipelines/factory_maintenance", json={"text": text, "version": current["version"]}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert load_spec(tmp_path / "factory_maintenance.yaml").rollout.soak.total_seconds() == 120


# --- the deployment's allowlist ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image", "evil.example/miner:latest"),
        ("agent_image", "edgeloop/agent@sha256:" + "c" * 64),
        ("namespace", "kube-system"),
        ("service_account", "cluster-admin"),
        ("kubernetes_conn_id", "someone_elses_cluster"),
        ("agent_secret", "other-team-keys"),
    ],
)
def test_a_kubernetes_value_outside_the_allowlist_is_refused_naming_the_field(
    tmp_path: Path, field: str, value: str
) -> None:
    client = make_client(tmp_path, kafka())
    current = stored(client)
    before = (tmp_path / "factory_maintenance.yaml").read_bytes()
    text = demo_text(**{field: value})
    response = client.put(
        "/api/pipelines/factory_maintenance", json={"text": text, "version": current["version"]}, headers=ADMIN
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["location"] == f"rollout.{field}"
    assert repr(value) in error["message"] and "is not an allowed" in error["message"]
    assert (tmp_path / "factory_maintenance.yaml").read_bytes() == before
    checked = client.post("/api/validate", json={"text": text}, headers=VIEWER).json()
    assert not checked["valid"] and checked["errors"] == [error]


def test_a_production_deployment_refuses_the_local_defaults_and_takes_its_own_values(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka(), with_demo=False, deployment=PRODUCTION)
    local = client.post("/api/validate", json={"text": demo_text()}, headers=ADMIN).json()
    refused = sorted(f"rollout.{f}" for f in ALLOWED_IN_PRODUCTION if f != "namespace")  # `edge` is allowed
    assert sorted(e["location"] for e in local["errors"]) == refused
    chosen = demo_text(**ALLOWED_IN_PRODUCTION)
    created = client.post("/api/pipelines", json={"text": chosen, "create_topics": False}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert load_spec(tmp_path / "factory_maintenance.yaml").rollout.image == JOB_IMAGE


def test_a_draft_gets_the_values_the_deployment_allows(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka(), with_demo=False, deployment=PRODUCTION)
    rendered = client.post("/api/render", json=draft_of(client), headers=ADMIN).json()
    assert rendered["valid"], rendered["errors"]
    assert f"image: {JOB_IMAGE}" in rendered["text"] and "namespace:" not in rendered["text"]
    created = client.post("/api/pipelines", json={"draft": draft_of(client), "create_topics": False}, headers=ADMIN)
    assert created.status_code == 201, created.text
    spec = load_spec(tmp_path / "plant1.yaml")
    assert (spec.rollout.agent_image, spec.rollout.service_account) == (AGENT_IMAGE, "edgeloop-rollout-prod")
    assert spec.rollout.namespace == "edge", "a spec default the deployment allows stays"


def test_unusable_deployment_settings_stop_every_write(tmp_path: Path) -> None:
    def broken() -> DeploymentSettings:
        raise DeploymentInvalid("/etc/edgeloop/deployment.yaml: kubernetes.job_images: not pinned by digest")

    shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name)
    app = create_app(
        GeneratorSettings(pipelines_dir=tmp_path), FAKE_ACCESS, replace(fake_sources(kafka()), deployment=broken)
    )
    client = TestClient(app, root_path=PREFIX)
    before = (tmp_path / "factory_maintenance.yaml").read_bytes()
    current = stored(client)
    response = client.put(
        "/api/pipelines/factory_maintenance",
        json={"text": current["text"] + "# edit\n", "version": current["version"]},
        headers=ADMIN,
    )
    assert response.status_code == 503
    assert "deployment settings are not usable: /etc/edgeloop/deployment.yaml" in response.json()["message"]
    assert (tmp_path / "factory_maintenance.yaml").read_bytes() == before


# --- approvers ----------------------------------------------------------------------------------


def test_a_cautious_draft_names_the_writing_admin_as_approver_unless_it_names_others(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka(), with_demo=False)
    mine = client.post("/api/render", json=draft_of(client, preset="cautious"), headers=ADMIN).json()
    assert mine["valid"], mine["errors"]
    assert "approvers: [admin]" in mine["text"]
    theirs = client.post(
        "/api/render", json=draft_of(client, preset="cautious", approvers=["alice", "bob"]), headers=ADMIN
    )
    assert "approvers: [alice, bob]" in theirs.json()["text"]
    standard = client.post("/api/render", json=draft_of(client), headers=ADMIN).json()
    assert "approvers" not in standard["text"]


def test_an_approver_who_is_no_airflow_user_is_refused_naming_the_field(tmp_path: Path) -> None:
    client = make_client(tmp_path, kafka())
    current = stored(client)
    text = demo_text(approval_required="true", approvers="[alice, nobody]")
    response = client.put(
        "/api/pipelines/factory_maintenance", json={"text": text, "version": current["version"]}, headers=ADMIN
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"location": "rollout.approvers[1]", "message": "'nobody' is not an Airflow user"}
    ]
    ok = demo_text(approval_required="true", approvers="[alice, bob]")
    saved = client.put(
        "/api/pipelines/factory_maintenance", json={"text": ok, "version": current["version"]}, headers=ADMIN
    )
    assert saved.status_code == 200, saved.text
    assert load_spec(tmp_path / "factory_maintenance.yaml").rollout.approvers == ["alice", "bob"]
