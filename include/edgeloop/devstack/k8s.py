"""A real Kubernetes control plane on loopback for tests and benchmarks, built from Go modules.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries
(`devstack/k8s/go.mod` pins k8s.io/kubernetes and its staging modules); KWOK plays the kubelet
of every simulated node, so nodes and pods go through their real API lifecycle while no
container runs. Edge nodes carry KubeEdge-style labels and the edge taint; one or more plain
worker nodes take the job pods that KubernetesPodOperator starts.

Layout under `<state>/k8s/` (the stack's state folder): `bin/<key>/` the cached binaries,
`pki/` certificates and kubeconfigs (`admin.kubeconfig` for tests and kubectl), `etcd/` the
data, `logs/`, `pids/<component>.json` (pid and kernel start time: `k8s_down` stops only the
processes `k8s_up` started) and `k8s.env` (KUBECONFIG and friends for shells).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.devstack.config import REPO_ROOT, env_port
from edgeloop.devstack.processes import (
    is_zombie,
    log_tail,
    recorded_pid,
    start_in_session,
    start_ticks,
    stop_process_group,
)

K8S_SOURCE_DIR = REPO_ROOT / "devstack" / "k8s"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
EDGE_ROLE_LABEL = "node-role.kubernetes.io/edge"
GROUP_LABEL = "edgeloop.dev/group"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class K8sError(RuntimeError):
    """The local control plane could not be built, started or prepared."""


@dataclass(frozen=True)
class K8sPorts:
    apiserver: int = field(default_factory=lambda: env_port("K8S_APISERVER", 16443))
    etcd: int = field(default_factory=lambda: env_port("K8S_ETCD", 12379))
    etcd_peer: int = field(default_factory=lambda: env_port("K8S_ETCD_PEER", 12380))
    controller_manager: int = field(default_factory=lambda: env_port("K8S_CONTROLLER_MANAGER", 16257))
    scheduler: int = field(default_factory=lambda: env_port("K8S_SCHEDULER", 16259))
    kwok: int = field(default_factory=lambda: env_port("K8S_KWOK", 16247))

    def shifted(self, offset: int) -> K8sPorts:
        """The same ports moved by `offset`, for a second control plane beside the first."""
        return K8sPorts(*(getattr(self, name) + offset for name in self.__dataclass_fields__))


@dataclass(frozen=True)
class K8sConfig:
    """Where one control plane lives and how its simulated pods behave.

    `root` holds pki, data, logs and pids; `bin_root` the build cache (shared between roots,
    so a benchmark's private control plane reuses the binaries of the stack's).
    """

    root: Path
    bin_root: Path
    ports: K8sPorts = field(default_factory=K8sPorts)
    pod_ready_delay_ms: int = 200
    pod_ready_jitter_ms: int = 400
    job_run_ms: int = 2000
    # KWOK renews each node's lease every quarter of this, as a kubelet does (40 s: kubelet's default)
    node_lease_s: int = 40
    start_timeout_s: float = 120.0

    @classmethod
    def for_state_dir(cls, state_dir: Path, **overrides: Any) -> K8sConfig:
        root = Path(state_dir) / "k8s"
        return cls(root=root, bin_root=root / "bin", **overrides)

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (group system:masters): for tests' setup, kubectl and benchmarks."""
        return self.pki / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def env_file(self) -> Path:
        return self.root / "k8s.env"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool


@dataclass(frozen=True)
class K8sCluster:
    """What `k8s_up` hands back: where to reach the API server and which nodes it made."""

    config: K8sConfig
    bin_dir: Path
    edge_nodes: dict[str, list[str]]
    worker_nodes: list[str]
    components: list[ComponentStatus]

    @property
    def kubeconfig(self) -> Path:
        return self.config.kubeconfig

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"


# --- build -------------------------------------------------------------------------------------


def build_binaries(bin_root: Path, progress: Callable[[str], None] | None = print) -> Path:
    """Build (or reuse) the binaries; return their folder `<bin_root>/<key>`.

    `devstack/k8s/build.sh` keys the folder by the hash of go.mod, go.sum and the local sources.
    """
    # build.sh wants the stack state folder and appends k8s/bin itself
    if bin_root.name != "bin" or bin_root.parent.name != "k8s":
        raise K8sError(f"bin_root: {bin_root} must end in k8s/bin (build.sh lays out <state>/k8s/bin/<key>)")
    state_dir = bin_root.parent.parent
    script = K8S_SOURCE_DIR / "build.sh"
    if progress:
        progress(f"  k8s binaries: {script} {state_dir}")
    done = subprocess.run(["bash", str(script), str(state_dir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-30:])
        raise K8sError(f"building the Kubernetes binaries failed (exit {done.returncode}):\n{tail}")
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    missing = [name for name in (*COMPONENTS, "kubectl", "k8s-certs") if not (bin_dir / name).exists()]
    if missing:
        raise K8sError(f"{bin_dir}: build finished without {missing}")
    return bin_dir


# --- certificates, stages, commands ---------------------------------------------------------------


def write_pki(cfg: K8sConfig, bin_dir: Path) -> None:
    """CA, serving and client certificates, service-account keys, kubeconfigs (kept when present)."""
    done = subprocess.run(
        [str(bin_dir / "k8s-certs"), "-dir", str(cfg.pki), "-server", cfg.server],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise K8sError(f"k8s-certs failed for {cfg.pki}: {done.stderr.strip()}")


def write_kwok_stages(cfg: K8sConfig) -> Path:
    """`devstack/k8s/kwok-stages.yaml` with this config's delays filled in."""
    template = string.Template((K8S_SOURCE_DIR / "kwok-stages.yaml").read_text())
    text = template.substitute(
        pod_ready_delay_ms=cfg.pod_ready_delay_ms,
        pod_ready_jitter_ms=cfg.pod_ready_delay_ms + cfg.pod_ready_jitter_ms,
        job_run_ms=cfg.job_run_ms,
    )
    path = cfg.root / "kwok-stages.yaml"
    path.write_text(text)
    return path


def component_commands(cfg: K8sConfig, bin_dir: Path) -> dict[str, list[str]]:
    """The command line of each component, in start order."""
    return {
        "etcd": _etcd_command(cfg, bin_dir),
        "kube-apiserver": _apiserver_command(cfg, bin_dir),
        "kube-controller-manager": _controller_manager_command(cfg, bin_dir),
        "kube-scheduler": _scheduler_command(cfg, bin_dir),
        "kwok": _kwok_command(cfg, bin_dir),
    }


def _etcd_url(cfg: K8sConfig) -> str:
    return f"http://127.0.0.1:{cfg.ports.etcd}"


def _delegated(cfg: K8sConfig, component: str) -> list[str]:
    """Flags of a component that authenticates and authorizes through the API server (its own kubeconfig)."""
    kubeconfig = str(cfg.pki / f"{component}.kubeconfig")
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    ]


def _etcd_command(cfg: K8sConfig, bin_dir: Path) -> list[str]:
    etcd_url = _etcd_url(cfg)
    peer_url = f"http://127.0.0.1:{cfg.ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        "--name=edgeloop",
        f"--data-dir={cfg.root / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=edgeloop={peer_url}",
        # a throwaway test store: durability is not worth an fsync per write here
        "--unsafe-no-fsync",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def _apiserver_command(cfg: K8sConfig, bin_dir: Path) -> list[str]:
    pki, ports, etcd_url = cfg.pki, cfg.ports, _etcd_url(cfg)
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--authorization-mode=RBAC,Node",
        "--enable-admission-plugins=NodeRestriction",
        # no aggregated API servers here; the request-header CA only keeps delegating
        # components (controller manager, scheduler) from logging a missing bundle
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--profiling=false",
        "--v=0",
    ]


def _controller_manager_command(cfg: K8sConfig, bin_dir: Path) -> list[str]:
    pki, ports = cfg.pki, cfg.ports
    return [
        str(bin_dir / "kube-controller-manager"),
        *_delegated(cfg, "kube-controller-manager"),
        f"--secure-port={ports.controller_manager}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--cluster-name=edgeloop",
        # a thousand simulated nodes: the default client rate (20 qps) would be the bottleneck
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--concurrent-daemonset-syncs=4",
        f"--node-monitor-grace-period={cfg.node_lease_s + 10}s",
        "--v=0",
    ]


def _scheduler_command(cfg: K8sConfig, bin_dir: Path) -> list[str]:
    ports = cfg.ports
    return [
        str(bin_dir / "kube-scheduler"),
        *_delegated(cfg, "kube-scheduler"),
        f"--secure-port={ports.scheduler}",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--v=0",
    ]


def _kwok_command(cfg: K8sConfig, bin_dir: Path) -> list[str]:
    pki, ports = cfg.pki, cfg.ports
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={pki / 'kwok.kubeconfig'}",
        f"--config={cfg.root / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--node-lease-duration-seconds={cfg.node_lease_s}",
        "--cidr=10.244.0.0/16",
    ]


# --- health ------------------------------------------------------------------------------------------


def _admin_tls(cfg: K8sConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cfg.pki / "ca.crt"))
    ctx.load_cert_chain(str(cfg.pki / "admin.crt"), str(cfg.pki / "admin.key"))
    return ctx


def _self_signed_tls() -> ssl.SSLContext:
    # controller-manager and scheduler serve /healthz with a certificate they make up in memory
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _get_ok(url: str, tls: ssl.SSLContext | None = None, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls) as response:  # noqa: S310 - loopback URLs built here
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def component_healthy(cfg: K8sConfig, name: str) -> bool:
    ports = cfg.ports
    if name == "etcd":
        return _get_ok(f"http://127.0.0.1:{ports.etcd}/health")
    if name == "kube-apiserver":
        return (cfg.pki / "admin.crt").exists() and _get_ok(f"{cfg.server}/readyz", _admin_tls(cfg))
    if name == "kube-controller-manager":
        return _get_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", _self_signed_tls())
    if name == "kube-scheduler":
        return _get_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", _self_signed_tls())
    if name == "kwok":
        return _get_ok(f"http://127.0.0.1:{ports.kwok}/healthz")
    raise K8sError(f"unknown component {name!r}; known: {COMPONENTS}")


# --- processes -----------------------------------------------------------------------------------------


def _pid_file(cfg: K8sConfig, name: str) -> Path:
    return cfg.root / "pids" / f"{name}.json"


def _recorded_pid(cfg: K8sConfig, name: str) -> int | None:
    """The pid of the process `k8s_up` started for `name`, if that very process still runs (a zombie does not)."""
    pid = recorded_pid(_pid_file(cfg, name))
    return None if pid is None or is_zombie(pid) else pid


def _gone(pid: int) -> bool:
    """True once the process has exited; reaps it when it is our child (k8s_up and k8s_down in one process)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    return start_ticks(pid) is None or is_zombie(pid)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def component_port(cfg: K8sConfig, name: str) -> int:
    ports = cfg.ports
    return {
        "etcd": ports.etcd,
        "kube-apiserver": ports.apiserver,
        "kube-controller-manager": ports.controller_manager,
        "kube-scheduler": ports.scheduler,
        "kwok": ports.kwok,
    }[name]


def _log_tail(cfg: K8sConfig, name: str) -> str:
    return log_tail(cfg.root / "logs" / f"{name}.log", 20)


def _launch(cfg: K8sConfig, name: str, command: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GOMAXPROCS": os.environ.get("EDGELOOP_K8S_GOMAXPROCS", "2")}
    log_file, pid_file = cfg.root / "logs" / f"{name}.log", _pid_file(cfg, name)
    return start_in_session(command, env=env, cwd=cfg.root, log_file=log_file, pid_file=pid_file)


def _start(cfg: K8sConfig, name: str, command: list[str]) -> None:
    process = None
    if _recorded_pid(cfg, name) is None:
        port = component_port(cfg, name)
        if _port_in_use(port):
            raise K8sError(
                f"{name}: port {port} on 127.0.0.1 is taken by a process this control plane did not start "
                f"(another control plane? set EDGELOOP_K8S_*_PORT or stop it)"
            )
        process = _launch(cfg, name, command)
    deadline = time.monotonic() + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if component_healthy(cfg, name):
            return
        exited = process.poll() if process else (None if _recorded_pid(cfg, name) else "unknown")
        if exited is not None:
            raise K8sError(f"{name} exited ({exited}) during start; last log lines:\n{_log_tail(cfg, name)}")
        time.sleep(0.5)
    raise K8sError(f"{name} not healthy after {cfg.start_timeout_s:.0f}s; last log lines:\n{_log_tail(cfg, name)}")


# --- nodes -------------------------------------------------------------------------------------------


def edge_groups_from_specs(specs: Sequence[Any]) -> dict[str, dict[str, str]]:
    """Group name -> node labels, from the `groups` of pipeline specs (their selectors)."""
    groups: dict[str, dict[str, str]] = {}
    for spec in specs:
        for group in spec.groups:
            groups[group.name] = {EDGE_ROLE_LABEL: "", GROUP_LABEL: group.name, **group.selector}
    return groups


def edge_node_name(group: str, index: int) -> str:
    return f"edge-{group}-{index:04d}"


def _kwok_node(name: str, labels: Mapping[str, str], arch: str, taints: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                **labels,
            },
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux"},
        },
    }


def edge_node_manifest(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A KubeEdge-style edge node: edge and agent roles, the group labels, the edge NoSchedule taint."""
    return _kwok_node(
        name,
        {EDGE_ROLE_LABEL: "", "node-role.kubernetes.io/agent": "", **labels},
        "arm64",
        [{"key": EDGE_ROLE_LABEL, "value": "", "effect": "NoSchedule"}],
    )


def worker_node_manifest(name: str) -> dict[str, Any]:
    """A plain worker node, where job pods (KubernetesPodOperator) get scheduled."""
    return _kwok_node(name, {"node-role.kubernetes.io/worker": ""}, "amd64", [])


def ensure_nodes(core_api: Any, manifests: Sequence[Mapping[str, Any]], workers: int = 8) -> int:
    """Create the nodes that do not exist yet; return how many were created."""
    from kubernetes.client.exceptions import ApiException

    def create(manifest: Mapping[str, Any]) -> int:
        try:
            core_api.create_node(manifest)
        except ApiException as exc:
            if exc.status == 409:
                return 0
            raise K8sError(f"node {manifest['metadata']['name']}: create failed ({exc.status}: {exc.reason})") from exc
        return 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(create, manifests))


def wait_nodes_ready(core_api: Any, names: Sequence[str], timeout_s: float = 120.0) -> None:
    """Wait until every named node reports Ready (KWOK's node-initialize stage)."""
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    not_ready: set[str] = wanted
    while time.monotonic() < deadline:
        ready = {
            node.metadata.name
            for node in core_api.list_node(label_selector="type=kwok").items
            if any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
        }
        not_ready = wanted - ready
        if not not_ready:
            return
        time.sleep(1.0)
    raise K8sError(f"{len(not_ready)} nodes not Ready after {timeout_s:.0f}s, e.g. {sorted(not_ready)[:5]}")


# --- clients -----------------------------------------------------------------------------------------


def api_client(kubeconfig: Path) -> Any:
    """A kubernetes.client.ApiClient for one kubeconfig file (no global configuration touched)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def service_account_kubeconfig(
    cfg: K8sConfig, core_api: Any, namespace: str, name: str, path: Path, expiration_s: int = 3600
) -> Path:
    """Write a kubeconfig for ServiceAccount namespace/name with a token from the TokenRequest API."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=expiration_s))
    token = core_api.create_namespaced_service_account_token(name, namespace, request).status.token
    ca = (cfg.pki / "ca.crt").read_text()
    content = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "edgeloop-local",
                "cluster": {"server": cfg.server, "certificate-authority-data": base64.b64encode(ca.encode()).decode()},
            }
        ],
        "users": [{"name": f"{namespace}-{name}", "user": {"token": token}}],
        "contexts": [
            {
                "name": f"{namespace}-{name}",
                "context": {"cluster": "edgeloop-local", "user": f"{namespace}-{name}", "namespace": namespace},
            }
        ],
        "current-context": f"{namespace}-{name}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(content))
    return path


def apply_manifests(kubectl: Path, kubeconfig: Path, paths: Sequence[Path]) -> None:
    """`kubectl apply --server-side` of manifest files (namespaces, RBAC from helm-values/)."""
    args = [str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts"]
    for path in paths:
        args += ["-f", str(path)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise K8sError(f"kubectl apply {[str(p) for p in paths]} failed: {done.stderr.strip()}")


# --- up / down / status ----------------------------------------------------------------------------


def _write_env(cfg: K8sConfig, bin_dir: Path) -> None:
    env = {
        "KUBECONFIG": str(cfg.kubeconfig),
        "EDGELOOP_KUBECONFIG": str(cfg.kubeconfig),
        "EDGELOOP_K8S_SERVER": cfg.server,
        "EDGELOOP_K8S_BIN": str(bin_dir),
    }
    cfg.env_file.write_text("".join(f"{k}='{v}'\n" for k, v in sorted(env.items())))


def k8s_up(
    state_dir: Path,
    *,
    edge_groups: Mapping[str, Mapping[str, str]] | None = None,
    nodes_per_group: int = 3,
    worker_nodes: int = 1,
    config: K8sConfig | None = None,
    progress: Callable[[str], None] | None = print,
) -> K8sCluster:
    """Build once, then start etcd, the API server, controller manager, scheduler and KWOK; make nodes.

    Idempotent: running components are left alone and existing nodes kept. `edge_groups` maps a
    group name to its node labels (see `edge_groups_from_specs`); without it the groups of the
    shipped pipeline specs are used. Also applies `helm-values/namespaces.yaml`.
    """
    cfg = config or K8sConfig.for_state_dir(state_dir)
    started = time.monotonic()

    def say(message: str) -> None:
        if progress:
            progress(f"  {message:<50} ({time.monotonic() - started:5.1f}s)")

    cfg.root.mkdir(parents=True, exist_ok=True)
    bin_dir = build_binaries(cfg.bin_root, progress)
    say(f"binaries in {bin_dir}")
    write_pki(cfg, bin_dir)
    write_kwok_stages(cfg)
    for name, command in component_commands(cfg, bin_dir).items():
        _start(cfg, name, command)
        say(f"{name} ready")
    _write_env(cfg, bin_dir)

    if edge_groups is None:
        from edgeloop.spec import load_all

        edge_groups = edge_groups_from_specs(load_all().specs)
    apply_manifests(bin_dir / "kubectl", cfg.kubeconfig, [REPO_ROOT / "helm-values" / "namespaces.yaml"])
    from kubernetes import client

    core = client.CoreV1Api(api_client(cfg.kubeconfig))
    edge_nodes = {group: [edge_node_name(group, i) for i in range(nodes_per_group)] for group in sorted(edge_groups)}
    workers = [f"worker-{i:02d}" for i in range(worker_nodes)]
    manifests = [
        edge_node_manifest(name, edge_groups[group]) for group, names in edge_nodes.items() for name in names
    ] + [worker_node_manifest(name) for name in workers]
    created = ensure_nodes(core, manifests)
    wait_nodes_ready(core, [m["metadata"]["name"] for m in manifests], timeout_s=max(120.0, len(manifests) / 5))
    say(f"{len(manifests)} KWOK nodes Ready ({created} new)")
    return K8sCluster(cfg, bin_dir, edge_nodes, workers, k8s_status(state_dir, config=cfg))


def k8s_down(state_dir: Path, *, config: K8sConfig | None = None, grace: float = 20.0) -> list[str]:
    """Stop the components `k8s_up` started (newest first); return the names stopped. Data is kept."""
    cfg = config or K8sConfig.for_state_dir(state_dir)
    stopped = []
    for name in reversed(COMPONENTS):
        pid = _recorded_pid(cfg, name)
        if pid is not None:
            stop_process_group(pid, grace, gone=_gone, poll=0.1, reap=5.0)
            stopped.append(name)
        _pid_file(cfg, name).unlink(missing_ok=True)
    return stopped


def k8s_status(state_dir: Path, *, config: K8sConfig | None = None) -> list[ComponentStatus]:
    cfg = config or K8sConfig.for_state_dir(state_dir)
    result = []
    for name in COMPONENTS:
        pid = _recorded_pid(cfg, name)
        result.append(ComponentStatus(name, pid, pid is not None, pid is not None and component_healthy(cfg, name)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgeloop.devstack.k8s up|down|status [--nodes-per-group N]` (for make k8s-up/k8s-down)."""
    import argparse

    parser = argparse.ArgumentParser(prog="edgeloop-k8s", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("EDGELOOP_STATE_DIR", REPO_ROOT / ".edgeloop"))
    )
    parser.add_argument("--nodes-per-group", type=int, default=3)
    args = parser.parse_args(argv)
    if args.action == "up":
        cluster = k8s_up(args.state_dir, nodes_per_group=args.nodes_per_group)
        print(f"KUBECONFIG={cluster.kubeconfig}  kubectl: {cluster.kubectl}")
        return 0
    if args.action == "down":
        print("stopped:", ", ".join(k8s_down(args.state_dir)) or "nothing")
        return 0
    statuses = k8s_status(args.state_dir)
    for s in statuses:
        print(f"  {s.name:<24} {'healthy' if s.healthy else 'running' if s.running else 'stopped':<8} pid={s.pid}")
    return 0 if all(s.healthy for s in statuses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
