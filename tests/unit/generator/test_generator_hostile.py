"""The generator's API against hostile callers: DAG permissions from the pipeline, reports in a sandbox, no 5xx.

A user who may edit the DAGs of one pipeline writes that pipeline only, whatever `dag_id`
the query string names; drift reports (device values inside) are served sandboxed; and
request bodies of any shape get a 4xx answer, never a server error.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.hostile import json_values, spec_texts
from tests.unit.generator.generator_kit import ADMIN, ALICE, DEMO_SPEC, VIEWER, make_client

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
VERSION = "0" * 16


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return make_client(tmp_path)


def spec_text(name: str) -> str:
    return DEMO_SPEC.read_text().replace("name: factory_maintenance", f"name: {name}", 1)


def test_edit_rights_on_one_pipeline_never_reach_another_whatever_the_query_says(
    client: TestClient, tmp_path: Path
) -> None:
    stored = client.get("/api/pipelines/factory_maintenance", headers=ADMIN).json()
    before = (tmp_path / "factory_maintenance.yaml").read_bytes()
    forged = "dag_id=alices_line__ingest"
    put = client.put(
        f"/api/pipelines/factory_maintenance?{forged}",
        json={"text": stored["text"] + "\n# alice was here\n", "version": stored["version"]},
        headers=ALICE,
    )
    assert put.status_code == 403
    assert "may not edit the DAGs of pipeline 'factory_maintenance'" in put.json()["message"]
    assert (
        client.delete(
            f"/api/pipelines/factory_maintenance?version={stored['version']}&{forged}", headers=ALICE
        ).status_code
        == 403
    )
    assert (
        client.post(f"/api/pipelines?{forged}", json={"text": spec_text("someone_else")}, headers=ALICE).status_code
        == 403
    )
    assert (tmp_path / "factory_maintenance.yaml").read_bytes() == before
    assert not (tmp_path / "someone_else.yaml").exists()

    created = client.post(
        "/api/pipelines", json={"text": spec_text("alices_line"), "create_topics": False}, headers=ALICE
    )
    assert created.status_code == 201, created.text
    assert (tmp_path / "alices_line.yaml").exists()


def test_a_viewer_never_writes_even_with_a_forged_dag_id(client: TestClient, tmp_path: Path) -> None:
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    for method, path, body in [
        ("POST", "/api/pipelines?dag_id=factory_maintenance__ingest", {"text": spec_text("viewers_line")}),
        ("PUT", "/api/pipelines/factory_maintenance?dag_id=x", {"text": "name: x\n", "version": VERSION}),
        ("DELETE", f"/api/pipelines/factory_maintenance?version={VERSION}&dag_id=x", None),
    ]:
        assert client.request(method, path, json=body, headers=VIEWER).status_code == 403
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


class FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_objects_v2(self, Bucket: str, Prefix: str) -> dict[str, Any]:
        return {"Contents": [{"Key": k} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key])}


def test_drift_reports_are_served_sandboxed_and_never_sniffed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "reports/drift/factory_maintenance/run1"
    report = b"<html><script>document.title='pwned'</script></html>"
    summary = {"status": "</b><script>x()</script>", "drifted_groups": ["<img src=x onerror=alert(1)>"]}
    s3 = FakeS3(
        {
            f"{prefix}/group=plant-north.html": report,
            f"{prefix}/summary.json": json.dumps(summary).encode(),
        }
    )
    monkeypatch.setattr("edgeloop.connections.s3_client", lambda conn_id: s3)
    page = client.get("/reports/factory_maintenance/run1/group=plant-north.html", headers=VIEWER)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert "connect-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    index = client.get("/reports/factory_maintenance/run1/", headers=VIEWER)
    assert index.headers["content-security-policy"].startswith("sandbox;")
    assert "script-src" not in index.headers["content-security-policy"]  # default-src 'none': no script at all
    assert index.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in index.text and "<img" not in index.text
    data = client.get("/reports/factory_maintenance/run1/summary.json", headers=VIEWER)
    assert data.headers["content-type"] == "application/json" and data.headers["x-content-type-options"] == "nosniff"


def test_reading_a_report_needs_read_rights_on_the_pipelines_dags(tmp_path: Path) -> None:
    import dataclasses

    from tests.unit.generator import generator_kit as kit

    from edgeloop.generator.app import GeneratorSettings, create_app

    shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name)
    no_dags = dataclasses.replace(kit.FAKE_ACCESS, may_access_dags=lambda user, method, dag_ids: False)
    app = create_app(GeneratorSettings(pipelines_dir=tmp_path), no_dags, kit.fake_sources(kit.FakeKafka()))
    client = TestClient(app, root_path=kit.PREFIX)
    assert client.get("/reports/factory_maintenance/run1/", headers=VIEWER).status_code == 403
    assert client.get("/reports/factory_maintenance/run1/fleet.html", headers=VIEWER).status_code == 403


BODY_ROUTES = [
    ("POST", "/api/validate"),
    ("POST", "/api/render"),
    ("POST", "/api/pipelines"),
    ("PUT", "/api/pipelines/factory_maintenance"),
    ("POST", "/api/pipelines/factory_maintenance/diff"),
]
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"text": spec_texts()}),
    st.fixed_dictionaries({"text": spec_texts(), "version": st.sampled_from([VERSION, "x"])}),
    st.fixed_dictionaries({"draft": json_values}),
)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_request_bodies_of_any_shape_get_a_client_error_never_a_server_error(
    tmp_path_factory: pytest.TempPathFactory, method: str, path: str
) -> None:
    client = make_client(tmp_path_factory.mktemp("api"))

    @given(body=bodies, raw=st.one_of(st.none(), st.binary(max_size=64)))
    def check(body: Any, raw: bytes | None) -> None:
        if raw is None:
            response = client.request(method, path, json=body, headers=ADMIN)
        else:
            response = client.request(method, path, content=raw, headers={**ADMIN, "Content-Type": "application/json"})
        assert response.status_code < 500, (response.status_code, response.text[:300])

    check()


def test_a_body_too_large_is_refused_before_it_is_read(client: TestClient) -> None:
    from edgeloop.generator.app import MAX_BODY_BYTES

    huge = b'{"text": "' + b"a" * MAX_BODY_BYTES + b'"}'
    declared = client.post("/api/validate", content=huge, headers={**ADMIN, "Content-Type": "application/json"})
    assert declared.status_code == 413
    assert "larger than" in declared.json()["message"]

    def chunks() -> Any:
        yield b'{"text": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    streamed = client.post("/api/validate", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"})
    assert 400 <= streamed.status_code < 500
    small = client.post("/api/validate", json={"text": "name: x\n"}, headers=ADMIN)
    assert small.status_code == 200
