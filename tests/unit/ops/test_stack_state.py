"""The local stack's state rules that need no running service."""

from __future__ import annotations

import json
import os
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
