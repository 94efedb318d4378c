"""COPY segments: a load runs as several ``COPY`` commands in one transaction.

The loader ends a COPY every ``segment_bytes`` of rows (tolerant mode may have to re-send a
segment) and reads the next block before the segment's COPY ends. These tests cut small
objects into many segments (8 KiB reads, 40 kB segments) and check that every line crosses a
segment boundary exactly once, that a row the server refuses in a late segment is named by its
own line, and that tolerant mode's rejects land on the right lines in every segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from harness.sample import jsonl_lines
from s3_postgres_copy.exceptions import BadRecordError
from s3_postgres_copy.sink import PostgresSink
from tests.faults.support import FAST

from .helpers import TIMEOUT, IntegrationEnv, exact

if TYPE_CHECKING:
    from s3_postgres_copy.rows import RowLayout
    from s3_postgres_copy.source import HttpObjectSource

SEGMENT_BYTES = 40_000
READ_SIZE = 8192
RECORDS = 1500


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows sent by each ``PostgresSink.copy`` call (one entry per COPY command)."""
    sizes: list[int] = []
    original = PostgresSink.copy

    def counting(self: PostgresSink, payloads: Iterable[bytes], layout: RowLayout, **options: Any) -> int:
        sizes.append(0)

        def counted() -> Iterator[bytes]:
            for payload in payloads:
                sizes[-1] += binary_rows(payload) if layout.name == "binary" else payload.count(b"\n")
                yield payload

        return original(self, counted(), layout, **options)

    monkeypatch.setattr(PostgresSink, "copy", counting)
    return sizes


def binary_rows(payload: bytes) -> int:
    """How many binary COPY rows ``payload`` holds (each: a field count, then length + bytes per field)."""
    rows = position = 0
    while position < len(payload):
        fields = int.from_bytes(payload[position : position + 2], "big", signed=True)
        position += 2
        for _ in range(fields):
            length = int.from_bytes(payload[position : position + 4], "big", signed=True)
            position += 4 + max(length, 0)
        rows += 1
    assert position == len(payload), "a payload ends inside a row"
    return rows


def small_reads(env: IntegrationEnv, key: str) -> HttpObjectSource:
    return env.source(key, factory=env.factory(key, direct=True), retry=FAST, timeout=TIMEOUT, chunk_size=READ_SIZE)


def load(env: IntegrationEnv, key: str, table: str, **options: Any) -> Any:
    return env.load(key, table, source=small_reads(env, key), segment_bytes=SEGMENT_BYTES, **options)


def test_every_line_crosses_the_segment_boundaries_once(denv: IntegrationEnv, table: str, copies: list[int]) -> None:
    lines = list(jsonl_lines(RECORDS, seed=11))
    key = "segments/many.jsonl"
    denv.put(key, b"".join(lines))

    stats = load(denv, key, table)

    assert stats.rows_copied == RECORDS
    assert len(copies) >= 10, copies  # the object really was cut into many segments
    assert sum(copies) == RECORDS
    assert denv.documents(table) == {n: exact(line) for n, line in enumerate(lines, start=1)}


def test_a_row_refused_in_a_late_segment_is_named_by_its_line(
    denv: IntegrationEnv, table: str, copies: list[int]
) -> None:
    first = "segments/before.jsonl"
    denv.put(first, b"".join(jsonl_lines(10, seed=12)))
    denv.load(first, table)
    before = denv.rows(table)
    lines = list(jsonl_lines(RECORDS, seed=13))
    bad = RECORDS - 7
    lines[bad - 1] = b'{"id": "no closing brace"\n'  # opens an object: only the server's jsonb parser refuses it
    key = "segments/late-error.jsonl"
    denv.put(key, b"".join(lines))

    with pytest.raises(BadRecordError) as caught:
        load(denv, key, table)

    assert caught.value.line == bad
    assert f"Bad record in s3://{denv.bucket}/{key} at line {bad}: " in str(caught.value)
    assert "invalid input syntax for type json" in str(caught.value)
    assert len(copies) >= 11  # the failing COPY came after ten or more committed-to-be segments
    assert denv.rows(table) == before


def test_tolerant_rejects_land_on_their_lines_in_every_segment(
    denv: IntegrationEnv, table: str, copies: list[int]
) -> None:
    lines = list(jsonl_lines(RECORDS, seed=14))
    bad = {1, 2, 149, 150, 151, 700, 1113, RECORDS - 1, RECORDS}
    for n in bad:
        lines[n - 1] = b'{"line": %d, "broken": }\n' % n
    key = "segments/tolerant.jsonl"
    denv.put(key, b"".join(lines))

    stats = load(denv, key, table, max_bad_rows=len(bad))

    assert len(copies) >= 10
    assert (stats.rows_copied, stats.rows_rejected) == (RECORDS - len(bad), len(bad))
    assert [row[0] for row in denv.rejects(table)] == sorted(bad)
    for line, raw, error, _, source_key in denv.rejects(table):
        assert raw == f'{{"line": {line}, "broken": }}'
        at = len(f'{{"line": {line}, "broken": ')  # where the value is missing
        assert error == f"invalid JSON: Expecting value: line 1 column {at + 1} (char {at})"
        assert source_key == key
    good = {n: exact(line) for n, line in enumerate(lines, start=1) if n not in bad}
    assert denv.documents(table) == good


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"], ids=["empty", "blank-lines"])
def test_an_object_without_records_loads_nothing_and_replaces(
    denv: IntegrationEnv, table: str, copies: list[int], data: bytes
) -> None:
    key = "segments/nothing.jsonl"
    denv.put(key, b"".join(jsonl_lines(20, seed=15)))
    denv.load(key, table)
    denv.put(key, data)

    stats = load(denv, key, table)

    assert (stats.rows_copied, stats.rows_deleted) == (0, 20)
    assert denv.count(table) == 0
