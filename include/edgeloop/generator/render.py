"""From a wizard draft to spec YAML, validation with field paths, DAG ids and diffs.

The draft is what the wizard collects (template, topic prefix, corrected schema,
groups, preset). `render_spec` turns it into the mapping of a spec and `render_yaml`
into text with `yaml.safe_dump`, so whatever a user typed is quoted as YAML data.
`check_spec_text` is the one gate every spec passes before it is saved: size, no YAML
anchors or aliases, the safe loader, the PipelineSpec model, name = file name, and (for a
write) the deployment's allowlist and its Airflow users.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgeloop.deployment import DeploymentSettings, spec_errors
from edgeloop.generator.presets import PRESETS, GroupChoice, PresetId, plan_rollout
from edgeloop.generator.templates import TemplateId, get_template
from edgeloop.spec import (
    NAME_PATTERN,
    SAMPLE_REASON_FIELD,
    STAGES,
    FieldRole,
    FieldType,
    IngestibleKind,
    PipelineSpec,
    SpecError,
    SpecInvalid,
    parse_spec,
)

MAX_SPEC_BYTES = 256 * 1024
_SCAN_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DraftField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    type: FieldType
    role: FieldRole = "feature"
    nullable: bool = False
    description: str = Field(default="", max_length=500)


class DraftGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=40)
    devices: int = Field(default=0, ge=0, le=10_000_000)


class Draft(BaseModel):
    """What the wizard (or `edgeloop spec new`) collected; every value is data for the spec."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, description="pipeline name, also the spec file name")
    template: TemplateId
    description: str = Field(default="", max_length=2000)
    owner: str = Field(default="edgeloop", max_length=100)
    topic_prefix: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$", description="topics are <prefix>.<kind>")
    ingest: list[IngestibleKind] = Field(default=["telemetry"], min_length=1)
    partitions: int = Field(default=6, ge=1, le=1000)
    schema_: list[DraftField] = Field(alias="schema", min_length=1, max_length=500)
    labels: list[str] | None = Field(default=None, max_length=100)
    groups: list[DraftGroup] = Field(min_length=1, max_length=500)
    preset: PresetId = "standard"
    canary: str | None = None
    approvers: list[str] = Field(
        default_factory=list, max_length=100, description="Airflow users who may approve (presets with approval)"
    )
    bucket: str = Field(default="edgeloop", max_length=63)
    telemetry: Literal["raw", "profiles"] = Field(
        default="raw", description="what devices send: every record, or profiles and chosen records"
    )


def render_spec(draft: Draft) -> dict[str, Any]:
    """The spec mapping of a draft: template defaults, the draft's data, the preset's rollout."""
    template = get_template(draft.template)
    groups, rollout = plan_rollout(
        [GroupChoice(g.name, g.devices) for g in draft.groups], PRESETS[draft.preset], draft.canary, draft.approvers
    )
    schema = []
    for f in draft.schema_:
        entry: dict[str, Any] = {"name": f.name, "type": f.type, "role": f.role}
        if f.nullable:
            entry["nullable"] = True
        if f.description:
            entry["description"] = f.description
        schema.append(entry)
    ingest = list(draft.ingest)
    extra: dict[str, Any] = {}
    if draft.telemetry == "profiles":
        ingest += [k for k in ("telemetry", "profiles") if k not in ingest]
        if not any(f["role"] == "sample_reason" for f in schema):
            schema.append(dict(SAMPLE_REASON_FIELD))
        extra["telemetry"] = {"mode": "profiles"}
    sections = {k: dict(v) for k, v in template.sections.items()}
    annotation = {"labels": list(draft.labels or template.labels), **sections.pop("annotation", {})}
    return {
        "name": draft.name,
        "description": draft.description or template.summary,
        "owner": draft.owner,
        "topics": {"prefix": draft.topic_prefix, "partitions": draft.partitions, "ingest": ingest},
        "schema": schema,
        "storage": {"bucket": draft.bucket, "prefix": ""},
        **extra,
        "ingest": sections.pop("ingest", {}),
        "drift": sections.pop("drift", {}),
        "annotation": annotation,
        "training": sections.pop("training", {}),
        "registry": {"model_name": draft.name},
        "groups": groups,
        "rollout": rollout,
        **sections,
    }


class _SpecDumper(yaml.SafeDumper):
    """Safe dumper that writes short lists of scalars and flat mappings inline, like the demo spec."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flat = all(not isinstance(v, (dict, list)) for v in data.values()) and len(data) <= 6
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flat and bool(data))


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_SpecDumper.add_representer(dict, _represent_dict)
_SpecDumper.add_representer(list, _represent_list)


def render_yaml(spec: dict[str, Any], template: TemplateId | None = None) -> str:
    """Spec text: a comment saying where it came from, then the mapping as safe YAML."""
    header = "# Pipeline spec written by the edgeloop pipeline generator"
    if template is not None:
        header += f" (template: {get_template(template).title})"
    body = yaml.dump(spec, Dumper=_SpecDumper, sort_keys=False, allow_unicode=True, width=110)
    return f"{header}.\n# Plain data: review it, edit it, keep it in git; `edgeloop spec validate` checks it.\n{body}"


@dataclass(frozen=True)
class CheckResult:
    """A spec text checked: the spec when valid, else every error with its field path."""

    spec: PipelineSpec | None
    errors: list[SpecError]

    @property
    def ok(self) -> bool:
        return self.spec is not None

    def error_dicts(self) -> list[dict[str, str]]:
        return [{"location": e.location, "message": e.message} for e in self.errors]


def _has_alias(text: str, path: Path) -> SpecError | None:
    """Anchors and aliases can expand a small text into a huge structure: specs do without them."""
    if "&" not in text and "*" not in text:
        return None  # neither can appear without these characters
    try:
        for token in yaml.scan(text, Loader=_SCAN_LOADER):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                mark = token.start_mark
                return SpecError(
                    path, "(yaml)", f"line {mark.line + 1}: anchors and aliases (&, *) are not allowed in a spec"
                )
    except yaml.YAMLError:
        return None  # the loader reports syntax errors with a better message
    return None


def deployment_errors(
    spec: PipelineSpec, path: Path, deployment: DeploymentSettings | None = None, users: set[str] | None = None
) -> list[SpecError]:
    """What this deployment refuses in a valid spec: Kubernetes values outside its allowlist, unknown approvers.

    `users`: the Airflow user names (None when the auth manager cannot list them: approvers are not checked).
    """
    errors = spec_errors(spec, deployment, path) if deployment is not None else []
    for i, approver in enumerate(spec.rollout.approvers if users is not None else []):
        if approver not in (users or set()):
            errors.append(SpecError(path, f"rollout.approvers[{i}]", f"'{approver}' is not an Airflow user"))
    return errors


def check_spec_text(
    text: str,
    name: str | None = None,
    *,
    deployment: DeploymentSettings | None = None,
    users: set[str] | None = None,
) -> CheckResult:
    """Validate spec text; `name` (the file name without .yaml) must then match the spec's name.

    With `deployment` and `users`, also what `deployment_errors` refuses (checks before a write).
    """
    path = Path(f"{name}.yaml") if name else Path("<spec>")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        return CheckResult(None, [SpecError(path, "(file)", f"larger than {MAX_SPEC_BYTES // 1024} KiB")])
    alias = _has_alias(text, path)
    if alias is not None:
        return CheckResult(None, [alias])
    try:
        spec = parse_spec(text, path)
    except SpecInvalid as exc:
        return CheckResult(None, exc.errors)
    refused = deployment_errors(spec, path, deployment, users)
    if refused:
        return CheckResult(None, refused)
    return CheckResult(spec, [])


def dag_ids(name: str) -> list[str]:
    """The DAG ids the factory builds for a pipeline."""
    return [f"{name}__{stage}" for stage in STAGES]


def diff_texts(old: str, new: str, name: str) -> str:
    """Unified diff of a spec edit (empty when nothing changed)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{name}.yaml",
        tofile=f"b/{name}.yaml",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
