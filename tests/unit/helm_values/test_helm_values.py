"""helm-values/ and the Dockerfile: manifests validate against Kubernetes, values against the Airflow chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgeloop.spec import PipelineSpec, load_spec

ROOT = Path(__file__).resolve().parents[3]
HELM = ROOT / "helm-values"
VALUES_FILES = ("airflow.yaml", "airflow-gitsync.yaml")
MANIFEST_FILES = sorted(p for p in HELM.glob("*.yaml") if p.name not in {*VALUES_FILES, "airflow-chart-keys.yaml"})
KUBERNETES_VERSIONS = ("1.30", "1.33", "1.37")

# Required fields of the Strimzi custom resources we use (Strimzi docs, kafka.strimzi.io/v1beta2):
# their CRD schemas are not available offline, so these are checked by hand.
STRIMZI_REQUIRED = {
    "Kafka": ("spec.kafka.listeners", "spec.kafka.version", "spec.entityOperator.topicOperator"),
    "KafkaNodePool": ("spec.replicas", "spec.roles", "spec.storage.type", "metadata.labels.strimzi.io/cluster"),
    "KafkaTopic": ("spec.partitions", "spec.replicas", "spec.topicName", "metadata.labels.strimzi.io/cluster"),
    "KafkaUser": ("spec.authentication.type", "metadata.labels.strimzi.io/cluster"),
}
# a YAML key or JSON field that names a credential, followed by a literal value; or an AWS key id
SECRET_LOOKING = re.compile(
    r"""(?im)(["']?[\w.-]*(password|passwd|token|secret[_-]?key|access[_-]?key)["']?\s*:\s*["']?[^\s"'{]{6,}"""
    r"""|AKIA[0-9A-Z]{12,})"""
)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(ROOT / "include" / "pipelines" / "factory_maintenance.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _all_resources() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in MANIFEST_FILES for doc in _documents(path)]


def _get(obj: Any, dotted: str) -> Any:
    # label keys contain dots: try the longest remaining key first
    parts = dotted.split(".")
    while parts:
        for size in range(len(parts), 0, -1):
            key = ".".join(parts[:size])
            if isinstance(obj, dict) and key in obj:
                obj, parts = obj[key], parts[size:]
                break
        else:
            raise KeyError(dotted)
    return obj


def _pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    kind = resource["kind"]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return [resource["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [resource["spec"]]
    return []


# --- manifests ---------------------------------------------------------------------------------


def test_the_manifests_are_there() -> None:
    names = {p.name for p in MANIFEST_FILES}
    expected = {"namespaces.yaml", "rbac-rollout.yaml", "kafka-strimzi.yaml", "mlflow.yaml", "minio.yaml"}
    assert expected | {"label-studio.yaml", "monitoring.yaml"} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_resources_validate_against_kubernetes(version: str) -> None:
    validated = 0
    for name, resource in _all_resources():
        if resource["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {resource['kind']}/{resource['metadata']['name']} on {version}: {exc.message}")
        validated += 1
    assert validated >= 25


def test_an_invalid_manifest_is_caught() -> None:
    deployment = next(r for _, r in _all_resources() if r["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 42
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_strimzi_resources_have_their_required_fields() -> None:
    seen = set()
    for name, resource in _all_resources():
        if not resource["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        assert resource["apiVersion"] == "kafka.strimzi.io/v1beta2", name
        seen.add(resource["kind"])
        for field in STRIMZI_REQUIRED[resource["kind"]]:
            _get(resource, field)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", resource["metadata"]["name"]), name
    assert seen == set(STRIMZI_REQUIRED)


def test_kafka_topics_are_the_demo_pipelines_topics(spec: PipelineSpec) -> None:
    from edgeloop.fleet.topics import topic_plan

    resources = [r for _, r in _all_resources() if r["apiVersion"].startswith("kafka.strimzi.io/")]
    topics = {r["spec"]["topicName"]: r["spec"] for r in resources if r["kind"] == "KafkaTopic"}
    assert set(topics) == set(spec.all_topics)
    brokers = next(r["spec"]["replicas"] for r in resources if r["kind"] == "KafkaNodePool")
    kafka = next(r for r in resources if r["kind"] == "Kafka")
    min_isr = int(kafka["spec"]["kafka"]["config"]["min.insync.replicas"])
    planned = {plan.name: plan for plan in topic_plan(spec, ground_truth=False)}
    for name, topic in topics.items():
        assert topic["partitions"] == planned[name].partitions, name
        assert min_isr < topic["replicas"] <= brokers, name
        assert planned[name].config.get("cleanup.policy") == topic.get("config", {}).get("cleanup.policy"), name


def test_the_secret_check_sees_credentials() -> None:
    assert SECRET_LOOKING.search("password: hunter2hunter2")
    assert SECRET_LOOKING.search('{"login": "u", "password": "s3cr3tvalue"}')
    assert SECRET_LOOKING.search("aws_access_key: AKIAABCDEFGHIJKLMNOP")
    assert not SECRET_LOOKING.search("credentialsSecret: edgeloop-git-credentials")
    assert not SECRET_LOOKING.search("valueFrom: {secretKeyRef: {name: edgeloop-minio, key: root-password}}")


def test_no_secret_values_in_any_file() -> None:
    assert not [r for _, r in _all_resources() if r["kind"] == "Secret"], "Secrets are created out of band"
    for path in [*MANIFEST_FILES, *(HELM / name for name in VALUES_FILES)]:
        assert not SECRET_LOOKING.search(path.read_text()), path.name


def test_containers_are_pinned_non_root_and_bounded() -> None:
    containers = 0
    for name, resource in _all_resources():
        for pod in _pod_specs(resource):
            assert pod["securityContext"]["runAsNonRoot"] is True, (name, resource["metadata"]["name"])
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                where = (name, container["name"])
                assert re.search(r":[\w.\-]+$", container["image"]) and not container["image"].endswith(":latest"), (
                    where
                )
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], where
                for env in container.get("env", []):
                    if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", env["name"]) and env.get("value") not in {
                        "true",
                        "false",
                    }:
                        assert "valueFrom" in env, f"{where}: {env['name']} must come from a Secret"
                containers += 1
    assert containers >= 6


# --- RBAC ------------------------------------------------------------------------------------------


def _rbac() -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in _documents(HELM / "rbac-rollout.yaml")}


def test_rollout_job_may_order_agents_in_the_edge_namespace_and_read_nodes_only(spec: PipelineSpec) -> None:
    rbac = _rbac()
    account = rbac[("ServiceAccount", spec.rollout.service_account)]
    assert account["metadata"]["namespace"] == spec.rollout.namespace

    role = rbac[("Role", "edgeloop-rollout")]
    assert role["metadata"]["namespace"] == spec.rollout.namespace
    grants = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert grants == {
        (("apps",), ("daemonsets",)): {"get", "list", "watch", "patch"},
        (("",), ("pods",)): {"get", "list", "watch"},
        (("",), ("configmaps",)): {"create", "get", "update"},
    }
    cluster_role = rbac[("ClusterRole", "edgeloop-rollout-read-nodes")]
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]

    for kind, name in (("RoleBinding", "edgeloop-rollout"), ("ClusterRoleBinding", "edgeloop-rollout-read-nodes")):
        binding = rbac[(kind, name)]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": spec.rollout.service_account, "namespace": spec.rollout.namespace}
        ]


def test_no_rbac_rule_uses_wildcards_or_touches_secrets() -> None:
    for (kind, name), resource in _rbac().items():
        for rule in resource.get("rules", []):
            values = [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
            assert "*" not in values, (kind, name)
            assert "secrets" not in rule["resources"], (kind, name)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), (kind, name)


def test_the_launcher_role_is_bound_to_airflows_worker_account() -> None:
    binding = _rbac()[("RoleBinding", "edgeloop-pod-launcher")]
    assert binding["metadata"]["namespace"] == "edge"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}]


# --- Airflow chart values -----------------------------------------------------------------------


def _chart_keys() -> dict[str, Any]:
    return yaml.safe_load((HELM / "airflow-chart-keys.yaml").read_text())


def _leaf_paths(values: dict[str, Any], free_form: set[str], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in free_form or not isinstance(value, dict) or not value:
            paths.append(path)
        else:
            paths += _leaf_paths(value, free_form, f"{path}.")
    return paths


@pytest.mark.parametrize("name", VALUES_FILES)
def test_values_use_only_keys_the_chart_knows(name: str) -> None:
    chart = _chart_keys()
    known = set(chart["keys"]) | set(chart["free_form"])
    values = yaml.safe_load((HELM / name).read_text())
    unknown = [p for p in _leaf_paths(values, set(chart["free_form"])) if p not in known]
    assert unknown == [], f"{name}: keys not in the chart's values (airflow-chart-keys.yaml): {unknown}"


def test_the_key_check_rejects_a_misspelt_key() -> None:
    chart = _chart_keys()
    known = set(chart["keys"]) | set(chart["free_form"])
    assert "triggerer.enable" not in known
    assert _leaf_paths({"triggerer": {"enable": True}}, set(chart["free_form"])) == ["triggerer.enable"]


def test_airflow_values_run_the_bundle_the_way_edgeloop_needs() -> None:
    values = yaml.safe_load((HELM / "airflow.yaml").read_text())
    requirements = (ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^apache-airflow==([\w.]+)$", requirements, re.MULTILINE)
    assert pinned and values["airflowVersion"] == pinned.group(1)
    assert values["executor"] in _chart_keys()["executors"]
    assert values["triggerer"]["enabled"] is True, "asset watchers and deferrable tasks need the triggerer"
    assert values["statsd"]["enabled"] is True and values["config"]["metrics"]["statsd_on"] == "True"
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"secretRef": {"name": "edgeloop-connections"}} in env_from
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["EDGELOOP_PIPELINES_DIR"].endswith("/pipelines")
    assert json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"] == {"in_cluster": True}
    for entry in values["env"]:
        assert not entry["name"].startswith("AIRFLOW_CONN_EDGELOOP"), "edgeloop connections hold credentials: Secret"


def test_gitsync_overlay_points_python_at_the_synced_repository() -> None:
    overlay = yaml.safe_load((HELM / "airflow-gitsync.yaml").read_text())
    assert overlay["dags"]["gitSync"]["enabled"] is True
    env = {e["name"]: e["value"] for e in overlay["env"]}
    base_env = {e["name"] for e in yaml.safe_load((HELM / "airflow.yaml").read_text())["env"]}
    assert set(env) == base_env, "Helm replaces lists: the overlay must repeat every env entry"
    assert env["PYTHONPATH"] == "/opt/airflow/dags/repo/include"
    assert env["EDGELOOP_PIPELINES_DIR"] == "/opt/airflow/dags/repo/include/pipelines"


# --- monitoring manifests stay in sync with monitoring/ --------------------------------------------


def test_in_cluster_prometheus_config_is_the_rendered_template() -> None:
    config_map = next(r for r in _documents(HELM / "monitoring.yaml") if r["metadata"]["name"] == "prometheus-config")
    template = Template((ROOT / "monitoring" / "prometheus" / "prometheus.yml.tmpl").read_text())
    expected = template.substitute(
        scrape_interval="15s",
        rules_dir="/etc/prometheus/rules",
        pushgateway="pushgateway.monitoring.svc:9091",
        exporter="airflow-api-server.airflow.svc:8080",
        exporter_path="/edgeloop/metrics",
        airflow_statsd="airflow-statsd.airflow.svc:9102",
        alertmanager="alertmanager.monitoring.svc:9093",
    )
    assert yaml.safe_load(config_map["data"]["prometheus.yml"]) == yaml.safe_load(expected)


def test_in_cluster_grafana_provisioning_matches_monitoring_grafana() -> None:
    config_map = next(
        r for r in _documents(HELM / "monitoring.yaml") if r["metadata"]["name"] == "grafana-provisioning"
    )
    provisioning = ROOT / "monitoring" / "grafana" / "provisioning"
    for key, path in (
        ("datasources.yaml", "datasources/edgeloop.yaml"),
        ("dashboards.yaml", "dashboards/edgeloop.yaml"),
    ):
        assert yaml.safe_load(config_map["data"][key]) == yaml.safe_load((provisioning / path).read_text()), key


# --- the image --------------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_pinned_airflow_image_with_the_bundle() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^apache-airflow==([\w.]+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned is not None
    assert f"ARG AIRFLOW_VERSION={pinned.group(1)}" in dockerfile
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python", dockerfile, re.MULTILINE)
    assert "-r /opt/edgeloop/requirements.txt" in dockerfile
    for folder in ("dags", "include", "plugins"):
        assert re.search(rf"^COPY --chown=airflow:0 {folder}/ /opt/airflow/{folder}/$", dockerfile, re.MULTILINE)
    assert "PYTHONPATH=/opt/airflow/include" in dockerfile
