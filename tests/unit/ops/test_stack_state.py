"""The local stack's state rules that need no running service."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeloop.devstack.config import Ports, StackConfig
from edgeloop.devstack.stack import _forget_registry_without_artifacts


def _config(tmp_path: Path) -> StackConfig:
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"registry")
    (tmp_path / "pids").mkdir()
    return StackConfig(state_dir=tmp_path, ports=Ports())


def test_a_new_in_memory_s3_resets_the_registry_that_pointed_into_the_old_one(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _forget_registry_without_artifacts(cfg)
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()


def test_a_running_mlflow_keeps_its_registry(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with open(f"/proc/{os.getpid()}/stat") as stat:  # this test process stands in for a running MLflow
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    (tmp_path / "pids" / "mlflow.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks}))
    _forget_registry_without_artifacts(cfg)
    assert (tmp_path / "mlflow" / "mlflow.db").read_bytes() == b"registry"
