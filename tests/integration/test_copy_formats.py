"""Binary and text COPY rows: the same rows in the table, whichever format carried them.

A strict load sends binary rows when the columns have the standard types (or close ones:
``json``/``text`` documents, ``varchar`` metadata, ``timestamp`` without time zone); other
types, and tolerant mode, get text rows; ``copy_format="binary"`` refuses what it cannot do.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from psycopg import sql

from harness.sample import jsonl_lines
from s3_postgres_copy.exceptions import LoadError

from .helpers import IntegrationEnv, exact

LINES = [
    *jsonl_lines(300, seed=21),
    b'{"tab": "a\\tb", "backslash": "c:\\\\dir", "nl": "x\\ny", "cr": "\\r", "quote": "\\"", '
    b'"emoji": "\xf0\x9f\x98\x80"}\n',
    b'{"raw tab":\t1, "spaces" :  [1, 2 ] }\n',
]
KEY = "formats/mixed.jsonl"


def rows(env: IntegrationEnv, table: str, document: str = "document") -> list[tuple[Any, ...]]:
    """Every column but ``loaded_at``, as text, ordered by line."""
    query = sql.SQL(
        "SELECT source_line::bigint, {}::text, source_key::text, source_etag::text, batch_id::text FROM {} ORDER BY 1"
    ).format(sql.Identifier(document), sql.Identifier(table))
    return env.execute(query.as_string(None))


def loaded_at(env: IntegrationEnv, table: str) -> list[Any]:
    return [row[0] for row in env.execute(f'SELECT DISTINCT loaded_at FROM "{table}"')]


def create(env: IntegrationEnv, table: str, columns: str) -> None:
    env.execute(f'CREATE TABLE "{table}" ({columns})')


@pytest.fixture
def other_table(table: str, denv: IntegrationEnv) -> Any:
    name = table + "_text"
    yield name
    denv.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_binary_and_text_rows_load_the_same_table(denv: IntegrationEnv, table: str, other_table: str) -> None:
    denv.put(KEY, b"".join(LINES))
    before = datetime.datetime.now(datetime.UTC)

    binary = denv.load(KEY, table, batch_id="b")
    text = denv.load(KEY, other_table, batch_id="b", copy_format="text")

    after = datetime.datetime.now(datetime.UTC)
    assert (binary.copy_format, text.copy_format) == ("binary", "text")
    assert binary.rows_copied == text.rows_copied == len(LINES)
    assert rows(denv, table) == rows(denv, other_table)
    assert denv.documents(table) == {n: exact(line) for n, line in enumerate(LINES, start=1)}
    (stamp,) = loaded_at(denv, table)
    assert before <= stamp <= after  # the binary timestamp counts microseconds from 2000-01-01 UTC


def test_text_document_varchar_and_timestamp_columns_take_binary_rows(denv: IntegrationEnv, table: str) -> None:
    create(
        denv,
        table,
        "document text, source_key varchar(100), source_etag varchar, batch_id text, "
        "loaded_at timestamp without time zone, source_line bigint, note text DEFAULT 'kept'",
    )
    denv.put(KEY, b"".join(LINES))
    before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)

    stats = denv.load(KEY, table, batch_id="b")

    after = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert stats.copy_format == "binary"
    stored = denv.execute(f'SELECT source_line, document, source_key, note FROM "{table}" ORDER BY 1')
    # A text column keeps each line byte for byte (a raw tab, the spacing), as the text format does.
    assert stored == [(n, line[:-1].decode(), KEY, "kept") for n, line in enumerate(LINES, start=1)]
    (stamp,) = loaded_at(denv, table)
    assert before <= stamp <= after  # UTC wall time, as the text form "...+00:00" gives a timestamp column


def test_varchar_length_is_enforced_in_binary_rows(denv: IntegrationEnv, table: str) -> None:
    create(
        denv,
        table,
        "document jsonb, source_key varchar(8), source_etag text, batch_id text, loaded_at timestamptz, "
        "source_line bigint",
    )
    denv.put(KEY, b"".join(LINES))

    with pytest.raises(LoadError, match=r"value too long for type character varying\(8\)"):
        denv.load(KEY, table)

    assert denv.count(table) == 0


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        (
            "document json, source_key text, source_etag text, batch_id text, loaded_at timestamptz, "
            "source_line integer",
            "the source_line column is integer, not bigint",
        ),
        (
            "document jsonb, source_key text, source_etag text, batch_id text, loaded_at date, source_line bigint",
            "the loaded_at column is date",
        ),
    ],
    ids=["integer-line", "date-loaded-at"],
)
def test_other_column_types_get_text_rows_unless_binary_is_asked_for(
    denv: IntegrationEnv, table: str, columns: str, reason: str
) -> None:
    create(denv, table, columns)
    denv.put(KEY, b"".join(LINES))

    with pytest.raises(LoadError) as caught:
        denv.load(KEY, table, copy_format="binary")
    assert str(caught.value) == (
        f"Loading s3://{denv.bucket}/{KEY} into {table} failed: copy_format='binary' cannot load {table}: {reason}"
    )
    assert denv.count(table) == 0

    stats = denv.load(KEY, table)

    assert (stats.copy_format, stats.rows_copied) == ("text", len(LINES))
    assert denv.count(table) == len(LINES)


def test_tolerant_loads_send_text_rows(denv: IntegrationEnv, table: str) -> None:
    denv.put(KEY, b"".join([*LINES, b'{"broken": \n']))

    stats = denv.load(KEY, table, max_bad_rows=1)

    assert (stats.copy_format, stats.rows_copied, stats.rows_rejected) == ("text", len(LINES), 1)
    assert denv.documents(table) == {n: exact(line) for n, line in enumerate(LINES, start=1)}
