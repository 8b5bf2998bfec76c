"""Who calls the plugin app and where it reads the world: settings, `Access`, `Sources`, and `RouteContext`.

`RouteContext` is what every route group is built with: the three above, the static files and the
cache of checked specs, and the checks that several groups make (DAG rights, the write policy).
"""

# No `from __future__ import annotations` here: FastAPI reads the signature of `can_read`.
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from edgeloop.airflow_users import known_user_names
from edgeloop.deployment import DeploymentInvalid, DeploymentSettings, load_deployment, usual_choices
from edgeloop.generator import discovery
from edgeloop.generator import status as pipeline_status
from edgeloop.generator.api.common import problem, render_draft_text, static_files
from edgeloop.generator.discovery import TopicInfo
from edgeloop.generator.inference import SampleMessage
from edgeloop.generator.presets import PRESETS
from edgeloop.generator.render import CheckResult, Draft, check_spec_text, dag_ids
from edgeloop.generator.status import AlertSummary, DagStatus
from edgeloop.generator.store import StoredSpec
from edgeloop.metrics.promql import query_range
from edgeloop.spec import NAME_PATTERN, PipelineSpec, default_pipelines_dir

DEFAULT_PREFIX = "/edgeloop/generator"


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
    storage: Callable[[PipelineSpec], Any] | None = None  # an S3 client with the pipeline's connection
    users: Callable[[], set[str] | None] = known_user_names  # None: the auth manager cannot list them


def airflow_sources() -> Sources:
    """Connections and the metadata DB of the Airflow deployment the plugin runs in."""
    from edgeloop.connections import PipelineClients, mlflow_tracking_uri
    from edgeloop.kafka import ensure_pipeline_topics, kafka_config_from_connection

    return Sources(
        kafka_config=kafka_config_from_connection,
        mlflow_uri=mlflow_tracking_uri,
        dag_status=pipeline_status.airflow_dag_status,
        ensure_topics=ensure_pipeline_topics,
        fleet=fleet_summary,
        storage=lambda spec: PipelineClients(spec).s3(),
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


@dataclass
class RouteContext:
    """What the route groups of one app share; `create_app` makes one."""

    settings: GeneratorSettings
    access: Access
    sources: Sources
    static: dict[str, tuple[bytes, str]] = field(default_factory=static_files)
    checked: dict[tuple[str, str], CheckResult] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.settings.pipelines_dir

    def airflow_root(self, request: Request) -> str:
        root = str(request.scope.get("root_path", ""))
        return root[: -len(self.settings.url_prefix)] if root.endswith(self.settings.url_prefix) else ""

    def require_dags(self, user: Any, method: str, name: str) -> None:
        """403 unless the user may `method` every DAG of pipeline `name` (ids from the name, never the request)."""
        if not self.access.may_access_dags(user, method, dag_ids(name)):
            verb = "edit" if method == "PUT" else "read"
            raise problem(403, f"you may not {verb} the DAGs of pipeline '{name}'")

    def require_spec_writer(self, user: Any) -> None:
        """403 unless the user may write specs at all (an admin), before anything is read or checked."""
        if not self.access.may_write_specs(user):
            raise problem(403, "writing pipeline specs needs an Airflow admin")

    def write_policy(self) -> dict[str, Any]:
        """What a spec must also satisfy to be written here: the deployment's allowlist, Airflow's users."""
        try:
            deployment = self.sources.deployment()
        except DeploymentInvalid as exc:
            raise problem(503, f"the deployment settings are not usable: {exc}") from exc
        return {"deployment": deployment, "users": self.sources.users()}

    def render_draft(self, draft: Draft, user: Any, deployment: DeploymentSettings) -> str:
        """A draft as spec text; a preset asking for approval names the writing user unless the draft names others."""
        if PRESETS[draft.preset].approval_required and not draft.approvers:
            draft = draft.model_copy(update={"approvers": [self.access.username(user)]})
        return render_draft_text(draft, usual_choices(deployment))

    def check(self, stored: StoredSpec) -> CheckResult:
        key = (stored.name, stored.version)
        if key not in self.checked:
            if len(self.checked) > 4096:
                self.checked.clear()
            self.checked[key] = check_spec_text(stored.text, stored.name)
        return self.checked[key]

    def kafka_config(self) -> dict[str, Any]:
        try:
            return self.sources.kafka_config(self.settings.kafka_conn_id)
        except Exception as exc:  # any lookup failure means: no Kafka for this request
            raise problem(503, f"Airflow connection '{self.settings.kafka_conn_id}' is not usable: {exc}") from exc

    def report_location(self, name: str, run: str) -> tuple[PipelineSpec, str]:
        """The spec and the run's key prefix, after the names are checked (nothing touched before)."""
        from edgeloop.drift.results import drift_reports_prefix
        from edgeloop.spec import SpecInvalid, load_spec

        if not re.fullmatch(NAME_PATTERN, name) or not re.fullmatch(r"[A-Za-z0-9._=-]{1,200}", run):
            raise problem(422, "pipeline or run name has characters that are not allowed")
        try:
            spec = load_spec(self.folder / f"{name}.yaml")
        except (OSError, SpecInvalid) as exc:
            raise problem(404, f"no valid pipeline '{name}'") from exc
        return spec, f"{drift_reports_prefix(spec)}/{run}"
