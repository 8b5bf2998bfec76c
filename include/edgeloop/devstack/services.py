"""The services of the local stack: how each one is prepared, started and found healthy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeloop.contract.keys import Signer, public_hex
from edgeloop.devstack import postgres
from edgeloop.devstack.config import REPO_ROOT, Secrets, StackConfig

# left by `up` when S3 starts while MLflow is down; MLflow's next start empties its registry first
REGISTRY_RESET_MARKER = "reset-registry"


@dataclass
class Service:
    name: str
    command: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    prepare: Callable[[], None] | None = None
    after_ready: Callable[[], None] | None = None
    start_timeout: float = 180.0
    url: str | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    # for a process just launched: ready only with a sign of life since its launch (epoch seconds), not
    # one a killed predecessor left (Airflow's health endpoint counts a heartbeat as healthy for a while)
    alive_since: Callable[[float], bool] | None = None


def http_ok(url: str, timeout: float = 2.0, expect: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from config
            return int(response.status) in expect
    except urllib.error.HTTPError as exc:
        return exc.code in expect
    except (OSError, ValueError):
        return False


def _kafka_ready(bootstrap: str) -> Callable[[], bool]:
    def check() -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            host, _, port = bootstrap.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            metadata = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=3)
        except Exception:
            return False
        return bool(metadata.brokers)

    return check


def connection_env(cfg: StackConfig, sec: Secrets) -> dict[str, str]:
    """Airflow connections of the stack as AIRFLOW_CONN_* variables (JSON form), plus client variables."""
    bootstrap = f"{cfg.host}:{cfg.ports.kafka}"
    s3_endpoint = cfg.url(cfg.ports.s3)
    kafka = {
        "conn_type": "kafka",
        "extra": {
            "bootstrap.servers": bootstrap,
            "group.id": "edgeloop-triggerer",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
        },
    }
    s3 = {
        "conn_type": "aws",
        "login": sec.s3_access_key,
        "password": sec.s3_secret_key,
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    mlflow = {"conn_type": "http", "host": cfg.url(cfg.ports.mlflow)}
    label_studio = {
        "conn_type": "http",
        "host": cfg.url(cfg.ports.label_studio),
        "login": "admin@edgeloop.local",
        "password": sec.label_studio_token,
    }
    return {
        "AIRFLOW_CONN_EDGELOOP_KAFKA": json.dumps(kafka),
        "AIRFLOW_CONN_EDGELOOP_S3": json.dumps(s3),
        "AIRFLOW_CONN_EDGELOOP_MLFLOW": json.dumps(mlflow),
        "AIRFLOW_CONN_EDGELOOP_LABEL_STUDIO": json.dumps(label_studio),
        "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap,
        "EDGELOOP_S3_ENDPOINT": s3_endpoint,
        "EDGELOOP_BUCKET": cfg.bucket,
        "AWS_ACCESS_KEY_ID": sec.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": sec.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": cfg.url(cfg.ports.mlflow),
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "EDGELOOP_LABEL_STUDIO_URL": cfg.url(cfg.ports.label_studio),
        "EDGELOOP_LABEL_STUDIO_TOKEN": sec.label_studio_token,
        "EDGELOOP_AIRFLOW_URL": cfg.url(cfg.ports.airflow),
        "EDGELOOP_PROMETHEUS_URL": cfg.url(cfg.ports.prometheus),
        "EDGELOOP_PUSHGATEWAY_URL": cfg.url(cfg.ports.pushgateway),
        "EDGELOOP_EXPORTER_URL": cfg.url(cfg.ports.exporter),
        "EDGELOOP_SIGNING_KEY": sec.control_signing_key,
        "EDGELOOP_TRUSTED_KEYS": public_hex(Signer.from_text(sec.control_signing_key, "secrets.json").public),
        "EDGELOOP_STATE_DIR": str(cfg.state_dir),
        "EDGELOOP_PIPELINES_DIR": str(cfg.pipelines_dir),
    }


def airflow_on_stack_postgres(cfg: StackConfig) -> bool:
    """Airflow's metadata is in the stack's PostgreSQL (not SQLite, and no explicit SQL_ALCHEMY_CONN)."""
    return cfg.metadata_db == "postgres" and not cfg.airflow_db_url


def airflow_database_url(cfg: StackConfig, sec: Secrets) -> str:
    """An explicit AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, else the stack's PostgreSQL database or SQLite file."""
    if cfg.airflow_db_url:
        return cfg.airflow_db_url
    if cfg.metadata_db == "postgres":
        return postgres.database_url(cfg, sec, "airflow")
    return f"sqlite:///{cfg.state_dir / 'airflow' / 'airflow.db'}"


def mlflow_store_url(cfg: StackConfig, sec: Secrets) -> str:
    """MLflow's backend store: the stack's PostgreSQL database or an SQLite file."""
    if cfg.metadata_db == "postgres":
        return postgres.database_url(cfg, sec, "mlflow")
    return f"sqlite:///{cfg.state_dir / 'mlflow' / 'mlflow.db'}"


def prepare_mlflow_store(cfg: StackConfig, sec: Secrets) -> None:
    """MLflow's folder; an empty registry when S3 restarted since (its artifacts were in the old, in-memory S3)."""
    folder = cfg.state_dir / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / REGISTRY_RESET_MARKER
    if not marker.exists():
        return
    if cfg.metadata_db == "postgres":
        had_registry = postgres.recreate_database(cfg, sec, "mlflow")
    else:
        db = folder / "mlflow.db"
        had_registry = db.exists()
        db.unlink(missing_ok=True)
    marker.unlink()
    if had_registry:
        print("  mlflow registry reset: its artifacts were in the previous, in-memory S3", flush=True)


def airflow_env(cfg: StackConfig, sec: Secrets) -> dict[str, str]:
    home = cfg.state_dir / "airflow"
    api = cfg.url(cfg.ports.airflow)
    return {
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "include"), os.environ.get("PYTHONPATH")])),
        # the bundle's own modules are compiled once, not by every task process (empty = unset for Python)
        "PYTHONDONTWRITEBYTECODE": "",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "8"),
        "AIRFLOW__CORE__FERNET_KEY": sec.airflow_fernet_key,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_database_url(cfg, sec),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__SECRET_KEY": sec.airflow_api_secret,
        "AIRFLOW__API_AUTH__JWT_SECRET": sec.airflow_jwt_secret,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__METRICS__STATSD_ON": "False",
        # fail fast and clearly when MLflow is down (its defaults retry for minutes)
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": os.environ.get(
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True"
        ),
        **connection_env(cfg, sec),
    }


def write_kafka_properties(cfg: StackConfig) -> Path:
    folder = cfg.state_dir / "kafka"
    folder.mkdir(parents=True, exist_ok=True)
    props = folder / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{cfg.host}:{cfg.ports.kafka_controller}",
                f"listeners=PLAINTEXT://{cfg.host}:{cfg.ports.kafka},CONTROLLER://{cfg.host}:{cfg.ports.kafka_controller}",
                f"advertised.listeners=PLAINTEXT://{cfg.host}:{cfg.ports.kafka}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={folder / 'data'}",
                "num.partitions=6",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=168",
                "",
            ]
        )
    )
    log4j = folder / "log4j2.properties"
    log4j.write_text(
        "\n".join(
            [
                "status = warn",
                "appender.console.type = Console",
                "appender.console.name = STDOUT",
                "appender.console.layout.type = PatternLayout",
                "appender.console.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.stdout.ref = STDOUT",
                "logger.kafka.name = kafka",
                "logger.kafka.level = WARN",
                "logger.apache.name = org.apache.kafka",
                "logger.apache.level = WARN",
                "",
            ]
        )
    )
    return props


def _java_cp(cfg: StackConfig) -> str:
    return str(cfg.kafka_libs / "*")


def format_kafka_storage(cfg: StackConfig) -> None:
    """Format the KRaft log folder once (idempotent: skipped when meta.properties exists)."""
    props = write_kafka_properties(cfg)
    if (cfg.state_dir / "kafka" / "data" / "meta.properties").exists():
        return
    if not any(cfg.kafka_libs.glob("kafka_2.13-*.jar")):
        raise FileNotFoundError(f"Kafka jars are missing in {cfg.kafka_libs}: run `make kafka-libs`")
    cluster_id = (
        subprocess.run(
            ["java", "-cp", _java_cp(cfg), "kafka.tools.StorageTool", "random-uuid"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    subprocess.run(
        ["java", "-cp", _java_cp(cfg), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        check=True,
        capture_output=True,
        text=True,
    )


def create_topics(cfg: StackConfig) -> None:
    """Create the topics of every valid pipeline spec (device-state compacted)."""
    from edgeloop.kafka import ensure_pipeline_topics
    from edgeloop.spec import load_all

    bootstrap = f"{cfg.host}:{cfg.ports.kafka}"
    for spec in load_all(cfg.pipelines_dir).specs:
        ensure_pipeline_topics(spec, {"bootstrap.servers": bootstrap})


def create_bucket(cfg: StackConfig, sec: Secrets) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=cfg.url(cfg.ports.s3),
        aws_access_key_id=sec.s3_access_key,
        aws_secret_access_key=sec.s3_secret_key,
        region_name="us-east-1",
    )
    try:
        s3.create_bucket(Bucket=cfg.bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def write_prometheus_config(cfg: StackConfig) -> Path:
    folder = cfg.state_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    rules = sorted(str(p) for p in (REPO_ROOT / "monitoring").glob("rules/*.y*ml"))
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": rules,
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{cfg.host}:{cfg.ports.prometheus}"]}]},
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [f"{cfg.host}:{cfg.ports.pushgateway}"]}],
            },
            {
                "job_name": "edgeloop-exporter",
                "static_configs": [{"targets": [f"{cfg.host}:{cfg.ports.exporter}"]}],
            },
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    return path


def write_airflow_passwords(cfg: StackConfig, sec: Secrets) -> None:
    home = cfg.state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    path = home / "passwords.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"admin": sec.airflow_admin_password, "viewer": sec.airflow_viewer_password}))


def _discard(_: object) -> None:
    return None


def build_services(cfg: StackConfig, sec: Secrets) -> list[Service]:
    """Every service of the stack in start order; `depends_on` names services that must be ready first."""
    return [
        *_metadata_services(cfg, sec),
        _kafka_service(cfg),
        _s3_service(cfg, sec),
        _mlflow_service(cfg, sec),
        _label_studio_service(cfg, sec),
        *_monitoring_services(cfg, sec),
        *_airflow_services(cfg, sec),
    ]


def _metadata_services(cfg: StackConfig, sec: Secrets) -> list[Service]:
    """PostgreSQL when the metadata databases live on the stack's own server, else nothing."""
    if cfg.metadata_db != "postgres":
        return []
    return [
        Service(
            name="postgres",
            command=postgres.server_command(cfg),
            prepare=lambda: postgres.init_cluster(cfg, sec),
            ready=lambda: postgres.ready(cfg, sec),
            after_ready=lambda: postgres.ensure_databases(cfg, sec),
            url=f"{cfg.host}:{cfg.ports.postgres}",
            # fast shutdown: the postmaster ends its sessions and checkpoints (SIGTERM waits for every
            # client); its children take SIGINT as a query cancel
            stop_signal=signal.SIGINT,
        )
    ]


def _kafka_service(cfg: StackConfig) -> Service:
    state = cfg.state_dir
    return Service(
        name="kafka",
        command=[
            "java",
            "-Xms256m",
            "-Xmx768m",
            f"-Dlog4j2.configurationFile={state / 'kafka' / 'log4j2.properties'}",
            "-cp",
            _java_cp(cfg),
            "kafka.Kafka",
            str(state / "kafka" / "server.properties"),
        ],
        prepare=lambda: format_kafka_storage(cfg),
        ready=_kafka_ready(f"{cfg.host}:{cfg.ports.kafka}"),
        after_ready=lambda: create_topics(cfg),
        url=f"{cfg.host}:{cfg.ports.kafka}",
    )


def _s3_service(cfg: StackConfig, sec: Secrets) -> Service:
    return Service(
        name="s3",
        command=[cfg.tool("moto_server"), "-H", cfg.host, "-p", str(cfg.ports.s3)],
        env={"MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        ready=lambda: http_ok(f"{cfg.url(cfg.ports.s3)}/moto-api/"),
        after_ready=lambda: create_bucket(cfg, sec),
        url=cfg.url(cfg.ports.s3),
    )


def _mlflow_service(cfg: StackConfig, sec: Secrets) -> Service:
    s3_env = {
        "AWS_ACCESS_KEY_ID": sec.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": sec.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": cfg.url(cfg.ports.s3),
    }
    on_postgres = cfg.metadata_db == "postgres"
    return Service(
        name="mlflow",
        command=[
            cfg.tool("mlflow"),
            "server",
            "--artifacts-destination",
            f"s3://{cfg.bucket}/mlflow",
            "--serve-artifacts",
            "--host",
            cfg.host,
            "--port",
            str(cfg.ports.mlflow),
            "--workers",
            "2",
        ],
        # the store's URL holds the database password: by environment, not on the command line
        env={**s3_env, "MLFLOW_BACKEND_STORE_URI": mlflow_store_url(cfg, sec)},
        depends_on=("s3", "postgres") if on_postgres else ("s3",),
        prepare=lambda: prepare_mlflow_store(cfg, sec),
        ready=lambda: http_ok(f"{cfg.url(cfg.ports.mlflow)}/health"),
        url=cfg.url(cfg.ports.mlflow),
    )


def _label_studio_service(cfg: StackConfig, sec: Secrets) -> Service:
    state = cfg.state_dir
    ls_bin = cfg.label_studio_venv / "bin" / "label-studio"
    return Service(
        name="label-studio",
        command=[
            str(ls_bin),
            "start",
            "--no-browser",
            "--internal-host",
            cfg.host,
            "--port",
            str(cfg.ports.label_studio),
            "--host",
            cfg.url(cfg.ports.label_studio),
            "--enable-legacy-api-token",
        ],
        # The login and token by environment, never on the command line (`ps` shows every argument
        # to every user; /proc/<pid>/environ only to the process's own user).
        env={
            "LABEL_STUDIO_USERNAME": "admin@edgeloop.local",
            "LABEL_STUDIO_PASSWORD": sec.label_studio_password,
            "LABEL_STUDIO_USER_TOKEN": sec.label_studio_token,
            "LABEL_STUDIO_BASE_DATA_DIR": str(state / "label-studio"),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "false",
        },
        ready=lambda: http_ok(f"{cfg.url(cfg.ports.label_studio)}/health"),
        start_timeout=300.0,
        url=cfg.url(cfg.ports.label_studio),
    )


def _monitoring_services(cfg: StackConfig, sec: Secrets) -> list[Service]:
    """The Pushgateway, Prometheus and edgeloop's state exporter."""
    state = cfg.state_dir
    af_env = airflow_env(cfg, sec)
    return [
        Service(
            name="pushgateway",
            command=[
                "prometheus-pushgateway",
                f"--web.listen-address={cfg.host}:{cfg.ports.pushgateway}",
                f"--persistence.file={state / 'prometheus' / 'pushgateway.db'}",
            ],
            prepare=lambda: (state / "prometheus").mkdir(parents=True, exist_ok=True),
            ready=lambda: http_ok(f"{cfg.url(cfg.ports.pushgateway)}/-/ready"),
            url=cfg.url(cfg.ports.pushgateway),
        ),
        Service(
            name="prometheus",
            command=[
                "prometheus",
                f"--config.file={state / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={state / 'prometheus' / 'data'}",
                f"--web.listen-address={cfg.host}:{cfg.ports.prometheus}",
                "--web.enable-lifecycle",
            ],
            prepare=lambda: _discard(write_prometheus_config(cfg)),
            ready=lambda: http_ok(f"{cfg.url(cfg.ports.prometheus)}/-/ready"),
            url=cfg.url(cfg.ports.prometheus),
        ),
        Service(
            name="exporter",
            command=[str(cfg.python), "-m", "edgeloop.exporter", "--host", cfg.host, "--port", str(cfg.ports.exporter)],
            env={
                "PYTHONPATH": af_env["PYTHONPATH"],
                **{k: v for k, v in connection_env(cfg, sec).items() if not k.startswith("AIRFLOW_CONN_")},
            },
            depends_on=("kafka", "mlflow"),
            ready=lambda: http_ok(f"{cfg.url(cfg.ports.exporter)}/metrics"),
            url=f"{cfg.url(cfg.ports.exporter)}/metrics",
        ),
    ]


def heartbeat_since(health: dict[str, Any], component: str, since: float) -> bool:
    """Whether Airflow's health answer holds a heartbeat of `component` (e.g. "scheduler") at or after `since`."""
    beat = (health.get(component) or {}).get(f"latest_{component}_heartbeat")
    if not isinstance(beat, str):
        return False
    try:
        return datetime.fromisoformat(beat).timestamp() >= since
    except ValueError:
        return False


def _airflow_services(cfg: StackConfig, sec: Secrets) -> list[Service]:
    """Airflow's api-server (which migrates the metadata database first), scheduler, dag-processor and triggerer."""
    af_env = airflow_env(cfg, sec)
    airflow = cfg.tool("airflow")
    api = cfg.url(cfg.ports.airflow)

    def migrate_airflow() -> None:
        write_airflow_passwords(cfg, sec)
        result = subprocess.run(
            [airflow, "db", "migrate"],
            env={**os.environ, **af_env},
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"`airflow db migrate` failed (exit {result.returncode}):\n{tail}")

    def airflow_health() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{api}/api/v2/monitor/health", timeout=3) as response:  # noqa: S310
                return dict(json.loads(response.read()))
        except (OSError, ValueError):
            return None

    def airflow_component_ready(component: str) -> Callable[[], bool]:
        def check() -> bool:
            health = airflow_health()
            return bool(health and health.get(component, {}).get("status") == "healthy")

        return check

    def airflow_component_alive_since(component: str) -> Callable[[float], bool]:
        def check(since: float) -> bool:
            return heartbeat_since(airflow_health() or {}, component, since)

        return check

    return [
        Service(
            name="airflow-api-server",
            command=[airflow, "api-server", "--host", cfg.host, "--port", str(cfg.ports.airflow), "--workers", "1"],
            env=af_env,
            depends_on=("postgres",) if airflow_on_stack_postgres(cfg) else (),
            prepare=migrate_airflow,
            ready=lambda: http_ok(f"{api}/api/v2/monitor/health"),
            start_timeout=240.0,
            url=api,
        ),
        Service(
            name="airflow-scheduler",
            command=[airflow, "scheduler", "--skip-serve-logs"],
            env=af_env,
            depends_on=("airflow-api-server",),
            ready=airflow_component_ready("scheduler"),
            alive_since=airflow_component_alive_since("scheduler"),
        ),
        Service(
            name="airflow-dag-processor",
            command=[airflow, "dag-processor"],
            env=af_env,
            depends_on=("airflow-api-server",),
            ready=airflow_component_ready("dag_processor"),
            alive_since=airflow_component_alive_since("dag_processor"),
        ),
        Service(
            name="airflow-triggerer",
            command=[airflow, "triggerer", "--skip-serve-logs"],
            env=af_env,
            depends_on=("airflow-api-server", "kafka"),
            ready=airflow_component_ready("triggerer"),
            alive_since=airflow_component_alive_since("triggerer"),
        ),
    ]
