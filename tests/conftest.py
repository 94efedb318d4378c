"""Root pytest configuration: isolated Airflow home, throwaway PostgreSQL, local S3.

Everything above the fixtures runs at import time, i.e. before any test module
(or plugin) can import Airflow, which reads its configuration on first import.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
for _p in (REPO_ROOT / "dags", REPO_ROOT / "plugins", REPO_ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from harness.airflow_env import (  # noqa: E402 - needs sys.path above
    airflow_connection_env,
    apply_env,
    migrate_airflow_db,
    prepare_airflow_home,
    restore_env,
)
from harness.postgres import (  # noqa: E402
    ExistingPostgres,
    ThrowawayPostgres,
    postgres_from_env,
)
from harness.s3 import LocalS3  # noqa: E402

if TYPE_CHECKING:
    import psycopg

if "airflow" in sys.modules:  # pragma: no cover - defensive
    raise RuntimeError("airflow was imported before tests/conftest.py configured AIRFLOW_HOME")

log = logging.getLogger(__name__)

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
os.environ.pop("AIRFLOW_CONFIG", None)
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
apply_env(prepare_airflow_home(AIRFLOW_HOME))

MARKERS = {
    "slow": "slow tests (deselect with -m 'not slow')",
    "e2e": "end-to-end tests running real Airflow DAGs against PostgreSQL and S3",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register custom markers that pyproject's ``markers`` does not already declare."""
    declared = {str(line).split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session Airflow home."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's isolated ``AIRFLOW_HOME``."""
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres | ExistingPostgres]:
    """Session PostgreSQL: ``$POSTGRES_TEST_DSN`` if set, else a throwaway server."""
    existing = postgres_from_env()
    if existing is not None:
        yield existing
        return
    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """Session-wide moto S3 server."""
    with LocalS3() as server:
        yield server


@pytest.fixture(scope="session")
def airflow_env(postgres: ThrowawayPostgres | ExistingPostgres, s3: LocalS3) -> Iterator[dict[str, str]]:
    """Point ``aws_default``/``postgres_default`` at the servers; migrate the Airflow DB once."""
    env = airflow_connection_env(s3, postgres)
    previous = apply_env(env)
    migrate_airflow_db()
    try:
        yield env
    finally:
        restore_env(previous)


@pytest.fixture
def pg_conn(
    postgres: ThrowawayPostgres | ExistingPostgres,
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Autocommit psycopg 3 connection to the session server."""
    conn = postgres.connect(autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def bucket(s3: LocalS3) -> str:
    """A fresh, uniquely named bucket in the session S3 server."""
    return s3.create_bucket(f"test-{uuid.uuid4().hex[:20]}")
