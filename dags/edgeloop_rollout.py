"""Airflow DAGs for the rollout stage of every edgeloop pipeline spec (`<pipeline>__rollout`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("rollout"))
