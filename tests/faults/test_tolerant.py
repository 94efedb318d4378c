"""Tolerant mode: every kind of bad record goes to ``<table>_rejects`` with its line and a reason.

The JSON-lines object mixes good lines with each bad kind. It is loaded on the fast
path (no transform: PostgreSQL's ``jsonb`` finds some of the bad records, Python the
others) and on the record path (a callable transform that raises on some records, and
a JSON Schema). A separate CSV object has rows of the wrong width. Over the limit,
nothing is committed (target and rejects tables unchanged) and the error lists the
first reasons with their line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest
import simplejson
from psycopg import sql

from s3_postgres_copy.exceptions import TooManyBadRecordsError

if TYPE_CHECKING:
    from .support import FaultEnv

# (line bytes, kind); kind None = good, "blank" = blank line. Line numbers are 1-based positions.
LINES: list[tuple[bytes, str | None]] = [
    (b'{"id": 1, "name": "ok", "big": 123456789012345678901234567890.123456789}', None),
    (b'{"id": 2, "name": "broken"', "invalid-json"),
    (b"[1, 2, 3]", "array"),
    (b'{"id": 4, "name": "nul \\u0000 here"}', "nul"),
    (b'{"id": 5, "name": "\xff\xfe bad"}', "invalid-utf8"),
    (b'{"id": 6, "name": "\\ud800"}', "lone-surrogate"),
    (b'{"id": 7, "score": NaN}', "nan"),
    (b'{"id": 8, "name": "boom"}', "transform"),
    (b'{"id": 9, "name": 123}', "schema"),
    (b"", "blank"),
    (b' \t{"id": 11, "name": "Zo\xc3\xab \xe2\x80\xa8", "n": 18446744073709551617}\r', None),
    (b'"just a string"', "string"),
    (b'{"id": 13, "score": -Infinity}', "infinity"),
    (b"42", "number"),
    (b'{"id": 15} trailing', "trailing"),
    (b'{"id": 16, "name": "last line, no newline"}', None),
]
DATA = b"\n".join(line for line, _ in LINES)

NAN = r"invalid JSON: (NaN is not a JSON value|Expecting value: line 1 column 20)"
INFINITY = r"invalid JSON: (-Infinity is not a JSON value|Expecting value: line 1 column 21)"

# What each kind's reason must say: on the fast path (jsonb decides some) and the record path.
REASONS: dict[str, tuple[str, str]] = {
    "invalid-json": (r"invalid JSON: Expecting ',' delimiter", r"invalid JSON: Expecting ',' delimiter"),
    "array": (r"not a JSON object \(got an array\)", r"not a JSON object \(got an array\)"),
    "string": (r"not a JSON object \(got a string\)", r"not a JSON object \(got a string\)"),
    "number": (r"not a JSON object \(got a number\)", r"not a JSON object \(got a number\)"),
    "nul": (r"unsupported Unicode escape sequence.*\\u0000", r"\\u0000 \(NUL\)"),
    "invalid-utf8": (r"invalid UTF-8 at byte 19", r"invalid UTF-8 at byte 19"),
    "lone-surrogate": (r"Unicode low surrogate must follow a high surrogate", r"U\+D800, a lone surrogate"),
    # older parsers only point at the column of NaN / Infinity; newer ones name the token
    "nan": (NAN, NAN),
    "infinity": (INFINITY, INFINITY),
    "trailing": (r"invalid JSON: Extra data", r"invalid JSON: Extra data"),
    "transform": ("", r"transform failed: ValueError: boom on record 8"),
    "schema": ("", r"schema violation at name: 123 is not of type 'string'"),
}
SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}
MODES = ("fast", "record")


def transform(record: dict[str, Any]) -> Mapping[str, Any]:
    if record.get("name") == "boom":
        raise ValueError(f"boom on record {record['id']}")
    return {**record, "transformed": True}


def _options(mode: str) -> dict[str, Any]:
    return {} if mode == "fast" else {"transform": transform, "schema": SCHEMA}


def _bad(mode: str) -> dict[int, str]:
    """Bad line number → reason pattern."""
    index = MODES.index(mode)
    return {
        number: REASONS[kind][index]
        for number, (_, kind) in enumerate(LINES, 1)
        if kind not in (None, "blank") and REASONS[kind][index]
    }


def _expected_documents(mode: str) -> dict[int, bytes]:
    """Good line number → the document's JSON text (before jsonb normalises it)."""
    bad = _bad(mode)
    out = {}
    for number, (line, kind) in enumerate(LINES, 1):
        if kind == "blank" or number in bad:
            continue
        if mode == "fast":
            out[number] = line
        else:
            record = simplejson.loads(line, use_decimal=True)
            out[number] = simplejson.dumps(transform(record), use_decimal=True, ensure_ascii=False).encode()
    return out


def _canonical(env: FaultEnv, documents: dict[int, bytes]) -> list[tuple[int, str]]:
    """Pass the expected JSON texts through jsonb, as the table holds them."""
    rows = env.execute(
        "SELECT n, d::jsonb::text FROM unnest(%s::bigint[], %s::text[]) AS u(n, d) ORDER BY n",
        [list(documents), [doc.decode() for doc in documents.values()]],
    )
    return [(int(n), text) for n, text in rows]


def _loaded(env: FaultEnv, table: str) -> list[tuple[int, str]]:
    query = sql.SQL("SELECT source_line, document::text FROM {} ORDER BY source_line").format(sql.Identifier(table))
    return [(int(n), text) for n, text in env.execute(query.as_string(None))]


def _rejects(env: FaultEnv, table: str, batch_id: str) -> dict[int, tuple[str, str]]:
    query = sql.SQL("SELECT source_line, error, raw, source_key FROM {} WHERE batch_id = %s").format(
        sql.Identifier(f"{table}_rejects")
    )
    rows = env.execute(query.as_string(None), [batch_id])
    assert len(rows) == len({row[0] for row in rows}), "one reject per line"
    return {int(line): (error, raw) for line, error, raw, _ in rows}


@pytest.mark.parametrize("mode", MODES)
def test_good_rows_load_and_every_bad_one_is_rejected(env: FaultEnv, table: str, mode: str) -> None:
    key = "in/mixed.jsonl"
    env.put(key, DATA)
    bad = _bad(mode)
    stats = env.load(key, table, max_bad_rows=len(bad), batch_id=f"b-{mode}", **_options(mode))

    assert _loaded(env, table) == _canonical(env, _expected_documents(mode))
    rejects = _rejects(env, table, f"b-{mode}")
    assert sorted(rejects) == sorted(bad)
    raw_lines = dict(enumerate((line for line, _ in LINES), 1))
    for number, pattern in bad.items():
        error, raw = rejects[number]
        assert re.search(pattern, error), f"line {number}: {error!r} !~ {pattern!r}"
        assert raw == raw_lines[number].decode("utf-8", "replace").replace("\x00", "\\u0000"), f"line {number}"
    assert (stats.rows_copied, stats.rows_rejected, stats.blank_lines, stats.lines_read) == (
        len(_expected_documents(mode)),
        len(bad),
        1,
        len(LINES),
    )
    assert stats.rows_copied + stats.rows_rejected + stats.blank_lines + stats.header_lines == stats.lines_read
    if mode == "record":  # found in line order (on the fast path jsonb finds some later)
        assert [reject["line"] for reject in stats.first_rejects] == sorted(bad)[:5]


CSV = (
    b"id,name\n"  # 1
    b"1,alpha\n"  # 2
    b"2,beta,extra\n"  # 3: too wide
    b'3,"gamma, quoted"\n'  # 4
    b"4\n"  # 5: too narrow
    b'5,"multi\nline"\n'  # 6-7
    b"6,\xff bad\n"  # 8: invalid UTF-8
    b"\n"  # 9: blank
    b"7,omega"  # 10, no newline
)


def test_csv_wrong_width_and_invalid_utf8_rejected(env: FaultEnv, table: str) -> None:
    key = "in/mixed.csv"
    env.put(key, CSV)
    stats = env.load(key, table, max_bad_rows=3, batch_id="b-csv")

    expected = {2: b'{"id":"1","name":"alpha"}', 4: b'{"id":"3","name":"gamma, quoted"}'}
    expected |= {6: b'{"id":"5","name":"multi\\nline"}', 10: b'{"id":"7","name":"omega"}'}
    assert _loaded(env, table) == _canonical(env, expected)
    rejects = _rejects(env, table, "b-csv")
    assert sorted(rejects) == [3, 5, 8]
    assert rejects[3] == ("expected 2 fields (the header's), got 3", "2,beta,extra")
    assert rejects[5] == ("expected 2 fields (the header's), got 1", "4")
    assert re.search(r"U\+DCFF, a lone surrogate \(invalid UTF-8 in the source", rejects[8][0])
    assert (stats.rows_copied, stats.rows_rejected, stats.header_lines, stats.blank_lines) == (4, 3, 1, 1)
    # physical lines: the quoted field with a newline makes record 6-7 two lines
    assert (
        stats.rows_copied + stats.rows_rejected + stats.blank_lines + stats.header_lines + 1 == stats.lines_read == 10
    )


def test_csv_parse_error_reject_keeps_raw_line(env: FaultEnv, table: str) -> None:
    env.put("in/bad.csv", b'id,name\n1,"abc"def\n2,ok\n')
    env.load("in/bad.csv", table, max_bad_rows=1, batch_id="b")
    rejects = _rejects(env, table, "b")
    assert rejects[2][0].startswith("invalid CSV")
    assert rejects[2][1] != ""


@pytest.mark.parametrize("mode", MODES)
def test_over_the_limit_commits_nothing_and_lists_first_reasons(env: FaultEnv, table: str, mode: str) -> None:
    key = "in/mixed.jsonl"
    # before: an earlier version of this object (with a reject) and another object, both committed
    env.put(key, b'{"old": 1}\n[0]\n{"old": 3}\n')
    env.load(key, table, max_bad_rows=5, batch_id="old")
    env.put("in/other.jsonl", b'{"other": 1}\nnull\n')
    env.load("in/other.jsonl", table, max_bad_rows=5, batch_id="other")
    before = (env.snapshot(table), env.snapshot(f"{table}_rejects"))
    assert before[0] is not None
    assert len(before[0]) == 3
    assert before[1] is not None
    assert len(before[1]) == 2

    env.put(key, DATA)
    bad = _bad(mode)
    limit = 3
    with pytest.raises(TooManyBadRecordsError) as caught:
        env.load(key, table, max_bad_rows=limit, batch_id="over", **_options(mode))

    assert (env.snapshot(table), env.snapshot(f"{table}_rejects")) == before
    message = str(caught.value)
    assert message.startswith(f"{env.location(key)}: more than {limit} bad records (at least {limit + 1})")
    assert "nothing was committed" in message
    listed = re.findall(r"line (\d+): (.*?)(?=; line \d+: |$)", message.split("First bad records: ", 1)[1])
    assert len(listed) == limit + 1
    for number, reason in listed:
        assert int(number) in bad, f"line {number} is not bad"
        assert re.search(bad[int(number)], reason), f"line {number}: {reason!r}"
    if mode == "record":
        assert [int(number) for number, _ in listed] == sorted(bad)[: limit + 1]
