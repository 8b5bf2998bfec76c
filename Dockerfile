# The edgeloop bundle image: the official Apache Airflow image of the pinned version, the pinned
# requirements, and the bundle's dags/, include/ and plugins/. Used by the Helm chart (helm-values/),
# the rollout job pods (KubernetesPodOperator) and the MLflow server.
#
#   docker build -t registry.example.com/edgeloop/bundle:0.1.0 .
#
# AIRFLOW_VERSION must match apache-airflow in requirements.txt (tests/unit/ops checks it).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

# The official image installs Python packages as the `airflow` user; naming apache-airflow with its
# version keeps pip from moving Airflow itself while it resolves the pinned set.
ARG AIRFLOW_VERSION
USER airflow
COPY --chown=airflow:0 requirements.txt /opt/edgeloop/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/edgeloop/requirements.txt

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# `python -m edgeloop.cli ...` (the rollout job) and the DAG files import the package from include/.
ENV PYTHONPATH=/opt/airflow/include \
    EDGELOOP_PIPELINES_DIR=/opt/airflow/include/pipelines \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
