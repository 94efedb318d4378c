"""JSONTestSuite through the real pipeline: every valid object loads exactly, every invalid line is refused.

``y_*.json`` (must parse) objects come back from ``jsonb`` equal to Python's exact parse,
except those PostgreSQL cannot store (``\\u0000``), which are rejected with the reason;
``n_*.json`` (must not parse) lines fail a strict load at their line, or land in the
rejects table in a tolerant one, and are never loaded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from s3_postgres_copy.exceptions import BadRecordError

from .helpers import DRIVERS, TESTDATA, IntegrationEnv, exact, unique

if TYPE_CHECKING:
    from harness.postgres import ExistingPostgres, ThrowawayPostgres
    from harness.s3 import LocalS3

SUITE = TESTDATA / "jsontestsuite" / "test_parsing"
TOLERANT = 100_000
RAW_LIMIT = 10_000  # LoadOptions.raw_limit's default
# y_ objects PostgreSQL refuses, and a fragment of its reason.
PG_REFUSES = {"y_object_escaped_null_in_key.json": "unsupported Unicode escape sequence"}


def one_line(raw: bytes) -> bytes:
    """A valid JSON text on one line: raw CR/LF can only be whitespace between tokens."""
    return raw.replace(b"\r", b" ").replace(b"\n", b" ")


def _y_files() -> tuple[list[str], list[str]]:
    objects, others = [], []
    for path in sorted(SUITE.glob("y_*.json")):
        (objects if isinstance(exact(path.read_bytes()), dict) else others).append(path.name)
    return objects, others


Y_OBJECTS, Y_OTHERS = _y_files()


def _is_blank(line: bytes) -> bool:
    return not line.strip(b" \t\r\n")


def _n_one_liners() -> list[str]:
    names = []
    for path in sorted(SUITE.glob("n_*.json")):
        body = path.read_bytes().removesuffix(b"\n")
        if b"\n" not in body:
            names.append(path.name)
    return names


N_ONE_LINERS = _n_one_liners()
N_LINES = {name: (SUITE / name).read_bytes().removesuffix(b"\n") for name in N_ONE_LINERS}
# Whitespace-only "documents" are blank lines in JSON lines: counted, never records.
N_BLANK = sorted(name for name, line in N_LINES.items() if _is_blank(line))
N_RECORDS = [name for name in N_ONE_LINERS if name not in N_BLANK]


def test_suite_is_there() -> None:
    assert len(Y_OBJECTS) == 12
    assert set(PG_REFUSES) <= set(Y_OBJECTS)
    assert len(N_ONE_LINERS) == 185
    assert N_BLANK == ["n_single_space.json", "n_structure_no_data.json"]


# -- y_: valid JSON ------------------------------------------------------------------------------


def test_valid_objects_round_trip_exactly(denv: IntegrationEnv, table: str) -> None:
    key = "jsontestsuite/y_objects.jsonl"
    lines = {number: name for number, name in enumerate(Y_OBJECTS, 1)}
    denv.put(key, b"".join(one_line((SUITE / name).read_bytes()) + b"\n" for name in lines.values()))

    stats = denv.load(key, table, max_bad_rows=TOLERANT)

    refused = {number for number, name in lines.items() if name in PG_REFUSES}
    assert stats.rows_copied == len(lines) - len(refused)
    assert stats.rows_rejected == len(refused)
    assert stats.lines_read == len(lines)
    docs = denv.documents(table)
    assert set(docs) == set(lines) - refused
    for number, doc in docs.items():
        expected = exact((SUITE / lines[number]).read_bytes())
        assert doc == expected, lines[number]
    rejects = denv.rejects(table)
    assert [r[0] for r in rejects] == sorted(refused)
    for line, raw, error, batch_id, source_key in rejects:
        name = lines[line]
        assert PG_REFUSES[name] in error
        assert raw == one_line((SUITE / name).read_bytes()).decode()
        assert (batch_id, source_key) == (stats.batch_id, key)


def test_valid_non_objects_are_rejected_as_not_objects(env: IntegrationEnv, table: str) -> None:
    """Scalars and arrays are valid JSON but not records: rejected with that reason, at their line."""
    key = "jsontestsuite/y_others.jsonl"
    env.put(key, b"".join(one_line((SUITE / name).read_bytes()) + b"\n" for name in Y_OTHERS))

    stats = env.load(key, table, max_bad_rows=TOLERANT)

    assert (stats.rows_copied, stats.rows_rejected, stats.lines_read) == (0, len(Y_OTHERS), len(Y_OTHERS))
    assert env.count(table) == 0
    rejects = env.rejects(table)
    assert [r[0] for r in rejects] == list(range(1, len(Y_OTHERS) + 1))
    for (_, _, error, _, _), name in zip(rejects, Y_OTHERS, strict=True):
        assert error.startswith("not a JSON object (got "), (name, error)


@pytest.mark.parametrize("driver", DRIVERS)
def test_strict_refused_object_fails_at_line_1(denv: IntegrationEnv, table: str) -> None:
    (name,) = PG_REFUSES
    key = "jsontestsuite/nul.jsonl"
    denv.put(key, (SUITE / name).read_bytes())

    with pytest.raises(BadRecordError) as caught:
        denv.load(key, table)

    assert caught.value.line == 1
    assert "line 1" in str(caught.value)
    assert "Unicode" in str(caught.value)
    assert f"s3://{denv.bucket}/{key}" in str(caught.value)
    assert denv.snapshot(table) is None  # nothing committed, not even the CREATE TABLE


# -- n_: invalid JSON ----------------------------------------------------------------------------

GOOD_LINE = b'{"good": true, "n": 1}'


class StrictTarget:
    """One table per driver, pre-populated from ``key``, that every strict n_ load replaces and fails on."""

    def __init__(self, env: IntegrationEnv, table: str, key: str) -> None:
        self.env, self.table, self.key = env, table, key
        env.put(key, b'{"before": 1}\n{"before": 2}\n\n{"before": 3}\n')
        env.load(key, table)
        self.before = env.snapshot(table)
        assert self.before is not None
        assert len(self.before) == 3


@pytest.fixture(scope="module", params=DRIVERS)
def strict_target(
    request: pytest.FixtureRequest, postgres: ThrowawayPostgres | ExistingPostgres, s3: LocalS3
) -> Iterator[StrictTarget]:
    bucket = s3.create_bucket(f"test-{uuid.uuid4().hex[:20]}")
    env = IntegrationEnv(postgres, s3, bucket, None, driver=request.param)  # type: ignore[arg-type]
    target = StrictTarget(env, unique("n"), "jsontestsuite/n.jsonl")
    yield target
    env.drop(target.table)


@pytest.mark.parametrize("name", N_RECORDS, ids=N_RECORDS)
def test_strict_invalid_line_fails_at_line_2(strict_target: StrictTarget, name: str) -> None:
    env, table, key = strict_target.env, strict_target.table, strict_target.key
    env.put(key, GOOD_LINE + b"\n" + N_LINES[name] + b"\n")

    with pytest.raises(BadRecordError) as caught:
        env.load(key, table)  # mode="replace": the DELETE of the earlier rows is rolled back too

    assert caught.value.line == 2, str(caught.value)
    assert "line 2" in str(caught.value)
    assert env.snapshot(table) == strict_target.before


@pytest.mark.parametrize("name", N_BLANK, ids=N_BLANK)
def test_whitespace_only_line_is_a_blank_line(env: IntegrationEnv, table: str, name: str) -> None:
    key = "jsontestsuite/blank.jsonl"
    env.put(key, GOOD_LINE + b"\n" + N_LINES[name] + b"\n" + GOOD_LINE + b"\n")

    stats = env.load(key, table)

    assert (stats.rows_copied, stats.blank_lines, stats.lines_read) == (2, 1, 3)
    assert sorted(env.documents(table)) == [1, 3]


@pytest.mark.parametrize("driver", DRIVERS)
def test_tolerant_invalid_lines_all_rejected(denv: IntegrationEnv, table: str) -> None:
    key = "jsontestsuite/n_all.jsonl"
    lines = {number: name for number, name in enumerate(N_ONE_LINERS, 1)}
    denv.put(key, b"".join(N_LINES[name] + b"\n" for name in lines.values()))

    stats = denv.load(key, table, max_bad_rows=TOLERANT)

    expected = [number for number, name in lines.items() if name in N_RECORDS]
    assert stats.rows_copied == 0
    assert stats.rows_rejected == len(expected)
    assert (stats.lines_read, stats.blank_lines) == (len(lines), len(N_BLANK))
    assert denv.count(table) == 0
    rejects = denv.rejects(table)
    assert [r[0] for r in rejects] == expected
    for line, raw, error, batch_id, source_key in rejects:
        name = lines[line]
        assert error, name
        assert (batch_id, source_key) == (stats.batch_id, key)
        original = N_LINES[name].removesuffix(b"\r")
        if b"\x00" not in original and _utf8(original):
            assert raw == original.decode()[:RAW_LIMIT], name  # raw is truncated to LoadOptions.raw_limit


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
