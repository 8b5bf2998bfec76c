"""The local stack's state rules that need no running service."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from edgeloop.devstack.config import Ports, Secrets, StackConfig
from edgeloop.devstack.services import prepare_mlflow_store
from edgeloop.devstack.stack import forget_registry_without_artifacts


def _config(tmp_path: Path) -> StackConfig:
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"registry")
    (tmp_path / "pids").mkdir()
    return StackConfig(state_dir=tmp_path, ports=Ports(), metadata_db="sqlite")


def test_a_new_in_memory_s3_resets_the_registry_that_pointed_into_the_old_one(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    forget_registry_without_artifacts(cfg)  # S3 starts while MLflow is down
    prepare_mlflow_store(cfg, Secrets.load_or_create(cfg.secrets_file))  # then MLflow starts
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"new registry")
    prepare_mlflow_store(cfg, Secrets.load_or_create(cfg.secrets_file))  # reset once, not at every start
    assert (tmp_path / "mlflow" / "mlflow.db").read_bytes() == b"new registry"


def test_a_running_mlflow_keeps_its_registry(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with open(f"/proc/{os.getpid()}/stat") as stat:  # this test process stands in for a running MLflow
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    (tmp_path / "pids" / "mlflow.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks}))
    forget_registry_without_artifacts(cfg)
    prepare_mlflow_store(cfg, Secrets.load_or_create(cfg.secrets_file))
    assert (tmp_path / "mlflow" / "mlflow.db").read_bytes() == b"registry"


def test_no_secret_is_ever_on_a_service_command_line(tmp_path: Path) -> None:
    """`ps` shows every process's arguments to every user: secrets go by environment or file."""
    from dataclasses import astuple

    from edgeloop.devstack.config import Secrets
    from edgeloop.devstack.services import build_services

    cfg = StackConfig(state_dir=tmp_path, ports=Ports())
    secrets = Secrets.load_or_create(tmp_path / "secrets.json")
    services = {s.name: s for s in build_services(cfg, secrets)}
    for service in services.values():
        arguments = " ".join(service.command)
        leaked = [value for value in astuple(secrets) if value and value in arguments]
        assert not leaked, f"{service.name} has a secret on its command line"
    label_studio = services["label-studio"].env
    assert label_studio["LABEL_STUDIO_PASSWORD"] == secrets.label_studio_password
    assert label_studio["LABEL_STUDIO_USER_TOKEN"] == secrets.label_studio_token


def test_a_restarted_airflow_component_is_not_ready_on_its_killed_predecessors_heartbeat(tmp_path: Path) -> None:
    """kill -9 of the scheduler, restart at once: the health endpoint still says healthy (the old heartbeat is
    recent), so a just-launched component counts as ready only with a heartbeat from after its launch."""
    from edgeloop.devstack.services import heartbeat_since

    health = {"scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-12-06T21:17:00+00:00"}}
    launched = datetime(2026, 12, 6, 21, 17, 5, tzinfo=UTC).timestamp()
    assert not heartbeat_since(health, "scheduler", launched)
    health["scheduler"]["latest_scheduler_heartbeat"] = "2026-12-06T21:17:06.250000+00:00"
    assert heartbeat_since(health, "scheduler", launched)
    assert not heartbeat_since({}, "triggerer", launched)
    assert not heartbeat_since({"triggerer": {"latest_triggerer_heartbeat": None}}, "triggerer", launched)


def test_stack_up_waits_for_a_sign_of_life_since_the_launch(tmp_path: Path) -> None:
    from edgeloop.devstack.services import Service
    from edgeloop.devstack.stack import _wait_ready

    cfg = _config(tmp_path)
    with open(f"/proc/{os.getpid()}/stat") as stat:  # this test process stands in for the launched component
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    (tmp_path / "pids" / "airflow-scheduler.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks}))
    asked: list[float] = []

    def alive_since(since: float) -> bool:
        asked.append(since)
        return len(asked) >= 3  # the new scheduler's first heartbeat arrives at the third look

    service = Service(name="airflow-scheduler", command=[], ready=lambda: True, alive_since=alive_since)
    _wait_ready(cfg, service, os.getpid(), launched_at=1234.5)
    assert asked == [1234.5, 1234.5, 1234.5]
    asked.clear()
    _wait_ready(cfg, service, os.getpid())  # already running: its health answer is enough
    assert asked == []
