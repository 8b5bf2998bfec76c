"""edgeloop's Airflow plugin: the pipeline generator (Pipelines page, wizard, REST API) in the api-server.

Every Airflow component imports plugins, so this module stays light: it names the
FastAPI app by a small ASGI wrapper that builds the real app (FastAPI, Kafka, the
generator) on the first request the api-server routes to it.

- `/edgeloop/generator/`               the Pipelines page (in the UI navigation: "Pipelines")
- `/edgeloop/generator/api/...`        its REST API (Airflow login required, see openapi.json)
- `/edgeloop/generator/openapi.json`   the REST API's OpenAPI schema
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/edgeloop/generator"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LazyGeneratorApp:
    """An ASGI app that builds edgeloop.generator.app on its first request (one build per process)."""

    def __init__(self) -> None:
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._lock = threading.Lock()

    def _build(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        with self._lock:
            if self._app is None:
                from edgeloop.generator.app import build_plugin_app

                self._app = build_plugin_app(os.environ)
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)


class EdgeloopPlugin(AirflowPlugin):
    name = "edgeloop"
    fastapi_apps = [{"app": LazyGeneratorApp(), "url_prefix": URL_PREFIX, "name": "edgeloop pipeline generator"}]
    external_views = [
        {
            "name": "Pipelines",
            "href": f"{URL_PREFIX}/",
            "url_route": "pipelines",
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/static/icon.svg",
        }
    ]
