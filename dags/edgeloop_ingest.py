"""Airflow DAGs for the ingest stage of every edgeloop pipeline spec (`<pipeline>__ingest`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("ingest"))
