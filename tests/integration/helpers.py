"""Helpers for the integration tests: the fault tests' environment, without the proxy, on either driver.

``IntegrationEnv`` reuses :class:`tests.faults.support.FaultEnv` (uploads, pre-signed URL
factories, table snapshots) and only adds what these tests need: loads over a psycopg 3
*or* a psycopg2 connection, straight to the S3 server, and readers for rows and rejects.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg2
from psycopg import sql

from s3_postgres_copy.loader import LoadOptions, LoadStats, load_object
from tests.faults.support import FAST, FaultEnv, unique

if TYPE_CHECKING:
    from s3_postgres_copy.source import HttpObjectSource

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / "tests" / "data"  # the vendored public suites: see tests/data/README.md
DRIVERS = ("psycopg", "psycopg2")
# No proxy here, so nothing stalls on purpose; a loaded machine may still be slow.
TIMEOUT = (10.0, 60.0)

__all__ = ["DRIVERS", "TESTDATA", "IntegrationEnv", "exact", "unique"]


def exact(text: str | bytes) -> Any:
    """Parse JSON keeping every digit (``Decimal`` for non-integers)."""
    return json.loads(text, parse_float=Decimal)


@dataclass
class IntegrationEnv(FaultEnv):
    """A :class:`FaultEnv` with ``proxy=None`` whose loads run on ``driver``'s connection."""

    driver: str = "psycopg"

    def db_connect(self) -> Any:
        """A new connection of the test's driver (autocommit off, as ``PostgresHook`` gives it)."""
        if self.driver == "psycopg2":
            return psycopg2.connect(self.postgres.dsn)
        return psycopg.connect(self.postgres.dsn)

    def direct_source(self, key: str) -> HttpObjectSource:
        return self.source(key, factory=self.factory(key, direct=True), retry=FAST, timeout=TIMEOUT)

    def load(self, key: str, table: str, *, source: HttpObjectSource | None = None, **options: Any) -> LoadStats:
        """``load_object`` on a fresh connection of the test's driver, straight from S3."""
        options.setdefault("batch_id", f"batch-{uuid.uuid4().hex[:8]}")
        conn = self.db_connect()
        try:
            return load_object(conn, source or self.direct_source(key), LoadOptions(self.bucket, key, table, **options))
        finally:
            conn.close()

    def documents(self, table: str, document: str = "document") -> dict[int, Any]:
        """``source_line`` → the document parsed exactly from ``jsonb``'s text."""
        query = sql.SQL("SELECT source_line, {}::text FROM {}").format(sql.Identifier(document), sql.Identifier(table))
        rows = self.execute(query.as_string(None))
        lines = [line for line, _ in rows]
        assert len(set(lines)) == len(lines), "duplicate source_line values"
        return {line: exact(text) for line, text in rows}

    def rejects(self, table: str) -> list[tuple[Any, ...]]:
        """``(source_line, raw, error, batch_id, source_key)`` of ``<table>_rejects`` by line."""
        query = sql.SQL("SELECT source_line, raw, error, batch_id, source_key FROM {} ORDER BY source_line").format(
            sql.Identifier(table + "_rejects")
        )
        return self.execute(query.as_string(None))

    def count(self, table: str) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        return int(self.execute(query.as_string(None))[0][0])

    def drop(self, table: str) -> None:
        for suffix in ("", "_rejects"):
            self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table + suffix)).as_string(None))
