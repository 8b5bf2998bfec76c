"""The generator through the real Airflow api-server of the stack: real logins, real Kafka, real files.

Given a fresh `<prefix>.telemetry` topic with device records and a fleet state topic, an
admin creates, edits and deletes a pipeline through the plugin's REST API; a viewer can
look but not change; nobody gets in without a token; an admin pauses and resumes a pipeline's
rollouts, a viewer only sees the flag. Also `edgeloop spec new` on the same topic. Every pipeline
and topic a test makes is removed again.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from edgeloop.generator.cli import EXIT_OK, EXIT_USAGE, spec_new
from edgeloop.generator.templates import get_template
from edgeloop.spec import STAGES, load_spec

pytestmark = pytest.mark.integration
PREFIX = "/edgeloop/generator"
RECORDS = 24


def login(base: str, user: str, password: str) -> str:
    response = requests.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


class Generator:
    """The plugin's REST API as a client sees it (`token=None`: not logged in)."""

    def __init__(self, base: str, token: str | None) -> None:
        self.url = f"{base}{PREFIX}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", headers=self.headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def base(stack_env: dict[str, str]) -> str:
    url = stack_env["EDGELOOP_AIRFLOW_URL"]
    token = login(url, "admin", stack_env["AIRFLOW_ADMIN_PASSWORD"])
    plugins = requests.get(f"{url}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    if not any(p["name"] == "edgeloop" for p in plugins["plugins"]):
        pytest.fail(f"the api-server at {url} has not loaded plugins/edgeloop_plugin.py: restart it (make stack-up)")
    return url


@pytest.fixture(scope="module")
def admin(base: str, stack_env: dict[str, str]) -> Generator:
    return Generator(base, login(base, "admin", stack_env["AIRFLOW_ADMIN_PASSWORD"]))


@pytest.fixture(scope="module")
def viewer(base: str, stack_env: dict[str, str]) -> Generator:
    return Generator(base, login(base, "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"]))


@pytest.fixture(scope="module")
def source(kafka_config: dict[str, str]) -> Iterator[str]:
    """A fresh `<prefix>.telemetry` topic with device records (one of them broken) and a fleet state topic."""
    prefix = f"gen_it_{uuid.uuid4().hex[:8]}"
    admin_client = AdminClient(kafka_config)
    topics = [NewTopic(f"{prefix}.telemetry", 3, 1), NewTopic(f"{prefix}.device-state", 3, 1)]
    for future in admin_client.create_topics(topics, operation_timeout=30).values():
        future.result(timeout=30)
    producer = Producer(kafka_config)
    template = get_template("predictive_maintenance")
    for i in range(RECORDS):
        record = template.example_record(i)
        producer.produce(f"{prefix}.telemetry", key=record["device_id"], value=json.dumps(record))
    producer.produce(f"{prefix}.telemetry", key="dev-000", value=b'{"device_id": "dev-000", "rpm": ')
    for device, group in (("dev-000", "line-canary"), ("dev-001", "plant-north"), ("dev-002", "plant-north")):
        state = {"device_id": device, "group_id": group, "desired": {}, "reported": {"model_version": "1"}}
        producer.produce(f"{prefix}.device-state", key=device, value=json.dumps(state))
    assert producer.flush(30) == 0
    yield prefix
    existing = set(admin_client.list_topics(timeout=30).topics)
    doomed = [t for t in existing if t.startswith(f"{prefix}.")]
    if doomed:
        for future in admin_client.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def cleanup(admin: Generator, base: str) -> Iterator[list[str]]:
    """Pipelines a test creates: their specs and any DAGs the dag-processor made of them are removed."""
    names: list[str] = []
    yield names
    for name in names:
        found = admin.call("GET", f"/api/pipelines/{name}")
        if found.status_code == 200:
            admin.call("DELETE", f"/api/pipelines/{name}", params={"version": found.json()["version"]})
        for stage in STAGES:
            requests.delete(f"{base}/api/v2/dags/{name}__{stage}", headers=admin.headers, timeout=30)


def sample(generator: Generator, prefix: str) -> dict[str, Any]:
    response = generator.call("GET", "/api/topics/sample", params={"topic": f"{prefix}.telemetry"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_no_token_no_entry_and_a_viewer_only_reads(base: str, viewer: Generator, source: str) -> None:
    anonymous = Generator(base, None)
    for method, path in [("GET", "/"), ("GET", "/api/pipelines"), ("GET", "/api/topics"), ("POST", "/api/pipelines")]:
        assert anonymous.call(method, path, json={}).status_code == 401, path
    assert Generator(base, "not-a-jwt").call("GET", "/api/pipelines").status_code == 403
    assert viewer.call("GET", "/api/pipelines").status_code == 200
    assert viewer.call("GET", "/api/session").json()["can_edit"] is False
    draft = sample(viewer, source)["draft"]
    assert viewer.call("POST", "/api/pipelines", json={"draft": draft}).status_code == 403
    text = viewer.call("GET", "/api/pipelines/factory_maintenance").json()
    put = viewer.call(
        "PUT", "/api/pipelines/factory_maintenance", json={"text": text["text"], "version": text["version"]}
    )
    assert put.status_code == 403
    delete = viewer.call("DELETE", "/api/pipelines/factory_maintenance", params={"version": text["version"]})
    assert delete.status_code == 403


def test_the_page_works_with_the_airflow_ui_cookie(base: str, stack_env: dict[str, str]) -> None:
    token = login(base, "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"])
    page = requests.get(f"{base}{PREFIX}/", cookies={"_token": token}, timeout=30)
    assert page.status_code == 200 and '<meta name="airflow-root" content="">' in page.text
    session = requests.get(f"{base}{PREFIX}/api/session", cookies={"_token": token}, timeout=30).json()
    assert session == {"user": "viewer", "can_edit": False, "airflow_root": ""}
    assert requests.get(f"{base}{PREFIX}/", headers={"Accept": "text/html"}, timeout=30).status_code == 401


def test_topics_are_listed_live_and_sampled(admin: Generator, source: str) -> None:
    topics = {t["name"]: t for t in admin.call("GET", "/api/topics").json()["topics"]}
    assert topics[f"{source}.telemetry"]["messages"] == RECORDS + 1
    assert topics[f"{source}.telemetry"]["is_source"] and not topics[f"{source}.device-state"]["is_source"]
    proposal = sample(admin, source)
    inference = proposal["inference"]
    assert (inference["sampled"], inference["decoded"]) == (RECORDS + 1, RECORDS)
    assert len(inference["problems"]) == 1 and "not JSON" in inference["problems"][0]
    roles = {f["name"]: f["role"] for f in inference["fields"]}
    assert (roles["device_id"], roles["ts"], roles["rpm"], roles["prediction"]) == (
        "device_id",
        "timestamp",
        "feature",
        "prediction",
    )
    assert proposal["groups_source"] == "device-state"
    assert [(g["name"], g["devices"]) for g in proposal["draft"]["groups"]] == [("line-canary", 1), ("plant-north", 2)]
    assert proposal["draft"]["name"] == source and proposal["draft"]["partitions"] == 3


def test_unknown_and_unusable_topics(admin: Generator, source: str) -> None:
    missing = admin.call("GET", "/api/topics/sample", params={"topic": f"{source}_nope.telemetry"})
    assert missing.status_code == 404 and "does not exist" in missing.json()["message"]
    state = admin.call("GET", "/api/topics/sample", params={"topic": f"{source}.device-state"})
    assert state.status_code == 422 and "<prefix>.telemetry" in state.json()["message"]


def test_create_edit_conflict_and_delete(
    admin: Generator, source: str, kafka_config: dict[str, str], cleanup: list[str]
) -> None:
    draft = sample(admin, source)["draft"]
    cleanup.append(draft["name"])
    render = admin.call("POST", "/api/render", json=draft).json()
    assert render["valid"], render["errors"]
    created = admin.call("POST", "/api/pipelines", json={"text": render["text"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["dag_ids"][0] == f"{source}__ingest" and body["warnings"] == []
    assert f"{source}.alerts" in AdminClient(kafka_config).list_topics(timeout=30).topics
    assert admin.call("POST", "/api/pipelines", json={"text": render["text"]}).status_code == 409

    listed = {p["name"]: p for p in admin.call("GET", "/api/pipelines").json()["pipelines"]}
    assert listed[source]["valid"] and listed[source]["version"] == body["version"]

    opened = admin.call("GET", f"/api/pipelines/{source}").json()
    mine = opened["text"].replace("soak: 10m", "soak: 15m")
    theirs = opened["text"].replace("owner: edgeloop", "owner: someone-else")
    diff = admin.call("POST", f"/api/pipelines/{source}/diff", json={"text": mine}).json()
    assert "-  soak: 10m\n+  soak: 15m\n" in diff["diff"] and diff["valid"]
    first = admin.call("PUT", f"/api/pipelines/{source}", json={"text": mine, "version": opened["version"]})
    second = admin.call("PUT", f"/api/pipelines/{source}", json={"text": theirs, "version": opened["version"]})
    assert first.status_code == 200 and second.status_code == 409
    assert "changed by someone else" in second.json()["message"]

    broken = mine.replace("max_failure_ratio: 0.05", "max_failure_ratio: 2")
    invalid = admin.call("PUT", f"/api/pipelines/{source}", json={"text": broken, "version": first.json()["version"]})
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["location"] == "rollout.max_failure_ratio"

    gone = admin.call("DELETE", f"/api/pipelines/{source}", params={"version": first.json()["version"]})
    assert gone.status_code == 204
    assert admin.call("GET", f"/api/pipelines/{source}").status_code == 404


def test_an_editor_pauses_and_resumes_rollouts_a_viewer_only_sees_it(
    admin: Generator, viewer: Generator, base: str, source: str, s3_client: Any, cleanup: list[str]
) -> None:
    from edgeloop.generator.render import check_spec_text
    from edgeloop.rollout.pause import pause_state

    draft = {**sample(admin, source)["draft"], "name": f"{source}_pause"}
    cleanup.append(draft["name"])
    created = admin.call("POST", "/api/pipelines", json={"draft": draft, "create_topics": False})
    assert created.status_code == 201, created.text
    name = draft["name"]
    spec = check_spec_text(admin.call("GET", f"/api/pipelines/{name}").json()["text"], name).spec
    assert spec is not None
    path = f"/api/pipelines/{name}/rollout-pause"
    if admin.call("GET", path).status_code == 404:
        pytest.fail(f"the api-server at {base} runs a plugin without {path}: restart it (make stack-up)")

    anonymous = Generator(base, None)
    for method, body in (("GET", None), ("POST", {"paused": True, "reason": "x"})):
        assert anonymous.call(method, path, json=body).status_code == 401
        assert Generator(base, "not-a-jwt").call(method, path, json=body).status_code == 403
    seen = viewer.call("GET", path).json()
    assert (seen["paused"], seen["can_change"]) == (False, False)
    assert viewer.call("POST", path, json={"paused": True, "reason": "x"}).status_code == 403
    assert pause_state(s3_client, spec) is None

    paused = admin.call("POST", path, json={"paused": True, "reason": "line 3 stopped"})
    assert paused.status_code == 200, paused.text
    flag = pause_state(s3_client, spec)  # the flag a rollout job and the gate read
    assert flag is not None and (flag["by"], flag["reason"]) == ("admin", "line 3 stopped")
    assert viewer.call("GET", path).json()["flag"] == flag
    assert viewer.call("POST", path, json={"paused": False}).status_code == 403
    assert pause_state(s3_client, spec) == flag, "a viewer's resume changed nothing"

    resumed = admin.call("POST", path, json={"paused": False, "reason": "line 3 runs"})
    assert resumed.status_code == 200 and resumed.json()["was"] == flag
    assert pause_state(s3_client, spec) is None and viewer.call("GET", path).json()["paused"] is False


def test_invalid_names_and_spec_errors_through_the_server(admin: Generator, source: str) -> None:
    assert admin.call("GET", "/api/pipelines/Not-A-Name").status_code == 422
    draft = {**sample(admin, source)["draft"], "name": "Bad Name"}
    bad = admin.call("POST", "/api/pipelines", json={"draft": draft})
    assert bad.status_code == 422 and bad.json()["errors"][0]["location"] == "draft.name"
    spec_error = admin.call("POST", "/api/pipelines", json={"text": "name: x_y\nretries: 99\n"})
    assert spec_error.status_code == 422
    assert {"retries", "topics", "schema", "storage"} <= {e["location"] for e in spec_error.json()["errors"]}


def test_status_reads_alerts_and_mlflow(admin: Generator) -> None:
    body = admin.call("GET", "/api/status").json()
    assert body["sources"] == {"kafka": "ok", "mlflow": "ok"}
    assert set(body["pipelines"]["factory_maintenance"]) == {"alerts", "champion"}


def test_the_openapi_schema_is_served_to_logged_in_users(admin: Generator, base: str) -> None:
    schema = admin.call("GET", "/openapi.json").json()
    assert "/api/pipelines/{name}" in schema["paths"]
    assert Generator(base, None).call("GET", "/openapi.json").status_code == 401


def test_spec_new_writes_a_valid_spec_from_the_topic(tmp_path: Path, kafka_config: dict[str, str], source: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "--from-topic",
        f"{source}.telemetry",
        "--template",
        "predictive_maintenance",
        "--name",
        "cli_pipeline",
        "--groups",
        "line-canary=4,plant-north=30",
        "--preset",
        "cautious",
        "--approvers",
        "admin",
        "--folder",
        str(tmp_path),
        "--bootstrap-servers",
        kafka_config["bootstrap.servers"],
    ]
    assert spec_new(argv, environ={}, out=out, err=err) == EXIT_OK, err.getvalue()
    spec = load_spec(tmp_path / "cli_pipeline.yaml")
    assert spec.topics.prefix == source and [g.name for g in spec.groups] == ["line-canary", "plant-north"]
    assert spec.rollout.canary_groups == ["line-canary"] and spec.rollout.approval_required
    assert spec.rollout.approvers == ["admin"]
    assert "wrote" in out.getvalue() and "not JSON" in err.getvalue()
    assert spec_new(argv, environ={}, out=io.StringIO(), err=err) == 3  # exists


def test_spec_new_on_a_missing_topic(tmp_path: Path, kafka_config: dict[str, str], source: str) -> None:
    err = io.StringIO()
    argv = ["--from-topic", f"{source}_nope.telemetry", "--template", "anomaly_detection", "--folder", str(tmp_path)]
    code = spec_new(argv, environ={"EDGELOOP_KAFKA_BOOTSTRAP": kafka_config["bootstrap.servers"]}, err=err)
    assert code == EXIT_USAGE and "does not exist" in err.getvalue()
    assert list(tmp_path.iterdir()) == []
