"""Large objects end to end: 200k records, plain, gzip, two gzip members, a key that needs URL encoding.

Blank lines (some with CRLF) and CRLF-terminated records are sprinkled in, and the last
record has no newline, so the physical line numbers differ from the record numbers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from harness.sample import gzip_bytes, jsonl_lines

from .helpers import IntegrationEnv, exact

if TYPE_CHECKING:
    from harness.postgres import ExistingPostgres, ThrowawayPostgres
    from harness.s3 import LocalS3

RECORDS = 200_000
SEED = 7
BLANKS = (b"\n", b"  \n", b"\t\r\n", b"\r\n")


@dataclass(frozen=True)
class Big:
    """The object's bytes and what each physical line holds."""

    data: bytes
    records: dict[int, bytes]  # physical line → record text (no line ending)
    lines: int
    blank: int
    crlf: list[int]  # lines of records ending in CRLF
    after_blank: list[int]  # lines of records right after a blank line


def build() -> Big:
    parts: list[bytes] = []
    records: dict[int, bytes] = {}
    line = blank = 0
    crlf: list[int] = []
    after_blank: list[int] = []
    for i, raw in enumerate(jsonl_lines(RECORDS, SEED)):
        if i % 997 == 500:  # a blank line (of various kinds) now and then
            parts.append(BLANKS[(i // 997) % len(BLANKS)])
            line += 1
            blank += 1
            after_blank.append(line + 1)
        text = raw[:-1]
        line += 1
        records[line] = text
        if i == RECORDS - 1:
            parts.append(text)  # the last line has no newline
        elif i % 1009 == 3:
            parts.append(text + b"\r\n")
            crlf.append(line)
        else:
            parts.append(raw)
    return Big(b"".join(parts), records, line, blank, crlf, after_blank)


@dataclass(frozen=True)
class Stored:
    key: str
    etag: str
    size: int


VARIANTS = ("plain", "gzip", "gzip-2-members", "unicode-key")


@pytest.fixture(scope="module")
def big() -> Big:
    return build()


@pytest.fixture(scope="module")
def stored(big: Big, s3: LocalS3) -> tuple[str, dict[str, Stored]]:
    """Every variant uploaded once to a module bucket."""
    bucket = s3.create_bucket(f"test-{uuid.uuid4().hex[:20]}")
    cut = len(big.data) // 2 + 17  # mid-line: the member boundary must not matter
    bodies = {
        "plain": ("imports/big.jsonl", big.data),
        "gzip": ("imports/big.jsonl.gz", gzip_bytes(big.data)),
        "gzip-2-members": ("imports/big-2.jsonl.gz", gzip_bytes(big.data[:cut]) + gzip_bytes(big.data[cut:])),
        "unicode-key": ("imports/2026 11/prov iders é.jsonl.gz", gzip_bytes(big.data)),
    }
    out = {}
    for variant, (key, body) in bodies.items():
        etag = str(s3.put_object(bucket, key, body)["ETag"])
        out[variant] = Stored(key, etag, len(body))
    return bucket, out


def test_sample_shape(big: Big) -> None:
    assert len(big.records) == RECORDS
    assert big.lines == RECORDS + big.blank
    assert big.blank == 201
    assert big.data.count(b"\r\n") > 200
    assert not big.data.endswith(b"\n")
    assert big.lines in big.records
    assert len(big.crlf) == 199
    assert all(line in big.records for line in big.crlf + big.after_blank)


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_object_loads_exactly(
    postgres: ThrowawayPostgres | ExistingPostgres,
    s3: LocalS3,
    big: Big,
    stored: tuple[str, dict[str, Stored]],
    driver: str,
    table: str,
    variant: str,
) -> None:
    bucket, objects = stored
    obj = objects[variant]
    env = IntegrationEnv(postgres, s3, bucket, None, driver=driver)  # type: ignore[arg-type]

    stats = env.load(obj.key, table)

    assert stats.compression == ("none" if variant == "plain" else "gzip")
    assert stats.format == "jsonl"
    assert stats.rows_copied == RECORDS
    assert stats.rows_rejected == 0
    assert stats.lines_read == big.lines
    assert stats.blank_lines == big.blank
    assert stats.bytes_read == obj.size
    assert stats.bytes_decompressed == len(big.data)
    assert stats.source_etag == obj.etag
    assert stats.rows_copied + stats.rows_rejected + stats.blank_lines == stats.lines_read

    (count, batches, etags, keys) = env.execute(
        f"SELECT count(*), array_agg(DISTINCT batch_id), array_agg(DISTINCT source_etag), "
        f'array_agg(DISTINCT source_key) FROM "{table}"'
    )[0]
    assert count == RECORDS
    assert batches == [stats.batch_id]
    assert etags == [obj.etag]
    assert keys == [obj.key]

    lines = [row[0] for row in env.execute(f'SELECT source_line FROM "{table}"')]
    assert len(lines) == RECORDS
    assert set(lines) == set(big.records)

    probe = {1, 2, big.lines, *big.crlf[:3], *big.crlf[-2:], *big.after_blank[:3], *big.after_blank[-2:]}
    probe |= {line for line in (99_999, 100_000, 150_001) if line in big.records}
    rows = env.execute(f'SELECT source_line, document::text FROM "{table}" WHERE source_line = ANY(%s)', [list(probe)])
    assert len(rows) == len(probe) >= 12
    for line, document in rows:
        assert exact(document) == exact(big.records[line]), line
