"""Pausing and resuming a pipeline's rollouts through the plugin's API, with fake users and fake storage.

The route writes the same flag as `edgeloop rollout-pause` (`edgeloop.rollout.pause`): reading it
needs the right to read the pipeline's DAGs, changing it the right to edit them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from generator_kit import ADMIN, ALICE, BOB, DEMO_SPEC, VIEWER, FakeStorage, make_client

from edgeloop.generator.status import DagStatus
from edgeloop.rollout.job import rollout_id_for
from edgeloop.rollout.pause import pause_key, pause_state
from edgeloop.spec import load_spec

SPEC = load_spec(DEMO_SPEC)
PATH = "/api/pipelines/factory_maintenance/rollout-pause"
RUN_ID = "manual__2026-12-06T20:00:00+00:00"


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(tmp_path: Path, storage: FakeStorage) -> TestClient:
    dag_id = "factory_maintenance__rollout"
    running = {dag_id: DagStatus(dag_id, True, False, "running", RUN_ID)}
    return make_client(tmp_path, dag_states=running, storage=storage)


def test_nobody_gets_the_flag_or_changes_it_without_a_login(client: TestClient, storage: FakeStorage) -> None:
    for method, body in (("GET", None), ("POST", {"paused": True, "reason": "line stop"})):
        assert client.request(method, PATH, json=body).status_code == 401
        assert client.request(method, PATH, json=body, headers={"X-Test-User": "mallory"}).status_code == 403
    assert storage.objects == {}


def test_a_viewer_sees_the_flag_but_cannot_pause_or_resume(client: TestClient, storage: FakeStorage) -> None:
    state = client.get(PATH, headers=VIEWER).json()
    assert state["paused"] is False and state["flag"] is None and state["can_change"] is False

    for paused in (True, False):
        response = client.post(PATH, json={"paused": paused, "reason": "because"}, headers=VIEWER)
        assert response.status_code == 403, response.text
        assert "may not edit the DAGs of pipeline 'factory_maintenance'" in response.json()["message"]
    assert storage.objects == {}


def test_a_user_who_may_edit_only_other_pipelines_cannot_pause_this_one(
    client: TestClient, storage: FakeStorage
) -> None:
    assert client.get(PATH, headers=ALICE).json()["can_change"] is False
    assert client.post(PATH, json={"paused": True, "reason": "x"}, headers=ALICE).status_code == 403
    assert storage.objects == {}


def test_an_editor_pauses_with_a_reason_and_resumes_and_both_are_audited(
    client: TestClient, storage: FakeStorage
) -> None:
    rollout_id = rollout_id_for("factory_maintenance", RUN_ID)

    paused = client.post(PATH, json={"paused": True, "reason": "  line 3 stopped  "}, headers=BOB)

    assert paused.status_code == 200, paused.text
    assert paused.json()["running_rollouts"] == [rollout_id]
    flag = pause_state(storage, SPEC)  # what a rollout job and the gate read
    assert flag is not None and (flag["by"], flag["reason"], flag["paused"]) == ("bob", "line 3 stopped", True)
    seen = client.get(PATH, headers=VIEWER).json()
    assert seen["paused"] is True and seen["flag"] == flag
    assert client.get(PATH, headers=BOB).json()["can_change"] is True

    resumed = client.post(PATH, json={"paused": False, "reason": "line 3 runs again"}, headers=ADMIN)

    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["was"] == flag and resumed.json()["by"] == "admin"
    assert pause_state(storage, SPEC) is None and (SPEC.storage.bucket, pause_key(SPEC)) not in storage.objects
    parts = {p["action"]: p for p in storage.json(".json") if "action" in p}
    assert all(p["order"] == 80 and p["step"].startswith(f"{action}-") for action, p in parts.items())
    assert parts["pause"]["by"] == "bob" and parts["pause"]["reason"] == "line 3 stopped"
    assert parts["resume"]["by"] == "admin" and parts["resume"]["reason"] == "line 3 runs again"
    assert parts["resume"]["was"] == flag
    keys = [key for _, key in storage.objects]
    assert all(key.startswith(f"{SPEC.storage_prefix('rollouts')}/{rollout_id}/80-") for key in keys), keys


def test_a_pause_without_a_reason_is_refused_and_nothing_is_written(client: TestClient, storage: FakeStorage) -> None:
    response = client.post(PATH, json={"paused": True, "reason": "  "}, headers=ADMIN)
    assert response.status_code == 422 and "reason" in response.json()["message"]
    assert client.post(PATH, json={"paused": True, "why": "x"}, headers=ADMIN).status_code == 422
    assert storage.objects == {}


def test_without_a_running_rollout_only_the_flag_is_written(tmp_path: Path, storage: FakeStorage) -> None:
    client = make_client(tmp_path, storage=storage)  # the rollout DAG has no run

    assert client.post(PATH, json={"paused": True, "reason": "freeze"}, headers=ADMIN).json()["running_rollouts"] == []

    assert list(storage.objects) == [(SPEC.storage.bucket, pause_key(SPEC))]


def test_storage_that_does_not_answer_is_a_503_naming_the_flag(client: TestClient, storage: FakeStorage) -> None:
    storage.down = True
    assert client.get(PATH, headers=VIEWER).status_code == 503
    response = client.post(PATH, json={"paused": True, "reason": "x"}, headers=ADMIN)
    assert response.status_code == 503 and "could not be written" in response.json()["message"]


def test_an_unknown_pipeline_is_a_404(client: TestClient) -> None:
    assert client.get("/api/pipelines/no_such_line/rollout-pause", headers=ADMIN).status_code == 404
    bad_name = client.post("/api/pipelines/Bad-Name/rollout-pause", json={"paused": False}, headers=ADMIN)
    assert bad_name.status_code == 422
