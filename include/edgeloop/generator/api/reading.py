"""Reading pipelines: who is logged in, the templates, every spec with its DAG states, one spec, its fleet and charts.

Every route needs the right to read DAGs; slow sources (Kafka alerts, MLflow, Prometheus) degrade to a
note or a 503 naming the source, never to a broken list.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to the function that builds the router.
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from edgeloop.generator import charts as pipeline_charts
from edgeloop.generator.api.common import (
    PipelineName,
    error_responses,
    group_by,
    problem,
    read_stored,
    spec_summary,
)
from edgeloop.generator.presets import PRESETS
from edgeloop.generator.render import dag_ids
from edgeloop.generator.status import DagStatus
from edgeloop.generator.store import list_spec_files
from edgeloop.generator.templates import TEMPLATES

if TYPE_CHECKING:
    from edgeloop.generator.api.context import RouteContext

log = logging.getLogger("edgeloop.generator.app")  # one logger for the plugin app and its routes


def reading_router(ctx: "RouteContext") -> APIRouter:
    """`/api/session`, `/api/templates`, `/api/pipelines` (the list) and `/api/status`."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    access = ctx.access
    airflow_root = ctx.airflow_root

    @router.get("/api/session", dependencies=read_deps, tags=["session"], responses=error_responses())
    def session(request: Request, user: User) -> dict[str, Any]:
        """Who is logged in and whether they may create and edit pipelines."""
        can_edit = access.may_edit(user) and access.may_write_specs(user)
        return {"user": access.username(user), "can_edit": can_edit, "airflow_root": airflow_root(request)}

    @router.get("/api/templates", dependencies=read_deps, tags=["wizard"], responses=error_responses())
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

    @router.get("/api/pipelines", dependencies=read_deps, tags=["pipelines"], responses=error_responses())
    def pipelines(user: User) -> dict[str, Any]:
        """Every spec in the pipelines folder with its validation errors and the state of its DAGs."""
        return pipeline_rows(ctx, user)

    @router.get("/api/status", dependencies=read_deps, tags=["pipelines"], responses=error_responses())
    def pipelines_status(user: User) -> dict[str, Any]:
        """Slow sources, loaded after the list: alerts of the last 24 h (Kafka) and champion versions (MLflow)."""
        return slow_sources_status(ctx)

    return router


def pipeline_router(ctx: "RouteContext") -> APIRouter:
    """`/api/pipelines/{name}` and its `/fleet` and `/charts`."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    settings = ctx.settings
    sources = ctx.sources
    folder = ctx.folder
    check = ctx.check

    @router.get(
        "/api/pipelines/{name}", dependencies=read_deps, tags=["pipelines"], responses=error_responses(404, 422)
    )
    def pipeline(name: PipelineName, user: User) -> dict[str, Any]:
        """One spec: its text, version (for edits), validation errors and DAG ids."""
        stored = read_stored(folder, name)
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
            body.update(spec_summary(result.spec))
        return body

    @router.get(
        "/api/pipelines/{name}/fleet",
        dependencies=read_deps,
        tags=["pipelines"],
        responses=error_responses(404, 409, 503),
    )
    def fleet(name: PipelineName, user: User) -> dict[str, Any]:
        """Devices per group and how many report the model version they are asked to run."""
        result = check(read_stored(folder, name))
        if result.spec is None:
            raise problem(409, f"pipeline '{name}' has spec errors: fix them first", errors=result.error_dicts())
        if sources.fleet is None:
            raise problem(503, "fleet state is not available in this deployment")
        try:
            return sources.fleet(result.spec, sources.kafka_config(result.spec.connections.kafka))
        except Exception as exc:  # Kafka down or the topic unreadable: say so
            raise problem(503, f"fleet state of '{name}' unavailable: {exc}") from exc

    @router.get(
        "/api/pipelines/{name}/charts", dependencies=read_deps, tags=["pipelines"], responses=error_responses(404, 409)
    )
    def charts(
        name: PipelineName,
        user: User,
        hours: Annotated[int, Query(ge=1, le=168, description="time range: the last `hours` hours")] = 6,
    ) -> dict[str, Any]:
        """Drift per group, rollout progress by wave and model versions per group over time, from Prometheus.

        Without a reachable Prometheus the answer is still 200: `available` is false and `message` says why.
        """
        result = check(read_stored(folder, name))
        if result.spec is None:
            raise problem(409, f"pipeline '{name}' has spec errors: fix them first", errors=result.error_dicts())
        url = settings.prometheus_url

        def ask(expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
            return sources.query_range(url or "", expr, start, end, step, settings.charts_timeout_s)

        return pipeline_charts.chart_data(result.spec, ask if url else None, end=time.time(), hours=hours)

    return router


def pipeline_rows(ctx: "RouteContext", user: Any) -> dict[str, Any]:
    """Every spec in the pipelines folder with its validation errors and the state of its DAGs `user` may see."""
    access, sources, folder, check = ctx.access, ctx.sources, ctx.folder, ctx.check
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
            row.update(spec_summary(result.spec))
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


def slow_sources_status(ctx: "RouteContext") -> dict[str, Any]:
    """Recent alerts (Kafka) and champion versions (MLflow) of every valid spec; a failing source is named."""
    settings, sources, folder, check = ctx.settings, ctx.sources, ctx.folder, ctx.check
    specs = [r.spec for r in (check(s) for s in list_spec_files(folder)) if r.spec is not None]
    out: dict[str, dict[str, Any]] = {s.name: {"alerts": None, "champion": None} for s in specs}
    report: dict[str, str] = {}
    since = int((time.time() - settings.alert_window_s) * 1000)
    for conn_id, group in group_by(specs, lambda s: s.connections.kafka).items():
        try:
            config = sources.kafka_config(conn_id)
            found = sources.alerts(config, {s.name: s.topic("alerts") for s in group}, since)
            for name, summary in found.items():
                out[name]["alerts"] = summary.to_dict()
            report.setdefault("kafka", "ok")
        except Exception as exc:  # degrade: show the rest
            report["kafka"] = f"alerts unavailable ({conn_id}): {exc}"
    for conn_id, group in group_by(specs, lambda s: s.connections.mlflow).items():
        try:
            versions = sources.champions(sources.mlflow_uri(conn_id), [s.registry.model_name for s in group])
            for spec in group:
                out[spec.name]["champion"] = versions.get(spec.registry.model_name)
            report.setdefault("mlflow", "ok")
        except Exception as exc:  # degrade: show the rest
            report["mlflow"] = f"champion versions unavailable ({conn_id}): {exc}"
    return {"pipelines": out, "sources": report, "window_hours": settings.alert_window_s / 3600}
