"""No credential leaks: the pre-signed URL stays out of logs, errors and tracebacks; hostile names are refused.

The pre-signed URL is a bearer credential. Loads through the proxy with a cut and a
403 re-sign (and failing ones) are checked for ``X-Amz-Signature``, ``X-Amz-Credential``
and every query string the URL factory produced, in every log record of
``s3_postgres_copy`` (DEBUG), in the stats, and in the whole exception chain as a task
log would print it. Table and column names that are not plain identifiers are refused
with ``ValueError`` before any SQL runs.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from harness.fault_proxy import Cut, Stall, Status
from harness.postgres import find_free_port
from s3_postgres_copy.exceptions import SourceError
from s3_postgres_copy.loader import LoadOptions, load_object
from s3_postgres_copy.sink import Columns
from s3_postgres_copy.source import RetryPolicy

from .support import STALL_TIMEOUT, unique

if TYPE_CHECKING:
    from .support import FaultEnv, PresignedUrls

KEY = "in/secret stuff.jsonl"
DATA = b"".join(b'{"id":%d,"pad":"%s"}\n' % (i, b"s" * 80) for i in range(1, 501))
CUT = len(DATA) // 2


def _secrets(factory: PresignedUrls) -> list[str]:
    found = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token"]
    for url in factory.urls:
        query = urlsplit(url).query
        found.append(query)
        found += parse_qs(query)["X-Amz-Signature"]
    return found


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


def _exception_text(err: BaseException) -> str:
    """What a task log shows (the formatted chain) plus every linked exception's own text."""
    parts = ["".join(traceback.format_exception(err))]
    seen: BaseException | None = err
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret[:40]!r} leaked"


def test_cut_and_resign_log_nothing_secret(env: FaultEnv, table: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="s3_postgres_copy")
    env.put(KEY, DATA)
    env.proxy.plan(Cut(after=CUT), Status(403))
    factory = env.factory(KEY)
    stats = env.load(KEY, table, source=env.source(KEY, factory=factory))

    assert (stats.rows_copied, stats.resumes, stats.resigns, factory.calls) == (500, 1, 1, 2)
    text = _log_text(caplog)
    # the retry and the re-sign were logged (so a leak would have been caught here)
    assert f"Reading s3://{env.bucket}/{KEY} failed at byte {CUT}" in text
    assert "re-signing the URL" in text
    _assert_clean(text, _secrets(factory))
    _assert_clean(json.dumps(stats.as_dict()), _secrets(factory))


def _dead_url(number: int, factory: PresignedUrls, port: int) -> str | None:
    """From the second call on, the factory's URL (fresh signature) points at a closed port."""
    if number < 2:
        return None
    fresh = factory.client.generate_presigned_url(
        "get_object", Params={"Bucket": factory.bucket, "Key": factory.key}, ExpiresIn=7200 + number
    )
    parts = urlsplit(fresh)
    return f"http://127.0.0.1:{port}{parts.path}?{parts.query}"


FAILURES = {
    "connection-refused-after-resign": [Cut(after=CUT), Status(403)],
    "read-timeouts": [Cut(after=CUT), Stall(after=0, seconds=10), Stall(after=0, seconds=10)],
    "server-errors": [Cut(after=CUT), Status(503), Status(502)],
    "forbidden-twice": [Cut(after=CUT), Status(403), Status(403)],
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_load_error_and_traceback_carry_no_secret(
    env: FaultEnv, table: str, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="s3_postgres_copy")
    env.put(KEY, DATA)
    env.proxy.plan(FAILURES[failure])
    factory = env.factory(KEY)
    if failure.startswith("connection-refused"):
        port = find_free_port()
        factory.override = lambda number: _dead_url(number, factory, port)
    timeout = (2.0, STALL_TIMEOUT if failure == "read-timeouts" else 5.0)
    source = env.source(KEY, factory=factory, retry=RetryPolicy(attempts=3, backoff=0.01), timeout=timeout)
    with pytest.raises(SourceError) as caught:
        env.load(KEY, table, source=source)

    assert f"s3://{env.bucket}/{KEY}" in str(caught.value)
    secrets = _secrets(factory)
    _assert_clean(_exception_text(caught.value), secrets)
    _assert_clean(_log_text(caplog), secrets)
    if failure.startswith("connection-refused"):
        assert factory.calls == 2
        assert "Connection refused" in str(caught.value) or "ConnectionError" in str(caught.value)


# -- hostile identifiers -------------------------------------------------------------------
HOSTILE_TABLES = [
    "x; DROP TABLE {y}",
    "a.b.c",
    '"quoted"',
    '{y}"; DROP TABLE {y}; --',
    "public.{y} ",
    "{y}--",
    "",
    "1starts_with_digit",
    "t" * 64,
]


@pytest.fixture
def victim(env: FaultEnv) -> Any:
    """A table ``y_...`` the hostile names try to drop."""
    name = unique("y")
    env.execute(f"CREATE TABLE {name} (id int)")
    env.execute(f"INSERT INTO {name} VALUES (1)")
    yield name
    env.execute(f"DROP TABLE IF EXISTS {name}")


def _tables(env: FaultEnv) -> set[str]:
    return {row[0] for row in env.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p')")}


@pytest.mark.parametrize("hostile", HOSTILE_TABLES)
def test_hostile_table_refused_before_any_sql(env: FaultEnv, victim: str, hostile: str) -> None:
    name = hostile.format(y=victim)
    env.put(KEY, DATA)
    factory = env.factory(KEY)
    tables = _tables(env)
    with env.connect() as conn:
        with pytest.raises(ValueError, match="table") as caught:
            load_object(conn, env.source(KEY, factory=factory), LoadOptions(env.bucket, KEY, name, max_bad_rows=5))
        # no statement was sent: it would have opened a transaction on this non-autocommit connection
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert "not a plain identifier" in str(caught.value) or "'table' or 'schema.table'" in str(caught.value)
    assert factory.calls == 0
    assert env.proxy.requests == []
    assert env.execute(f"SELECT id FROM {victim}") == [(1,)]
    assert _tables(env) == tables


@pytest.mark.parametrize(
    "columns",
    [
        {"document": "doc; drop"},
        {"document": '"doc"'},
        {"source_key": "key) ; DROP TABLE y; --"},
        {"batch_id": "a.b"},
        {"source_line": "line\n"},
        {"loaded_at": ""},
    ],
    ids=lambda c: next(iter(c)),
)
def test_hostile_column_refused(columns: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not a plain identifier"):
        Columns(**columns)
