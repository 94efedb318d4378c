from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from s3_postgres_copy.exceptions import UnknownFormatError
from s3_postgres_copy.formats import detect_format
from s3_postgres_copy.options import LoadOptions
from s3_postgres_copy.preflight import sniff_object
from s3_postgres_copy.sink import Columns

BOM = b"\xef\xbb\xbf"


def options(**overrides: Any) -> LoadOptions:
    values: dict[str, Any] = {"bucket": "b", "key": "dir/k.jsonl", "table": "s.t"}
    values.update(overrides)
    return LoadOptions(**values)


class TestLoadOptionsCheck:
    @pytest.mark.parametrize(
        "overrides",
        [
            {},
            {"table": "t"},
            {"format": "csv", "compression": "gzip", "mode": "append"},
            {"format": "jsonl", "compression": "none"},
            {"max_bad_rows": 0, "max_bad_ratio": 0.0},
            {"max_bad_rows": 10, "max_bad_ratio": 1},
            {"mode": "append", "columns": Columns(source_key=None)},
            {"csv_delimiter": "\t"},
        ],
        ids=[
            "defaults",
            "plain-table",
            "csv-gzip-append",
            "jsonl-none",
            "zero-limits",
            "ratio-one",
            "append-no-key",
            "tab",
        ],
    )
    def test_valid(self, overrides: dict[str, Any]) -> None:
        assert options(**overrides).check() is None

    @pytest.mark.parametrize(
        ("overrides", "error"),
        [
            ({"table": "a.b.c"}, "table name 'a.b.c' must be 'table' or 'schema.table'"),
            ({"table": "x; DROP TABLE y"}, "table name 'x; DROP TABLE y' is not a plain identifier"),
            ({"table": ""}, "table name '' is not a plain identifier"),
            ({"format": "xml"}, "format must be one of auto, jsonl, csv; got 'xml'"),
            ({"format": "JSONL"}, "format must be one of auto, jsonl, csv; got 'JSONL'"),
            ({"compression": "bz2"}, "compression must be one of auto, none, gzip; got 'bz2'"),
            ({"compression": None}, "compression must be one of auto, none, gzip; got None"),
            ({"mode": "upsert"}, "mode must be one of replace, append, merge, snapshot; got 'upsert'"),
            ({"bucket": ""}, "s3_bucket and s3_key must not be empty"),
            ({"key": ""}, "s3_bucket and s3_key must not be empty"),
            ({"max_bad_rows": -1}, "max_bad_rows must be a non-negative integer, got -1"),
            ({"max_bad_rows": 1.5}, "max_bad_rows must be a non-negative integer, got 1.5"),
            ({"max_bad_rows": "3"}, "max_bad_rows must be a non-negative integer, got '3'"),
            ({"raw_limit": -1}, "raw_limit must be a non-negative integer, got -1"),
            ({"segment_bytes": 0}, "segment_bytes must be a positive integer, got 0"),
            ({"segment_bytes": 1e6}, "segment_bytes must be a positive integer, got 1000000.0"),
            ({"max_line_bytes": True}, "max_line_bytes must be a positive integer, got True"),
            ({"copy_format": "csv"}, "copy_format must be one of auto, text, binary; got 'csv'"),
            (
                {"copy_format": "binary", "max_bad_rows": 3},
                "copy_format='binary' needs strict mode (max_bad_rows=0, no max_bad_ratio): "
                "tolerant mode re-sends refused segments as text rows",
            ),
            ({"max_bad_ratio": 1.5}, "max_bad_ratio must be a number between 0 and 1, got 1.5"),
            ({"max_bad_ratio": -0.1}, "max_bad_ratio must be a number between 0 and 1, got -0.1"),
            ({"max_bad_ratio": float("nan")}, "max_bad_ratio must be a number between 0 and 1, got nan"),
            (
                {"columns": Columns(source_key=None)},
                "mode='replace' needs the source_key column; use mode='append' without it",
            ),
            ({"csv_delimiter": ""}, "csv_delimiter must be one character other than a quote or newline, got ''"),
            ({"csv_delimiter": ";;"}, "csv_delimiter must be one character other than a quote or newline, got ';;'"),
            ({"table": "a.b.c", "format": "xml", "bucket": ""}, "table name 'a.b.c' must be"),
            ({"format": "xml", "mode": "upsert"}, "format must be one of"),
        ],
        ids=[
            "three-part-table",
            "hostile-table",
            "empty-table",
            "format",
            "format-case",
            "compression",
            "compression-none-value",
            "mode",
            "empty-bucket",
            "empty-key",
            "negative-rows",
            "float-rows",
            "string-rows",
            "negative-raw-limit",
            "zero-segment",
            "float-segment",
            "bool-line-limit",
            "copy-format",
            "binary-tolerant",
            "ratio-above-one",
            "ratio-negative",
            "ratio-nan",
            "replace-without-key",
            "empty-delimiter",
            "long-delimiter",
            "table-first",
            "format-before-mode",
        ],
    )
    def test_invalid(self, overrides: dict[str, Any], error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
            options(**overrides).check()

    @pytest.mark.parametrize(
        ("max_bad_rows", "max_bad_ratio", "tolerant"),
        [(0, None, False), (1, None, True), (0, 0.0, False), (0, 0.1, True), (5, 0.5, True)],
        ids=["strict", "rows", "zero-ratio", "ratio", "both"],
    )
    def test_tolerant(self, max_bad_rows: int, max_bad_ratio: float | None, tolerant: bool) -> None:
        assert options(max_bad_rows=max_bad_rows, max_bad_ratio=max_bad_ratio).tolerant is tolerant

    def test_location(self) -> None:
        assert options(key="dir/sub/k.csv.gz").location == "s3://b/dir/sub/k.csv.gz"


class TestDetectFormat:
    @pytest.mark.parametrize(
        ("key", "head", "expected"),
        [
            ("data.jsonl", b"a,b\n", "jsonl"),
            ("data.ndjson", b"", "jsonl"),
            ("data.json", b"a,b", "jsonl"),
            ("data.jsonlines", b"", "jsonl"),
            ("DATA.JSONL", b"a,b", "jsonl"),
            ("x/data.jsonl.gz", b"\x1f\x8b", "jsonl"),
            ("data.ndjson.gzip", b"", "jsonl"),
            ("data.csv", b'{"a":1}\n', "csv"),
            ("data.CSV.GZ", b'{"a":1}', "csv"),
            ("data.csv.gzip", b"{", "csv"),
            ("data.json.csv", b"{", "csv"),
            ("data.csv.json", b"a,b", "jsonl"),
            ("data.txt", b'{"a":1}\n', "jsonl"),
            ("data", b'  \r\n\t{"a":1}', "jsonl"),
            ("data", BOM + b'{"a":1}', "jsonl"),
            ("data", BOM + b' \n{"a":1}', "jsonl"),
            ("data.gz", b"{", "jsonl"),
            ("data", b"a,b\n1,2\n", "csv"),
            ("data", b"", "csv"),
            ("data", b"\n\n", "csv"),
            ("data.jsonl.bak", b"a,b", "csv"),
            ("data.gz.jsonl", b"a,b", "jsonl"),
            ("jsonl", b"a,b", "csv"),
        ],
        ids=[
            "jsonl-suffix-wins",
            "ndjson",
            "json",
            "jsonlines",
            "upper-case",
            "jsonl-gz",
            "ndjson-gzip",
            "csv-suffix-wins",
            "csv-gz-upper",
            "csv-gzip",
            "last-suffix-csv",
            "last-suffix-json",
            "sniff-object",
            "sniff-after-whitespace",
            "sniff-after-bom",
            "sniff-after-bom-and-whitespace",
            "gz-only-sniffs",
            "sniff-csv",
            "empty",
            "blank",
            "suffix-not-at-end",
            "gz-in-the-middle",
            "no-dot",
        ],
    )
    def test_detect(self, key: str, head: bytes, expected: str) -> None:
        assert detect_format(key, head) == expected

    @pytest.mark.parametrize(
        ("head", "reason"),
        [
            (b"[1]\n", "is neither JSON lines (one object per line) nor CSV with a header; it starts with b'[1]'"),
            (b'"a,b"\n', "is neither JSON lines"),
            (b"single column\n", "is neither JSON lines"),
            (b"\x89PNG\r\n\x1a\n\x00\x00", "does not start with UTF-8 text"),
            (b"ab\x00,c\n", "starts with binary data"),
            (b"\xff\xfeK\x00,\x00", "is UTF-16 text (it starts with a UTF-16 byte order mark); convert it to UTF-8"),
            (b"\xfe\xff\x00K", "is UTF-16 text"),
            (b"\xff\xfe\x00\x00K\x00\x00\x00", "is UTF-32 text (it starts with a UTF-32 byte order mark)"),
        ],
        ids=["array", "json-string", "no-delimiter", "png", "nul", "utf-16-le", "utf-16-be", "utf-32"],
    )
    def test_what_neither_format_is_refused_by_the_loader_and_by_validate_alike(self, head: bytes, reason: str) -> None:
        with pytest.raises(UnknownFormatError, match=re.escape(reason)):
            detect_format("data", head)
        with pytest.raises(UnknownFormatError, match=re.escape(reason)):
            sniff_object("data", head)

    def test_utf16_is_refused_whatever_the_suffix(self) -> None:
        with pytest.raises(UnknownFormatError, match="convert it to UTF-8"):
            detect_format("data.csv", "k,v\n".encode("utf-16"))

    def test_the_format_option_wins_over_the_key_and_the_content(self) -> None:
        assert detect_format("data.jsonl", b"k,v\n", "csv") == "csv"

    def test_the_registry_derives_every_list(self) -> None:
        from s3_postgres_copy.formats import FormatName, format_from_key, format_names

        assert format_names() == get_args(FormatName) == ("auto", "jsonl", "csv")
        assert format_names(auto=False) == ("jsonl", "csv")
        assert [format_from_key(k) for k in ("a.ndjson.gz", "a.CSV", "a.txt")] == ["jsonl", "csv", None]


def test_pipeline_imports_without_airflow() -> None:
    """The loader and its stages must not import Airflow (checked in a fresh interpreter)."""
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import s3_postgres_copy, s3_postgres_copy.loader;"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(plugins)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"
