"""The stack's PostgreSQL: one cluster under the state folder for Airflow's and MLflow's metadata.

`initdb` runs once (the data folder is kept between starts), then `postgres` listens on a loopback
port with its unix socket in the state folder. One database per service, owned by a role of the
same name; every role has the generated password of `secrets.json`.

PostgreSQL refuses to run as root. When the stack runs as root, `initdb` and the server run as the
`postgres` system user (through `setpriv`, which execs in place: the recorded pid is the server's
own) and that user owns the data folder; otherwise they run as the current user.
Passwords never reach a command line: `initdb` reads the superuser's from a file removed right after.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgeloop.devstack.config import Secrets, StackConfig

SUPERUSER = "edgeloop"
# the system user that runs the cluster when the stack runs as root (Debian's package creates it)
CLUSTER_OWNER = "postgres"
DATABASES = ("airflow", "mlflow")
# Airflow's four components and MLflow's workers each keep a pool (5 + 10 overflow by default)
MAX_CONNECTIONS = 200
# sockaddr_un.sun_path is 108 bytes with its terminating NUL
SOCKET_PATH_LIMIT = 107


class PostgresError(RuntimeError):
    """The stack's PostgreSQL cluster could not be created or prepared."""


def data_dir(cfg: StackConfig) -> Path:
    return cfg.state_dir / "postgres" / "data"


def socket_dir(cfg: StackConfig) -> Path:
    return cfg.state_dir / "postgres" / "run"


def socket_dir_setting(cfg: StackConfig) -> str:
    """The unix socket folder for `postgres -k`; empty (TCP only) when the socket path would be too long."""
    folder = socket_dir(cfg)
    return str(folder) if len(f"{folder}/.s.PGSQL.{cfg.ports.postgres}") <= SOCKET_PATH_LIMIT else ""


def bin_dir(cfg: StackConfig) -> Path | None:
    """The folder of `initdb` and `postgres`: EDGELOOP_POSTGRES_BIN, else Debian's newest version, else PATH."""
    if cfg.postgres_bin is not None:
        return cfg.postgres_bin
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if debian:
        return max(debian, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def binary(cfg: StackConfig, name: str) -> str:
    """The path of server binary `name`; an error that says how to install it when there is none."""
    folder = bin_dir(cfg)
    if folder is None or not (folder / name).exists():
        raise FileNotFoundError(
            f"PostgreSQL's '{name}' is not in {folder or '/usr/lib/postgresql/<version>/bin nor on PATH'}: run "
            "`make system-packages` (Debian package postgresql), set EDGELOOP_POSTGRES_BIN, or keep SQLite "
            "with EDGELOOP_METADATA_DB=sqlite"
        )
    return str(folder / name)


def as_cluster_owner(command: list[str], euid: int | None = None) -> list[str]:
    """`command` as it has to run: unchanged for a normal user, as the `postgres` user for root."""
    if (os.geteuid() if euid is None else euid) != 0:
        return command
    return ["setpriv", f"--reuid={CLUSTER_OWNER}", f"--regid={CLUSTER_OWNER}", "--init-groups", "--", *command]


def server_command(cfg: StackConfig) -> list[str]:
    folder = bin_dir(cfg)
    return as_cluster_owner(
        [
            str(folder / "postgres") if folder else "postgres",  # init_cluster says what is missing
            "-D",
            str(data_dir(cfg)),
            "-p",
            str(cfg.ports.postgres),
            "-k",
            socket_dir_setting(cfg),
            "-c",
            f"listen_addresses={cfg.host}",
            "-c",
            f"max_connections={MAX_CONNECTIONS}",
        ]
    )


def database_url(cfg: StackConfig, sec: Secrets, name: str) -> str:
    """The SQLAlchemy URL of database `name` as its owner role.

    The driver is named: SQLAlchemy 2.1 defaults `postgresql://` to psycopg 3, the bundle ships psycopg2
    (Airflow derives its async URL, postgresql+asyncpg, from this one)."""
    password = quote(sec.postgres_password, safe="")
    return f"postgresql+psycopg2://{name}:{password}@{cfg.host}:{cfg.ports.postgres}/{name}"


def _hand_to_cluster_owner(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        for path in paths:
            shutil.chown(path, CLUSTER_OWNER, CLUSTER_OWNER)
    except LookupError as exc:
        raise PostgresError(
            f"running as root, PostgreSQL must run as the '{CLUSTER_OWNER}' system user, which does not exist "
            "(install Debian's postgresql package, or keep SQLite with EDGELOOP_METADATA_DB=sqlite)"
        ) from exc


def init_cluster(cfg: StackConfig, sec: Secrets) -> None:
    """Create the cluster once (skipped when the data folder holds one); always prepare the socket folder."""
    binary(cfg, "postgres")  # before anything is created: a clear error when PostgreSQL is not installed
    folder, data, sockets = cfg.state_dir / "postgres", data_dir(cfg), socket_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    sockets.mkdir(exist_ok=True)
    _hand_to_cluster_owner(sockets)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(mode=0o700, exist_ok=True)
    password_file = folder / "initdb-password"
    password_file.touch(mode=0o600)
    password_file.write_text(sec.postgres_password + "\n")
    try:
        _hand_to_cluster_owner(data, password_file)
        command = [
            binary(cfg, "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        result = subprocess.run(as_cluster_owner(command), capture_output=True, text=True, check=False)
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        hint = (
            f" (PostgreSQL runs as the '{CLUSTER_OWNER}' user here, which must be able to reach {data}:"
            " every parent folder needs o+x)"
            if os.geteuid() == 0
            else ""
        )
        raise PostgresError(f"initdb failed for {data}{hint}:\n{(result.stderr or result.stdout).strip()[-2000:]}")


@contextmanager
def _superuser_cursor(cfg: StackConfig, sec: Secrets, dbname: str = "postgres", timeout: int = 3) -> Iterator[Any]:
    """A cursor of the superuser in autocommit mode (CREATE and DROP DATABASE run outside a transaction)."""
    import psycopg2

    connection = psycopg2.connect(
        host=cfg.host,
        port=cfg.ports.postgres,
        user=SUPERUSER,
        password=sec.postgres_password,
        dbname=dbname,
        connect_timeout=timeout,
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def ready(cfg: StackConfig, sec: Secrets) -> bool:
    """The server accepts the superuser's password and answers a query."""
    import psycopg2

    try:
        with _superuser_cursor(cfg, sec, timeout=2) as cursor:
            cursor.execute("SELECT 1")
            return bool(cursor.fetchone() == (1,))
    except psycopg2.Error:
        return False


def ensure_databases(cfg: StackConfig, sec: Secrets) -> None:
    """A login role and a database it owns for each service (created when missing, idempotent)."""
    from psycopg2 import sql

    with _superuser_cursor(cfg, sec) as cursor:
        for name in DATABASES:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (sec.postgres_password,)
                )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {0} OWNER {0}").format(sql.Identifier(name)))


def recreate_database(cfg: StackConfig, sec: Secrets, name: str) -> bool:
    """Drop database `name` and create it empty again; True when it held tables before."""
    from psycopg2 import sql

    with _superuser_cursor(cfg, sec) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        existed = cursor.fetchone() is not None
    held_tables = False
    if existed:
        with _superuser_cursor(cfg, sec, dbname=name) as cursor:
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            held_tables = bool(cursor.fetchone()[0])
    with _superuser_cursor(cfg, sec) as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {0} OWNER {0}").format(sql.Identifier(name)))
    return held_tables
