"""Airflow DAGs of every edgeloop pipeline spec: `<pipeline>__<stage>` for each stage.

Specs live in include/pipelines/ (or EDGELOOP_PIPELINES_DIR). A broken spec is logged
with its field paths and skipped; the other pipelines still load.
"""

from edgeloop.factory import build_dags

globals().update(build_dags())
