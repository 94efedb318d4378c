from __future__ import annotations

import csv
import gzip
import io
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import simplejson

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the root conftest adds it too; this keeps `--confcutdir tests/unit` working
    sys.path.insert(0, str(REPO_ROOT))

from harness import sample  # noqa: E402
from provider_directory import build_provider_document  # noqa: E402
from s3_postgres_copy.documents import dumps_document, loads_record  # noqa: E402

N = 5000


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(sample.jsonl_lines(N, seed=0))


def luhn_ok(npi: str) -> bool:
    total = 0
    for n, ch in enumerate(reversed("80840" + npi)):
        d = int(ch) * (2 if n % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


class TestJsonLines:
    def test_deterministic_for_a_seed(self, lines: list[bytes]) -> None:
        assert list(sample.jsonl_lines(N, seed=0)) == lines
        assert list(sample.jsonl_lines(N, seed=1)) != lines

    def test_start_continues_the_sequence(self, lines: list[bytes]) -> None:
        assert list(sample.jsonl_lines(100, seed=0, start=1234)) == lines[1234:1334]

    def test_every_line_is_one_json_object(self, lines: list[bytes]) -> None:
        for line in lines:
            assert line.endswith(b"\n")
            assert line.count(b"\n") == 1
            assert isinstance(json.loads(line), dict)
            line.decode("utf-8")

    def test_npi_unique_ten_digits_and_check_digit(self, lines: list[bytes]) -> None:
        npis = [json.loads(line)["npi"] for line in lines]
        assert len(set(npis)) == N
        assert all(len(n) == 10 and n.isdigit() and luhn_ok(n) for n in npis)
        assert str(sample.npi(23_456_789)) == "1234567893"  # CMS's example NPI

    def test_average_line_length(self, lines: list[bytes]) -> None:
        average = sum(map(len, lines)) / len(lines)
        assert 250 <= average <= 350, average

    def test_hard_cases_are_present(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        text = data.decode("utf-8")
        for needle in ["\\\\clinic\\\\notes", '\\"', "\\t", "\\n", "\u2028", "\\u", "Nguyễn", "O'Brien", "Zoë"]:
            assert needle in text, needle
        assert any(ord(ch) > 0xFFFF for ch in text)  # emoji, outside the BMP
        records = [simplejson.loads(line, use_decimal=True) for line in lines]
        ratings = [r["rating"] for r in records if isinstance(r.get("rating"), Decimal)]
        assert any(len(r.as_tuple().digits) > 17 for r in ratings)  # more digits than a double holds
        accepting = {repr(r.get("accepting_new_patients")) for r in records}
        assert {"'Y'", "'yes'", "True", "'N'"} <= accepting
        phones = [r.get("phone", "") for r in records]
        assert any(p.startswith("(") for p in phones)
        assert any(p.startswith("+1 ") for p in phones)
        assert any("." in p for p in phones)
        assert any(";" in r["specialties"] for r in records)
        assert any(any("\u4e00" <= ch <= "\u9fff" for ch in r["last_name"]) for r in records)

    def test_exact_numbers_survive(self, lines: list[bytes]) -> None:
        for line in lines[:500]:
            record = loads_record(line.rstrip(b"\n"))
            if isinstance(record.get("rating"), Decimal):
                assert str(record["rating"]).encode() in line

    def test_every_record_builds_a_document(self, lines: list[bytes]) -> None:
        for line in lines:
            dumps_document(build_provider_document(loads_record(line.rstrip(b"\n"))))

    def test_jsonl_bytes(self, lines: list[bytes]) -> None:
        assert sample.jsonl_bytes(50) == b"".join(lines[:50])
        assert sample.jsonl_bytes(0) == b""


class TestProviderRecord:
    def test_deterministic_and_shaped(self) -> None:
        a = [sample.provider_record(i, random.Random(7)) for i in range(200)]
        b = [sample.provider_record(i, random.Random(7)) for i in range(200)]
        assert a == b
        for i, rec in enumerate(a):
            assert rec["npi"] == str(sample.npi(i))
            assert {"first_name", "last_name", "credential", "specialties", "address", "updated_at"} <= set(rec)
            assert set(rec["address"]) == {"line1", "city", "state", "zip"}
            build_provider_document(rec)

    def test_npi_range(self) -> None:
        with pytest.raises(ValueError, match="record index"):
            sample.npi(-1)


class TestGzip:
    def test_gzip_bytes_round_trip_and_deterministic(self) -> None:
        data = sample.jsonl_bytes(1000)
        for level in (1, 6):
            packed = sample.gzip_bytes(data, compresslevel=level)
            assert gzip.decompress(packed) == data
            assert packed == sample.gzip_bytes(data, compresslevel=level)

    def test_write_jsonl_gz(self) -> None:
        n = 25_001  # more than one internal chunk
        buf = io.BytesIO()
        size = sample.write_jsonl_gz(buf, n, seed=3)
        data = gzip.decompress(buf.getvalue())
        assert size == len(data)
        assert data == b"".join(sample.jsonl_lines(n, seed=3))
        again = io.BytesIO()
        sample.write_jsonl_gz(again, n, seed=3)
        assert again.getvalue() == buf.getvalue()


class TestCsv:
    def test_parses_to_n_records_with_the_header(self) -> None:
        n = 500
        data = sample.csv_bytes(n, seed=0)
        assert data == sample.csv_bytes(n, seed=0)
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        rows = list(reader)
        assert reader.fieldnames == list(sample.CSV_HEADER)
        assert reader.fieldnames == (
            "npi,first_name,last_name,credential,specialties,city,state,zip,phone,accepting_new_patients,bio".split(",")
        )
        assert len(rows) == n
        assert len({row["npi"] for row in rows}) == n
        values = [v for row in rows for v in row.values()]
        assert any("," in v for v in values)
        assert any('"' in v for v in values)
        assert any("\n" in v for v in values)
        assert data.count(b"\n") > n + 1  # some records span several lines
        assert {row["accepting_new_patients"] for row in rows} <= {"Y", "N", ""}
        for row in rows:
            build_provider_document(row)
