"""Fakes for the generator's unit tests: users by header, an in-memory Kafka, recorded DAG states.

Only unit tests use these; integration tests go through the real Airflow api-server.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from edgeloop.deployment import DeploymentSettings
from edgeloop.generator.app import Access, GeneratorSettings, Sources, create_app
from edgeloop.generator.discovery import TopicInfo, UnknownTopic, split_topic
from edgeloop.generator.inference import SampleMessage
from edgeloop.generator.status import AlertSummary, DagStatus, StatusUnavailable
from edgeloop.spec import PipelineSpec

REPO = Path(__file__).resolve().parents[3]
DEMO_SPEC = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
PREFIX = "/edgeloop/generator"

# Fake users: the header names the user; "admin" may edit, "viewer" may only read, "alice" (a
# per-DAG auth manager's user who may write specs) may read every DAG but edit only those of pipeline
# "alices_line", and "bob" may edit every DAG but is no admin, so he may not write specs.
ADMIN = {"X-Test-User": "admin"}
VIEWER = {"X-Test-User": "viewer"}
ALICE = {"X-Test-User": "alice"}
BOB = {"X-Test-User": "bob"}
AIRFLOW_USERS = {"admin", "viewer", "alice", "bob"}


def _user(request: Request) -> str:
    name = request.headers.get("X-Test-User")
    if not name:
        raise HTTPException(status_code=401, detail="Not authenticated")
    if name not in AIRFLOW_USERS:
        raise HTTPException(status_code=403, detail="Invalid JWT token")
    return name


def _can_read(request: Request) -> None:
    _user(request)


def _may_access_dags(user: str, method: str, dag_ids: Sequence[str]) -> bool:
    if method == "GET" or user in ("admin", "bob"):
        return True
    return user == "alice" and all(d.startswith("alices_line__") for d in dag_ids)


FAKE_ACCESS = Access(
    user=_user,
    can_read=_can_read,
    may_edit=lambda user: user in ("admin", "bob"),
    may_write_specs=lambda user: user in ("admin", "alice"),
    may_access_dags=_may_access_dags,
    username=str,
    readable_dags=lambda user: None,
    login_url=lambda next_url: f"/auth/login?next={next_url}",
)


def messages(records: Iterable[Any], partition: int = 0) -> list[SampleMessage]:
    """Sample messages from records (dicts are JSON-encoded, bytes and None are sent as they are)."""
    out = []
    for offset, record in enumerate(records):
        value = record if record is None or isinstance(record, bytes) else json.dumps(record).encode()
        out.append(SampleMessage(partition, offset, 1_767_225_600_000 + offset, None, value))
    return out


@dataclass
class FakeKafka:
    """Topics with their messages and device-state groups, in memory."""

    topics: dict[str, list[SampleMessage]] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    state: dict[str, dict[str, int]] = field(default_factory=dict)
    down: bool = False
    created: list[str] = field(default_factory=list)

    def list_topics(self, config: Mapping[str, Any]) -> list[TopicInfo]:
        self._check()
        out = []
        for name, values in sorted(self.topics.items()):
            prefix, kind = split_topic(name)
            out.append(TopicInfo(name, self.partitions.get(name, 3), len(values), prefix, kind))
        return out

    def sample(self, config: Mapping[str, Any], topic: str, limit: int) -> list[SampleMessage]:
        self._check()
        if topic not in self.topics:
            raise UnknownTopic(f"topic '{topic}' does not exist on the cluster")
        return self.topics[topic][-limit:]

    def state_groups(self, config: Mapping[str, Any], prefix: str) -> dict[str, int] | None:
        self._check()
        return self.state.get(prefix)

    def alerts(self, config: Mapping[str, Any], topics: Mapping[str, str], since_ms: int) -> dict[str, AlertSummary]:
        self._check()
        return {name: AlertSummary(counts={"drift": 1}) for name in topics}

    def fleet(self, spec: PipelineSpec, config: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return {"groups": {g.name: {"devices": g.devices, "in_sync": g.devices, "reported": {}} for g in spec.groups}}

    def ensure_topics(self, spec: PipelineSpec, config: dict[str, Any]) -> list[str]:
        self._check()
        self.created.extend(spec.all_topics)
        return spec.all_topics

    def _check(self) -> None:
        if self.down:
            from edgeloop.generator.discovery import KafkaUnavailable

            raise KafkaUnavailable("Kafka at fake:9092 did not answer in 5s")


@dataclass
class FakeStorage:
    """The few S3 calls of the pause flag and the audit parts, objects in a dict; `down` fails every call."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("S3 at fake:9000 did not answer")

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self._check()
        self.objects[(Bucket, Key)] = Body
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        self._check()
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self._check()
        self.objects.pop((Bucket, Key), None)
        return {}

    def json(self, key_end: str) -> list[dict[str, Any]]:
        """The JSON objects whose key ends with `key_end`, by key."""
        return [json.loads(body) for (_, key), body in sorted(self.objects.items()) if key.endswith(key_end)]


def fake_sources(
    kafka: FakeKafka,
    dag_states: dict[str, DagStatus] | None = None,
    mlflow_up: bool = True,
    deployment: DeploymentSettings | None = None,
    storage: FakeStorage | None = None,
) -> Sources:
    states = dag_states or {}

    def champions(uri: str, names: Iterable[str]) -> dict[str, str | None]:
        if not mlflow_up:
            raise StatusUnavailable(f"MLflow at {uri} is not reachable: connection refused")
        return {n: "3" for n in names}

    return Sources(
        kafka_config=lambda conn_id: {"bootstrap.servers": "fake:9092"},
        mlflow_uri=lambda conn_id: "http://mlflow.invalid",
        dag_status=lambda ids: {i: states.get(i, DagStatus(i, exists=False)) for i in ids},
        list_topics=kafka.list_topics,
        sample=kafka.sample,
        state_groups=kafka.state_groups,
        alerts=kafka.alerts,
        champions=champions,
        ensure_topics=kafka.ensure_topics,
        fleet=kafka.fleet,
        deployment=lambda: deployment or DeploymentSettings(),
        users=lambda: set(AIRFLOW_USERS),
        storage=lambda spec: storage if storage is not None else FakeStorage(),
    )


def make_client(
    folder: Path,
    kafka: FakeKafka | None = None,
    *,
    dag_states: dict[str, DagStatus] | None = None,
    mlflow_up: bool = True,
    with_demo: bool = True,
    deployment: DeploymentSettings | None = None,
    storage: FakeStorage | None = None,
) -> TestClient:
    if with_demo:
        shutil.copy(DEMO_SPEC, folder / DEMO_SPEC.name)
    app = create_app(
        GeneratorSettings(pipelines_dir=folder),
        FAKE_ACCESS,
        fake_sources(kafka or FakeKafka(), dag_states, mlflow_up, deployment, storage),
    )
    return TestClient(app, root_path=PREFIX)
