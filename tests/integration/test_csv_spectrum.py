"""csv-spectrum: every CSV file loads to exactly the records of its JSON twin, at the lines they start on."""

from __future__ import annotations

import json

import pytest

from .helpers import TESTDATA, IntegrationEnv

SPECTRUM = TESTDATA / "csv-spectrum"
NAMES = sorted(path.stem for path in (SPECTRUM / "csvs").glob("*.csv"))


def record_starts(text: str) -> list[int]:
    """The line each data record starts on: a non-blank line begun outside quotes (header left out)."""
    starts, in_quotes = [], False
    for number, line in enumerate(text.split("\n"), 1):
        if not in_quotes and line.strip("\r"):
            starts.append(number)
        if line.count('"') % 2:
            in_quotes = not in_quotes
    return starts[1:]


def test_spectrum_is_there() -> None:
    assert len(NAMES) == 11
    assert all((SPECTRUM / "json" / f"{name}.json").exists() for name in NAMES)
    # The scan agrees with what the multi-line files say by hand.
    assert record_starts((SPECTRUM / "csvs" / "newlines.csv").read_text()) == [2, 3, 5]
    assert record_starts((SPECTRUM / "csvs" / "quotes_and_newlines.csv").read_text()) == [2, 5]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_csv_loads_to_its_json_twin(denv: IntegrationEnv, table: str, name: str) -> None:
    data = (SPECTRUM / "csvs" / f"{name}.csv").read_bytes()
    expected = json.loads((SPECTRUM / "json" / f"{name}.json").read_text(encoding="utf-8"))
    starts = record_starts(data.decode("utf-8"))
    assert len(starts) == len(expected)
    key = f"csv-spectrum/{name}.csv"
    etag = denv.put(key, data)

    stats = denv.load(key, table)

    assert stats.format == "csv"
    assert (stats.rows_copied, stats.rows_rejected) == (len(expected), 0)
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    assert stats.lines_read == lines
    assert stats.header_lines == 1
    assert stats.blank_lines == 0
    assert stats.rows_copied + stats.header_lines + stats.continuation_lines == stats.lines_read
    rows = denv.rows(table)
    assert [line for line, _, _, _ in rows] == starts
    assert [json.loads(document) for _, document, _, _ in rows] == expected
    assert {(source_key, source_etag) for _, _, source_key, source_etag in rows} == {(key, etag)}
