"""Where the local stack lives: ports, folders and generated secrets, all from the environment.

Every value has an environment variable so that two stacks (or a stack and a
test's private services) can run side by side on one machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# where Airflow's and MLflow's metadata live: the stack's own PostgreSQL (default) or SQLite files
METADATA_DBS = ("postgres", "sqlite")


def env_port(name: str, default: int) -> int:
    """A port from `EDGELOOP_<name>_PORT`, else `default` (every service of the stacks is movable)."""
    return int(os.environ.get(f"EDGELOOP_{name}_PORT", default))


@dataclass(frozen=True)
class Ports:
    kafka: int = field(default_factory=lambda: env_port("KAFKA", 19092))
    kafka_controller: int = field(default_factory=lambda: env_port("KAFKA_CONTROLLER", 19093))
    s3: int = field(default_factory=lambda: env_port("S3", 19000))
    mlflow: int = field(default_factory=lambda: env_port("MLFLOW", 15000))
    label_studio: int = field(default_factory=lambda: env_port("LABEL_STUDIO", 18085))
    airflow: int = field(default_factory=lambda: env_port("AIRFLOW", 18080))
    prometheus: int = field(default_factory=lambda: env_port("PROMETHEUS", 19090))
    pushgateway: int = field(default_factory=lambda: env_port("PUSHGATEWAY", 19091))
    exporter: int = field(default_factory=lambda: env_port("EXPORTER", 19100))
    postgres: int = field(default_factory=lambda: env_port("POSTGRES", 15432))


@dataclass(frozen=True)
class Secrets:
    """Generated once per state folder, kept in `secrets.json` (mode 0600), never in the repository."""

    s3_access_key: str
    s3_secret_key: str
    airflow_admin_password: str
    airflow_viewer_password: str
    airflow_jwt_secret: str
    airflow_api_secret: str
    airflow_fernet_key: str
    label_studio_password: str
    label_studio_token: str
    control_signing_key: str
    postgres_password: str

    @classmethod
    def generate(cls) -> Secrets:
        import base64

        return cls(
            s3_access_key="EL" + secrets.token_hex(9).upper(),
            s3_secret_key=secrets.token_urlsafe(30),
            airflow_admin_password=secrets.token_urlsafe(12),
            airflow_viewer_password=secrets.token_urlsafe(12),
            airflow_jwt_secret=secrets.token_urlsafe(32),
            airflow_api_secret=secrets.token_urlsafe(32),
            airflow_fernet_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            label_studio_password=secrets.token_urlsafe(12),
            label_studio_token=secrets.token_hex(20),
            control_signing_key=secrets.token_hex(32),
            postgres_password=secrets.token_urlsafe(24),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> Secrets:
        """The secrets in `path`; a secret the file lacks (a file older than that secret) is generated
        and added to the file, every secret already there is kept as it is."""
        stored = json.loads(path.read_text()) if path.exists() else {}
        fresh = cls.generate().__dict__
        values = cls(**{name: stored.get(name, value) for name, value in fresh.items()})
        if set(fresh) - set(stored):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps({**stored, **values.__dict__}, indent=2))
        return values


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    ports: Ports
    host: str = "127.0.0.1"
    bucket: str = "edgeloop"
    python: Path = field(default_factory=lambda: Path(sys.executable))
    label_studio_venv: Path = Path()
    kafka_libs: Path = Path()
    pipelines_dir: Path = REPO_ROOT / "include" / "pipelines"
    # "postgres" or "sqlite" (EDGELOOP_METADATA_DB); a non-empty `airflow_db_url` wins for Airflow
    metadata_db: str = "postgres"
    airflow_db_url: str = ""
    # PostgreSQL's server binaries (initdb, postgres); None: Debian's newest /usr/lib/postgresql/<n>/bin
    postgres_bin: Path | None = None

    def __post_init__(self) -> None:
        if self.metadata_db not in METADATA_DBS:
            raise ValueError(f"EDGELOOP_METADATA_DB={self.metadata_db!r}: expected one of {', '.join(METADATA_DBS)}")

    @classmethod
    def from_env(cls) -> StackConfig:
        state = Path(os.environ.get("EDGELOOP_STATE_DIR", REPO_ROOT / ".edgeloop")).resolve()
        pipelines = Path(os.environ.get("EDGELOOP_PIPELINES_DIR", REPO_ROOT / "include" / "pipelines"))
        return cls(
            state_dir=state,
            ports=Ports(),
            host=os.environ.get("EDGELOOP_HOST", "127.0.0.1"),
            bucket=os.environ.get("EDGELOOP_BUCKET", "edgeloop"),
            label_studio_venv=Path(os.environ.get("EDGELOOP_LABEL_STUDIO_VENV", state / "venvs" / "label-studio")),
            kafka_libs=Path(os.environ.get("EDGELOOP_KAFKA_LIBS", state / "kafka-libs")),
            pipelines_dir=pipelines.resolve(),
            metadata_db=os.environ.get("EDGELOOP_METADATA_DB", "postgres").strip().lower(),
            airflow_db_url=os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""),
            postgres_bin=Path(bin_dir) if (bin_dir := os.environ.get("EDGELOOP_POSTGRES_BIN")) else None,
        )

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def bin_dir(self) -> Path:
        return self.python.parent

    def tool(self, name: str) -> str:
        """A console script of the bundle's virtualenv (airflow, mlflow, moto_server)."""
        candidate = self.bin_dir / name
        if candidate.exists():
            return str(candidate)
        found = shutil.which(name)
        if not found:
            raise FileNotFoundError(f"'{name}' is not installed in {self.bin_dir} nor on PATH (run `make install`)")
        return found

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"
