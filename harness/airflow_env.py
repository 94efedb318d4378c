"""Environment for running Airflow against the harness servers.

Nothing here imports Airflow at module level: Airflow reads its configuration
on first import, so the environment must be applied to ``os.environ`` before.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.postgres import PostgresServer
    from harness.s3 import LocalS3

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"
PLUGINS_FOLDER = REPO_ROOT / "plugins"

AWS_CONN_ID = "aws_default"
POSTGRES_CONN_ID = "postgres_default"


def conn_env_var(conn_id: str) -> str:
    """Name of the ``AIRFLOW_CONN_*`` variable for ``conn_id``."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def aws_connection(s3: LocalS3) -> dict[str, Any]:
    """Airflow JSON connection dict for the local S3 endpoint.

    No ``config_kwargs: {"signature_version": "s3v4"}``: the operator signs its URLs with
    SigV4 unless the connection says otherwise, boto3's own S3 calls use SigV4 by default, and
    Airflow's secrets masker, which is handed every value of a connection's extra, logs
    "Skipping masking for a secret as it's too short" for a value like "s3v4" (< 5 chars).
    """
    return {
        "conn_type": "aws",
        "login": s3.access_key,
        "password": s3.secret_key,
        "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region},
    }


def postgres_connection(pg: PostgresServer, dbname: str | None = None) -> dict[str, Any]:
    """Airflow JSON connection dict for a harness PostgreSQL server."""
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": pg.host,
        "port": pg.port,
        "login": pg.user,
        "schema": dbname or pg.dbname,
    }
    password = getattr(pg, "password", None)
    if password:
        conn["password"] = password
    return conn


def airflow_connection_env(
    s3: LocalS3,
    pg: PostgresServer,
    *,
    aws_conn_id: str = AWS_CONN_ID,
    postgres_conn_id: str = POSTGRES_CONN_ID,
    dbname: str | None = None,
) -> dict[str, str]:
    """``AIRFLOW_CONN_AWS_DEFAULT`` / ``AIRFLOW_CONN_POSTGRES_DEFAULT`` (JSON form)."""
    return {
        conn_env_var(aws_conn_id): json.dumps(aws_connection(s3)),
        conn_env_var(postgres_conn_id): json.dumps(postgres_connection(pg, dbname)),
    }


def prepare_airflow_home(
    path: str | Path,
    *,
    dags_folder: str | Path | None = None,
    plugins_folder: str | Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create ``path`` and return the env for an isolated Airflow home using SQLite there."""
    home = Path(path).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder or DAGS_FOLDER).resolve()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(Path(plugins_folder or PLUGINS_FOLDER).resolve()),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    env.update(extra or {})
    return env


def apply_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``env`` in ``os.environ``; return the previous values (``None`` = unset)."""
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    return previous


def restore_env(previous: Mapping[str, str | None]) -> None:
    """Undo ``apply_env`` using the mapping it returned."""
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def patched_env(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily apply ``env`` to ``os.environ``."""
    previous = apply_env(env)
    try:
        yield
    finally:
        restore_env(previous)


def _check_env_matches_loaded_airflow() -> None:
    """Fail loudly if Airflow was imported before ``AIRFLOW_HOME`` was set."""
    if "airflow.configuration" not in sys.modules:
        return
    from airflow.configuration import conf

    wanted = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    loaded = conf.get("database", "sql_alchemy_conn")
    if wanted and wanted != loaded:
        raise RuntimeError(
            f"Airflow was imported before its env was applied (uses {loaded!r}, "
            f"expected {wanted!r}); apply prepare_airflow_home() env first"
        )


def migrate_airflow_db(*, subprocess_cli: bool = False) -> float:
    """Create/upgrade the Airflow metadata DB of the current env; return seconds taken.

    In-process (``airflow.utils.db.initdb``) by default; ``subprocess_cli=True``
    runs ``airflow db migrate`` from this interpreter's environment instead.
    The ``prepare_airflow_home`` env must already be in ``os.environ``.
    """
    if "AIRFLOW_HOME" not in os.environ:
        raise RuntimeError("AIRFLOW_HOME not set; apply prepare_airflow_home() env first")
    t0 = time.monotonic()
    if subprocess_cli:
        airflow_bin = Path(sys.executable).with_name("airflow")
        cmd = [str(airflow_bin)] if airflow_bin.exists() else [sys.executable, "-m", "airflow"]
        result = subprocess.run(
            [*cmd, "db", "migrate"],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}")
    else:
        _check_env_matches_loaded_airflow()
        from airflow.utils import db

        db.initdb()
    elapsed = time.monotonic() - t0
    log.info("Airflow metadata DB migrated in %.2fs", elapsed)
    return elapsed
