"""Pausing and resuming a pipeline's rollouts from the Pipelines page: the flag of `edgeloop.rollout.pause`.

Reading the flag needs the right to read the pipeline's DAGs; pausing or resuming the right to edit
every one of them (the same check as a spec change, without the admin role: pausing changes no spec).
The flag records who paused and why; a pause or resume while the pipeline's rollout DAG runs is also
a part of that rollout's audit record.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to the function that builds the router.
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from edgeloop.generator.api.common import PipelineName, error_responses, problem, read_stored
from edgeloop.generator.render import dag_ids
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.generator.api.context import RouteContext

log = logging.getLogger("edgeloop.generator.app")  # one logger for the plugin app and its routes

ACTIVE_RUN_STATES = ("queued", "running")


class PauseRequest(BaseModel):
    """Pause (`paused: true`, a reason is required) or resume (`paused: false`) the pipeline's rollouts."""

    model_config = ConfigDict(extra="forbid")

    paused: bool
    reason: str = Field(default="", max_length=500, description="why: kept in the flag and the audit record")


def rollout_router(ctx: "RouteContext") -> APIRouter:
    """`GET` and `POST /api/pipelines/{name}/rollout-pause`."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    access = ctx.access

    @router.get(
        "/api/pipelines/{name}/rollout-pause",
        dependencies=read_deps,
        tags=["rollouts"],
        responses=error_responses(404, 409, 503),
    )
    def rollout_pause(name: PipelineName, user: User) -> dict[str, Any]:
        """Whether the pipeline's rollouts are paused, by whom and why, and whether the user may change it."""
        from edgeloop.rollout.pause import pause_state

        ctx.require_dags(user, "GET", name)
        spec = valid_spec(ctx, name)
        s3 = storage_client(ctx, spec)
        try:
            flag = pause_state(s3, spec)
        except Exception as exc:  # the storage did not answer: say so, never guess
            raise problem(503, f"the pause flag of '{name}' is not readable: {exc}") from exc
        return {
            "name": name,
            "paused": flag is not None,
            "flag": flag,
            "can_change": access.may_access_dags(user, "PUT", dag_ids(name)),
            "running_rollouts": running_rollouts(ctx, name),
        }

    @router.post(
        "/api/pipelines/{name}/rollout-pause",
        dependencies=read_deps,
        tags=["rollouts"],
        responses=error_responses(404, 409, 422, 503),
    )
    def change_rollout_pause(name: PipelineName, body: PauseRequest, user: User) -> dict[str, Any]:
        """Pause or resume the pipeline's rollouts; needs the right to edit every DAG of the pipeline.

        A running job sends no further device order while paused and a wave's gate does not pass;
        a rollback is never held. The answer is the flag as written (pause) or the resume with the
        flag it removed (`was`).
        """
        from edgeloop.rollout.pause import pause_rollouts, resume_rollouts

        ctx.require_dags(user, "PUT", name)
        if body.paused and not body.reason.strip():
            raise problem(422, "reason: say why the rollouts are paused")
        spec = valid_spec(ctx, name)
        s3 = storage_client(ctx, spec)
        by = access.username(user)
        rollouts = running_rollouts(ctx, name)
        try:
            if body.paused:
                answer = pause_rollouts(s3, spec, by, body.reason, rollouts)
            else:
                answer = resume_rollouts(s3, spec, by, body.reason, rollouts)
        except Exception as exc:  # the storage refused or did not answer: nothing is claimed
            raise problem(503, f"the pause flag of '{name}' could not be written: {exc}") from exc
        action = "paused" if body.paused else "resumed"
        log.info("rollouts of %s %s by %s (%s); audit parts in %s", name, action, by, body.reason, rollouts or "none")
        return {"name": name, **answer, "running_rollouts": rollouts}

    return router


def valid_spec(ctx: "RouteContext", name: str) -> PipelineSpec:
    """The pipeline's checked spec (404 without a file, 409 with errors)."""
    result = ctx.check(read_stored(ctx.folder, name))
    if result.spec is None:
        raise problem(409, f"pipeline '{name}' has spec errors: fix them first", errors=result.error_dicts())
    return result.spec


def storage_client(ctx: "RouteContext", spec: PipelineSpec) -> Any:
    """An S3 client with the pipeline's connection (503 naming it when it is not usable)."""
    if ctx.sources.storage is None:
        raise problem(503, "object storage is not available in this deployment")
    try:
        return ctx.sources.storage(spec)
    except Exception as exc:  # any lookup failure means: no storage for this request
        raise problem(503, f"Airflow connection '{spec.connections.s3}' is not usable: {exc}") from exc


def running_rollouts(ctx: "RouteContext", name: str) -> list[str]:
    """The rollout ids of the pipeline's rollout DAG run in progress (none when its state is unknown)."""
    from edgeloop.rollout.job import rollout_id_for

    dag_id = f"{name}__rollout"
    try:
        status = ctx.sources.dag_status([dag_id]).get(dag_id)
    except Exception as exc:  # the flag still works; only the audit part is left out
        log.warning("rollout of %s: DAG state unavailable, no audit part: %s", name, exc)
        return []
    if status is None or status.run_id is None or status.state not in ACTIVE_RUN_STATES:
        return []
    return [rollout_id_for(name, status.run_id)]
