"""Fixtures for the integration tests: one environment per test and driver, a unique table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .helpers import DRIVERS, TIMEOUT, IntegrationEnv, unique

if TYPE_CHECKING:
    from harness.postgres import ExistingPostgres, ThrowawayPostgres
    from harness.s3 import LocalS3


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """The database driver of the loads: ``psycopg`` (3) or ``psycopg2``."""
    return str(request.param)


@pytest.fixture
def env(postgres: ThrowawayPostgres | ExistingPostgres, s3: LocalS3, bucket: str) -> IntegrationEnv:
    """Loads over psycopg 3 (tests that parametrize the driver use ``denv``)."""
    return IntegrationEnv(postgres, s3, bucket, None, driver="psycopg", timeout=TIMEOUT)


@pytest.fixture
def denv(postgres: ThrowawayPostgres | ExistingPostgres, s3: LocalS3, bucket: str, driver: str) -> IntegrationEnv:
    """Loads over the parametrized driver's connection."""
    return IntegrationEnv(postgres, s3, bucket, None, driver=driver, timeout=TIMEOUT)


@pytest.fixture
def table(postgres: ThrowawayPostgres | ExistingPostgres) -> Iterator[str]:
    """A unique table name; the table, its rejects table and its ledger are dropped after the test."""
    name = unique("it")
    yield name
    with postgres.connect(autocommit=True) as conn:
        for suffix in ("", "_rejects", "_loads"):
            conn.execute(f'DROP TABLE IF EXISTS "{name}{suffix}" CASCADE')
