"""The deployment's allowlist: what a spec may pick for Kubernetes, checked at validation, planning and launch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloop.cli import main as cli_main
from edgeloop.deployment import (
    DEPLOYMENT_ENV,
    DeploymentInvalid,
    DeploymentSettings,
    NotAllowed,
    load_deployment,
    parse_deployment,
    refusals,
    require_allowed,
)
from edgeloop.spec import PipelineSpec, load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"
SPEC = load_spec(DEMO)
JOB_IMAGE = "registry.example.com/edgeloop/bundle@sha256:" + "1" * 64
AGENT_IMAGE = "registry.example.com/edgeloop/agent@sha256:" + "2" * 64
PRODUCTION = f"""
kubernetes:
  job_images: [{JOB_IMAGE}]
  agent_images: [{AGENT_IMAGE}]
  namespaces: [edge]
  service_accounts: [edgeloop-rollout]
  kubernetes_conn_ids: [kubernetes_default]
  agent_secrets: [edgeloop-agent-keys]
"""


def spec_with(**rollout: Any) -> PipelineSpec:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"].update(rollout)
    return parse_spec(yaml.safe_dump(data), DEMO)


@pytest.fixture
def production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "deployment.yaml"
    path.write_text(PRODUCTION)
    monkeypatch.setenv(DEPLOYMENT_ENV, str(path))
    return path


def test_without_a_deployment_file_the_local_stacks_values_are_the_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    assert load_deployment() == DeploymentSettings()
    assert refusals(SPEC, load_deployment()) == []
    require_allowed(SPEC)


def test_every_invented_value_is_refused_naming_its_field() -> None:
    invented = spec_with(
        image="evil.example/miner:1",
        agent_image="evil.example/agent:1",
        namespace="kube-system",
        service_account="cluster-admin",
        kubernetes_conn_id="someone_elses",
        agent_secret="stolen-keys",
    )
    found = {r.location: r.message for r in refusals(invented, DeploymentSettings())}
    assert set(found) == {
        "rollout.image",
        "rollout.agent_image",
        "rollout.namespace",
        "rollout.service_account",
        "rollout.kubernetes_conn_id",
        "rollout.agent_secret",
    }
    assert found["rollout.image"] == (
        "'evil.example/miner:1' is not an allowed rollout job image (allowed: ['edgeloop/bundle:latest'])"
    )
    with pytest.raises(NotAllowed, match=r"rollout.namespace: 'kube-system' is not an allowed namespace"):
        require_allowed(invented, DeploymentSettings())


def test_job_and_agent_images_are_allowlisted_separately(production: Path) -> None:
    swapped = spec_with(image=AGENT_IMAGE, agent_image=JOB_IMAGE)
    assert [r.location for r in refusals(swapped, load_deployment())] == ["rollout.image", "rollout.agent_image"]
    assert refusals(spec_with(image=JOB_IMAGE, agent_image=AGENT_IMAGE), load_deployment()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kubernetes:\n  job_images: [registry.example.com/edgeloop/bundle:1.0]\n",
            "job_images: .*not pinned by digest",
        ),
        ("kubernetes:\n  agent_images: [agent@sha256:abc]\n", "agent_images: .*not pinned by digest"),
        ("kubernetes:\n  namespaces: []\n", "kubernetes.namespaces: List should have at least 1 item"),
        ("kubernetes:\n  images: [x]\n", "kubernetes.images: Extra inputs are not permitted"),
        ("- a list\n", "a deployment file is a YAML mapping"),
    ],
)
def test_a_malformed_deployment_file_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(DeploymentInvalid, match=message):
        parse_deployment(text, "deployment.yaml")


def test_the_devstack_images_need_no_digest_but_nothing_else_goes_unpinned() -> None:
    local = parse_deployment(
        "kubernetes:\n  job_images: [edgeloop/bundle:latest]\n  agent_images: [edgeloop/agent:latest]\n"
    )
    assert local.kubernetes.job_images == ["edgeloop/bundle:latest"]


def test_a_deployment_file_that_cannot_be_read_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(DeploymentInvalid, match="cannot be read"):
        load_deployment({DEPLOYMENT_ENV: str(tmp_path / "missing.yaml")})


def test_planning_refuses_a_spec_outside_the_allowlist_before_touching_anything(production: Path) -> None:
    from edgeloop.rollout.admission import RunOrigin
    from edgeloop.rollout.plan import RolloutPlanError
    from edgeloop.rollout.steps import plan_step

    class NoWrites:
        def put_object(self, **kwargs: Any) -> None:
            raise AssertionError("a refused plan writes nothing")

    with pytest.raises(RolloutPlanError, match=r"rollout.image: 'edgeloop/bundle:latest' is not an allowed"):
        plan_step(
            SPEC, NoWrites(), "http://mlflow.invalid", "manual__1", {"model_version": "4"}, None, RunOrigin("manual")
        )


def test_no_job_is_launched_for_a_spec_outside_the_allowlist(production: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeloop.rollout import launch

    launched: list[str] = []
    monkeypatch.setattr(launch, "run_local_job", lambda spec, group, *args: launched.append(group) or {})
    with pytest.raises(NotAllowed, match=r"rollout\.agent_image"):
        launch.launch_group(SPEC, "line-canary", "4", 0, "ro-1", context=None)
    allowed = spec_with(image=JOB_IMAGE, agent_image=AGENT_IMAGE)
    launch.launch_group(allowed, "line-canary", "4", 0, "ro-1", context=None)
    assert launched == ["line-canary"]


def test_spec_validate_applies_the_allowlist_and_knows_the_approvers(
    tmp_path: Path, production: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"].update(approval_required=True, approvers=["admin", "nobody"], agent_image=AGENT_IMAGE)
    path = tmp_path / "factory_maintenance.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["spec", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID (2 errors)" in out
    assert "rollout.image: 'edgeloop/bundle:latest' is not an allowed rollout job image" in out
    assert "rollout.approvers[1]: 'nobody' is not an Airflow user" in out
    data["rollout"].update(approvers=["admin"], image=JOB_IMAGE)
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["spec", "validate", str(path)]) == 0
