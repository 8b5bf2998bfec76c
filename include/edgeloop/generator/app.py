"""The FastAPI app of the Airflow plugin: the Pipelines page, its wizard and the REST API behind both.

Every route needs a logged-in Airflow user (a JWT as `Authorization: Bearer` or the UI's
`_token` cookie; none gives 401). Reading needs the right to read DAGs; creating,
changing or deleting a pipeline needs an Airflow admin (a spec decides what runs where:
images, approvers, rollouts) who may also edit every DAG of that pipeline (its
`dag_ids`), and a drift report the right to read them (403 otherwise). A spec is written
only if the deployment allows its Kubernetes values and its approvers are Airflow users. The DAG ids always
come from the pipeline the request acts on, never from a query parameter. Airflow's auth
manager answers, through an `Access` so unit tests can give fake users; `airflow_access()`
is what the plugin uses.

The page is one HTML file and one vanilla JS file, served from memory; it talks to the
`/api` routes below and, to run a DAG, to Airflow's public REST API with the same login.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to create_app and must be evaluated where they are defined.
import contextlib
import hashlib
import html
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeloop.airflow_users import known_user_names
from edgeloop.deployment import DeploymentInvalid, DeploymentSettings, load_deployment, usual_choices
from edgeloop.generator import charts as pipeline_charts
from edgeloop.generator import discovery
from edgeloop.generator import status as pipeline_status
from edgeloop.generator.discovery import KafkaUnavailable, TopicInfo, UnknownTopic
from edgeloop.generator.inference import SampleMessage
from edgeloop.generator.presets import PRESETS, RolloutPlanError
from edgeloop.generator.propose import NotASourceTopic, propose
from edgeloop.generator.render import (
    MAX_SPEC_BYTES,
    CheckResult,
    Draft,
    check_spec_text,
    dag_ids,
    diff_texts,
    render_spec,
    render_yaml,
)
from edgeloop.generator.status import AlertSummary, DagStatus
from edgeloop.generator.store import (
    FolderNotWritable,
    PipelineExists,
    PipelineNotFound,
    StoredSpec,
    VersionConflict,
    create_spec_file,
    delete_spec_file,
    list_spec_files,
    read_spec_file,
    update_spec_file,
)
from edgeloop.generator.templates import TEMPLATES, TemplateId, get_template
from edgeloop.metrics.promql import query_range
from edgeloop.spec import NAME_PATTERN, PipelineSpec, default_pipelines_dir

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
VERSION_PATTERN = r"^[0-9a-f]{16}$"
DEFAULT_PREFIX = "/edgeloop/generator"
MAX_BODY_BYTES = 4 * MAX_SPEC_BYTES  # a spec's text, JSON-escaped, fits with room to spare
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
# Drift reports hold device values. `sandbox` gives them an opaque origin: no Airflow cookie,
# storage or same-origin request, whatever runs. Evidently's own inline scripts draw the
# report (allow-scripts); nothing may be fetched or sent anywhere (connect-src, form-action).
REPORT_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src 'none'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
REPORT_INDEX_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
REPORT_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}


@dataclass(frozen=True)
class GeneratorSettings:
    pipelines_dir: Path
    url_prefix: str = DEFAULT_PREFIX
    kafka_conn_id: str = "edgeloop_kafka"
    default_bucket: str = "edgeloop"
    sample_limit: int = 50
    alert_window_s: float = 24 * 3600.0
    status_timeout_s: float = 3.0
    prometheus_url: str | None = None
    charts_timeout_s: float = 5.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "GeneratorSettings":
        """Settings of the api-server's plugin: pipelines folder and bucket from the edgeloop variables."""
        folder = environ.get("EDGELOOP_PIPELINES_DIR")
        return cls(
            pipelines_dir=Path(folder) if folder else default_pipelines_dir(),
            default_bucket=environ.get("EDGELOOP_BUCKET", "edgeloop"),
            prometheus_url=environ.get("EDGELOOP_PROMETHEUS_URL") or None,
        )


@dataclass(frozen=True)
class Access:
    """Who is calling and what they may do, as FastAPI dependencies and plain checks."""

    user: Callable[..., Any]
    can_read: Callable[..., Any]
    may_edit: Callable[[Any], bool]
    may_write_specs: Callable[[Any], bool]  # create, change or delete specs: an Airflow admin
    may_access_dags: Callable[[Any, str, Sequence[str]], bool]  # (user, "GET" or "PUT", DAG ids)
    username: Callable[[Any], str]
    readable_dags: Callable[[Any], set[str] | None]
    login_url: Callable[[str], str]


def airflow_access() -> Access:
    """Airflow's own authentication (JWT in a header or the UI cookie) and DAG permissions."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import GetUserDep, get_user

    from edgeloop.airflow_users import is_admin_user

    def can_read(user: GetUserDep) -> None:
        # Not requires_access_dag: it would take a `dag_id` from the query string.
        if not get_auth_manager().is_authorized_dag(method="GET", user=user):
            raise HTTPException(status_code=403, detail="Forbidden")

    def may_edit(user: Any) -> bool:
        return bool(get_auth_manager().is_authorized_dag(method="PUT", user=user))

    def may_access_dags(user: Any, method: str, dag_ids: Sequence[str]) -> bool:
        requests: list[Any] = [{"method": method, "details": DagDetails(id=dag_id)} for dag_id in dag_ids]
        return bool(get_auth_manager().batch_is_authorized_dag(requests, user=user))

    def readable_dags(user: Any) -> set[str] | None:
        return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))

    def login_url(next_url: str) -> str:
        return str(get_auth_manager().get_url_login(next_url=next_url))

    return Access(
        user=get_user,
        can_read=can_read,
        may_edit=may_edit,
        may_write_specs=is_admin_user,
        may_access_dags=may_access_dags,
        username=lambda user: str(user.get_name()),
        readable_dags=readable_dags,
        login_url=login_url,
    )


@dataclass(frozen=True)
class Sources:
    """Where the app reads the outside world; unit tests swap in fakes."""

    kafka_config: Callable[[str], dict[str, Any]]
    mlflow_uri: Callable[[str], str]
    dag_status: Callable[[Sequence[str]], dict[str, DagStatus]]
    list_topics: Callable[[Mapping[str, Any]], list[TopicInfo]] = discovery.list_topics
    sample: Callable[[Mapping[str, Any], str, int], list[SampleMessage]] = discovery.sample_messages
    state_groups: Callable[[Mapping[str, Any], str], dict[str, int] | None] = discovery.device_state_groups
    alerts: Callable[[Mapping[str, Any], Mapping[str, str], int], dict[str, AlertSummary]] = (
        pipeline_status.recent_alerts
    )
    champions: Callable[[str, Iterable[str]], dict[str, str | None]] = pipeline_status.champion_versions
    ensure_topics: Callable[[PipelineSpec, dict[str, Any]], list[str]] | None = None
    fleet: Callable[[PipelineSpec, dict[str, Any]], dict[str, Any]] | None = None
    query_range: Callable[[str, str, float, float, float, float], list[dict[str, Any]]] = query_range
    deployment: Callable[[], DeploymentSettings] = load_deployment  # the allowlist, read at each write
    users: Callable[[], set[str] | None] = known_user_names  # None: the auth manager cannot list them


def airflow_sources() -> Sources:
    """Connections and the metadata DB of the Airflow deployment the plugin runs in."""
    from edgeloop.connections import mlflow_tracking_uri
    from edgeloop.kafka import ensure_pipeline_topics, kafka_config_from_connection

    return Sources(
        kafka_config=kafka_config_from_connection,
        mlflow_uri=mlflow_tracking_uri,
        dag_status=pipeline_status.airflow_dag_status,
        ensure_topics=ensure_pipeline_topics,
        fleet=fleet_summary,
    )


def fleet_summary(spec: PipelineSpec, kafka_config: dict[str, Any]) -> dict[str, Any]:
    """Devices per group and how many run the model version they are asked to (device-state topic)."""
    from edgeloop.fleet.control import read_device_states

    states = read_device_states(spec, kafka_config, timeout=10.0)
    groups: dict[str, dict[str, Any]] = {g.name: {"devices": 0, "in_sync": 0, "reported": {}} for g in spec.groups}
    for state in states.devices.values():
        entry = groups.setdefault(state.group_id, {"devices": 0, "in_sync": 0, "reported": {}})
        entry["devices"] += 1
        entry["in_sync"] += int(state.in_sync)
        version = str(state.reported.get("model_version") or "none")
        entry["reported"][version] = entry["reported"].get(version, 0) + 1
    return {"groups": groups, "bad_records": len(states.bad_records)}


# --- request bodies -------------------------------------------------------------------------


class CreateRequest(BaseModel):
    """A new pipeline from spec text (as reviewed) or from a wizard draft; exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, max_length=MAX_SPEC_BYTES, description="spec YAML")
    draft: Draft | None = Field(default=None, description="a wizard draft, rendered with render_spec")
    create_topics: bool = Field(default=True, description="create the pipeline's missing Kafka topics")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_SPEC_BYTES, description="the whole new spec YAML")
    version: str = Field(pattern=VERSION_PATTERN, description="the version the edit started from")


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_SPEC_BYTES)
    name: str | None = Field(default=None, pattern=NAME_PATTERN, description="file name the spec is for")


class DiffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_SPEC_BYTES)


PipelineName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="pipeline name (= spec file name)")]


class ErrorLocation(BaseModel):
    location: str = Field(description="field path, e.g. groups[0].name, or (yaml) / (root)")
    message: str


class ErrorBody(BaseModel):
    """Every error answer: what is wrong, and for spec errors each field path."""

    message: str
    errors: list[ErrorLocation] = Field(default_factory=list)
    current_version: str | None = Field(default=None, description="on 409: the version the spec has now")


_ERROR_MEANING = {
    401: "no Airflow login (no or expired token)",
    403: "the user may not do this (reading needs DAG read access, changes an admin with DAG edit access), "
    "or a bad token",
    404: "no such pipeline or topic",
    409: "the pipeline exists already, or was changed since the given version (concurrent edit)",
    422: "invalid input: a bad name, or a spec with errors (each with its field path)",
    503: "Kafka, the pipelines folder or another service is not usable right now",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _ERROR_MEANING[code]} for code in (401, 403, *codes)}


def _problem(code: int, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status_code=code, detail={"message": message, **extra})


def _invalid(result: CheckResult) -> HTTPException:
    count = len(result.errors)
    return _problem(
        422,
        f"the spec has {count} error{'s' if count != 1 else ''}",
        errors=result.error_dicts(),
    )


def _summary(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "description": spec.description,
        "owner": spec.owner,
        "prefix": spec.topics.prefix or spec.name,
        "ingest": list(spec.topics.ingest),
        "features": spec.features,
        "labels": list(spec.annotation.labels),
        "groups": [{"name": g.name, "wave": g.wave, "devices": g.devices} for g in spec.groups],
        "canary_groups": list(spec.rollout.canary_groups),
        "model_name": spec.registry.model_name,
    }


def _static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for name in (*STATIC_TYPES, "index.html"):
        data = (STATIC_DIR / name).read_bytes()
        files[name] = (data, hashlib.sha256(data).hexdigest()[:12])
    return files


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
    static = _static_files()
    checked: dict[tuple[str, str], CheckResult] = {}
    read_deps = [Depends(access.can_read)]
    User = Annotated[Any, Depends(access.user)]
    folder = settings.pipelines_dir

    def airflow_root(request: Request) -> str:
        root = str(request.scope.get("root_path", ""))
        return root[: -len(settings.url_prefix)] if root.endswith(settings.url_prefix) else ""

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
        errors = [
            {"location": _field_path(e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse({"message": "invalid request", "errors": errors}, status_code=422)

    def require_dags(user: Any, method: str, name: str) -> None:
        """403 unless the user may `method` every DAG of pipeline `name` (ids from the name, never the request)."""
        if not access.may_access_dags(user, method, dag_ids(name)):
            verb = "edit" if method == "PUT" else "read"
            raise _problem(403, f"you may not {verb} the DAGs of pipeline '{name}'")

    def require_spec_writer(user: Any) -> None:
        """403 unless the user may write specs at all (an admin), before anything is read or checked."""
        if not access.may_write_specs(user):
            raise _problem(403, "writing pipeline specs needs an Airflow admin")

    def write_policy() -> dict[str, Any]:
        """What a spec must also satisfy to be written here: the deployment's allowlist, Airflow's users."""
        try:
            deployment = sources.deployment()
        except DeploymentInvalid as exc:
            raise _problem(503, f"the deployment settings are not usable: {exc}") from exc
        return {"deployment": deployment, "users": sources.users()}

    def render_draft(draft: Draft, user: Any, deployment: DeploymentSettings) -> str:
        """A draft as spec text; a preset asking for approval names the writing user unless the draft names others."""
        if PRESETS[draft.preset].approval_required and not draft.approvers:
            draft = draft.model_copy(update={"approvers": [access.username(user)]})
        return _render(draft, usual_choices(deployment))

    def check(stored: StoredSpec) -> CheckResult:
        key = (stored.name, stored.version)
        if key not in checked:
            if len(checked) > 4096:
                checked.clear()
            checked[key] = check_spec_text(stored.text, stored.name)
        return checked[key]

    def kafka_config() -> dict[str, Any]:
        try:
            return sources.kafka_config(settings.kafka_conn_id)
        except Exception as exc:  # any lookup failure means: no Kafka for this request
            raise _problem(503, f"Airflow connection '{settings.kafka_conn_id}' is not usable: {exc}") from exc

    # --- page ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, dependencies=read_deps, include_in_schema=False)
    def page(request: Request, user: User) -> HTMLResponse:
        text = static["index.html"][0].decode()
        replacements = {
            "{{AIRFLOW_ROOT}}": html.escape(airflow_root(request)),
            "{{JS_VERSION}}": static["app.js"][1],
            "{{CSS_VERSION}}": static["app.css"][1],
        }
        for key, value in replacements.items():
            text = text.replace(key, value)
        headers = {
            "Cache-Control": "no-store",
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
        }
        return HTMLResponse(text, headers=headers)

    @app.get("/static/{filename}", dependencies=read_deps, include_in_schema=False)
    def static_file(filename: str, user: User) -> Response:
        if filename not in STATIC_TYPES:
            raise _problem(404, f"no static file '{filename}'")
        data, _ = static[filename]
        headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=STATIC_TYPES[filename], headers=headers)

    @app.get("/openapi.json", dependencies=read_deps, include_in_schema=False)
    def openapi(user: User) -> JSONResponse:
        return JSONResponse(app.openapi())

    def _report_location(name: str, run: str) -> tuple[PipelineSpec, str]:
        """The spec and the run's key prefix, after the names are checked (nothing touched before)."""
        from edgeloop.drift.results import drift_reports_prefix
        from edgeloop.spec import SpecInvalid, load_spec

        if not re.fullmatch(NAME_PATTERN, name) or not re.fullmatch(r"[A-Za-z0-9._=-]{1,200}", run):
            raise _problem(422, "pipeline or run name has characters that are not allowed")
        try:
            spec = load_spec(folder / f"{name}.yaml")
        except (OSError, SpecInvalid) as exc:
            raise _problem(404, f"no valid pipeline '{name}'") from exc
        return spec, f"{drift_reports_prefix(spec)}/{run}"

    @app.get("/reports/{name}/{run}/", dependencies=read_deps, tags=["reports"], responses=_errors(404, 422))
    def drift_run_reports(name: str, run: str, user: User) -> HTMLResponse:
        """The index of one drift run: its status, drifted groups and links to every report it wrote."""
        import json

        from edgeloop.connections import s3_client

        spec, prefix = _report_location(name, run)
        require_dags(user, "GET", name)
        s3 = s3_client(spec.connections.s3)
        listing = s3.list_objects_v2(Bucket=spec.storage.bucket, Prefix=f"{prefix}/")
        files = sorted(obj["Key"].rsplit("/", 1)[-1] for obj in listing.get("Contents", []))
        if not files:
            raise _problem(404, f"no reports under s3://{spec.storage.bucket}/{prefix}/")
        summary: dict[str, Any] = {}
        if "summary.json" in files:
            body = s3.get_object(Bucket=spec.storage.bucket, Key=f"{prefix}/summary.json")["Body"].read()
            with contextlib.suppress(ValueError):
                summary = json.loads(body)
        return HTMLResponse(
            render_report_index(name, run, files, summary),
            headers={**REPORT_HEADERS, "Content-Security-Policy": REPORT_INDEX_CSP},
        )

    @app.get("/reports/{name}/{run}/{report}", dependencies=read_deps, tags=["reports"], responses=_errors(404, 422))
    def drift_report(name: str, run: str, report: str, user: User) -> Response:
        """An Evidently drift report (HTML) or a drift summary (JSON) of one drift run, from object storage."""
        from edgeloop.connections import s3_client

        if not re.fullmatch(r"[A-Za-z0-9._=-]{1,120}\.(html|json)", report):
            raise _problem(422, "a report is an .html or .json file name")
        spec, prefix = _report_location(name, run)
        require_dags(user, "GET", name)
        key = f"{prefix}/{report}"
        try:
            body = s3_client(spec.connections.s3).get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise _problem(404, f"no report at s3://{spec.storage.bucket}/{key}") from exc
        media = "text/html; charset=utf-8" if report.endswith(".html") else "application/json"
        return Response(body, media_type=media, headers={**REPORT_HEADERS, "Content-Security-Policy": REPORT_CSP})

    # --- reading ---------------------------------------------------------------------------

    @app.get("/api/session", dependencies=read_deps, tags=["session"], responses=_errors())
    def session(request: Request, user: User) -> dict[str, Any]:
        """Who is logged in and whether they may create and edit pipelines."""
        can_edit = access.may_edit(user) and access.may_write_specs(user)
        return {"user": access.username(user), "can_edit": can_edit, "airflow_root": airflow_root(request)}

    @app.get("/api/templates", dependencies=read_deps, tags=["wizard"], responses=_errors())
    def templates(user: User) -> dict[str, Any]:
        """The use-case templates (with an example record each) and the rollout presets."""
        return {
            "templates": [
                {
                    "id": t.id,
                    "title": t.title,
                    "summary": t.summary,
                    "expects": t.expects,
                    "labels": list(t.labels),
                    "example": t.example_record(0),
                }
                for t in TEMPLATES.values()
            ],
            "presets": [p.to_dict() for p in PRESETS.values()],
        }

    @app.get("/api/pipelines", dependencies=read_deps, tags=["pipelines"], responses=_errors())
    def pipelines(user: User) -> dict[str, Any]:
        """Every spec in the pipelines folder with its validation errors and the state of its DAGs."""
        rows: list[dict[str, Any]] = []
        for stored in list_spec_files(folder):
            result = check(stored)
            row: dict[str, Any] = {
                "name": stored.name,
                "file": stored.path.name,
                "version": stored.version,
                "valid": result.ok,
                "errors": result.error_dicts(),
                "dag_ids": dag_ids(stored.name) if result.ok else [],
            }
            if result.spec is not None:
                row.update(_summary(result.spec))
            rows.append(row)
        notes: list[str] = []
        statuses: dict[str, DagStatus] = {}
        wanted = [d for r in rows for d in r["dag_ids"]]
        try:
            for start in range(0, len(wanted), 500):
                statuses.update(sources.dag_status(wanted[start : start + 500]))
        except Exception as exc:  # the list is still useful without DAG states
            log.warning("pipelines page: DAG states unavailable: %s", exc)
            notes.append(f"DAG states unavailable: {exc}")
        readable = access.readable_dags(user)
        for row in rows:
            stages = []
            for dag_id in row["dag_ids"]:
                stage = dag_id.split("__", 1)[1]
                if readable is not None and dag_id not in readable and dag_id in statuses:
                    stages.append({"stage": stage, "dag_id": dag_id, "hidden": True})
                    continue
                found = statuses.get(dag_id, DagStatus(dag_id, exists=False))
                stages.append({"stage": stage, **found.to_dict()})
            row["stages"] = stages
        return {"pipelines": rows, "folder": folder.name, "notes": notes}

    @app.get("/api/status", dependencies=read_deps, tags=["pipelines"], responses=_errors())
    def pipelines_status(user: User) -> dict[str, Any]:
        """Slow sources, loaded after the list: alerts of the last 24 h (Kafka) and champion versions (MLflow)."""
        specs = [r.spec for r in (check(s) for s in list_spec_files(folder)) if r.spec is not None]
        out: dict[str, dict[str, Any]] = {s.name: {"alerts": None, "champion": None} for s in specs}
        report: dict[str, str] = {}
        since = int((time.time() - settings.alert_window_s) * 1000)
        for conn_id, group in _by(specs, lambda s: s.connections.kafka).items():
            try:
                config = sources.kafka_config(conn_id)
                found = sources.alerts(config, {s.name: s.topic("alerts") for s in group}, since)
                for name, summary in found.items():
                    out[name]["alerts"] = summary.to_dict()
                report.setdefault("kafka", "ok")
            except Exception as exc:  # degrade: show the rest
                report["kafka"] = f"alerts unavailable ({conn_id}): {exc}"
        for conn_id, group in _by(specs, lambda s: s.connections.mlflow).items():
            try:
                versions = sources.champions(sources.mlflow_uri(conn_id), [s.registry.model_name for s in group])
                for spec in group:
                    out[spec.name]["champion"] = versions.get(spec.registry.model_name)
                report.setdefault("mlflow", "ok")
            except Exception as exc:  # degrade: show the rest
                report["mlflow"] = f"champion versions unavailable ({conn_id}): {exc}"
        return {"pipelines": out, "sources": report, "window_hours": settings.alert_window_s / 3600}

    @app.get("/api/pipelines/{name}", dependencies=read_deps, tags=["pipelines"], responses=_errors(404, 422))
    def pipeline(name: PipelineName, user: User) -> dict[str, Any]:
        """One spec: its text, version (for edits), validation errors and DAG ids."""
        stored = _read(folder, name)
        result = check(stored)
        body: dict[str, Any] = {
            "name": name,
            "file": stored.path.name,
            "text": stored.text,
            "version": stored.version,
            "valid": result.ok,
            "errors": result.error_dicts(),
            "dag_ids": dag_ids(name),
        }
        if result.spec is not None:
            body.update(_summary(result.spec))
        return body

    @app.get(
        "/api/pipelines/{name}/fleet", dependencies=read_deps, tags=["pipelines"], responses=_errors(404, 409, 503)
    )
    def fleet(name: PipelineName, user: User) -> dict[str, Any]:
        """Devices per group and how many report the model version they are asked to run."""
        result = check(_read(folder, name))
        if result.spec is None:
            raise _problem(409, f"pipeline '{name}' has spec errors: fix them first", errors=result.error_dicts())
        if sources.fleet is None:
            raise _problem(503, "fleet state is not available in this deployment")
        try:
            return sources.fleet(result.spec, sources.kafka_config(result.spec.connections.kafka))
        except Exception as exc:  # Kafka down or the topic unreadable: say so
            raise _problem(503, f"fleet state of '{name}' unavailable: {exc}") from exc

    @app.get("/api/pipelines/{name}/charts", dependencies=read_deps, tags=["pipelines"], responses=_errors(404, 409))
    def charts(
        name: PipelineName,
        user: User,
        hours: Annotated[int, Query(ge=1, le=168, description="time range: the last `hours` hours")] = 6,
    ) -> dict[str, Any]:
        """Drift per group, rollout progress by wave and model versions per group over time, from Prometheus.

        Without a reachable Prometheus the answer is still 200: `available` is false and `message` says why.
        """
        result = check(_read(folder, name))
        if result.spec is None:
            raise _problem(409, f"pipeline '{name}' has spec errors: fix them first", errors=result.error_dicts())
        url = settings.prometheus_url

        def ask(expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
            return sources.query_range(url or "", expr, start, end, step, settings.charts_timeout_s)

        return pipeline_charts.chart_data(result.spec, ask if url else None, end=time.time(), hours=hours)

    @app.post("/api/pipelines/{name}/diff", dependencies=read_deps, tags=["edit"], responses=_errors(404, 422))
    def diff(name: PipelineName, body: DiffRequest, user: User) -> dict[str, Any]:
        """What saving `text` would change, and whether it is valid (nothing is written)."""
        stored = _read(folder, name)
        result = check_spec_text(body.text, name, **write_policy())
        return {
            "name": name,
            "version": stored.version,
            "diff": diff_texts(stored.text, body.text, name),
            "valid": result.ok,
            "errors": result.error_dicts(),
            "dag_ids": dag_ids(name) if result.ok else [],
        }

    @app.post("/api/validate", dependencies=read_deps, tags=["wizard"], responses=_errors(422))
    def validate(body: TextRequest, user: User) -> dict[str, Any]:
        """Validate spec text: every error with its field path, and the DAG ids it would create."""
        result = check_spec_text(body.text, body.name, **write_policy())
        name = result.spec.name if result.spec is not None else body.name
        return {
            "valid": result.ok,
            "errors": result.error_dicts(),
            "name": name,
            "dag_ids": dag_ids(name) if name else [],
        }

    @app.post("/api/render", dependencies=read_deps, tags=["wizard"], responses=_errors(422))
    def render(draft: Draft, user: User) -> dict[str, Any]:
        """A wizard draft as spec YAML, validated, with the DAG ids it would create (nothing is written)."""
        policy = write_policy()
        text = render_draft(draft, user, policy["deployment"])
        result = check_spec_text(text, draft.name, **policy)
        return {
            "name": draft.name,
            "text": text,
            "valid": result.ok,
            "errors": result.error_dicts(),
            "dag_ids": dag_ids(draft.name),
            "exists": any(s.name == draft.name for s in list_spec_files(folder)),
        }

    @app.get("/api/topics", dependencies=read_deps, tags=["wizard"], responses=_errors(503))
    def topics(user: User) -> dict[str, Any]:
        """The Kafka cluster's topics, live; `<prefix>.telemetry` topics can start a pipeline."""
        config = kafka_config()
        try:
            found = sources.list_topics(config)
        except KafkaUnavailable as exc:
            raise _problem(503, str(exc)) from exc
        used = _prefixes_in_use(folder, check)
        return {
            "topics": [{**t.to_dict(), "used_by": used.get(t.prefix or "", [])} for t in found],
        }

    @app.get("/api/topics/sample", dependencies=read_deps, tags=["wizard"], responses=_errors(404, 422, 503))
    def sample(
        user: User,
        topic: Annotated[str, Query(pattern=TOPIC_PATTERN, description="a <prefix>.telemetry topic")],
        template: Annotated[TemplateId, Query(description="use-case template")] = "predictive_maintenance",
        limit: Annotated[int, Query(ge=1, le=discovery.MAX_SAMPLE)] = 50,
    ) -> dict[str, Any]:
        """Sample recent messages of a topic, infer the schema and field roles, and propose a draft."""
        config = kafka_config()
        try:
            all_topics = sources.list_topics(config)
            info = next((t for t in all_topics if t.name == topic), None)
            if info is None:
                raise UnknownTopic(f"topic '{topic}' does not exist on the cluster")
            samples = sources.sample(config, topic, limit)
            prefix = info.prefix or ""
            state = sources.state_groups(config, prefix) if info.kind == "telemetry" else None
        except UnknownTopic as exc:
            raise _problem(404, str(exc)) from exc
        except KafkaUnavailable as exc:
            raise _problem(503, str(exc)) from exc
        taken = [s.name for s in list_spec_files(folder)]
        try:
            proposal = propose(
                info, all_topics, samples, state, get_template(template), taken, bucket=settings.default_bucket
            )
        except NotASourceTopic as exc:
            raise _problem(422, str(exc), errors=[{"location": "topic", "message": str(exc)}]) from exc
        users = _prefixes_in_use(folder, check).get(proposal.prefix, [])
        if users:
            proposal.notes.append(f"pipeline(s) {users} already read the topics of prefix '{proposal.prefix}'")
        return proposal.to_dict()

    # --- writing ---------------------------------------------------------------------------

    @app.post(
        "/api/pipelines", dependencies=read_deps, status_code=201, tags=["pipelines"], responses=_errors(409, 422, 503)
    )
    def create(body: CreateRequest, user: User) -> dict[str, Any]:
        """Create a pipeline: validate, write `<name>.yaml` atomically, create its missing Kafka topics.

        Needs an Airflow admin with the right to edit every DAG the new pipeline makes.
        """
        require_spec_writer(user)
        if (body.text is None) == (body.draft is None):
            raise _problem(422, "give either 'text' (spec YAML) or 'draft', not both or neither")
        if body.draft is not None:
            require_dags(user, "PUT", body.draft.name)
        policy = write_policy()
        draft, deployment = body.draft, policy["deployment"]
        text = render_draft(draft, user, deployment) if draft is not None else str(body.text)
        result = check_spec_text(text, **policy)
        if result.spec is None:
            if not access.may_edit(user):  # no pipeline name to check against: who may edit DAGs at all
                raise _problem(403, "you may not create pipelines")
            raise _invalid(result)
        spec = result.spec
        require_dags(user, "PUT", spec.name)
        with _store_errors("write"):
            stored = create_spec_file(folder, spec.name, text)
        log.info("pipeline %s created by %s (version %s)", spec.name, access.username(user), stored.version)
        created: list[str] = []
        warnings: list[str] = []
        if body.create_topics and sources.ensure_topics is not None:
            try:
                created = sources.ensure_topics(spec, sources.kafka_config(spec.connections.kafka))
            except Exception as exc:  # the spec is saved; topics can be made later
                warnings.append(f"Kafka topics not created: {exc}")
        return {
            "name": spec.name,
            "file": stored.path.name,
            "version": stored.version,
            "dag_ids": dag_ids(spec.name),
            "topics_created": created,
            "warnings": warnings,
        }

    @app.put("/api/pipelines/{name}", dependencies=read_deps, tags=["pipelines"], responses=_errors(404, 409, 422, 503))
    def update(name: PipelineName, body: UpdateRequest, user: User) -> dict[str, Any]:
        """Save an edit made from `version`; 409 if the spec changed since (someone else saved first)."""
        require_spec_writer(user)
        require_dags(user, "PUT", name)
        result = check_spec_text(body.text, name, **write_policy())
        if result.spec is None:
            raise _invalid(result)
        before = _read(folder, name)
        with _store_errors("write"):
            stored = update_spec_file(folder, name, body.text, body.version)
        log.info("pipeline %s changed by %s (%s -> %s)", name, access.username(user), body.version, stored.version)
        return {
            "name": name,
            "version": stored.version,
            "previous_version": body.version,
            "diff": diff_texts(before.text, body.text, name) if before.version == body.version else "",
            "dag_ids": dag_ids(name),
        }

    @app.delete(
        "/api/pipelines/{name}",
        dependencies=read_deps,
        status_code=204,
        tags=["pipelines"],
        responses=_errors(404, 409, 422, 503),
    )
    def delete(
        name: PipelineName,
        user: User,
        version: Annotated[str, Query(pattern=VERSION_PATTERN, description="the version you mean to delete")],
    ) -> Response:
        """Delete a spec (its DAGs disappear after the next parse; data and topics stay)."""
        require_spec_writer(user)
        require_dags(user, "PUT", name)
        with _store_errors("delete"):
            delete_spec_file(folder, name, version)
        log.info("pipeline %s deleted by %s (version %s)", name, access.username(user), version)
        return Response(status_code=204)

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


def _field_path(loc: Sequence[Any]) -> str:
    """`groups[0].name`, the way spec errors name fields."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Spec file errors as HTTP answers: 409 conflict or exists, 404 missing, 503 folder not writable."""
    try:
        yield
    except VersionConflict as exc:
        raise _problem(409, str(exc), current_version=exc.current) from exc
    except PipelineExists as exc:
        raise _problem(409, str(exc)) from exc
    except PipelineNotFound as exc:
        raise _problem(404, str(exc)) from exc
    except (FolderNotWritable, OSError) as exc:
        raise _problem(503, f"could not {action} the spec: {exc}") from exc


def _read(folder: Path, name: str) -> StoredSpec:
    try:
        return read_spec_file(folder, name)
    except PipelineNotFound as exc:
        raise _problem(404, str(exc)) from exc


def _render(draft: Draft, kubernetes: Mapping[str, str]) -> str:
    """Spec text of a draft; `kubernetes`: rollout values the deployment allows in place of the spec defaults."""
    try:
        spec = render_spec(draft)
        spec["rollout"].update(kubernetes)
        return render_yaml(spec, draft.template)
    except RolloutPlanError as exc:
        location, _, message = str(exc).partition(": ")
        raise _problem(422, str(exc), errors=[{"location": location, "message": message}]) from exc


def _by(specs: Sequence[PipelineSpec], key: Callable[[PipelineSpec], str]) -> dict[str, list[PipelineSpec]]:
    out: dict[str, list[PipelineSpec]] = {}
    for spec in specs:
        out.setdefault(key(spec), []).append(spec)
    return out


def _prefixes_in_use(folder: Path, check: Callable[[StoredSpec], CheckResult]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for stored in list_spec_files(folder):
        spec = check(stored).spec
        if spec is not None:
            used.setdefault(spec.topics.prefix or spec.name, []).append(spec.name)
    return used


def build_plugin_app(environ: Mapping[str, str]) -> FastAPI:
    """The app as the Airflow plugin mounts it: Airflow's auth, connections and metadata DB."""
    return create_app(GeneratorSettings.from_environment(environ), airflow_access(), airflow_sources())


__all__ = [
    "Access",
    "GeneratorSettings",
    "Sources",
    "airflow_access",
    "airflow_sources",
    "build_plugin_app",
    "create_app",
]


def render_report_index(pipeline: str, run: str, files: Sequence[str], summary: Mapping[str, Any]) -> str:
    """A plain HTML page listing one drift run's reports, the drifted ones first, with the run's status;
    reports the run left to its render task and not written yet are listed without a link."""
    groups: Mapping[str, Any] = summary.get("groups") or {}
    drifted = set(summary.get("drifted_groups") or [])

    def row(file: str) -> tuple[int, str]:
        label = file.rsplit(".", 1)[0]
        group = label.split("=", 1)[1] if label.startswith("group=") else None
        view: Mapping[str, Any] = (groups.get(group) if group else summary.get("overall")) or {}
        state = "drifted" if group in drifted or view.get("dataset_drift") else ""
        share, columns = view.get("drift_share"), ", ".join(sorted(view.get("drifted_columns") or {}))
        detail = f"share {share:.2f}" if isinstance(share, int | float) else ""
        detail += f"; columns: {columns}" if columns else ""
        cells = (
            f'<td><a href="{html.escape(file)}">{html.escape(label)}</a></td>'
            f"<td>{html.escape(state)}</td><td>{html.escape(detail)}</td>"
        )
        return (0 if state else 1), f"<tr>{cells}</tr>"

    # reports of scopes without drift are written after the alert (the drift DAG's render_reports task)
    pending = sorted(
        str(key).rsplit("/", 1)[-1]
        for key in (summary.get("pending_reports") or {}).values()
        if str(key).rsplit("/", 1)[-1] not in files
    )
    rows = "\n".join(r for _, r in sorted(row(f) for f in files))
    rows += "".join(
        f"\n<tr><td>{html.escape(f.rsplit('.', 1)[0])}</td><td></td><td>report being written</td></tr>" for f in pending
    )
    status = html.escape(str(summary.get("status", "unknown")))
    names = html.escape(", ".join(sorted(drifted)) or "none")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Drift reports: {html.escape(pipeline)} / {html.escape(run)}</title></head><body>"
        f"<h1>Drift reports of {html.escape(pipeline)}</h1><p>Run <code>{html.escape(run)}</code>: "
        f"status <b>{status}</b>; drifted groups: <b>{names}</b></p>"
        f"<table><thead><tr><th>report</th><th>drift</th><th></th></tr></thead><tbody>\n{rows}\n</tbody></table>"
        "</body></html>"
    )
