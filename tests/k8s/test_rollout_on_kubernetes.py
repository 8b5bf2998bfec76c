"""The rollout stage against a real API server: job pods, agent DaemonSet waves, admission and RBAC.

Each test works under its own pipeline name (with a random suffix), so its per-group agent
DaemonSets (`daemonset_name(spec, group)`) and ConfigMaps are its own while the KWOK edge nodes
are shared. KWOK runs no container: what the API server checks (schema, Pod Security `restricted`,
RBAC, rolling updates) is real; what the agent in the pod would do is covered by the agent's tests.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import Keyring, public_hex
from edgeloop.contract.messages import ControlRejected, parse_assignment
from edgeloop.devstack import k8s
from edgeloop.devstack.config import REPO_ROOT
from edgeloop.rollout.job import run_kubernetes_wave
from edgeloop.rollout.manifests import agent_configmap, agent_daemonset
from edgeloop.rollout.pods import rollout_pod_operator
from edgeloop.spec import PipelineSpec, agent_config_name, daemonset_name
from tests.helpers.keys import INTRUDER, OPERATOR, TRUSTED, device_key

pytestmark = pytest.mark.k8s

IMAGE_V1 = "registry.example/edgeloop/agent:1"
IMAGE_V2 = "registry.example/edgeloop/agent:2"
KAFKA = {"bootstrap.servers": "kafka.edge.svc:9092"}


def artifact_of(version: str) -> ArtifactRef:
    """A stand-in for the registry: where version's ONNX file would be (KWOK pods fetch nothing)."""
    return ArtifactRef(f"https://models.example/{version}.onnx", f"{int(version):064x}", 1000 + int(version))


def wave(spec: PipelineSpec, group: str, version: str, apis: tuple[Any, Any], **kwargs: Any) -> dict[str, Any]:
    """`run_kubernetes_wave` as the rollout job calls it, with the rollout ServiceAccount's clients."""
    kwargs.setdefault("image", IMAGE_V2)
    kwargs.setdefault("timeout_s", 60)
    kwargs.setdefault("poll_s", 0.5)
    return run_kubernetes_wave(
        spec,
        group,
        version,
        signer=OPERATOR,
        assignment_id=f"ro-k8s.{group}.v{version}",
        apps_api=apis[0],
        core_api=apis[1],
        artifacts=artifact_of,
        **kwargs,
    )


def spec_named(spec: PipelineSpec, name: str, **rollout: Any) -> PipelineSpec:
    """The demo spec under another pipeline name (and rollout settings), as the API server sees it."""
    return spec.model_copy(update={"name": name, "rollout": spec.rollout.model_copy(update=rollout)})


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def group_labels(spec: PipelineSpec, group: str) -> dict[str, str]:
    return k8s.edge_groups_from_specs([spec])[group]


def group_nodes(admin_client: Any, spec: PipelineSpec, group: str) -> list[str]:
    """The KWOK edge nodes of a group, as the DaemonSet's node selector finds them."""
    from kubernetes import client

    selector = ",".join(f"{k}={v}" if v else k for k, v in group_labels(spec, group).items())
    return sorted(n.metadata.name for n in client.CoreV1Api(admin_client).list_node(label_selector=selector).items)


def wait_rolled_out(apps: Any, name: str, namespace: str, nodes: int, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        ds = apps.read_namespaced_daemon_set(name, namespace)
        s = ds.status
        if (
            (s.observed_generation or 0) >= ds.metadata.generation
            and s.desired_number_scheduled == nodes
            and s.updated_number_scheduled == s.number_available == nodes
        ):
            return ds
        if time.monotonic() > deadline:
            raise AssertionError(f"DaemonSet {namespace}/{name} not on its {nodes} nodes after {timeout_s}s: {s}")
        time.sleep(0.5)


@pytest.fixture
def group_daemonset(admin_client: Any) -> Any:
    """Deploy a group's agent as the platform team would (as admin): the agent Secret with one key per node
    (`<node>.key`, as `edgeloop agent enrol` makes them), the agent's ConfigMap with the trusted keys and its
    DaemonSet at IMAGE_V1; wait until it runs on the group's nodes."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    apps, core = client.AppsV1Api(admin_client), client.CoreV1Api(admin_client)
    created: list[tuple[str, str, str]] = []

    def make(spec: PipelineSpec, group: str) -> str:
        name, namespace = daemonset_name(spec, group), spec.rollout.namespace
        node_keys = {
            f"{node}.key": device_key(spec.name, node).private_pem().decode()
            for node in group_nodes(admin_client, spec, group)
        }
        secret = {"metadata": {"name": spec.rollout.agent_secret}, "stringData": node_keys}
        try:
            core.create_namespaced_secret(namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.patch_namespaced_secret(spec.rollout.agent_secret, namespace, {"stringData": node_keys})
        core.create_namespaced_config_map(namespace, agent_configmap(spec, group, KAFKA, TRUSTED))
        apps.create_namespaced_daemon_set(
            namespace, agent_daemonset(spec, group, group_labels(spec, group), image=IMAGE_V1)
        )
        created.append((namespace, name, spec.name))
        wait_rolled_out(apps, name, namespace, len(group_nodes(admin_client, spec, group)))
        return name

    yield make
    for namespace, name, pipeline in created:
        apps.delete_namespaced_daemon_set(name, namespace)
        core.delete_collection_namespaced_config_map(namespace, label_selector=f"edgeloop.dev/pipeline={pipeline}")


@pytest.fixture(scope="module")
def rollout_apis(rollout_apps_api: Any, rollout_kubeconfig: Path) -> tuple[Any, Any]:
    from kubernetes import client

    return rollout_apps_api, client.CoreV1Api(k8s.api_client(rollout_kubeconfig))


def group_pods(admin_client: Any, spec: PipelineSpec, group: str) -> list[Any]:
    from kubernetes import client

    name = daemonset_name(spec, group)
    pods = client.CoreV1Api(admin_client).list_namespaced_pod(
        spec.rollout.namespace, label_selector=f"app.kubernetes.io/instance={name}"
    )
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


class TaskInstanceRecord:
    """What KubernetesPodOperator reads from the task instance: ids, try number, and XCom pushes."""

    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id, self.task_id, self.map_index, self.try_number = dag_id, task_id, -1, 1
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_rollout_job_pod_is_admitted_scheduled_off_edge_nodes_and_completes(
    demo_spec: PipelineSpec, launcher_kubeconfig: Path, admin_client: Any
) -> None:
    from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction
    from kubernetes import client

    operator = rollout_pod_operator(demo_spec, "line-canary", "7", 0, "ro-k8stest0001")
    # KWOK runs no container: no logs to stream and no XCom sidecar to exec into
    operator.get_logs = False
    operator.do_xcom_push = False
    operator.on_finish_action = OnFinishAction.KEEP_POD
    operator.config_file = str(launcher_kubeconfig)
    ti = TaskInstanceRecord(f"{demo_spec.name}__rollout", "rollout_job")

    operator.execute({"ti": ti, "run_id": "manual__k8s-tier", "dag": None})

    pod = client.CoreV1Api(admin_client).read_namespaced_pod(ti.pushed["pod_name"], ti.pushed["pod_namespace"])
    assert pod.metadata.namespace == demo_spec.rollout.namespace
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert pod.spec.node_name.startswith("worker-"), "the edge taint keeps job pods off edge nodes"
    assert pod.spec.service_account_name == demo_spec.rollout.service_account
    assert pod.spec.containers[0].args[:3] == ["rollout-job", "--pipeline", demo_spec.name]
    client.CoreV1Api(admin_client).delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)


def test_rendered_rollout_pod_with_its_xcom_sidecar_passes_the_edge_namespace_admission(
    demo_spec: PipelineSpec, launcher_kubeconfig: Path
) -> None:
    from kubernetes import client

    from edgeloop.rollout.pods import render_pod

    pod = render_pod(rollout_pod_operator(demo_spec, "plant-north", "7", 1, "ro-k8stest0002"))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["base", "airflow-xcom-sidecar"]
    core = client.CoreV1Api(k8s.api_client(launcher_kubeconfig))

    # a server-side dry run goes through authorization, defaulting, validation and admission
    # (Pod Security `restricted` on the edge namespace), and stores nothing
    admitted = core.create_namespaced_pod(demo_spec.rollout.namespace, pod, dry_run="All")

    assert admitted.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert all(c.security_context.allow_privilege_escalation is False for c in admitted.spec.containers)


def test_rollout_wave_orders_the_group_agents_and_follows_them_across_edge_nodes(
    demo_spec: PipelineSpec, group_daemonset: Any, rollout_apis: tuple[Any, Any], admin_client: Any
) -> None:
    from kubernetes import client

    spec = spec_named(demo_spec, unique("k8s_wave"))
    group_daemonset(spec, "line-canary")
    group_daemonset(spec, "plant-north")
    nodes = group_nodes(admin_client, spec, "line-canary")

    result = wave(spec, "line-canary", "2", rollout_apis, timeout_s=90)

    assert result["complete"] is True
    assert (result["desired"], result["updated"], result["available"]) == (len(nodes),) * 3
    pods = group_pods(admin_client, spec, "line-canary")
    assert sorted(p.spec.node_name for p in pods) == nodes, "one pod on each edge node of the group, nowhere else"
    orders = {next(v.config_map.name for v in p.spec.volumes if v.name == "assignment") for p in pods}
    assert len(orders) == 1, "every new pod mounts the wave's order"
    stored = client.CoreV1Api(admin_client).read_namespaced_config_map(orders.pop(), spec.rollout.namespace)
    wire = stored.data["assignment.json"].encode()
    order = parse_assignment(wire, TRUSTED, {"line-canary"})
    assert (order.model_version, order.pipeline, order.artifact) == ("2", spec.name, artifact_of("2"))
    assert order.key_id == OPERATOR.key_id
    with pytest.raises(ControlRejected, match="not a trusted key"):
        parse_assignment(wire, Keyring.of([INTRUDER.public]), {"line-canary"})
    agent_cm = client.CoreV1Api(admin_client).read_namespaced_config_map(
        agent_config_name(spec, "line-canary"), spec.rollout.namespace
    )
    assert Keyring.from_text(agent_cm.data["trusted.pem"], "trusted.pem").ids == TRUSTED.ids, "public keys only"
    agent_secret = client.CoreV1Api(admin_client).read_namespaced_secret(
        spec.rollout.agent_secret, spec.rollout.namespace
    )
    assert {f"{node}.key" for node in nodes} <= set(agent_secret.data), "a key for every node of the group"
    for pod in pods:
        assert pod.spec.containers[0].image == IMAGE_V2
        assert pod.metadata.annotations["edgeloop.dev/model-version"] == "2"
        assert pod.metadata.annotations["edgeloop.dev/assignment"] == order.id
        assert {e.name for e in pod.spec.containers[0].env} == {"NODE_NAME"}, "no secret in the pod spec"
        volumes = {v.name: v for v in pod.spec.volumes}
        assert volumes["keys"].secret.secret_name == spec.rollout.agent_secret
        assert volumes["trusted"].config_map.name == agent_config_name(spec, "line-canary")
    untouched = group_pods(admin_client, spec, "plant-north")
    assert {p.spec.containers[0].image for p in untouched} == {IMAGE_V1}, "a wave changes only its own group"


def test_local_rollout_job_process_rolls_out_with_the_service_account_kubeconfig(
    demo_spec: PipelineSpec,
    group_daemonset: Any,
    rollout_kubeconfig: Path,
    admin_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    from edgeloop.rollout.launch import run_local_job
    from edgeloop.spec import load_spec

    data = yaml.safe_load((REPO_ROOT / "include" / "pipelines" / f"{demo_spec.name}.yaml").read_text())
    data["name"] = unique("k8s_local_job")
    data["rollout"]["agent_image"] = IMAGE_V2
    for group in data["groups"]:
        group["strategy"] = "kubernetes"
    spec_file = tmp_path / f"{data['name']}.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_file)
    group_daemonset(spec, "plant-north")
    # what the job pod would get: its pipelines, its secrets, and (in-cluster) its service account
    monkeypatch.setenv("EDGELOOP_PIPELINES_DIR", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(rollout_kubeconfig))
    monkeypatch.setenv("EDGELOOP_SIGNING_KEY", OPERATOR.private_pem().decode())
    monkeypatch.setenv("EDGELOOP_TRUSTED_KEYS", public_hex(OPERATOR.public))
    monkeypatch.setenv(
        "AIRFLOW_CONN_EDGELOOP_KAFKA", json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:9"}})
    )

    # the baseline "0" needs no ONNX file from the registry (there is no S3 or MLflow in this tier)
    result = run_local_job(spec, "plant-north", "0", 1, "ro-k8stest0003")

    assert (result["strategy"], result["complete"], result["wave"]) == ("kubernetes", True, 1)
    assert result["daemonset"] == f"edge/{daemonset_name(spec, 'plant-north')}"
    assert {p.spec.containers[0].image for p in group_pods(admin_client, spec, "plant-north")} == {IMAGE_V2}


def test_unpullable_image_stalls_the_rollout_and_the_previous_version_restores_it(
    demo_spec: PipelineSpec, group_daemonset: Any, rollout_apis: tuple[Any, Any], admin_client: Any
) -> None:
    spec = spec_named(demo_spec, unique("k8s_stall"))
    group_daemonset(spec, "plant-south")
    nodes = len(group_nodes(admin_client, spec, "plant-south"))
    budget = math.ceil(nodes * int(spec.rollout.max_unavailable.rstrip("%")) / 100)  # maxUnavailable rounds up

    stalled = wave(
        spec, "plant-south", "3", rollout_apis, image="registry.example/edgeloop/agent:unpullable", timeout_s=6
    )

    assert stalled["complete"] is False
    assert stalled["available"] == nodes - budget, "maxUnavailable nodes go down, the rest keep serving"

    restored = wave(spec, "plant-south", "1", rollout_apis, image=IMAGE_V1)

    assert restored["complete"] is True
    assert {p.spec.containers[0].image for p in group_pods(admin_client, spec, "plant-south")} == {IMAGE_V1}


def api_message(exc: Any) -> str:
    return str(json.loads(exc.body)["message"])


def test_api_server_rejects_invalid_patches_that_offline_checks_let_through(
    demo_spec: PipelineSpec, group_daemonset: Any, rollout_apis: tuple[Any, Any]
) -> None:
    from kubernetes.client.exceptions import ApiException

    spec = spec_named(demo_spec, unique("k8s_invalid"))
    name = group_daemonset(spec, "line-canary")

    with pytest.raises(ApiException) as no_image:
        wave(spec, "line-canary", "4", rollout_apis, image="", timeout_s=5)
    assert no_image.value.status == 422
    assert "spec.template.spec.containers[0].image: Required value" in api_message(no_image.value)

    # "0%" passes the spec's pattern; the API server knows a DaemonSet without surge needs a budget
    zero_budget = spec_named(demo_spec, spec.name, max_unavailable="0%")
    with pytest.raises(ApiException) as no_budget:
        wave(zero_budget, "line-canary", "4", rollout_apis, timeout_s=5)
    assert no_budget.value.status == 422
    assert "spec.updateStrategy.rollingUpdate.maxUnavailable" in api_message(no_budget.value)

    rollout_apps_api = rollout_apis[0]
    with pytest.raises(ApiException) as bad_label:
        rollout_apps_api.patch_namespaced_daemon_set(
            name, spec.rollout.namespace, {"spec": {"template": {"metadata": {"labels": {"model version": "4"}}}}}
        )
    assert bad_label.value.status == 422
    assert 'spec.template.labels: Invalid value: "model version"' in api_message(bad_label.value)

    unchanged = rollout_apps_api.read_namespaced_daemon_set(name, spec.rollout.namespace)
    assert unchanged.spec.template.spec.containers[0].image == IMAGE_V1


def test_a_whole_number_rollout_budget_reaches_the_api_server_as_a_node_count(
    demo_spec: PipelineSpec, group_daemonset: Any, rollout_apis: tuple[Any, Any]
) -> None:
    spec = spec_named(demo_spec, unique("k8s_budget"), max_unavailable="2")
    name = group_daemonset(spec, "plant-north")

    result = wave(spec, "plant-north", "6", rollout_apis)

    assert result["complete"] is True
    ds = rollout_apis[0].read_namespaced_daemon_set(name, spec.rollout.namespace)
    assert ds.spec.update_strategy.rolling_update.max_unavailable == 2


def test_rollout_service_account_cannot_write_outside_the_edge_namespace(
    demo_spec: PipelineSpec, group_daemonset: Any, rollout_apis: tuple[Any, Any]
) -> None:
    from kubernetes.client.exceptions import ApiException

    elsewhere = spec_named(demo_spec, unique("k8s_rbac"), namespace="default")
    group_daemonset(elsewhere, "line-canary")

    with pytest.raises(ApiException) as denied:
        wave(elsewhere, "line-canary", "5", rollout_apis, timeout_s=5)

    assert denied.value.status == 403
    message = api_message(denied.value)
    assert 'User "system:serviceaccount:edge:edgeloop-rollout" cannot create resource "configmaps"' in message
    assert 'in the namespace "default"' in message
