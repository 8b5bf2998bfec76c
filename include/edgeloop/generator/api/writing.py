"""Writing specs: create, update and delete a pipeline.

Every route needs the right to read DAGs, then an Airflow admin (`require_spec_writer`) who may edit
every DAG of the pipeline (`require_dags(..., "PUT", ...)`), before anything is written.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to the function that builds the router.
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from edgeloop.generator.api.common import (
    VERSION_PATTERN,
    CreateRequest,
    PipelineName,
    UpdateRequest,
    error_responses,
    invalid_spec,
    problem,
    read_stored,
    store_errors,
)
from edgeloop.generator.render import check_spec_text, dag_ids, diff_texts
from edgeloop.generator.store import create_spec_file, delete_spec_file, update_spec_file
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.generator.api.context import RouteContext

log = logging.getLogger("edgeloop.generator.app")  # one logger for the plugin app and its routes


def writing_router(ctx: "RouteContext") -> APIRouter:
    """`POST /api/pipelines`, `PUT` and `DELETE /api/pipelines/{name}`."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    access = ctx.access
    folder = ctx.folder
    require_dags = ctx.require_dags
    require_spec_writer = ctx.require_spec_writer
    write_policy = ctx.write_policy
    render_draft = ctx.render_draft

    @router.post(
        "/api/pipelines",
        dependencies=read_deps,
        status_code=201,
        tags=["pipelines"],
        responses=error_responses(409, 422, 503),
    )
    def create(body: CreateRequest, user: User) -> dict[str, Any]:
        """Create a pipeline: validate, write `<name>.yaml` atomically, create its missing Kafka topics.

        Needs an Airflow admin with the right to edit every DAG the new pipeline makes.
        """
        require_spec_writer(user)
        if (body.text is None) == (body.draft is None):
            raise problem(422, "give either 'text' (spec YAML) or 'draft', not both or neither")
        if body.draft is not None:
            require_dags(user, "PUT", body.draft.name)
        policy = write_policy()
        draft, deployment = body.draft, policy["deployment"]
        text = render_draft(draft, user, deployment) if draft is not None else str(body.text)
        result = check_spec_text(text, **policy)
        if result.spec is None:
            if not access.may_edit(user):  # no pipeline name to check against: who may edit DAGs at all
                raise problem(403, "you may not create pipelines")
            raise invalid_spec(result)
        spec = result.spec
        require_dags(user, "PUT", spec.name)
        return write_new_pipeline(ctx, spec, text, user, create_topics=body.create_topics)

    @router.put(
        "/api/pipelines/{name}",
        dependencies=read_deps,
        tags=["pipelines"],
        responses=error_responses(404, 409, 422, 503),
    )
    def update(name: PipelineName, body: UpdateRequest, user: User) -> dict[str, Any]:
        """Save an edit made from `version`; 409 if the spec changed since (someone else saved first)."""
        require_spec_writer(user)
        require_dags(user, "PUT", name)
        result = check_spec_text(body.text, name, **write_policy())
        if result.spec is None:
            raise invalid_spec(result)
        return save_edit(ctx, name, body.text, body.version, user)

    @router.delete(
        "/api/pipelines/{name}",
        dependencies=read_deps,
        status_code=204,
        tags=["pipelines"],
        responses=error_responses(404, 409, 422, 503),
    )
    def delete(
        name: PipelineName,
        user: User,
        version: Annotated[str, Query(pattern=VERSION_PATTERN, description="the version you mean to delete")],
    ) -> Response:
        """Delete a spec (its DAGs disappear after the next parse; data and topics stay)."""
        require_spec_writer(user)
        require_dags(user, "PUT", name)
        with store_errors("delete"):
            delete_spec_file(folder, name, version)
        log.info("pipeline %s deleted by %s (version %s)", name, access.username(user), version)
        return Response(status_code=204)

    return router


def write_new_pipeline(
    ctx: "RouteContext", spec: PipelineSpec, text: str, user: Any, *, create_topics: bool
) -> dict[str, Any]:
    """Write a checked spec as a new pipeline (409 if it exists) and create its missing topics when asked.

    The caller has checked that `user` may write specs and edit every DAG of the pipeline.
    """
    access, sources, folder = ctx.access, ctx.sources, ctx.folder
    with store_errors("write"):
        stored = create_spec_file(folder, spec.name, text)
    log.info("pipeline %s created by %s (version %s)", spec.name, access.username(user), stored.version)
    created: list[str] = []
    warnings: list[str] = []
    if create_topics and sources.ensure_topics is not None:
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


def save_edit(ctx: "RouteContext", name: str, text: str, version: str, user: Any) -> dict[str, Any]:
    """Write an edit of pipeline `name` made from `version` (409 if it changed since); the answer holds the diff.

    The caller has checked that `user` may write specs and edit the pipeline's DAGs, and the new text.
    """
    access, folder = ctx.access, ctx.folder
    before = read_stored(folder, name)
    with store_errors("write"):
        stored = update_spec_file(folder, name, text, version)
    log.info("pipeline %s changed by %s (%s -> %s)", name, access.username(user), version, stored.version)
    return {
        "name": name,
        "version": stored.version,
        "previous_version": version,
        "diff": diff_texts(before.text, text, name) if before.version == version else "",
        "dag_ids": dag_ids(name),
    }
