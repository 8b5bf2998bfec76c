"""`edgeloop demo`: load the demo pipeline into the running stack and show where to look."""

from __future__ import annotations

import time
from typing import Any

import requests

from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.stack import read_env_file
from edgeloop.spec import load_all


class DemoError(RuntimeError):
    """The stack is not in a state the demo can use."""


def airflow_token(base_url: str, username: str, password: str) -> str:
    response = requests.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
    if response.status_code not in (200, 201):
        raise DemoError(f"Airflow login as '{username}' failed: HTTP {response.status_code}")
    return str(response.json()["access_token"])


def wait_for_dags(base_url: str, headers: dict[str, str], dag_ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing = dag_ids
    while time.monotonic() < deadline:
        listed = requests.get(f"{base_url}/api/v2/dags", params={"limit": 1000}, headers=headers, timeout=30)
        listed.raise_for_status()
        missing = dag_ids - {d["dag_id"] for d in listed.json()["dags"]}
        if not missing:
            return
        time.sleep(2)
    raise DemoError(f"the dag-processor has not loaded {sorted(missing)} after {timeout:.0f}s")


def load_demo(cfg: StackConfig | None = None, timeout: float = 180) -> dict[str, Any]:
    """Wait for the demo pipelines' DAGs, unpause them, and return what to show the user."""
    cfg = cfg or StackConfig.from_env()
    env = read_env_file(cfg)
    base = env["EDGELOOP_AIRFLOW_URL"]
    headers = {"Authorization": f"Bearer {airflow_token(base, 'admin', env['AIRFLOW_ADMIN_PASSWORD'])}"}
    specs = load_all(cfg.pipelines_dir).specs
    from edgeloop.factory import STAGES

    dag_ids = {f"{spec.name}__{stage}" for spec in specs for stage in STAGES}
    wait_for_dags(base, headers, dag_ids, timeout)
    for dag_id in sorted(dag_ids):
        response = requests.patch(
            f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=headers, timeout=30
        )
        response.raise_for_status()
    return {"pipelines": [s.name for s in specs], "dags": sorted(dag_ids), "env": env}


def main() -> int:
    cfg = StackConfig.from_env()
    loaded = load_demo(cfg)
    env = loaded["env"]
    print()
    print(f"edgeloop demo: pipelines {', '.join(loaded['pipelines'])} loaded, {len(loaded['dags'])} DAGs unpaused")
    print()
    print(f"  Airflow UI     {env['EDGELOOP_AIRFLOW_URL']}   login: admin (viewer: viewer)")
    print(f"                 passwords: cat {cfg.state_dir / 'airflow' / 'passwords.json'}")
    print(f"  MLflow UI      {env['MLFLOW_TRACKING_URI']}")
    print(f"  Label Studio   {env['EDGELOOP_LABEL_STUDIO_URL']}   login: admin@edgeloop.local")
    print(f"                 password: label_studio_password in {cfg.secrets_file}")
    print(f"  Prometheus     {env['EDGELOOP_PROMETHEUS_URL']}")
    print(f"  S3 (moto)      {env['EDGELOOP_S3_ENDPOINT']}   bucket: {env['EDGELOOP_BUCKET']}")
    print(f"  Kafka          {env['EDGELOOP_KAFKA_BOOTSTRAP']}")
    print()
    print(f"  environment for your shell: set -a; . {cfg.env_file}; set +a")
    print("  stop everything: make stack-down")
    return 0
