"""Pipelines page load time with 100 pipelines (target: <= 1 s), API and browser.

Serves the generator app (uvicorn, one worker) over a folder of 100 copies of the demo
spec, with every DAG reported as parsed and run, and measures:
- `GET /api/pipelines` the first time (every spec parsed) and then (specs cached),
- the page in headless Chromium from navigation until the 100 rows are on screen, with
  an empty browser cache and with a warm one.
Authentication is a fixed user here (the page and API are the same code as in Airflow).
Run: `PYTHONPATH=include .venv/bin/python benchmarks/bench_generator.py`
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import uvicorn

from edgeloop.generator.app import Access, GeneratorSettings, Sources, create_app
from edgeloop.generator.status import DagStatus

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
CHROMIUM = Path("/usr/bin/chromium")
PIPELINES = 100
ROUNDS = 5


def write_specs(folder: Path, count: int) -> None:
    text = DEMO.read_text()
    for i in range(count):
        name = f"pipe_{i:03d}"
        (folder / f"{name}.yaml").write_text(text.replace("factory_maintenance", name))


def bench_access() -> Access:
    def user() -> str:
        return "bench"

    def allow() -> None:
        return None

    return Access(
        user=user,
        can_read=allow,
        can_edit=allow,
        may_edit=lambda u: True,
        username=str,
        readable_dags=lambda u: None,
        login_url=lambda n: "/login",
    )


def bench_sources() -> Sources:
    def dag_status(ids: Any) -> dict[str, DagStatus]:
        return {i: DagStatus(i, True, False, "success", f"scheduled__{i}", "2026-01-01T00:00:00+00:00") for i in ids}

    return Sources(kafka_config=lambda c: {}, mlflow_uri=lambda c: "", dag_status=dag_status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(folder: Path) -> tuple[str, uvicorn.Server]:
    app = create_app(GeneratorSettings(pipelines_dir=folder), bench_access(), bench_sources())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return base, server


def timed_get(url: str) -> float:
    started = time.perf_counter()
    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return time.perf_counter() - started


def browser_loads(base: str) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    cold: list[float] = []
    warm: list[float] = []
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        for _ in range(ROUNDS):
            context = browser.new_context()
            page = context.new_page()
            for target in (cold, warm):
                started = time.perf_counter()
                page.goto(f"{base}/")
                page.locator("#pipelines tbody tr[data-pipeline]").nth(PIPELINES - 1).wait_for()
                target.append(time.perf_counter() - started)
            context.close()
        browser.close()
    return cold, warm


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_specs(folder, PIPELINES)
        base, server = serve(folder)
        try:
            first = timed_get(f"{base}/api/pipelines")
            cached = [timed_get(f"{base}/api/pipelines") for _ in range(ROUNDS)]
            rows = [
                (f"GET /api/pipelines, {PIPELINES} specs, first call (all parsed)", first),
                (f"GET /api/pipelines, {PIPELINES} specs, cached (median of {ROUNDS})", statistics.median(cached)),
            ]
            if CHROMIUM.exists():
                cold, warm = browser_loads(base)
                rows.append(
                    (f"page until {PIPELINES} rows shown, empty cache (median of {ROUNDS})", statistics.median(cold))
                )
                rows.append(
                    (f"page until {PIPELINES} rows shown, warm cache (median of {ROUNDS})", statistics.median(warm))
                )
        finally:
            server.should_exit = True
    print(f"{'measurement':<62} {'seconds':>8}  target")
    for label, seconds in rows:
        print(f"{label:<62} {seconds:>8.3f}  <= 1.0")


if __name__ == "__main__":
    main()
