"""The DAG factory: every pipeline spec becomes its family of DAGs.

DAG files call `build_dags(stage)` and put the result in their globals. Building
reads only the spec files: no connection lookup, no network call, no heavy import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgeloop.spec import STAGES, PipelineSpec, load_all

if TYPE_CHECKING:
    from airflow.sdk import DAG

log = logging.getLogger(__name__)


def build_pipeline_dags(spec: PipelineSpec, stages: tuple[str, ...] = STAGES) -> dict[str, DAG]:
    """All DAGs of one pipeline, keyed by dag_id `<pipeline>__<stage>`."""
    from edgeloop.factory import stages as builders

    built = [getattr(builders, f"build_{stage}")(spec) for stage in stages]
    return {dag.dag_id: dag for dag in built}


def build_dags(stage: str | None = None, folder: Path | None = None) -> dict[str, DAG]:
    """DAGs of every valid spec in the pipelines folder (one stage, or all stages).

    A broken spec is logged with every field path that is wrong and skipped:
    the other pipelines still load.
    """
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}', expected one of {STAGES}")
    loaded = load_all(folder)
    for error in loaded.errors:
        log.error("edgeloop spec skipped: %s", error)
    stages = STAGES if stage is None else (stage,)
    return {dag_id: dag for spec in loaded.specs for dag_id, dag in build_pipeline_dags(spec, stages).items()}
