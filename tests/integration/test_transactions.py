"""One load = one transaction: replace, append, rollback on failure, custom columns, clear errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import simplejson
from psycopg import sql

from harness.sample import jsonl_bytes, jsonl_lines
from provider_directory.documents import build_provider_document
from s3_postgres_copy.exceptions import BadRecordError, LoadError, SourceError
from s3_postgres_copy.sink import Columns

from .helpers import IntegrationEnv, exact

APP_COLUMNS = Columns(document="doc", source_etag=None, loaded_at=None)


def pairs(env: IntegrationEnv, table: str) -> set[tuple[int, str]]:
    """``(source_line, document)`` of every row (asserting there are no duplicates)."""
    rows = [(line, doc) for line, doc, _, _ in env.rows(table)]
    assert len(set(rows)) == len(rows)
    return set(rows)


def batches(env: IntegrationEnv, table: str) -> list[str]:
    return [row[0] for row in env.execute(f'SELECT DISTINCT batch_id FROM "{table}" ORDER BY 1')]


def fingerprint(env: IntegrationEnv, table: str) -> tuple[int, str]:
    """Row count and an md5 over every column of every row, computed by the server."""
    query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} t")
    count, digest = env.execute(query.format(sql.Identifier(table)).as_string(None))[0]
    return int(count), str(digest)


def test_replace_twice_gives_the_same_rows(denv: IntegrationEnv, table: str) -> None:
    key = "tx/replace.jsonl"
    denv.put(key, jsonl_bytes(3000, seed=1))

    first = denv.load(key, table)
    before = pairs(denv, table)
    second = denv.load(key, table)

    assert (first.rows_copied, second.rows_copied) == (3000, 3000)
    assert second.rows_deleted == 3000
    assert pairs(denv, table) == before
    assert len(before) == 3000
    assert first.batch_id != second.batch_id
    assert batches(denv, table) == [second.batch_id]


def test_append_doubles(denv: IntegrationEnv, table: str) -> None:
    key = "tx/append.jsonl"
    denv.put(key, jsonl_bytes(1000, seed=2))

    first = denv.load(key, table, mode="append")
    second = denv.load(key, table, mode="append")

    assert second.rows_deleted == 0
    assert denv.count(table) == 2000
    assert batches(denv, table) == sorted([first.batch_id, second.batch_id])
    counts = denv.execute(f'SELECT source_line, count(*) FROM "{table}" GROUP BY 1 HAVING count(*) <> 2')
    assert counts == []


@pytest.mark.parametrize(
    "bad",
    [b'{"npi": "1", "broken": }', b"[1, 2, 3]"],
    ids=["server-refuses", "python-refuses"],
)
def test_strict_failure_late_in_a_large_file_changes_nothing(denv: IntegrationEnv, table: str, bad: bytes) -> None:
    """A bad record at line 150000 of 200k: the earlier load of the same key survives (DELETE rolled back)."""
    key = "tx/big.jsonl"
    other = "tx/other.jsonl"
    denv.put(other, jsonl_bytes(50, seed=4))
    denv.load(other, table)
    denv.put(key, b"".join(jsonl_lines(200_000, seed=3)))
    denv.load(key, table)
    before = fingerprint(denv, table)
    assert before[0] == 200_050

    lines = list(jsonl_lines(200_000, seed=5))
    lines[149_999] = bad + b"\n"
    denv.put(key, b"".join(lines))
    with pytest.raises(BadRecordError) as caught:
        denv.load(key, table)  # mode="replace"

    assert caught.value.line == 150_000
    assert "line 150000" in str(caught.value)
    assert f"s3://{denv.bucket}/{key}" in str(caught.value)
    assert fingerprint(denv, table) == before


def test_custom_columns_into_an_app_table_keep_its_defaults(denv: IntegrationEnv, table: str) -> None:
    denv.execute(
        f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, doc jsonb NOT NULL, source_key text, '
        "source_line bigint, batch_id text, status text DEFAULT 'new', created_at timestamptz DEFAULT now())"
    )
    key = "tx/app.jsonl"
    body = b'{"n": 1}\n\n{"n": 2, "x": "tab\\there"}\n{"n": 3}'
    denv.put(key, body)

    stats = denv.load(key, table, columns=APP_COLUMNS, create_table=False)
    again = denv.load(key, table, columns=APP_COLUMNS, create_table=False)  # replace works on these columns

    assert stats.rows_copied == again.rows_copied == 3
    rows = denv.execute(
        f'SELECT id, doc::text, source_key, source_line, batch_id, status, created_at IS NOT NULL FROM "{table}" '
        "ORDER BY id"
    )
    assert [(exact(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        ({"n": 1}, key, 1, again.batch_id, "new", True),
        ({"n": 2, "x": "tab\there"}, key, 3, again.batch_id, "new", True),
        ({"n": 3}, key, 4, again.batch_id, "new", True),
    ]
    assert [r[0] for r in rows] == [4, 5, 6]  # the sequence ran on: the first load's rows were replaced


def test_missing_table_without_create_table_is_a_clear_error(denv: IntegrationEnv, table: str) -> None:
    key = "tx/nowhere.jsonl"
    denv.put(key, b'{"a": 1}\n')

    with pytest.raises(LoadError, match=f"{table} does not exist and create_table is False") as caught:
        denv.load(key, table, create_table=False)

    assert f"s3://{denv.bucket}/{key}" in str(caught.value)
    assert denv.snapshot(table) is None


def test_missing_object_is_a_source_error(denv: IntegrationEnv, table: str) -> None:
    key = "tx/never uploaded.jsonl"

    with pytest.raises(SourceError, match="does not exist") as caught:
        denv.load(key, table)

    assert f"s3://{denv.bucket}/{key}" in str(caught.value)
    assert "X-Amz-" not in str(caught.value)
    assert denv.snapshot(table) is None


def test_transform_as_a_dotted_path(denv: IntegrationEnv, table: str) -> None:
    key = "tx/transform.jsonl"
    lines = list(jsonl_lines(2000, seed=6))
    denv.put(key, b"".join(lines))

    stats = denv.load(key, table, transform="provider_directory.documents:build_provider_document")

    assert stats.rows_copied == 2000
    docs = denv.documents(table)
    assert sorted(docs) == list(range(1, 2001))
    for number, line in enumerate(lines, 1):
        built = build_provider_document(exact(line))
        assert docs[number] == exact(simplejson.dumps(built, use_decimal=True)), number
    assert {doc["status"] for doc in docs.values()} == {"active"}
    assert any(isinstance(doc["rating"], Decimal) for doc in docs.values())  # exact numbers survived


def _check_table(env: IntegrationEnv, table: str) -> None:
    env.execute(
        f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, doc jsonb NOT NULL, source_key text, '
        "source_line bigint, batch_id text, status text DEFAULT 'new', CHECK ((doc->>'n')::int < 100))"
    )


# Four blank lines first, so COPY's row counter (4 at the bad record) and the source line (9) differ.
CHECKED = b"\n\n \n\t\n" + b"".join(json.dumps({"n": n}).encode() + b"\n" for n in (1, 2, 3, 500, 5, 6))
CHECKED_BAD_LINE = 8


def test_constraint_violation_is_a_bad_record_at_its_source_line(denv: IntegrationEnv, table: str) -> None:
    _check_table(denv, table)
    key = "tx/check.jsonl"
    denv.put(key, CHECKED)

    with pytest.raises(BadRecordError) as caught:
        denv.load(key, table, columns=APP_COLUMNS, create_table=False)

    assert caught.value.line == CHECKED_BAD_LINE
    assert f"line {CHECKED_BAD_LINE}" in str(caught.value)
    assert "check constraint" in str(caught.value)
    assert denv.count(table) == 0


def test_constraint_violation_tolerant_goes_to_rejects(denv: IntegrationEnv, table: str) -> None:
    _check_table(denv, table)
    key = "tx/check.jsonl"
    denv.put(key, CHECKED)

    stats = denv.load(key, table, columns=APP_COLUMNS, create_table=True, max_bad_rows=5)

    assert (stats.rows_copied, stats.rows_rejected, stats.blank_lines, stats.lines_read) == (5, 1, 4, 10)
    rows = denv.execute(f"SELECT source_line, doc->>'n' FROM \"{table}\" ORDER BY source_line")
    assert rows == [(5, "1"), (6, "2"), (7, "3"), (9, "5"), (10, "6")]
    ((line, raw, error, batch_id, source_key),) = denv.rejects(table)
    assert (line, raw, batch_id, source_key) == (CHECKED_BAD_LINE, '{"n": 500}', stats.batch_id, key)
    assert "check constraint" in error


def test_document_too_deep_for_jsonb_is_a_reject_in_tolerant_mode(env: IntegrationEnv, table: str) -> None:
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    env.put("deep.jsonl", b'{"ok":1}\n' + deep + b'\n{"ok":3}\n')
    stats = env.load("deep.jsonl", table, max_bad_rows=10, batch_id="b")
    assert (stats.rows_copied, stats.rows_rejected) == (2, 1)
    assert [row[0] for row in env.rejects(table)] == [2]
