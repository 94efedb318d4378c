"""Fixtures for the fault tests: a fault proxy per test in front of the session moto server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from psycopg import sql

from harness.fault_proxy import FaultProxy

from .support import FaultEnv, unique

if TYPE_CHECKING:
    from harness.postgres import ExistingPostgres, ThrowawayPostgres
    from harness.s3 import LocalS3


@pytest.fixture
def proxy(s3: LocalS3) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session S3 server, stopped (threads joined) after the test."""
    with FaultProxy(s3.endpoint_url, client_timeout=15.0, upstream_timeout=15.0) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def env(
    postgres: ThrowawayPostgres | ExistingPostgres,
    s3: LocalS3,
    bucket: str,
    proxy: FaultProxy,
) -> FaultEnv:
    return FaultEnv(postgres, s3, bucket, proxy)


@pytest.fixture
def table(postgres: ThrowawayPostgres | ExistingPostgres) -> Iterator[str]:
    """A unique target table name; the table, its rejects and its reference copy are dropped after."""
    name = unique("f")
    yield name
    with postgres.connect(autocommit=True) as conn:
        for suffix in ("", "_rejects", "_ref", "_loads"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name + suffix)))
