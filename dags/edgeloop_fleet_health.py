"""Airflow DAGs for the fleet_health stage of every edgeloop pipeline spec (`<pipeline>__fleet_health`)."""

from edgeloop.factory import build_dags

globals().update(build_dags("fleet_health"))
