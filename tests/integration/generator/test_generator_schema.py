"""The generator's REST API driven from its own OpenAPI schema (schemathesis) through the real Airflow api-server.

Every operation of `/edgeloop/generator/openapi.json` gets generated requests, valid by the
schema and invalid ones, with a real Airflow login as `admin` and as `viewer`: no answer
is a server error, and the viewer changes nothing (no write succeeds, the pipelines and
their versions are the same after). As admin, creating a pipeline is only sent bodies the
schema refuses: a valid one would add a pipeline to the shared stack's folder. Edits and
deletes carry a generated version, which never matches a stored one, so they write nothing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.integration

PREFIX = "/edgeloop/generator"
EXAMPLES = int(os.environ.get("EDGELOOP_SCHEMA_EXAMPLES", "15"))
WRITES = {("POST", "/api/pipelines"), ("PUT", "/api/pipelines/{name}"), ("DELETE", "/api/pipelines/{name}")}


def login(base: str, user: str, password: str) -> dict[str, str]:
    response = requests.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=30)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def pipelines(base: str, auth: dict[str, str]) -> dict[str, str]:
    listing = requests.get(f"{base}{PREFIX}/api/pipelines", headers=auth, timeout=60).json()["pipelines"]
    return {p["name"]: p["version"] for p in listing}


def operations(base: str, auth: dict[str, str]) -> list[Any]:
    import schemathesis

    raw = requests.get(f"{base}{PREFIX}/openapi.json", headers=auth, timeout=30)
    assert raw.status_code == 200, raw.text
    schema = schemathesis.openapi.from_dict(raw.json())
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 12, [f"{o.method} {o.path}" for o in found]
    return found


@pytest.mark.parametrize("user", ["admin", "viewer"])
def test_no_generated_request_gets_a_server_error_and_a_viewer_writes_nothing(
    stack_env: dict[str, str], user: str
) -> None:
    from schemathesis import GenerationMode

    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    auth = login(base, user, stack_env[f"AIRFLOW_{user.upper()}_PASSWORD"])
    admin = login(base, "admin", stack_env["AIRFLOW_ADMIN_PASSWORD"])
    before = pipelines(base, admin)
    session = requests.Session()
    failures: list[str] = []
    tried = 0

    def send(case: Any) -> None:
        nonlocal tried
        tried += 1
        method, path = case.operation.method.upper(), case.operation.path
        response = case.call(base_url=f"{base}{PREFIX}", session=session, headers=auth, timeout=60)
        where = f"{user} {method} {case.formatted_path}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
        if user == "viewer" and (method, path) in WRITES and response.status_code < 400:
            failures.append(f"{where}: a viewer's write answered {response.status_code}")

    bounded = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    for operation in operations(base, admin):
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if user == "admin" and (operation.method.upper(), operation.path) == ("POST", "/api/pipelines"):
            modes = [GenerationMode.NEGATIVE]
        for mode in modes:
            bounded(given(case=operation.as_strategy(mode))(send))()
    assert not failures, "\n".join(failures[:20])
    assert tried >= EXAMPLES
    assert pipelines(base, admin) == before, "no generated request changed a pipeline"
