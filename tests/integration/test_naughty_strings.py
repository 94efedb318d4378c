"""Big List of Naughty Strings: every string round-trips exactly as a JSON value and as a CSV field.

A string PostgreSQL cannot store (``\\u0000`` in ``jsonb``) must be rejected with a reason,
never altered; blns.json currently holds none, so every string must come back.
"""

from __future__ import annotations

import csv
import io
import json

from .helpers import TESTDATA, IntegrationEnv

BLNS: list[str] = json.loads((TESTDATA / "naughty-strings" / "blns.json").read_text(encoding="utf-8"))
# A few more that matter to COPY text format and jsonb (line breaks, COPY's \N and \. markers, NUL).
EXTRA = ["\x00", "a\x00b", "\r", "\n", "\r\n", "a\rb\nc\r\nd", "\\N", "\\.", "\\", "\t\\t", "\x85\u2028\u2029"]
STRINGS = BLNS + EXTRA
TOLERANT = 10_000


def storable(text: str) -> bool:
    """Whether ``jsonb`` can hold the string (it has no NUL)."""
    return "\x00" not in text


def test_list_is_there() -> None:
    assert len(BLNS) > 500
    assert any("\u2028" in s for s in BLNS)
    assert any(set(s) & set('"\\,\t') for s in BLNS)
    assert sum(not storable(s) for s in STRINGS) == 2


def check(env: IntegrationEnv, table: str, key: str, lines: list[int], as_text: bool) -> None:
    """Every string is in the table at its line, exactly, or in the rejects with a reason."""
    docs = env.documents(table)
    rejects = {line: error for line, _, error, _, _ in env.rejects(table)}
    loaded = {line: doc for line, doc in docs.items()}
    for i, (text, line) in enumerate(zip(STRINGS, lines, strict=True)):
        if storable(text):
            assert line in loaded, (i, text, rejects.get(line))
            assert loaded[line] == {"i": str(i) if as_text else i, "s": text}, (i, text)
        else:
            assert line not in loaded, (i, text)
            assert "\\u0000" in rejects[line], (i, text, rejects[line])  # the reason names the NUL
    assert len(loaded) + len(rejects) == len(STRINGS)


def test_json_values_round_trip(denv: IntegrationEnv, table: str) -> None:
    key = "naughty/blns.jsonl"
    body = "".join(json.dumps({"i": i, "s": s}, ensure_ascii=False) + "\n" for i, s in enumerate(STRINGS))
    assert body.count("\n") == len(STRINGS)
    denv.put(key, body.encode("utf-8"))

    stats = denv.load(key, table, max_bad_rows=TOLERANT)

    assert stats.rows_copied == sum(map(storable, STRINGS))
    assert stats.lines_read == len(STRINGS)
    check(denv, table, key, list(range(1, len(STRINGS) + 1)), as_text=False)


def test_json_values_round_trip_escaped(env: IntegrationEnv, table: str) -> None:
    """The same strings written with ``\\uXXXX`` escapes (``ensure_ascii``) come back the same."""
    key = "naughty/blns-ascii.jsonl"
    body = "".join(json.dumps({"i": i, "s": s}) + "\n" for i, s in enumerate(STRINGS))
    env.put(key, body.encode("ascii"))

    env.load(key, table, max_bad_rows=TOLERANT)

    check(env, table, key, list(range(1, len(STRINGS) + 1)), as_text=False)


def test_csv_fields_round_trip(denv: IntegrationEnv, table: str) -> None:
    key = "naughty/blns.csv"
    out = io.StringIO(newline="")
    writer = csv.writer(out)  # RFC 4180: CRLF rows, fields with quotes/commas/line breaks quoted
    writer.writerow(["i", "s"])
    lines = []
    for i, s in enumerate(STRINGS):
        lines.append(out.getvalue().count("\n") + 1)
        writer.writerow([i, s])
    denv.put(key, out.getvalue().encode("utf-8"))

    stats = denv.load(key, table, max_bad_rows=TOLERANT)

    assert stats.format == "csv"
    assert stats.rows_copied == sum(map(storable, STRINGS))
    assert stats.lines_read == out.getvalue().count("\n")
    check(denv, table, key, lines, as_text=True)
