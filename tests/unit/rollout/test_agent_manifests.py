"""The agent's Kubernetes objects: valid for the API server's schema, hardened, and free of secrets."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.contract.keys import Keyring
from edgeloop.contract.messages import Target, new_assignment, parse_assignment
from edgeloop.edge.config import parse_config
from edgeloop.rollout.manifests import (
    agent_configmap,
    agent_daemonset,
    assignment_configmap,
    daemonset_patch,
)
from edgeloop.spec import PipelineSpec, daemonset_name, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
VERSIONS = ["1.30.0", "1.37.0"]
KAFKA = {"bootstrap.servers": "kafka.edge:9092", "security.protocol": "SASL_SSL", "sasl.password": "hunter2"}


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_agent_daemonset_and_its_configmaps_validate(spec: PipelineSpec, version: str) -> None:
    wire = new_assignment(
        Target("group", "plant-north"), model_version="7", assignment_id="ro-1.plant-north.v7", pipeline=spec.name
    )
    objects = [
        agent_configmap(spec, "plant-north", KAFKA, TRUSTED),
        assignment_configmap(spec, "plant-north", "ro-1.plant-north.v7", wire.to_wire(OPERATOR)),
        agent_daemonset(spec, "plant-north", {"edgeloop.dev/group": "plant-north"}),
    ]
    for manifest in objects:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_agent_config_in_the_configmap_is_one_the_agent_accepts_and_holds_no_secret(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    configmap = agent_configmap(spec, "plant-north", KAFKA, TRUSTED)
    text = configmap["data"]["agent.yaml"]
    assert "hunter2" not in text and "sasl.password" not in text
    assert "PRIVATE" not in json.dumps(configmap["data"])
    assert Keyring.from_text(configmap["data"]["trusted.pem"], "trusted.pem").ids == TRUSTED.ids
    monkeypatch.setenv("NODE_NAME", "edge-node-07")
    config = parse_config(yaml.safe_load(text))
    assert (config.device_id, config.group_id, config.control_topic) == ("edge-node-07", "plant-north", False)
    assert config.trusted_keys_file == "/etc/edgeloop/trusted/trusted.pem"
    assert str(config.identity_path) == "/etc/edgeloop/keys/edge-node-07.key"  # this node's item of the Secret
    assert config.assignment_file == "/etc/edgeloop/assignment/assignment.json"


def test_the_pod_runs_the_agent_image_restricted_with_probes_and_the_key_from_a_secret(spec: PipelineSpec) -> None:
    pod = agent_daemonset(spec, "plant-north", {"edgeloop.dev/group": "plant-north"})["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == spec.rollout.agent_image != spec.rollout.image
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    keys = next(v for v in pod["volumes"] if v["name"] == "keys")
    assert keys["secret"]["secretName"] == spec.rollout.agent_secret
    assert all("value" not in e or "key" not in e["name"].lower() for e in container["env"])


def test_a_wave_patch_points_the_pods_at_the_order_of_that_wave(spec: PipelineSpec) -> None:
    patch = daemonset_patch(spec, "plant-north", "7", "registry.example/agent:2", "asg-cm", "ro-1.plant-north.v7")
    template = patch["spec"]["template"]
    assert template["metadata"]["annotations"]["edgeloop.dev/assignment"] == "ro-1.plant-north.v7"
    assert template["spec"]["volumes"] == [{"name": "assignment", "configMap": {"name": "asg-cm", "optional": True}}]
    assert template["spec"]["containers"] == [{"name": "agent", "image": "registry.example/agent:2"}]


def test_the_order_in_its_configmap_verifies_on_the_device(spec: PipelineSpec) -> None:
    assignment = new_assignment(Target("group", "plant-north"), model_version="7", pipeline=spec.name)
    configmap = assignment_configmap(spec, "plant-north", assignment.id, assignment.to_wire(OPERATOR))
    body = configmap["data"]["assignment.json"].encode()
    assert parse_assignment(body, TRUSTED, {"plant-north"}).to_dict() == assignment.to_dict()
    assert json.loads(body)["pipeline"] == spec.name


def test_long_names_get_a_hash_and_stay_distinct(spec: PipelineSpec) -> None:
    long = spec.model_copy(update={"name": "a_very_long_pipeline_name_for_a_plant_with_many_lines"})
    first, second = daemonset_name(long, "production-line-north-a"), daemonset_name(long, "production-line-north-b")
    assert len(first) <= 63 and len(second) <= 63
    assert first != second
    assert daemonset_name(spec, "plant-north") == "factory-maintenance-inference-plant-north"


def test_the_cli_prints_what_a_gateway_and_a_cluster_need(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeloop.cli import main

    monkeypatch.delenv("EDGELOOP_SIGNING_KEY", raising=False)
    monkeypatch.setenv("EDGELOOP_TRUSTED_KEYS", " ".join(TRUSTED.pem().decode().split("\n\n")))

    assert (
        main(
            [
                "agent",
                "manifests",
                "--pipeline",
                "factory_maintenance",
                "--group",
                "plant-north",
                "--bootstrap",
                "k:9092",
            ]
        )
        == 0
    )
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["kind"] for o in objects] == ["ConfigMap", "DaemonSet"]
    for manifest in objects:
        kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)
    assert (
        main(
            [
                "agent",
                "config",
                "--pipeline",
                "factory_maintenance",
                "--group",
                "plant-north",
                "--device-id",
                "gw-1",
                "--bootstrap",
                "k:9092",
            ]
        )
        == 0
    )
    config = parse_config(yaml.safe_load(capsys.readouterr().out))
    assert (config.device_id, config.source.kind, config.http_port) == ("gw-1", "stdin", 9464)


def test_names_cut_to_63_characters_keep_a_hash_of_the_whole_name(spec: PipelineSpec) -> None:
    """A 40-character pipeline: groups plant-0 and plant-1 once shared one agent ConfigMap (the cut lost the digit)."""
    from edgeloop.spec import agent_config_name, assignment_config_name

    long = spec.model_copy(update={"name": "predictive_maintenance_for_spindle_motor"})
    names = [
        make(long, group, *extra)
        for make, extra in ((daemonset_name, ()), (agent_config_name, ()), (assignment_config_name, ("asg-1",)))
        for group in ("plant-0", "plant-1")
    ]
    assert len(set(names)) == len(names)
    assert all(len(n) <= 63 for n in names)
    assert agent_config_name(spec, "plant-north") == "factory-maintenance-inference-plant-north-agent"
