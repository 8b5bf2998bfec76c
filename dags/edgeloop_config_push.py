"""Airflow DAGs for the config_push stage of every edgeloop pipeline spec (`<pipeline>__config_push`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("config_push"))
