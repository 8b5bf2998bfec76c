"""The FastAPI app of the Airflow plugin: the Pipelines page, its wizard and the REST API behind both.

Every route needs a logged-in Airflow user (a JWT as `Authorization: Bearer` or the UI's
`_token` cookie; none gives 401). Reading needs the right to read DAGs; creating,
changing or deleting a pipeline needs an Airflow admin (a spec decides what runs where:
images, approvers, rollouts) who may also edit every DAG of that pipeline (its
`dag_ids`), pausing or resuming its rollouts the right to edit them, and a drift report the
right to read them (403 otherwise). A spec is written
only if the deployment allows its Kubernetes values and its approvers are Airflow users. The DAG ids always
come from the pipeline the request acts on, never from a query parameter. Airflow's auth
manager answers, through an `Access` so unit tests can give fake users; `airflow_access()`
is what the plugin uses.

The page is one HTML file and one vanilla JS file, served from memory; it talks to the
`/api` routes and, to run a DAG, to Airflow's public REST API with the same login.

The routes live in groups under `edgeloop.generator.api` (`pages`, `reading`, `rollouts`, `wizard`, `writing`),
each built from one `RouteContext`; this module assembles them with the error handlers and the
request body limit.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to create_app and must be evaluated where they are defined.
import html
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeloop.generator.api.common import field_path
from edgeloop.generator.api.context import (
    DEFAULT_PREFIX,
    Access,
    GeneratorSettings,
    RouteContext,
    Sources,
    airflow_access,
    airflow_sources,
    fleet_summary,
)
from edgeloop.generator.api.pages import pages_router, render_report_index
from edgeloop.generator.api.reading import pipeline_router, reading_router
from edgeloop.generator.api.rollouts import rollout_router
from edgeloop.generator.api.wizard import wizard_router
from edgeloop.generator.api.writing import writing_router
from edgeloop.generator.render import MAX_SPEC_BYTES

MAX_BODY_BYTES = 4 * MAX_SPEC_BYTES  # a spec's text, JSON-escaped, fits with room to spare


def create_app(settings: GeneratorSettings, access: Access, sources: Sources) -> FastAPI:
    """The generator's app: mount it under `settings.url_prefix` of the Airflow api-server."""
    app = FastAPI(
        title="edgeloop pipeline generator",
        version="1",
        description=(
            "Create, review and edit edgeloop pipeline specs. Every route needs an Airflow login: "
            "`Authorization: Bearer <token>` (from `POST /auth/token`) or the Airflow UI's cookie. "
            "Reading needs permission to read DAGs; writing an Airflow admin who may edit the pipeline's DAGs."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        servers=[{"url": settings.url_prefix}],
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    ctx = RouteContext(settings, access, sources)
    read_deps = [Depends(access.can_read)]
    User = Annotated[Any, Depends(access.user)]
    airflow_root = ctx.airflow_root

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        wants_page = "text/html" in request.headers.get("accept", "") and "/api/" not in request.url.path
        if wants_page and exc.status_code in (401, 403):
            root = airflow_root(request)
            login = html.escape(access.login_url(f"{root}/plugin/pipelines"))
            text = "Log in to Airflow" if exc.status_code == 401 else "Log in as a user who may read DAGs"
            body = f'<!doctype html><title>Pipelines</title><p><a href="{login}">{text}</a> to see the pipelines.</p>'
            return HTMLResponse(body, status_code=exc.status_code)
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        return JSONResponse(detail, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": field_path(e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]} for e in exc.errors()]
        return JSONResponse({"message": "invalid request", "errors": errors}, status_code=422)

    app.include_router(pages_router(ctx))

    @app.get("/openapi.json", dependencies=read_deps, include_in_schema=False)
    def openapi(user: User) -> JSONResponse:
        return JSONResponse(app.openapi())

    app.include_router(reading_router(ctx))
    app.include_router(pipeline_router(ctx))
    app.include_router(rollout_router(ctx))
    app.include_router(wizard_router(ctx))
    app.include_router(writing_router(ctx))
    return app


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any of it is parsed or kept.

    The api-server sets no limit of its own; without this, one request could fill its memory.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # a chunked body that did not declare its length
                    raise _TooLarge
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = f'{{"message": "the request body is larger than {self.limit} bytes"}}'.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build_plugin_app(environ: Mapping[str, str]) -> FastAPI:
    """The app as the Airflow plugin mounts it: Airflow's auth, connections and metadata DB."""
    return create_app(GeneratorSettings.from_environment(environ), airflow_access(), airflow_sources())


# re-exported: the plugin, the tests and the benchmarks import these from here
__all__ = [
    "DEFAULT_PREFIX",
    "MAX_BODY_BYTES",
    "Access",
    "GeneratorSettings",
    "Sources",
    "airflow_access",
    "airflow_sources",
    "build_plugin_app",
    "create_app",
    "fleet_summary",
    "render_report_index",
]
