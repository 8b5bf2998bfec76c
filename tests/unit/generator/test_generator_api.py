"""Every route of the generator's API with fake users (401/403) and fake Kafka; the files are real.

Airflow's own authentication is swapped for a header-named user here only; the integration
tests call the same routes through the real api-server with real tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from generator_kit import ADMIN, VIEWER, FakeKafka, make_client, messages

from edgeloop.generator.status import DagStatus
from edgeloop.generator.templates import get_template
from edgeloop.spec import STAGES

PM = get_template("predictive_maintenance")


@pytest.fixture
def kafka() -> FakeKafka:
    records = [PM.example_record(i) for i in range(20)]
    return FakeKafka(
        topics={
            "plant1.telemetry": messages(records),
            "plant1.health": [],
            "factory_maintenance.telemetry": messages(records[:3]),
            "scratch": [],
        },
        partitions={"plant1.telemetry": 4},
        state={"plant1": {"line-canary": 5, "plant-north": 40}},
    )


@pytest.fixture
def client(tmp_path: Path, kafka: FakeKafka) -> TestClient:
    states = {
        "factory_maintenance__ingest": DagStatus("factory_maintenance__ingest", True, False, "success", "r1", "t1"),
        "factory_maintenance__drift": DagStatus("factory_maintenance__drift", True, True, None, None, None),
    }
    return make_client(tmp_path, kafka, dag_states=states)


def create_from_topic(client: TestClient, name: str = "plant1") -> dict[str, Any]:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=ADMIN).json()["draft"]
    draft["name"] = name
    response = client.post("/api/pipelines", json={"draft": draft}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


READ_ROUTES = [
    ("GET", "/api/session", None),
    ("GET", "/api/templates", None),
    ("GET", "/api/pipelines", None),
    ("GET", "/api/status", None),
    ("GET", "/api/pipelines/factory_maintenance", None),
    ("GET", "/api/pipelines/factory_maintenance/fleet", None),
    ("GET", "/api/pipelines/factory_maintenance/charts", None),
    ("GET", "/api/pipelines/factory_maintenance/rollout-pause", None),
    ("POST", "/api/pipelines/factory_maintenance/diff", {"text": "name: x\n"}),
    ("POST", "/api/validate", {"text": "name: x\n"}),
    ("GET", "/api/topics", None),
    ("GET", "/api/topics/sample?topic=plant1.telemetry", None),
    ("GET", "/openapi.json", None),
    ("GET", "/static/app.js", None),
    ("GET", "/", None),
]
WRITE_ROUTES = [
    ("POST", "/api/pipelines", {"text": "name: x\n"}),
    ("PUT", "/api/pipelines/factory_maintenance", {"text": "name: x\n", "version": "0" * 16}),
    ("DELETE", "/api/pipelines/factory_maintenance?version=" + "0" * 16, None),
    ("POST", "/api/pipelines/factory_maintenance/rollout-pause", {"paused": True, "reason": "line stop"}),
]


REPORT_ROUTES = [
    ("GET", "/reports/factory_maintenance/scheduled__x/group=plant-north.html", None),
    ("GET", "/reports/factory_maintenance/scheduled__x/", None),
]


@pytest.mark.parametrize(("method", "path", "body"), [*READ_ROUTES, *WRITE_ROUTES, *REPORT_ROUTES])
def test_every_route_needs_a_logged_in_user(client: TestClient, method: str, path: str, body: Any) -> None:
    assert client.request(method, path, json=body).status_code == 401
    bad_token = client.request(method, path, json=body, headers={"X-Test-User": "mallory"})
    assert bad_token.status_code == 403


@pytest.mark.parametrize(("method", "path", "body"), READ_ROUTES)
def test_a_viewer_can_read_everything(client: TestClient, method: str, path: str, body: Any) -> None:
    assert client.request(method, path, json=body, headers=VIEWER).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_a_viewer_cannot_change_anything(client: TestClient, tmp_path: Path, method: str, path: str, body: Any) -> None:
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    response = client.request(method, path, json=body, headers=VIEWER)
    assert response.status_code == 403
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "path",
    [
        "/reports/Bad-Name/run/fleet.html",
        "/reports/factory_maintenance/run/fleet.exe",
        "/reports/factory_maintenance/run%2F..%2F..%2Fsecrets/fleet.html",
        "/reports/Bad-Name/run/",
        "/reports/factory_maintenance/run%20x/",
    ],
)
def test_report_paths_are_checked_before_storage_is_touched(client: TestClient, path: str) -> None:
    assert client.get(path, headers=VIEWER).status_code in (404, 422)


def test_the_page_asks_a_browser_without_login_to_log_in(client: TestClient) -> None:
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert '<a href="/auth/login?next=/plugin/pipelines">Log in to Airflow</a>' in response.text


def test_the_page_is_static_html_with_a_strict_content_policy(client: TestClient) -> None:
    response = client.get("/", headers=ADMIN)
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert '<meta name="airflow-root" content="">' in response.text
    assert "<script>" not in response.text  # the only script is the static file
    js = client.get("/static/app.js", headers=ADMIN)
    assert js.headers["content-type"].startswith("text/javascript") and "innerHTML" not in js.text
    assert client.get("/static/secrets.txt", headers=ADMIN).status_code == 404
    assert client.get("/static/..%2Fapp.py", headers=ADMIN).status_code == 404


def test_session_says_who_may_edit(client: TestClient) -> None:
    assert client.get("/api/session", headers=ADMIN).json() == {"user": "admin", "can_edit": True, "airflow_root": ""}
    assert client.get("/api/session", headers=VIEWER).json()["can_edit"] is False


def test_templates_and_presets_are_explained(client: TestClient) -> None:
    body = client.get("/api/templates", headers=VIEWER).json()
    assert [t["id"] for t in body["templates"]] == [
        "predictive_maintenance",
        "image_classification",
        "anomaly_detection",
    ]
    assert all(t["example"]["device_id"] for t in body["templates"])
    assert [p["id"] for p in body["presets"]] == ["cautious", "standard", "fast"]
    assert all(len(p["explanation"]) > 80 for p in body["presets"])


def test_the_list_shows_each_pipeline_with_the_state_of_its_dags(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: broken\nretries: lots\n")
    body = client.get("/api/pipelines", headers=VIEWER).json()
    by_name = {p["name"]: p for p in body["pipelines"]}
    demo = by_name["factory_maintenance"]
    stages = {s["stage"]: s for s in demo["stages"]}
    assert tuple(stages) == STAGES
    assert (stages["ingest"]["state"], stages["ingest"]["paused"]) == ("success", False)
    assert stages["drift"]["paused"] is True and stages["annotate"]["exists"] is False
    assert demo["groups"][0] == {"name": "line-canary", "wave": 0, "devices": 20}
    broken = by_name["broken"]
    assert broken["valid"] is False and broken["stages"] == []
    assert {e["location"] for e in broken["errors"]} >= {"retries", "topics", "schema"}


def test_status_degrades_source_by_source(tmp_path: Path, kafka: FakeKafka) -> None:
    up = make_client(tmp_path, kafka).get("/api/status", headers=VIEWER).json()
    assert up["pipelines"]["factory_maintenance"] == {
        "alerts": {"counts": {"drift": 1}, "total": 1, "latest": None, "bad": 0},
        "champion": "3",
    }
    assert up["sources"] == {"kafka": "ok", "mlflow": "ok"}
    kafka.down = True
    down = make_client(tmp_path, kafka, mlflow_up=False, with_demo=False).get("/api/status", headers=VIEWER).json()
    assert down["pipelines"]["factory_maintenance"] == {"alerts": None, "champion": None}
    assert "did not answer" in down["sources"]["kafka"]
    assert "MLflow at http://mlflow.invalid is not reachable" in down["sources"]["mlflow"]


def test_one_pipeline_with_its_text_and_version(client: TestClient, tmp_path: Path) -> None:
    body = client.get("/api/pipelines/factory_maintenance", headers=VIEWER).json()
    assert body["text"] == (tmp_path / "factory_maintenance.yaml").read_text()
    assert len(body["version"]) == 16 and body["valid"] is True
    assert client.get("/api/pipelines/nope_nope", headers=VIEWER).status_code == 404


@pytest.mark.parametrize("name", ["Factory", "a", "../etc", "with-dash", "x" * 41])
def test_invalid_names_are_refused_before_any_file_access(client: TestClient, name: str) -> None:
    response = client.get(f"/api/pipelines/{name}", headers=VIEWER)
    assert response.status_code in (404, 422)  # '../etc' never reaches the route
    if response.status_code == 422:
        assert response.json()["errors"][0]["location"] == "name"


def test_fleet_state_per_group(client: TestClient) -> None:
    body = client.get("/api/pipelines/factory_maintenance/fleet", headers=VIEWER).json()
    assert body["groups"]["plant-north"] == {"devices": 120, "in_sync": 120, "reported": {}}


def test_topics_are_listed_live_with_the_pipelines_using_them(client: TestClient, kafka: FakeKafka) -> None:
    topics = {t["name"]: t for t in client.get("/api/topics", headers=VIEWER).json()["topics"]}
    assert topics["plant1.telemetry"]["is_source"] and topics["plant1.telemetry"]["used_by"] == []
    assert topics["factory_maintenance.telemetry"]["used_by"] == ["factory_maintenance"]
    assert topics["scratch"]["prefix"] is None and not topics["scratch"]["is_source"]
    kafka.down = True
    down = client.get("/api/topics", headers=VIEWER)
    assert down.status_code == 503 and "did not answer" in down.json()["message"]


def test_sampling_a_topic_proposes_a_draft(client: TestClient) -> None:
    body = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=VIEWER).json()
    assert (body["prefix"], body["siblings"], body["groups_source"]) == ("plant1", ["health"], "device-state")
    draft = body["draft"]
    assert (draft["name"], draft["partitions"], draft["canary"]) == ("plant1", 4, "line-canary")
    assert [g["name"] for g in draft["groups"]] == ["line-canary", "plant-north"]
    assert body["inference"]["decoded"] == 20


def test_sampling_an_existing_pipelines_topic_warns(client: TestClient) -> None:
    params = {"topic": "factory_maintenance.telemetry"}
    body = client.get("/api/topics/sample", params=params, headers=VIEWER).json()
    assert body["draft"]["name"] == "factory_maintenance_2"
    assert "already read the topics of prefix 'factory_maintenance'" in body["notes"][-1]


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"topic": "nope.telemetry"}, 404, "topic 'nope.telemetry' does not exist"),
        ({"topic": "plant1.health"}, 422, "is not named <prefix>.telemetry"),
        ({"topic": "scratch"}, 422, "is not named <prefix>.telemetry"),
        ({"topic": "bad topic!"}, 422, "invalid request"),
        ({"topic": "plant1.telemetry", "template": "fraud"}, 422, "invalid request"),
        ({"topic": "plant1.telemetry", "limit": 0}, 422, "invalid request"),
    ],
)
def test_sampling_bad_topics(client: TestClient, params: dict[str, Any], code: int, message: str) -> None:
    response = client.get("/api/topics/sample", params=params, headers=VIEWER)
    assert response.status_code == code
    assert message in response.json()["message"]


def test_rendering_a_draft_validates_it_without_writing(client: TestClient, tmp_path: Path) -> None:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=VIEWER).json()["draft"]
    body = client.post("/api/render", json=draft, headers=VIEWER).json()
    assert body["valid"] and body["errors"] == [] and body["exists"] is False
    assert body["dag_ids"][0] == "plant1__ingest" and "name: plant1\n" in body["text"]
    assert not (tmp_path / "plant1.yaml").exists()
    draft["schema"] = [f for f in draft["schema"] if f["role"] != "group_id"]
    missing_role = client.post("/api/render", json=draft, headers=VIEWER).json()
    assert missing_role["valid"] is False
    assert missing_role["errors"] == [
        {"location": "(root)", "message": "Value error, schema: no field has the role(s) ['group_id']"}
    ]


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"name": "Plant 1"}, "name"),
        ({"groups": [{"name": "Plant_North", "devices": 1}]}, "groups[0].name"),
        ({"canary": "nowhere"}, "canary"),
        ({"preset": "yolo"}, "preset"),
        ({"schema": [{"name": "x", "type": "complex", "role": "feature"}]}, "schema[0].type"),
    ],
)
def test_bad_drafts_name_the_field(client: TestClient, change: dict[str, Any], location: str) -> None:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=VIEWER).json()["draft"]
    response = client.post("/api/render", json={**draft, **change}, headers=VIEWER)
    assert response.status_code == 422
    assert response.json()["errors"][0]["location"] == location


def test_validate_reports_field_paths_and_the_dags(client: TestClient) -> None:
    text = client.get("/api/pipelines/factory_maintenance", headers=VIEWER).json()["text"]
    ok = client.post("/api/validate", json={"text": text}, headers=VIEWER).json()
    assert ok["valid"] and ok["name"] == "factory_maintenance" and len(ok["dag_ids"]) == 7
    bad = client.post("/api/validate", json={"text": text.replace("wave: 0", "wave: -1")}, headers=VIEWER).json()
    assert bad["errors"] == [{"location": "groups[0].wave", "message": "Input should be greater than or equal to 0"}]
    other = client.post("/api/validate", json={"text": text, "name": "other_name"}, headers=VIEWER).json()
    assert other["errors"][0]["location"] == "name"


def test_create_from_a_draft_writes_the_spec_and_creates_topics(
    client: TestClient, tmp_path: Path, kafka: FakeKafka
) -> None:
    created = create_from_topic(client)
    assert created["file"] == "plant1.yaml" and created["dag_ids"][0] == "plant1__ingest"
    assert created["topics_created"] == [
        f"plant1.{k}"
        for k in ("telemetry", "health", "errors", "control", "device-state", "alerts", "devices", "profiles")
    ]
    assert (tmp_path / "plant1.yaml").read_text().startswith("# Pipeline spec written by the edgeloop")
    listed = [p["name"] for p in client.get("/api/pipelines", headers=VIEWER).json()["pipelines"]]
    assert listed == ["factory_maintenance", "plant1"]


def test_create_from_reviewed_text_keeps_the_text_as_written(client: TestClient, tmp_path: Path) -> None:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=VIEWER).json()["draft"]
    text = client.post("/api/render", json=draft, headers=VIEWER).json()["text"] + "# reviewed by ops\n"
    response = client.post("/api/pipelines", json={"text": text, "create_topics": False}, headers=ADMIN)
    assert response.status_code == 201 and response.json()["topics_created"] == []
    assert (tmp_path / "plant1.yaml").read_text() == text


def test_creating_twice_is_a_conflict(client: TestClient) -> None:
    create_from_topic(client)
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=ADMIN).json()["draft"]
    draft["name"] = "plant1"
    second = client.post("/api/pipelines", json={"draft": draft}, headers=ADMIN)
    assert second.status_code == 409
    assert second.json()["message"] == "pipeline 'plant1' already exists (plant1.yaml): pick another name or edit it"


def test_create_refuses_invalid_specs_and_writes_nothing(client: TestClient, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    text = (
        (tmp_path / "factory_maintenance.yaml").read_text().replace("name: factory_maintenance\n", "name: Bad-Name\n")
    )
    bad_name = client.post("/api/pipelines", json={"text": text}, headers=ADMIN)
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["location"] == "name"
    code = client.post("/api/pipelines", json={"text": "!!python/object/apply:os.system ['id']"}, headers=ADMIN)
    assert code.status_code == 422 and code.json()["errors"][0]["location"] == "(yaml)"
    neither = client.post("/api/pipelines", json={}, headers=ADMIN)
    assert neither.status_code == 422 and "either 'text'" in neither.json()["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_spec_is_saved_even_when_kafka_is_down(client: TestClient, kafka: FakeKafka, tmp_path: Path) -> None:
    draft = client.get("/api/topics/sample", params={"topic": "plant1.telemetry"}, headers=ADMIN).json()["draft"]
    kafka.down = True
    response = client.post("/api/pipelines", json={"draft": draft}, headers=ADMIN)
    assert response.status_code == 201
    assert response.json()["warnings"] == ["Kafka topics not created: Kafka at fake:9092 did not answer in 5s"]
    assert (tmp_path / "plant1.yaml").exists()


def test_an_edit_shows_its_diff_and_is_saved_with_its_version(client: TestClient, tmp_path: Path) -> None:
    current = client.get("/api/pipelines/factory_maintenance", headers=ADMIN).json()
    text = current["text"].replace("soak: 60s", "soak: 5m")
    preview = client.post("/api/pipelines/factory_maintenance/diff", json={"text": text}, headers=VIEWER).json()
    assert [line for line in preview["diff"].splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")] == [
        "-  soak: 60s",
        "+  soak: 5m",
    ]
    assert preview["valid"] and preview["version"] == current["version"]
    saved = client.put(
        "/api/pipelines/factory_maintenance", json={"text": text, "version": current["version"]}, headers=ADMIN
    )
    assert saved.status_code == 200 and saved.json()["diff"] == preview["diff"]
    assert (tmp_path / "factory_maintenance.yaml").read_text() == text


def test_the_second_of_two_concurrent_edits_is_refused(client: TestClient, tmp_path: Path) -> None:
    opened = client.get("/api/pipelines/factory_maintenance", headers=ADMIN).json()
    alice = opened["text"].replace("soak: 60s", "soak: 5m")
    bob = opened["text"].replace("owner: reliability-team", "owner: bob")
    first = client.put(
        "/api/pipelines/factory_maintenance", json={"text": alice, "version": opened["version"]}, headers=ADMIN
    )
    second = client.put(
        "/api/pipelines/factory_maintenance", json={"text": bob, "version": opened["version"]}, headers=ADMIN
    )
    assert first.status_code == 200 and second.status_code == 409
    assert second.json()["current_version"] == first.json()["version"]
    assert "was changed by someone else since you opened it" in second.json()["message"]
    assert (tmp_path / "factory_maintenance.yaml").read_text() == alice


def test_invalid_edits_are_refused_and_the_file_stays(client: TestClient, tmp_path: Path) -> None:
    opened = client.get("/api/pipelines/factory_maintenance", headers=ADMIN).json()
    broken = opened["text"].replace("max_failure_ratio: 0.05", "max_failure_ratio: 5")
    response = client.put(
        "/api/pipelines/factory_maintenance", json={"text": broken, "version": opened["version"]}, headers=ADMIN
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"location": "rollout.max_failure_ratio", "message": "Input should be less than or equal to 1"}
    ]
    renamed = opened["text"].replace("name: factory_maintenance\n", "name: renamed\n")
    assert (
        client.put(
            "/api/pipelines/factory_maintenance", json={"text": renamed, "version": opened["version"]}, headers=ADMIN
        ).status_code
        == 422
    )
    bad_version = client.put(
        "/api/pipelines/factory_maintenance", json={"text": opened["text"], "version": "latest"}, headers=ADMIN
    )
    assert bad_version.status_code == 422 and bad_version.json()["errors"][0]["location"] == "version"
    assert (tmp_path / "factory_maintenance.yaml").read_text() == opened["text"]


def test_editing_a_pipeline_that_does_not_exist(client: TestClient) -> None:
    text = (
        client.get("/api/pipelines/factory_maintenance", headers=ADMIN)
        .json()["text"]
        .replace("name: factory_maintenance", "name: ghost_pipe")
    )
    response = client.put("/api/pipelines/ghost_pipe", json={"text": text, "version": "0" * 16}, headers=ADMIN)
    assert response.status_code == 404


def test_delete_needs_the_current_version(client: TestClient, tmp_path: Path) -> None:
    created = create_from_topic(client)
    stale = client.delete("/api/pipelines/plant1", params={"version": "f" * 16}, headers=ADMIN)
    assert stale.status_code == 409
    gone = client.delete("/api/pipelines/plant1", params={"version": created["version"]}, headers=ADMIN)
    assert gone.status_code == 204 and not (tmp_path / "plant1.yaml").exists()
    assert (
        client.delete("/api/pipelines/plant1", params={"version": created["version"]}, headers=ADMIN).status_code == 404
    )


def test_the_openapi_schema_documents_every_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=VIEWER).json()
    assert schema["servers"] == [{"url": "/edgeloop/generator"}]
    assert set(schema["paths"]) == {
        "/api/session",
        "/api/templates",
        "/api/pipelines",
        "/api/status",
        "/api/pipelines/{name}",
        "/api/pipelines/{name}/fleet",
        "/api/pipelines/{name}/charts",
        "/api/pipelines/{name}/rollout-pause",
        "/api/pipelines/{name}/diff",
        "/api/validate",
        "/api/render",
        "/api/topics",
        "/api/topics/sample",
        "/reports/{name}/{run}/{report}",
        "/reports/{name}/{run}/",
    }
    assert set(schema["paths"]["/api/pipelines/{name}"]) == {"get", "put", "delete"}
    assert set(schema["paths"]["/api/pipelines/{name}/rollout-pause"]) == {"get", "post"}
    assert {"Draft", "CreateRequest", "UpdateRequest", "ErrorBody"} <= set(schema["components"]["schemas"])
    put = schema["paths"]["/api/pipelines/{name}"]["put"]["responses"]
    assert {"200", "401", "403", "404", "409", "422", "503"} == set(put)
    assert "concurrent edit" in put["409"]["description"]
    assert all(op.get("description") for path in schema["paths"].values() for op in path.values())
