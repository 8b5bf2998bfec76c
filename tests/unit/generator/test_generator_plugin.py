"""The Airflow plugin: light to import in every component, a valid nav entry, the app built lazily."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[3]
PLUGIN = REPO / "plugins" / "edgeloop_plugin.py"
HEAVY = ("fastapi", "edgeloop", "confluent_kafka", "pandas", "mlflow", "sklearn", "yaml", "pydantic_core._pydantic")


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgeloop_plugin_under_test", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = f"""
import sys
import airflow.plugins_manager
before = set(sys.modules)
import importlib.util
spec = importlib.util.spec_from_file_location("edgeloop_plugin", {str(PLUGIN)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(" ".join(sorted(m for m in set(sys.modules) - before if m.startswith({HEAVY!r}))))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""


def test_the_plugin_mounts_the_app_outside_airflows_reserved_prefixes() -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.plugins_manager import is_valid_plugin

    module = load_plugin()
    plugin = module.EdgeloopPlugin
    assert is_valid_plugin(plugin)
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/edgeloop/generator"
    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)


def test_the_pipelines_page_is_a_top_level_nav_entry() -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    (view,) = load_plugin().EdgeloopPlugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert (parsed.name, parsed.destination, parsed.nav_top_level) == ("Pipelines", "nav", True)
    assert parsed.href == "/edgeloop/generator/" and parsed.url_route == "pipelines"


def test_the_app_is_built_on_the_first_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeloop.generator.app as generator_app

    built: list[Any] = []

    def fake_build(environ: Any) -> FastAPI:
        app = FastAPI()

        @app.get("/ping")
        def ping() -> dict[str, str]:
            return {"pong": "yes"}

        built.append(app)
        return app

    monkeypatch.setattr(generator_app, "build_plugin_app", fake_build)
    lazy = load_plugin().LazyGeneratorApp()
    assert built == []
    client = TestClient(lazy)
    assert client.get("/ping").json() == {"pong": "yes"}
    assert client.get("/ping").status_code == 200
    assert len(built) == 1
