"""The wizard and the editor's checks: topics, a sampled proposal, rendering, validation and diffs.

Nothing here writes: every route needs the right to read DAGs, and validation applies the same write
policy (the deployment's allowlist, Airflow's users) that saving will.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependency aliases are local to the function that builds the router.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query

from edgeloop.generator import discovery
from edgeloop.generator.api.common import (
    TOPIC_PATTERN,
    DiffRequest,
    PipelineName,
    TextRequest,
    error_responses,
    prefixes_in_use,
    problem,
    read_stored,
)
from edgeloop.generator.discovery import KafkaUnavailable, UnknownTopic
from edgeloop.generator.propose import NotASourceTopic, propose
from edgeloop.generator.render import Draft, check_spec_text, dag_ids, diff_texts
from edgeloop.generator.store import list_spec_files
from edgeloop.generator.templates import TemplateId, get_template

if TYPE_CHECKING:
    from edgeloop.generator.api.context import RouteContext


def wizard_router(ctx: "RouteContext") -> APIRouter:
    """`/api/pipelines/{name}/diff`, `/api/validate`, `/api/render`, `/api/topics[/sample]`."""
    router = APIRouter()
    read_deps = [Depends(ctx.access.can_read)]
    User = Annotated[Any, Depends(ctx.access.user)]
    sources = ctx.sources
    folder = ctx.folder
    check = ctx.check
    write_policy = ctx.write_policy
    render_draft = ctx.render_draft
    kafka_config = ctx.kafka_config

    @router.post(
        "/api/pipelines/{name}/diff", dependencies=read_deps, tags=["edit"], responses=error_responses(404, 422)
    )
    def diff(name: PipelineName, body: DiffRequest, user: User) -> dict[str, Any]:
        """What saving `text` would change, and whether it is valid (nothing is written)."""
        stored = read_stored(folder, name)
        result = check_spec_text(body.text, name, **write_policy())
        return {
            "name": name,
            "version": stored.version,
            "diff": diff_texts(stored.text, body.text, name),
            "valid": result.ok,
            "errors": result.error_dicts(),
            "dag_ids": dag_ids(name) if result.ok else [],
        }

    @router.post("/api/validate", dependencies=read_deps, tags=["wizard"], responses=error_responses(422))
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

    @router.post("/api/render", dependencies=read_deps, tags=["wizard"], responses=error_responses(422))
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

    @router.get("/api/topics", dependencies=read_deps, tags=["wizard"], responses=error_responses(503))
    def topics(user: User) -> dict[str, Any]:
        """The Kafka cluster's topics, live; `<prefix>.telemetry` topics can start a pipeline."""
        config = kafka_config()
        try:
            found = sources.list_topics(config)
        except KafkaUnavailable as exc:
            raise problem(503, str(exc)) from exc
        used = prefixes_in_use(folder, check)
        return {
            "topics": [{**t.to_dict(), "used_by": used.get(t.prefix or "", [])} for t in found],
        }

    @router.get("/api/topics/sample", dependencies=read_deps, tags=["wizard"], responses=error_responses(404, 422, 503))
    def sample(
        user: User,
        topic: Annotated[str, Query(pattern=TOPIC_PATTERN, description="a <prefix>.telemetry topic")],
        template: Annotated[TemplateId, Query(description="use-case template")] = "predictive_maintenance",
        limit: Annotated[int, Query(ge=1, le=discovery.MAX_SAMPLE)] = 50,
    ) -> dict[str, Any]:
        """Sample recent messages of a topic, infer the schema and field roles, and propose a draft."""
        return proposal_from_topic(ctx, topic, template, limit)

    return router


def proposal_from_topic(ctx: "RouteContext", topic: str, template: TemplateId, limit: int) -> dict[str, Any]:
    """A draft proposed from `limit` recent messages of `topic`: 404 unknown topic, 422 not a source, 503 no Kafka."""
    settings, sources, folder, check = ctx.settings, ctx.sources, ctx.folder, ctx.check
    config = ctx.kafka_config()
    try:
        all_topics = sources.list_topics(config)
        info = next((t for t in all_topics if t.name == topic), None)
        if info is None:
            raise UnknownTopic(f"topic '{topic}' does not exist on the cluster")
        samples = sources.sample(config, topic, limit)
        prefix = info.prefix or ""
        state = sources.state_groups(config, prefix) if info.kind == "telemetry" else None
    except UnknownTopic as exc:
        raise problem(404, str(exc)) from exc
    except KafkaUnavailable as exc:
        raise problem(503, str(exc)) from exc
    taken = [s.name for s in list_spec_files(folder)]
    try:
        proposal = propose(
            info, all_topics, samples, state, get_template(template), taken, bucket=settings.default_bucket
        )
    except NotASourceTopic as exc:
        raise problem(422, str(exc), errors=[{"location": "topic", "message": str(exc)}]) from exc
    users = prefixes_in_use(folder, check).get(proposal.prefix, [])
    if users:
        proposal.notes.append(f"pipeline(s) {users} already read the topics of prefix '{proposal.prefix}'")
    return proposal.to_dict()
