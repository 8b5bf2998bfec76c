"""Airflow DAGs for the train stage of every edgeloop pipeline spec (`<pipeline>__train`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("train"))
