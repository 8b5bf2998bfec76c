"""The Kubernetes tier: a real kube-apiserver, controllers and KWOK edge nodes (edgeloop.devstack.k8s).

The control plane is started once per session if it is not running (the first start on a fresh
machine builds the binaries from Go modules, see devstack/k8s/build.sh) and stopped again at the
end if this session started it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.devstack import k8s
from edgeloop.devstack.config import REPO_ROOT
from edgeloop.spec import PipelineSpec, load_spec

NODES_PER_GROUP = 3
ROLLOUT_SA = ("edge", "edgeloop-rollout")
LAUNCHER_SA = ("airflow", "airflow-worker")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: runs against the local Kubernetes control plane (KWOK nodes)")


@pytest.fixture(scope="session")
def demo_spec() -> PipelineSpec:
    return load_spec(REPO_ROOT / "include" / "pipelines" / "factory_maintenance.yaml")


@pytest.fixture(scope="session")
def k8s_cluster(demo_spec: PipelineSpec) -> Iterator[k8s.K8sCluster]:
    state_dir = Path(os.environ.get("EDGELOOP_STATE_DIR", REPO_ROOT / ".edgeloop"))
    was_running = all(s.healthy for s in k8s.k8s_status(state_dir))
    cluster = k8s.k8s_up(
        state_dir, edge_groups=k8s.edge_groups_from_specs([demo_spec]), nodes_per_group=NODES_PER_GROUP
    )
    try:
        yield cluster
    finally:
        if not was_running:
            k8s.k8s_down(state_dir)


@pytest.fixture(scope="session")
def admin_client(k8s_cluster: k8s.K8sCluster) -> Any:
    return k8s.api_client(k8s_cluster.kubeconfig)


@pytest.fixture(scope="session")
def rbac_applied(k8s_cluster: k8s.K8sCluster, admin_client: Any) -> None:
    """helm-values/rbac-rollout.yaml as shipped, plus the Airflow worker's ServiceAccount the chart would make."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(admin_client)
    try:
        core.create_namespaced_service_account(LAUNCHER_SA[0], {"metadata": {"name": LAUNCHER_SA[1]}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    k8s.apply_manifests(k8s_cluster.kubectl, k8s_cluster.kubeconfig, [REPO_ROOT / "helm-values" / "rbac-rollout.yaml"])


def _sa_kubeconfig(cluster: k8s.K8sCluster, admin_client: Any, sa: tuple[str, str], folder: Path) -> Path:
    from kubernetes import client

    path = folder / f"{sa[0]}-{sa[1]}.kubeconfig"
    return k8s.service_account_kubeconfig(cluster.config, client.CoreV1Api(admin_client), sa[0], sa[1], path)


@pytest.fixture(scope="session")
def rollout_kubeconfig(
    k8s_cluster: k8s.K8sCluster, admin_client: Any, rbac_applied: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Kubeconfig of ServiceAccount edge/edgeloop-rollout (TokenRequest token): what the job pod runs with."""
    return _sa_kubeconfig(k8s_cluster, admin_client, ROLLOUT_SA, tmp_path_factory.mktemp("sa"))


@pytest.fixture(scope="session")
def launcher_kubeconfig(
    k8s_cluster: k8s.K8sCluster, admin_client: Any, rbac_applied: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Kubeconfig of ServiceAccount airflow/airflow-worker: what KubernetesPodOperator runs with."""
    return _sa_kubeconfig(k8s_cluster, admin_client, LAUNCHER_SA, tmp_path_factory.mktemp("sa"))


@pytest.fixture(scope="session")
def rollout_apps_api(rollout_kubeconfig: Path) -> Any:
    from kubernetes import client

    return client.AppsV1Api(k8s.api_client(rollout_kubeconfig))
