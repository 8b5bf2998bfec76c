"""The Pipelines page itself, its static files, and the drift reports it links to (from object storage).

Reports hold device values: they are served sandboxed (`REPORT_CSP`), after the names in the URL are
checked and the user may read the pipeline's DAGs.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to the function that builds the router.
import contextlib
import html
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from edgeloop.generator.api.common import (
    PAGE_CSP,
    REPORT_CSP,
    REPORT_HEADERS,
    REPORT_INDEX_CSP,
    STATIC_TYPES,
    error_responses,
    problem,
)

if TYPE_CHECKING:
    from edgeloop.generator.api.context import RouteContext


def pages_router(ctx: "RouteContext") -> APIRouter:
    """`/`, `/static/{filename}` and `/reports/{name}/{run}/[report]`: each needs the right to read DAGs."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    static = ctx.static
    airflow_root = ctx.airflow_root
    require_dags = ctx.require_dags
    report_location = ctx.report_location

    @router.get("/", response_class=HTMLResponse, dependencies=read_deps, include_in_schema=False)
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

    @router.get("/static/{filename}", dependencies=read_deps, include_in_schema=False)
    def static_file(filename: str, user: User) -> Response:
        if filename not in STATIC_TYPES:
            raise problem(404, f"no static file '{filename}'")
        data, _ = static[filename]
        headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=STATIC_TYPES[filename], headers=headers)

    @router.get("/reports/{name}/{run}/", dependencies=read_deps, tags=["reports"], responses=error_responses(404, 422))
    def drift_run_reports(name: str, run: str, user: User) -> HTMLResponse:
        """The index of one drift run: its status, drifted groups and links to every report it wrote."""
        import json

        from edgeloop.connections import s3_client

        spec, prefix = report_location(name, run)
        require_dags(user, "GET", name)
        s3 = s3_client(spec.connections.s3)
        listing = s3.list_objects_v2(Bucket=spec.storage.bucket, Prefix=f"{prefix}/")
        files = sorted(obj["Key"].rsplit("/", 1)[-1] for obj in listing.get("Contents", []))
        if not files:
            raise problem(404, f"no reports under s3://{spec.storage.bucket}/{prefix}/")
        summary: dict[str, Any] = {}
        if "summary.json" in files:
            body = s3.get_object(Bucket=spec.storage.bucket, Key=f"{prefix}/summary.json")["Body"].read()
            with contextlib.suppress(ValueError):
                summary = json.loads(body)
        return HTMLResponse(
            render_report_index(name, run, files, summary),
            headers={**REPORT_HEADERS, "Content-Security-Policy": REPORT_INDEX_CSP},
        )

    @router.get(
        "/reports/{name}/{run}/{report}", dependencies=read_deps, tags=["reports"], responses=error_responses(404, 422)
    )
    def drift_report(name: str, run: str, report: str, user: User) -> Response:
        """An Evidently drift report (HTML) or a drift summary (JSON) of one drift run, from object storage."""
        from edgeloop.connections import s3_client

        if not re.fullmatch(r"[A-Za-z0-9._=-]{1,120}\.(html|json)", report):
            raise problem(422, "a report is an .html or .json file name")
        spec, prefix = report_location(name, run)
        require_dags(user, "GET", name)
        key = f"{prefix}/{report}"
        try:
            body = s3_client(spec.connections.s3).get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise problem(404, f"no report at s3://{spec.storage.bucket}/{key}") from exc
        media = "text/html; charset=utf-8" if report.endswith(".html") else "application/json"
        return Response(body, media_type=media, headers={**REPORT_HEADERS, "Content-Security-Policy": REPORT_CSP})

    return router


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
