"""Airflow DAGs for the drift stage of every edgeloop pipeline spec (`<pipeline>__drift`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("drift"))
