"""A test's loads: pre-signed URLs (optionally through the fault proxy), loads on either driver, table readers.

Shared by the fault tests (``tests/faults``, through the proxy) and the integration tests
(``tests/integration``, straight to the S3 server, on psycopg 3 or psycopg2).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from s3_postgres_copy.loader import LoadOptions, LoadStats, load_object
from s3_postgres_copy.source import HttpObjectSource, RetryPolicy

if TYPE_CHECKING:
    from harness.fault_proxy import FaultProxy
    from harness.postgres import PostgresServer
    from harness.s3 import LocalS3


def exact(text: str | bytes) -> Any:
    """Parse JSON keeping every digit (``Decimal`` for non-integers)."""
    return json.loads(text, parse_float=Decimal)


FAST = RetryPolicy(attempts=5, backoff=0.01, max_backoff=0.05)
TIMEOUT = (5.0, 5.0)
STALL_TIMEOUT = 0.5  # read time-out where the proxy stalls on purpose (elsewhere 5 s)
_CLIENTS: dict[str, Any] = {}


def s3_client(s3: LocalS3) -> Any:
    """One boto3 client per S3 endpoint (creating one takes ~0.2 s; clients are thread-safe)."""
    if s3.endpoint_url not in _CLIENTS:
        _CLIENTS[s3.endpoint_url] = s3.client()
    return _CLIENTS[s3.endpoint_url]


class PresignedUrls:
    """A URL factory: a new pre-signed URL per call (distinct signature), optionally via the proxy."""

    def __init__(self, s3: LocalS3, bucket: str, key: str, proxy: FaultProxy | None) -> None:
        self.client = s3_client(s3)
        self.bucket = bucket
        self.key = key
        self.proxy = proxy
        self.urls: list[str] = []
        self.override: Callable[[int], str | None] | None = None

    def __call__(self) -> str:
        number = len(self.urls) + 1
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key},
            ExpiresIn=3600 + number,  # a different expiry, so a different signature, each call
        )
        if self.proxy is not None:
            url = self.proxy.rewrite(url)
        if self.override is not None:
            url = self.override(number) or url
        self.urls.append(url)
        return url

    @property
    def calls(self) -> int:
        return len(self.urls)

    @property
    def queries(self) -> list[str]:
        return [urlsplit(url).query for url in self.urls]


@dataclass
class LoadEnv:
    """One test's servers: PostgreSQL, moto S3 with a fresh bucket, and (fault tests) the fault proxy.

    Loads run on a new connection of ``driver`` (``psycopg`` or ``psycopg2``, autocommit off as
    ``PostgresHook`` gives it), through the proxy when there is one.
    """

    postgres: PostgresServer
    s3: LocalS3
    bucket: str
    proxy: FaultProxy | None = None
    driver: str = "psycopg"
    timeout: tuple[float, float] = TIMEOUT
    factories: list[PresignedUrls] = field(default_factory=list)

    # -- S3 ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> str:
        """Upload an object; return its ETag (quoted, as in HTTP)."""
        return str(s3_client(self.s3).put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"])

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def factory(self, key: str, *, direct: bool = False) -> PresignedUrls:
        factory = PresignedUrls(self.s3, self.bucket, key, None if direct else self.proxy)
        self.factories.append(factory)
        return factory

    def source(
        self,
        key: str,
        *,
        factory: PresignedUrls | None = None,
        retry: RetryPolicy = FAST,
        timeout: tuple[float, float] | None = None,
        chunk_size: int | None = None,
    ) -> HttpObjectSource:
        extra: dict[str, Any] = {} if chunk_size is None else {"chunk_size": chunk_size}
        return HttpObjectSource(
            factory or self.factory(key), name=self.location(key), retry=retry, timeout=timeout or self.timeout, **extra
        )

    def direct_source(self, key: str) -> HttpObjectSource:
        """A source straight from the S3 server (no proxy)."""
        return self.source(key, factory=self.factory(key, direct=True))

    # -- PostgreSQL ----------------------------------------------------------------------
    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        return psycopg.connect(self.postgres.dsn, autocommit=autocommit)

    def db_connect(self) -> Any:
        """A new connection of the env's driver (autocommit off, as ``PostgresHook`` gives it)."""
        if self.driver == "psycopg2":
            import psycopg2

            return psycopg2.connect(self.postgres.dsn)
        return psycopg.connect(self.postgres.dsn)

    def load(self, key: str, table: str, *, source: HttpObjectSource | None = None, **options: Any) -> LoadStats:
        """Run ``load_object`` on its own connection (through the proxy unless ``source`` says otherwise)."""
        options.setdefault("batch_id", f"batch-{uuid.uuid4().hex[:8]}")
        conn = self.db_connect()
        try:
            return load_object(conn, source or self.source(key), LoadOptions(self.bucket, key, table, **options))
        finally:
            conn.close()

    def reference(self, key: str, table: str, **options: Any) -> list[tuple[Any, ...]]:
        """Load ``key`` without the proxy (uninterrupted) into ``table``; return its rows."""
        self.load(key, table, source=self.source(key, factory=self.factory(key, direct=True)), **options)
        return self.rows(table)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """``(source_line, document as jsonb text, source_key, source_etag)`` ordered by line."""
        query = sql.SQL(
            "SELECT source_line, document::text, source_key, source_etag FROM {} ORDER BY source_line, document::text"
        ).format(sql.Identifier(table))
        with self.connect(autocommit=True) as conn:
            return conn.execute(query).fetchall()

    def snapshot(self, table: str) -> list[str] | None:
        """Every row, every column, as text (None if the table does not exist)."""
        with self.connect(autocommit=True) as conn:
            if conn.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,):
                return None
            query = sql.SQL("SELECT t::text FROM {} AS t ORDER BY 1").format(sql.Identifier(table))
            return [row[0] for row in conn.execute(query).fetchall()]

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

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect(autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
