"""Airflow DAGs for the annotate stage of every edgeloop pipeline spec (`<pipeline>__annotate`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("annotate"))
