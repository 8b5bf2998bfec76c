"""What the plugin app's route groups share: limits, security headers, request and error bodies, spec file answers.

Errors are answered as `ErrorBody` (a message, and for spec errors each field path); `problem`
makes one, `store_errors` turns spec file errors into 404, 409 or 503.
"""

# No `from __future__ import annotations` here: FastAPI and pydantic read these models and aliases.
import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from edgeloop.generator.presets import RolloutPlanError
from edgeloop.generator.render import MAX_SPEC_BYTES, CheckResult, Draft, render_spec, render_yaml
from edgeloop.generator.store import (
    FolderNotWritable,
    PipelineExists,
    PipelineNotFound,
    StoredSpec,
    VersionConflict,
    list_spec_files,
    read_spec_file,
)
from edgeloop.spec import NAME_PATTERN, PipelineSpec

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
VERSION_PATTERN = r"^[0-9a-f]{16}$"
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


ERROR_MEANING = {
    401: "no Airflow login (no or expired token)",
    403: "the user may not do this (reading needs DAG read access, changes an admin with DAG edit access), "
    "or a bad token",
    404: "no such pipeline or topic",
    409: "the pipeline exists already, or was changed since the given version (concurrent edit)",
    422: "invalid input: a bad name, or a spec with errors (each with its field path)",
    503: "Kafka, the pipelines folder or another service is not usable right now",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERROR_MEANING[code]} for code in (401, 403, *codes)}


def problem(code: int, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status_code=code, detail={"message": message, **extra})


def invalid_spec(result: CheckResult) -> HTTPException:
    count = len(result.errors)
    return problem(
        422,
        f"the spec has {count} error{'s' if count != 1 else ''}",
        errors=result.error_dicts(),
    )


def spec_summary(spec: PipelineSpec) -> dict[str, Any]:
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


def static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for name in (*STATIC_TYPES, "index.html"):
        data = (STATIC_DIR / name).read_bytes()
        files[name] = (data, hashlib.sha256(data).hexdigest()[:12])
    return files


def field_path(loc: Sequence[Any]) -> str:
    """`groups[0].name`, the way spec errors name fields."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Spec file errors as HTTP answers: 409 conflict or exists, 404 missing, 503 folder not writable."""
    try:
        yield
    except VersionConflict as exc:
        raise problem(409, str(exc), current_version=exc.current) from exc
    except PipelineExists as exc:
        raise problem(409, str(exc)) from exc
    except PipelineNotFound as exc:
        raise problem(404, str(exc)) from exc
    except (FolderNotWritable, OSError) as exc:
        raise problem(503, f"could not {action} the spec: {exc}") from exc


def read_stored(folder: Path, name: str) -> StoredSpec:
    try:
        return read_spec_file(folder, name)
    except PipelineNotFound as exc:
        raise problem(404, str(exc)) from exc


def render_draft_text(draft: Draft, kubernetes: Mapping[str, str]) -> str:
    """Spec text of a draft; `kubernetes`: rollout values the deployment allows in place of the spec defaults."""
    try:
        spec = render_spec(draft)
        spec["rollout"].update(kubernetes)
        return render_yaml(spec, draft.template)
    except RolloutPlanError as exc:
        location, _, message = str(exc).partition(": ")
        raise problem(422, str(exc), errors=[{"location": location, "message": message}]) from exc


def group_by(specs: Sequence[PipelineSpec], key: Callable[[PipelineSpec], str]) -> dict[str, list[PipelineSpec]]:
    out: dict[str, list[PipelineSpec]] = {}
    for spec in specs:
        out.setdefault(key(spec), []).append(spec)
    return out


def prefixes_in_use(folder: Path, check: Callable[[StoredSpec], CheckResult]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for stored in list_spec_files(folder):
        spec = check(stored).spec
        if spec is not None:
            used.setdefault(spec.topics.prefix or spec.name, []).append(spec.name)
    return used
