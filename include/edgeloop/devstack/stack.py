"""Start, stop and inspect the local stack.

`up` is idempotent: a service that is already running and healthy is left alone.
Each started process gets its own session; its pid and kernel start time are kept
in `<state>/pids/<service>.json`, so `down` stops exactly the processes `up`
started, never a process that merely reused the pid.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgeloop.devstack.config import Secrets, StackConfig
from edgeloop.devstack.processes import launch, log_tail, recorded_pid, recorded_stop_signal, stop_process_group
from edgeloop.devstack.services import (
    REGISTRY_RESET_MARKER,
    Service,
    airflow_database_url,
    build_services,
    connection_env,
    mlflow_store_url,
)

# stopped after every other process: Airflow and MLflow close their sessions before the database goes
STOPPED_LAST = ("postgres",)


class StackError(RuntimeError):
    """A service could not be started or did not become healthy."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str | None


def _pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.state_dir / "pids" / f"{name}.json"


def _log_file(cfg: StackConfig, name: str) -> Path:
    return cfg.state_dir / "logs" / f"{name}.log"


def _launch(cfg: StackConfig, service: Service) -> int:
    return launch(
        service.command,
        env={**os.environ, **service.env},
        cwd=cfg.state_dir,
        log_file=_log_file(cfg, service.name),
        pid_file=_pid_file(cfg, service.name),
        stop_signal=service.stop_signal,
    )


def _wait_ready(cfg: StackConfig, service: Service, pid: int, launched_at: float | None = None) -> None:
    """Wait until `service` answers healthy; one launched at `launched_at` (epoch s) also with a sign of
    life since then, where the service has one (`Service.alive_since`)."""
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if service.ready() and (launched_at is None or service.alive_since is None or service.alive_since(launched_at)):
            return
        if process_pid(service.name, cfg) != pid:
            tail = log_tail(_log_file(cfg, service.name), 15)
            raise StackError(f"{service.name} exited during start; last log lines:\n{tail}")
        time.sleep(0.5)
    tail = log_tail(_log_file(cfg, service.name), 15)
    raise StackError(f"{service.name} not healthy after {service.start_timeout:.0f}s; last log lines:\n{tail}")


def write_env_file(cfg: StackConfig, sec: Secrets) -> Path:
    """`<state>/stack.env`: the stack's endpoints and generated credentials, for shells and tests (mode 0600)."""
    env = connection_env(cfg, sec)
    env["AIRFLOW_ADMIN_PASSWORD"] = sec.airflow_admin_password
    env["AIRFLOW_VIEWER_PASSWORD"] = sec.airflow_viewer_password
    # where the metadata lives, as SQLAlchemy URLs (for psql, drop the "+psycopg2")
    env["EDGELOOP_METADATA_DB"] = cfg.metadata_db
    env["EDGELOOP_AIRFLOW_DB_URL"] = airflow_database_url(cfg, sec)
    env["EDGELOOP_MLFLOW_STORE_URL"] = mlflow_store_url(cfg, sec)
    path = cfg.env_file
    path.touch(mode=0o600)
    path.write_text("".join(f"{k}='{v}'\n" for k, v in sorted(env.items())))
    return path


def up(cfg: StackConfig | None = None, only: list[str] | None = None, progress: bool = True) -> list[ServiceStatus]:
    """Start every service (or those named in `only` and what they depend on) and wait until healthy."""
    cfg = cfg or StackConfig.from_env()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    sec = Secrets.load_or_create(cfg.secrets_file)
    services = {s.name: s for s in build_services(cfg, sec)}
    wanted = _with_dependencies(services, only) if only else list(services)
    done = {name: threading.Event() for name in wanted}
    failed: list[str] = []
    started_at = time.monotonic()

    def bring_up(name: str) -> None:
        service = services[name]
        for dep in service.depends_on:
            done[dep].wait()
            if dep in failed:
                failed.append(name)
                done[name].set()
                return
        try:
            pid = process_pid(name, cfg)
            launched_at = None
            if pid is None:
                if name == "s3":
                    forget_registry_without_artifacts(cfg)
                if service.prepare:
                    service.prepare()
                launched_at = time.time()
                pid = _launch(cfg, service)
            _wait_ready(cfg, service, pid, launched_at)
            if service.after_ready:
                service.after_ready()
            if progress:
                print(f"  {name:<24} ready   ({time.monotonic() - started_at:5.1f}s)  {service.url or ''}", flush=True)
        except Exception as exc:
            failed.append(name)
            print(f"  {name:<24} FAILED: {exc}", flush=True)
        finally:
            done[name].set()

    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        list(pool.map(bring_up, wanted))
    write_env_file(cfg, sec)
    if failed:
        raise StackError(f"services not ready: {', '.join(failed)} (logs in {cfg.state_dir / 'logs'})")
    return status(cfg)


def forget_registry_without_artifacts(cfg: StackConfig) -> None:
    """moto keeps objects in memory, so a new S3 process starts empty; the MLflow registry whose
    model artifacts and training data were in it would point at nothing, so it starts empty too.

    Marked here, done by MLflow's prepare step: its store may be a PostgreSQL database not up yet."""
    if process_pid("mlflow", cfg) is None:
        folder = cfg.state_dir / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REGISTRY_RESET_MARKER).touch()


def _with_dependencies(services: dict[str, Service], names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(services))
    if unknown:
        raise StackError(f"unknown services {unknown}; known: {sorted(services)}")
    result: list[str] = []

    def add(name: str) -> None:
        for dep in services[name].depends_on:
            add(dep)
        if name not in result:
            result.append(name)

    for name in names:
        add(name)
    return result


def down(cfg: StackConfig | None = None, grace: float = 20.0) -> list[str]:
    """Stop the processes this stack started (their whole process groups); return the names stopped."""
    cfg = cfg or StackConfig.from_env()
    pid_dir = cfg.state_dir / "pids"
    if not pid_dir.exists():
        return []
    names = [p.stem for p in pid_dir.glob("*.json")]
    targets = {name: process_pid(name, cfg) for name in names}

    def stop(name: str) -> None:
        pid = targets[name]
        if pid:
            stop_process_group(pid, grace, sig=recorded_stop_signal(_pid_file(cfg, name)))

    for batch in ([n for n in names if n not in STOPPED_LAST], [n for n in names if n in STOPPED_LAST]):
        with ThreadPoolExecutor(max_workers=max(1, len(batch))) as pool:
            list(pool.map(stop, batch))
    for name in names:
        _pid_file(cfg, name).unlink(missing_ok=True)
    return [name for name, pid in targets.items() if pid]


def status(cfg: StackConfig | None = None) -> list[ServiceStatus]:
    cfg = cfg or StackConfig.from_env()
    sec = Secrets.load_or_create(cfg.secrets_file)
    result = []
    for service in build_services(cfg, sec):
        pid = process_pid(service.name, cfg)
        healthy = bool(pid) and service.ready()
        result.append(ServiceStatus(service.name, pid, pid is not None, healthy, service.url))
    return result


def read_env_file(cfg: StackConfig | None = None) -> dict[str, str]:
    cfg = cfg or StackConfig.from_env()
    env = {}
    for line in cfg.env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value.strip("'")
    return env


def start_process(
    name: str, command: list[str], env: dict[str, str] | None = None, cfg: StackConfig | None = None
) -> int:
    """Start a helper process of the stack (the demo's simulator or annotate bot), tracked like a service.

    Idempotent: a process of that name that is still running is left alone. `down` stops it.
    """
    cfg = cfg or StackConfig.from_env()
    pid = process_pid(name, cfg)
    if pid is not None:
        return pid
    return _launch(cfg, Service(name=name, command=command, ready=lambda: True, env=env or {}))


def stop_process(name: str, cfg: StackConfig | None = None, grace: float = 20.0) -> bool:
    cfg = cfg or StackConfig.from_env()
    pid = process_pid(name, cfg)
    if pid is None:
        return False
    stop_process_group(pid, grace, sig=recorded_stop_signal(_pid_file(cfg, name)))
    _pid_file(cfg, name).unlink(missing_ok=True)
    return True


def process_pid(name: str, cfg: StackConfig | None = None) -> int | None:
    """The pid of the process this stack started as `name` if that very process still runs, else None."""
    return recorded_pid(_pid_file(cfg or StackConfig.from_env(), name))
