"""Where the stack keeps Airflow's and MLflow's metadata: its own PostgreSQL by default, SQLite on request."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest

from edgeloop.devstack import postgres
from edgeloop.devstack.config import Ports, Secrets, StackConfig
from edgeloop.devstack.services import airflow_database_url, build_services, mlflow_store_url


def _secrets(tmp_path: Path) -> Secrets:
    return Secrets.load_or_create(tmp_path / "secrets.json")


def test_a_secrets_file_from_before_postgres_gains_a_password_and_keeps_every_other_secret(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    old = Secrets.generate().__dict__
    del old["postgres_password"]
    path.write_text(json.dumps(old))
    path.chmod(0o600)

    loaded = Secrets.load_or_create(path)

    assert {k: v for k, v in loaded.__dict__.items() if k != "postgres_password"} == old
    assert len(loaded.postgres_password) >= 24
    assert json.loads(path.read_text())["postgres_password"] == loaded.postgres_password
    assert path.stat().st_mode & 0o777 == 0o600
    assert Secrets.load_or_create(path) == loaded  # generated once, then kept


def test_a_complete_secrets_file_is_read_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    first = Secrets.load_or_create(path)
    written = path.read_text()
    assert Secrets.load_or_create(path) == first
    assert path.read_text() == written


def test_postgres_is_the_default_and_sqlite_is_one_setting_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_METADATA_DB", raising=False)
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    assert StackConfig.from_env().metadata_db == "postgres"
    monkeypatch.setenv("EDGELOOP_METADATA_DB", "SQLite")
    assert StackConfig.from_env().metadata_db == "sqlite"
    monkeypatch.setenv("EDGELOOP_METADATA_DB", "mysql")
    with pytest.raises(ValueError, match="EDGELOOP_METADATA_DB='mysql'"):
        StackConfig.from_env()


def test_on_postgres_each_service_has_its_own_database_and_role_on_the_stack_port(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(postgres=25432))
    sec = dataclasses.replace(_secrets(tmp_path), postgres_password="p/w@rd:1")
    assert airflow_database_url(cfg, sec) == "postgresql+psycopg2://airflow:p%2Fw%40rd%3A1@127.0.0.1:25432/airflow"
    assert mlflow_store_url(cfg, sec) == "postgresql+psycopg2://mlflow:p%2Fw%40rd%3A1@127.0.0.1:25432/mlflow"


def test_on_sqlite_both_stores_are_files_in_the_state_folder(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(), metadata_db="sqlite")
    sec = _secrets(tmp_path)
    assert airflow_database_url(cfg, sec) == f"sqlite:///{tmp_path}/airflow/airflow.db"
    assert mlflow_store_url(cfg, sec) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"


def test_an_explicit_airflow_connection_wins_for_airflow_only(tmp_path: Path) -> None:
    explicit = "postgresql://someone@db.example:5432/airflow"
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(), airflow_db_url=explicit)
    sec = _secrets(tmp_path)
    assert airflow_database_url(cfg, sec) == explicit
    services = {s.name: s for s in build_services(cfg, sec)}
    assert services["airflow-api-server"].env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == explicit
    assert services["airflow-api-server"].depends_on == ()  # it does not wait for a database it does not use
    assert "postgres" in services["mlflow"].depends_on  # MLflow stays on the stack's PostgreSQL


def test_the_stack_starts_postgres_first_when_the_metadata_is_there(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports())
    sec = _secrets(tmp_path)
    services = {s.name: s for s in build_services(cfg, sec)}
    assert services["postgres"].stop_signal == signal.SIGINT  # fast shutdown, not "wait for every client"
    assert "postgres" in services["airflow-api-server"].depends_on  # `airflow db migrate` needs it healthy
    assert "postgres" in services["mlflow"].depends_on
    assert services["mlflow"].env["MLFLOW_BACKEND_STORE_URI"] == mlflow_store_url(cfg, sec)
    assert services["airflow-scheduler"].env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == airflow_database_url(cfg, sec)


def test_on_sqlite_no_postgres_is_started_or_waited_for(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(), metadata_db="sqlite")
    services = {s.name: s for s in build_services(cfg, _secrets(tmp_path))}
    assert "postgres" not in services
    assert all("postgres" not in s.depends_on for s in services.values())


def test_as_root_the_cluster_runs_as_the_postgres_user_and_otherwise_as_the_caller() -> None:
    command = ["/usr/lib/postgresql/15/bin/initdb", "-D", "/state/postgres/data"]
    assert postgres.as_cluster_owner(command, euid=1000) == command
    as_root = postgres.as_cluster_owner(command, euid=0)
    assert as_root[:4] == ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    assert as_root[as_root.index("--") + 1 :] == command  # exec'd in place: the recorded pid is the server's


def test_the_server_listens_on_loopback_with_its_socket_in_the_state_folder(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(postgres=25432), postgres_bin=tmp_path / "bin")
    command = postgres.server_command(cfg)
    server = command[command.index(str(tmp_path / "bin" / "postgres")) :]
    assert server[1:] == [
        "-D",
        str(tmp_path / "postgres" / "data"),
        "-p",
        "25432",
        "-k",
        str(tmp_path / "postgres" / "run"),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"max_connections={postgres.MAX_CONNECTIONS}",
    ]


def test_a_socket_path_over_the_unix_limit_leaves_the_server_on_tcp_only(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    cfg = StackConfig(state_dir=deep, ports=Ports())
    assert postgres.socket_dir_setting(cfg) == ""


def test_missing_server_binaries_are_named_with_the_way_out(tmp_path: Path) -> None:
    cfg = StackConfig(state_dir=tmp_path, ports=Ports(), postgres_bin=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="EDGELOOP_METADATA_DB=sqlite"):
        postgres.init_cluster(cfg, _secrets(tmp_path))
    assert not (tmp_path / "postgres").exists()  # nothing half-made


def test_the_env_file_says_where_the_metadata_is(tmp_path: Path) -> None:
    from edgeloop.devstack.stack import write_env_file

    cfg = StackConfig(state_dir=tmp_path, ports=Ports())
    sec = _secrets(tmp_path)
    env = dict(line.split("=", 1) for line in write_env_file(cfg, sec).read_text().splitlines())
    assert env["EDGELOOP_METADATA_DB"] == "'postgres'"
    assert env["EDGELOOP_AIRFLOW_DB_URL"] == f"'{airflow_database_url(cfg, sec)}'"
    assert env["EDGELOOP_MLFLOW_STORE_URL"] == f"'{mlflow_store_url(cfg, sec)}'"
    assert (tmp_path / "stack.env").stat().st_mode & 0o777 == 0o600
