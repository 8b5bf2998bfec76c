"""DaemonSet rollout benchmark on a real control plane: 1,000 KWOK edge nodes in 10 groups.

One inference DaemonSet per group. The same rollout (canary group, then two waves; groups of a
wave in parallel, like the DAG's mapped jobs) and rollback (group by group, like
`rollback_step`) are done twice in one run and timed as seen through the API:

- edgeloop: `run_kubernetes_wave` (the rollout job's code, default 2 s status poll), with the
  admin kubeconfig like kubectl (tests/k8s checks the job's RBAC; this measures time);
- kubectl: `kubectl set image` + `kubectl rollout status` for the rollout and
  `kubectl rollout undo` + `kubectl rollout status` for the rollback, as an operator would.

The benchmark starts a private control plane (ports of the stack's + 100, its own folder, the
stack's cached binaries) and stops it at the end. Orders are signed with a key made for the run
(KWOK runs no agent, so nothing verifies them here; tests/k8s checks the objects). Usage:

    PYTHONPATH=include .venv/bin/python benchmarks/bench_k8s_rollout.py [--nodes 1000] [--groups 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import Keyring, Signer
from edgeloop.devstack import k8s
from edgeloop.rollout.job import run_kubernetes_wave
from edgeloop.rollout.manifests import agent_configmap, agent_daemonset
from edgeloop.rollout.plan import Wave, spec_waves
from edgeloop.spec import EdgeGroup, PipelineSpec, daemonset_name, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"
IMAGE = "registry.example/edgeloop/agent:{}"
KAFKA = {"bootstrap.servers": "kafka.edge.svc:9092"}
SIGNER = Signer.generate()  # the operator's key for this run
TRUSTED = Keyring.of([SIGNER.public])  # what the agents' ConfigMaps carry


def bench_spec(groups: int, nodes_per_group: int) -> PipelineSpec:
    """The demo spec with `groups` KubeEdge groups: g00 the canary, then two waves of the rest."""
    demo = load_spec(DEMO)
    names = [f"g{i:02d}" for i in range(groups)]
    edge_groups = [
        EdgeGroup(
            name=name,
            selector={k8s.GROUP_LABEL: name, k8s.EDGE_ROLE_LABEL: ""},
            wave=0 if i == 0 else 1 + (i - 1) * 2 // max(groups - 1, 1),
            devices=nodes_per_group,
            strategy="kubernetes",
        )
        for i, name in enumerate(names)
    ]
    rollout = demo.rollout.model_copy(update={"canary_groups": [names[0]], "launcher": "kubernetes"})
    return demo.model_copy(update={"name": "bench_k8s", "groups": edge_groups, "rollout": rollout})


def wait_all_available(apps: Any, spec: PipelineSpec, nodes_per_group: int, timeout_s: float) -> float:
    started = time.monotonic()
    names = [daemonset_name(spec, g.name) for g in spec.groups]
    while time.monotonic() - started < timeout_s:
        statuses = [apps.read_namespaced_daemon_set_status(n, spec.rollout.namespace) for n in names]
        if all(
            (d.status.observed_generation or 0) >= d.metadata.generation
            and d.status.updated_number_scheduled == d.status.number_available == nodes_per_group
            for d in statuses
        ):
            return time.monotonic() - started
        time.sleep(1.0)
    raise RuntimeError(f"DaemonSets not available after {timeout_s:.0f}s")


def kubectl(cluster: k8s.K8sCluster, *args: str, timeout_s: float = 900) -> None:
    command = [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", "-n", "edge", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed: {done.stderr.strip()}")


def timed_waves(waves: list[Wave], run_group: Callable[[str], Any]) -> list[tuple[str, float]]:
    """Run each wave's groups in parallel; return (wave name, seconds) per wave."""
    times = []
    for wave in waves:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(wave.groups)) as pool:
            list(pool.map(run_group, wave.groups))
        times.append((f"{wave.name} ({len(wave.groups)} groups)", time.monotonic() - started))
    return times


def timed_rollback(groups: list[str], run_group: Callable[[str], Any]) -> float:
    started = time.monotonic()
    for group in groups:
        run_group(group)
    return time.monotonic() - started


def edgeloop_run(spec: PipelineSpec, apis: tuple[Any, Any], waves: list[Wave]) -> tuple[list[tuple[str, float]], float]:
    def run(group: str, version: str) -> dict[str, Any]:
        return run_kubernetes_wave(
            spec,
            group,
            version,
            image=IMAGE.format(version),
            timeout_s=900,
            signer=SIGNER,
            assignment_id=f"ro-bench.{group}.v{version}",
            apps_api=apis[0],
            core_api=apis[1],
            artifacts=lambda v: ArtifactRef(f"https://models.example/{v}.onnx", f"{int(v):064x}", 1000),
        )

    def forward(group: str) -> None:
        result = run(group, "2")
        if not result["complete"]:
            raise RuntimeError(f"edgeloop rollout of {group} did not complete: {result}")

    def back(group: str) -> None:
        result = run(group, "1")
        if not result["complete"]:
            raise RuntimeError(f"edgeloop rollback of {group} did not complete: {result}")

    return timed_waves(waves, forward), timed_rollback([g for w in waves for g in w.groups], back)


def kubectl_run(
    spec: PipelineSpec, cluster: k8s.K8sCluster, waves: list[Wave]
) -> tuple[list[tuple[str, float]], float]:
    def forward(group: str) -> None:
        name = daemonset_name(spec, group)
        kubectl(cluster, "set", "image", f"daemonset/{name}", f"agent={IMAGE.format(3)}")
        kubectl(cluster, "rollout", "status", f"daemonset/{name}", "--timeout=900s")

    def back(group: str) -> None:
        name = daemonset_name(spec, group)
        kubectl(cluster, "rollout", "undo", f"daemonset/{name}")
        kubectl(cluster, "rollout", "status", f"daemonset/{name}", "--timeout=900s")

    return timed_waves(waves, forward), timed_rollback([g for w in waves for g in w.groups], back)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("EDGELOOP_STATE_DIR", ROOT / ".edgeloop"))
    )
    parser.add_argument("--pod-ready-ms", type=int, default=200, help="KWOK delay before a pod is Ready")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's control plane running")
    args = parser.parse_args()
    from kubernetes import client

    nodes_per_group = args.nodes // args.groups
    spec = bench_spec(args.groups, nodes_per_group)
    waves = spec_waves(spec)
    stack_cfg = k8s.K8sConfig.for_state_dir(args.state_dir)
    cfg = k8s.K8sConfig(
        root=args.state_dir / "k8s-bench",
        bin_root=stack_cfg.bin_root,
        ports=stack_cfg.ports.shifted(100),
        pod_ready_delay_ms=args.pod_ready_ms,
        # a thousand node leases renewed every 30 s instead of every 10 s: less background load on 2 cores
        node_lease_s=120,
    )
    t0 = time.monotonic()
    cluster = k8s.k8s_up(
        args.state_dir,
        edge_groups=k8s.edge_groups_from_specs([spec]),
        nodes_per_group=nodes_per_group,
        config=cfg,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    setup_s = time.monotonic() - t0
    try:
        admin = k8s.api_client(cluster.kubeconfig)
        admin_apps = client.AppsV1Api(admin)
        admin_core = client.CoreV1Api(admin)
        t0 = time.monotonic()
        for group in spec.groups:
            admin_core.create_namespaced_config_map("edge", agent_configmap(spec, group.name, KAFKA, TRUSTED))
            manifest = agent_daemonset(spec, group.name, group.selector, image=IMAGE.format(1))
            admin_apps.create_namespaced_daemon_set("edge", manifest)
        first_s = wait_all_available(admin_apps, spec, nodes_per_group, timeout_s=1200)
        create_s = time.monotonic() - t0
        print(
            f"  {args.nodes} nodes up in {setup_s:.0f}s; {len(spec.groups)} DaemonSets available in {first_s:.0f}s",
            file=sys.stderr,
        )

        el_waves, el_back = edgeloop_run(spec, (admin_apps, admin_core), waves)
        kc_waves, kc_back = kubectl_run(spec, cluster, waves)
    finally:
        if not args.keep:
            k8s.k8s_down(args.state_dir, config=cfg)
            shutil.rmtree(cfg.root, ignore_errors=True)

    print(
        f"\nDaemonSet rollout on {args.nodes} KWOK edge nodes, {args.groups} groups x {nodes_per_group} nodes, "
        f"maxUnavailable {spec.rollout.max_unavailable}, pod ready after {args.pod_ready_ms}-"
        f"{args.pod_ready_ms + cfg.pod_ready_jitter_ms} ms"
    )
    print(f"control plane + nodes up: {setup_s:.1f} s; first deployment of {args.nodes} pods: {create_s:.1f} s\n")
    print(f"| {'phase':<28} | {'edgeloop job code (s)':>21} | {'kubectl (s)':>11} |")
    print(f"|{'-' * 30}|{'-' * 23}|{'-' * 13}|")
    for (label, el), (_, kc) in zip(el_waves, kc_waves, strict=True):
        print(f"| rollout {label:<20} | {el:>21.1f} | {kc:>11.1f} |")
    el_total, kc_total = sum(t for _, t in el_waves), sum(t for _, t in kc_waves)
    print(f"| {'rollout total':<28} | {el_total:>21.1f} | {kc_total:>11.1f} |")
    print(f"| {'rollback (group by group)':<28} | {el_back:>21.1f} | {kc_back:>11.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
