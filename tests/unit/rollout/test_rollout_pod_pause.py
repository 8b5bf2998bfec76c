"""A rollout job in a pod honours the pause flag like a local one: it reads the flag with the pipeline's S3
connection, which its pod gets from a Kubernetes Secret (the rendered pod holds no value)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.helpers.keys import OPERATOR

from edgeloop.contract.identity import DeviceRegistry
from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV
from edgeloop.contract.messages import DeviceState
from edgeloop.fleet.control import DeviceStates
from edgeloop.rollout import cli
from edgeloop.rollout.pause import PAUSE_URL_ENV, pause_key, pause_rollouts, resume_rollouts
from edgeloop.spec import ConnectionsSpec, PipelineSpec, load_spec

PIPELINES = Path(__file__).resolve().parents[3] / "include" / "pipelines"
SPEC = load_spec(PIPELINES / "factory_maintenance.yaml")
GROUP = "plant-north"


class FlagStorage:
    """The pause flag's S3 calls in memory; `reads` counts GETs, `resume_after` deletes the flag on that GET."""

    def __init__(self, resume_after: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0
        self.resume_after = resume_after
        self.down = False

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.objects[Key] = Body
        return {}

    def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.objects.pop(Key, None)
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.reads += 1
        if self.down:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": Key}}, "GetObject")
        if self.resume_after is not None and self.reads >= self.resume_after:
            self.objects.pop(Key, None)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def pod_environment(monkeypatch: pytest.MonkeyPatch, storage: FlagStorage | None) -> None:
    """The environment of a job pod: the signing key and connections from Secrets, no presigned pause URL."""
    from edgeloop import connections

    monkeypatch.delenv(PAUSE_URL_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.setenv(SIGNING_KEY_ENV, OPERATOR.private_pem().decode())
    monkeypatch.setenv("EDGELOOP_PIPELINES_DIR", str(PIPELINES))

    def s3_client(conn_id: str) -> Any:
        if storage is None:
            raise LookupError(f"The conn_id `{conn_id}` isn't defined")
        assert conn_id == SPEC.connections.s3
        return storage

    monkeypatch.setattr(connections, "s3_client", s3_client)


def test_the_job_pod_gets_the_pipelines_connections_from_a_secret_and_holds_no_value() -> None:
    from edgeloop.rollout.pods import render_pod, rollout_pod_operator

    renamed = SPEC.model_copy(update={"connections": ConnectionsSpec(s3="plant_minio", mlflow="plant_mlflow")})
    for spec, s3_env in ((SPEC, "AIRFLOW_CONN_EDGELOOP_S3"), (renamed, "AIRFLOW_CONN_PLANT_MINIO")):
        pod = render_pod(rollout_pod_operator(spec, GROUP, "7", 1, "ro-123"))  # build_pod_request_obj(dry_run=True)

        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env[s3_env] == {
            "name": s3_env,
            "valueFrom": {"secretKeyRef": {"name": "edgeloop-connections", "key": "s3"}},
        }
        refs = {name: e["valueFrom"]["secretKeyRef"]["key"] for name, e in env.items() if "valueFrom" in e}
        assert refs == {
            "EDGELOOP_SIGNING_KEY": "signing-key",
            "AIRFLOW_CONN_EDGELOOP_KAFKA": "kafka",
            s3_env: "s3",
            f"AIRFLOW_CONN_{spec.connections.mlflow.upper()}": "mlflow",
        }
        assert all("value" not in env[name] for name in refs)
        assert PAUSE_URL_ENV not in env, "a pod reads the flag itself, with no presigned URL in its spec"
        assert "aws_secret_access_key" not in json.dumps(pod).lower()


def test_a_job_in_a_pod_reads_the_flag_with_the_s3_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FlagStorage()
    pod_environment(monkeypatch, storage)

    paused = cli.pause_check(SPEC, GROUP, rollback=False)

    assert paused is not None and not paused()
    pause_rollouts(storage, SPEC, "ops", "line stop")
    assert paused()
    resume_rollouts(storage, SPEC, "ops")
    assert not paused()
    storage.down = True
    assert paused(), "a flag it cannot read holds the orders"


def test_a_rollback_and_a_daemonset_group_are_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    pod_environment(monkeypatch, None)  # not even the connection is needed
    daemonset = SPEC.model_copy(
        update={"groups": [g.model_copy(update={"strategy": "kubernetes"}) for g in SPEC.groups]}
    )

    assert cli.pause_check(SPEC, GROUP, rollback=True) is None
    assert cli.pause_check(daemonset, GROUP, rollback=False) is None


def test_a_pod_without_the_s3_connection_stops_before_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    pod_environment(monkeypatch, None)

    with pytest.raises(SystemExit, match="AIRFLOW_CONN_EDGELOOP_S3, from the Secret in a pod"):
        cli.pause_check(SPEC, GROUP, rollback=False)


def test_the_job_process_sends_no_order_while_paused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeloop import kafka
    from edgeloop.fleet import control

    storage = FlagStorage(resume_after=4)  # resumed at the fourth read: two polls of one second apart
    pod_environment(monkeypatch, storage)
    pause_rollouts(storage, SPEC, "ops", "line stop")
    ordered: list[float] = []
    monkeypatch.setattr(kafka, "kafka_config_for_job", lambda conn_id: {"bootstrap.servers": "fake:9092"})

    def push_assignment(spec: PipelineSpec, config: Any, signer: Any, **order: Any) -> Any:
        ordered.append(time.monotonic())
        return type("Order", (), {"to_dict": lambda self: {"id": order["assignment_id"]}})()

    def refresh(view: Any, **_: Any) -> tuple[DeviceRegistry, DeviceStates]:
        applied = {"model_version": "0"} if ordered else {"model_version": "3"}
        return DeviceRegistry(), DeviceStates({"d1": DeviceState("d1", GROUP, {}, applied)})

    monkeypatch.setattr(control, "push_assignment", push_assignment)
    monkeypatch.setattr(control.FleetView, "refresh", refresh)
    monkeypatch.setattr(control.FleetView, "mark_error_reports", lambda *a, **k: None)
    monkeypatch.setattr(control.FleetView, "new_error_reports", lambda *a, **k: [])
    args = ["--pipeline", SPEC.name, "--group", GROUP, "--model-version", "0", "--wave", "1", "--rollout-id", "ro-p"]
    started = time.monotonic()

    code = cli.main(["rollout-job", *args])  # what the pod runs (`edgeloop rollout-job ...`)

    assert code == 0 and len(ordered) == 1
    assert ordered[0] - started >= 1.9, "held for two polls of the flag"
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    (pause,) = result["pauses"]
    assert pause["resumed"] and pause["held_s"] >= 1.9 and pause["ordered"] == 0
    assert result["progress"]["applied"] == 1 and pause_key(SPEC) not in storage.objects
