from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest
import simplejson

from provider_directory import SCHEMA_VERSION, build_provider_document
from s3_postgres_copy.documents import (
    dumps_document,
    loads_record,
    resolve_transform,
)
from s3_postgres_copy.encoders import CsvEncoder, JsonLinesEncoder
from s3_postgres_copy.records import LineBlock
from s3_postgres_copy.rows import TextRows

DAG_TRANSFORM = "provider_directory.documents:build_provider_document"


def record(**overrides: Any) -> dict[str, Any]:
    """A JSON-lines record as the loader parses it (Decimal for non-integers)."""
    base: dict[str, Any] = {
        "npi": "1234567893",
        "first_name": "José",
        "last_name": "Nguyễn",
        "credential": "MD",
        "specialties": "Cardiology; internal medicine",
        "organization": "Mercy Health Partners",
        "address": {"line1": "12 Oak St", "city": "Boston", "state": "MA", "zip": "02115"},
        "phone": "(617) 555-0142",
        "accepting_new_patients": "Y",
        "languages": ["English", "Spanish"],
        "updated_at": "2024-05-01T12:34:56Z",
        "rating": Decimal("4.3500000000000000001"),
        "bio": 'Says "hi" \\ C:\\clinic\\notes\t\n\u2028 😀',
    }
    base.update(overrides)
    return base


def csv_row(**overrides: str) -> dict[str, str]:
    """A CSV record as the loader builds it: header → string."""
    base = {
        "npi": "1234567893",
        "first_name": "ZOË",
        "last_name": "O'BRIEN",
        "credential": "M.D., Ph.D.",
        "specialties": "Pediatrics, adolescent medicine",
        "city": "SAN JUAN",
        "state": "pr",
        "zip": "901",
        "phone": "787.555.0110",
        "accepting_new_patients": "N",
        "bio": 'Line one,\n"quoted" line two',
    }
    base.update(overrides)
    return base


class TestDocument:
    def test_full_json_record(self) -> None:
        doc = build_provider_document(record())
        assert doc == {
            "npi": "1234567893",
            "name": {"first": "José", "last": "Nguyễn", "full": "José Nguyễn"},
            "credentials": ["MD"],
            "specialties": ["Cardiology", "Internal Medicine"],
            "organization": "Mercy Health Partners",
            "address": {"line1": "12 Oak St", "city": "Boston", "state": "MA", "zip": "02115"},
            "phone": "+16175550142",
            "accepting_new_patients": True,
            "languages": ["English", "Spanish"],
            "bio": 'Says "hi" \\ C:\\clinic\\notes\t\n\u2028 😀',
            "rating": Decimal("4.3500000000000000001"),
            "updated_at": "2024-05-01T12:34:56Z",
            "status": "active",
            "source": "bulk-import",
            "schema_version": SCHEMA_VERSION,
        }

    def test_csv_record(self) -> None:
        doc = build_provider_document(csv_row())
        assert doc["name"] == {"first": "Zoë", "last": "O'Brien", "full": "Zoë O'Brien"}
        assert doc["credentials"] == ["MD", "PhD"]
        assert doc["specialties"] == ["Pediatrics", "Adolescent Medicine"]
        assert doc["address"] == {"line1": None, "city": "San Juan", "state": "PR", "zip": "00901"}
        assert doc["phone"] == "+17875550110"
        assert doc["accepting_new_patients"] is False
        assert doc["languages"] == []
        assert doc["bio"] == 'Line one,\n"quoted" line two'
        assert doc["rating"] is None
        assert doc["updated_at"] is None
        assert (doc["status"], doc["source"], doc["schema_version"]) == ("active", "bulk-import", 1)

    def test_minimal_record_gets_defaults(self) -> None:
        doc = build_provider_document({"npi": "1234567893", "last_name": "Kim"})
        assert doc["name"] == {"first": None, "last": "Kim", "full": "Kim"}
        assert doc["address"] == {"line1": None, "city": None, "state": None, "zip": None}
        assert doc["credentials"] == doc["specialties"] == doc["languages"] == []
        assert doc["organization"] is doc["phone"] is doc["accepting_new_patients"] is doc["rating"] is None

    def test_input_not_modified_and_lists_not_shared(self) -> None:
        rec = record()
        before = simplejson.dumps(rec, use_decimal=True)
        first, second = build_provider_document(rec), build_provider_document(rec)
        first["specialties"].append("Mutated")
        assert simplejson.dumps(rec, use_decimal=True) == before
        assert second["specialties"] == ["Cardiology", "Internal Medicine"]

    def test_is_json_serialisable_exactly(self) -> None:
        raw = (
            '{"npi":"1234567893","first_name":"Łukasz","last_name":"李","specialties":"ENT",'
            '"rating":4.3500000000000000001,"bio":"C:\\\\clinic\\\\notes\\t\\n\\u2028 \\ud83d\\ude00"}'
        )
        doc = build_provider_document(loads_record(raw.encode()))
        out = dumps_document(doc)
        assert b'"rating":4.3500000000000000001' in out
        parsed = simplejson.loads(out, use_decimal=True)
        assert parsed["rating"] == Decimal("4.3500000000000000001")
        assert parsed["bio"] == "C:\\clinic\\notes\t\n\u2028 😀"
        assert parsed["name"]["full"] == "Łukasz 李"
        assert parsed["specialties"] == ["ENT"]

    def test_dag_transform_path_resolves(self) -> None:
        assert resolve_transform(DAG_TRANSFORM) is build_provider_document


class TestNpi:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("1234567893", "1234567893"), (" 1234567893 ", "1234567893"), (1234567893, "1234567893")],
        ids=["string", "padded", "json-integer"],
    )
    def test_valid(self, value: object, expected: str) -> None:
        assert build_provider_document(record(npi=value))["npi"] == expected

    @pytest.mark.parametrize(
        "value",
        ["123456789", "12345678901", "12345-6789", "123456789X", "١٢٣٤٥٦٧٨٩٠", "", None, True, 12.5],
        ids=["9-digits", "11-digits", "hyphen", "letter", "arabic-indic", "empty", "null", "bool", "float"],
    )
    def test_invalid_raises_with_value(self, value: object) -> None:
        with pytest.raises(ValueError, match=r"^npi must be 10 digits, got ") as info:
            build_provider_document(record(npi=value))
        assert repr(value) in str(info.value)

    def test_missing(self) -> None:
        rec = record()
        del rec["npi"]
        with pytest.raises(ValueError, match=r"npi must be 10 digits, got None"):
            build_provider_document(rec)


class TestName:
    @pytest.mark.parametrize(
        ("first", "last", "expected_first", "expected_last"),
        [
            ("JOSÉ", "NGUYỄN", "José", "Nguyễn"),
            ("zoë", "o'brien", "Zoë", "O'Brien"),
            ("  Mary   Ann ", " McDonald\t", "Mary Ann", "McDonald"),
            ("MARY ANN", "MCDONALD", "Mary Ann", "McDonald"),
            ("jean-luc", "smith-jones", "Jean-Luc", "Smith-Jones"),
            ("Łukasz", "van der Berg", "Łukasz", "van der Berg"),
            ("DeShawn", "O'Brien", "DeShawn", "O'Brien"),
            ("ŁUKASZ", "d\u2019angelo", "Łukasz", "D\u2019Angelo"),
            ("伟", "王", "伟", "王"),
            ("민준", "김", "민준", "김"),
        ],
        ids=[
            "upper-unicode",
            "lower-apostrophe",
            "whitespace",
            "upper-mc",
            "hyphenated",
            "mixed-case-kept",
            "mixed-case-kept-2",
            "curly-apostrophe",
            "cjk",
            "hangul",
        ],
    )
    def test_normalised(self, first: str, last: str, expected_first: str, expected_last: str) -> None:
        name = build_provider_document(record(first_name=first, last_name=last))["name"]
        assert name == {"first": expected_first, "last": expected_last, "full": f"{expected_first} {expected_last}"}

    def test_missing_first(self) -> None:
        name = build_provider_document(record(first_name="   "))["name"]
        assert name == {"first": None, "last": "Nguyễn", "full": "Nguyễn"}

    def test_no_name_raises(self) -> None:
        with pytest.raises(ValueError, match="first_name or last_name is required"):
            build_provider_document(record(first_name="", last_name=None))

    def test_non_string_raises(self) -> None:
        with pytest.raises(ValueError, match="last_name must be a string, got list"):
            build_provider_document(record(last_name=["Kim"]))


class TestSpecialties:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("Cardiology; internal medicine", ["Cardiology", "Internal Medicine"]),
            ("CARDIOLOGY;cardiology ; Cardiology", ["Cardiology"]),
            ("  obstetrics  AND gynecology ;", ["Obstetrics and Gynecology"]),
            ("Pediatrics, family medicine", ["Pediatrics", "Family Medicine"]),
            ("ent; ob/gyn; hiv/aids medicine", ["ENT", "OB/GYN", "HIV/AIDS Medicine"]),
            ("physical medicine and rehabilitation", ["Physical Medicine and Rehabilitation"]),
            ("women's health; child-adolescent psychiatry", ["Women's Health", "Child-Adolescent Psychiatry"]),
            ("", []),
            (" ; ;, ", []),
            (None, []),
            (["Cardiology", "cardiology; Urology"], ["Cardiology", "Urology"]),
        ],
        ids=[
            "semicolon",
            "dedup-case",
            "minor-words",
            "comma",
            "acronyms",
            "long",
            "apostrophe-hyphen",
            "empty",
            "only-separators",
            "null",
            "list",
        ],
    )
    def test_split_normalise_dedup(self, raw: object, expected: list[str]) -> None:
        assert build_provider_document(record(specialties=raw))["specialties"] == expected

    def test_bad_type_raises(self) -> None:
        with pytest.raises(ValueError, match="specialties must be a string or a list of strings, got int"):
            build_provider_document(record(specialties=7))

    def test_list_of_non_strings_raises(self) -> None:
        with pytest.raises(ValueError, match="specialties must hold strings, got int"):
            build_provider_document(record(specialties=["Cardiology", 7]))


class TestCredentialsAndLanguages:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("MD", ["MD"]),
            ("M.D.", ["MD"]),
            ("md, phd", ["MD", "PhD"]),
            ("MD/PhD", ["MD", "PhD"]),
            ("PA-C", ["PA-C"]),
            ("DNP, APRN; FNP-BC", ["DNP", "APRN", "FNP-BC"]),
            ("MD FACC MD", ["MD", "FACC"]),
            ("psyd", ["PsyD"]),
            ("", []),
            (["MD", "MPH"], ["MD", "MPH"]),
        ],
    )
    def test_credentials(self, raw: object, expected: list[str]) -> None:
        assert build_provider_document(record(credential=raw))["credentials"] == expected

    def test_credentials_key_takes_precedence(self) -> None:
        assert build_provider_document(record(credentials=["DO"]))["credentials"] == ["DO"]

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (["English", "spanish", "SPANISH"], ["English", "Spanish"]),
            ("English; haitian creole, asl", ["English", "Haitian Creole", "ASL"]),
            (None, []),
        ],
        ids=["list", "string", "null"],
    )
    def test_languages(self, raw: object, expected: list[str]) -> None:
        assert build_provider_document(record(languages=raw))["languages"] == expected


class TestAddress:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            (
                {"line1": " 12  Oak St\tSte 4B ", "city": "BOSTON", "state": " ma ", "zip": "02115-1234"},
                {"line1": "12 Oak St Ste 4B", "city": "Boston", "state": "MA", "zip": "02115-1234"},
            ),
            (
                {"line1": "1 Calle Loíza", "city": "san juan", "state": "PR", "zip": 901},
                {"line1": "1 Calle Loíza", "city": "San Juan", "state": "PR", "zip": "00901"},
            ),
            (
                {"city": "Coeur d'Alene", "state": "ID", "zip": "838141234"},
                {"line1": None, "city": "Coeur d'Alene", "state": "ID", "zip": "83814-1234"},
            ),
            (
                {"city": "ESPAÑOLA", "state": "NM", "postal_code": "87532"},
                {"line1": None, "city": "Española", "state": "NM", "zip": "87532"},
            ),
            ({}, {"line1": None, "city": None, "state": None, "zip": None}),
        ],
        ids=["messy", "numeric-zip", "zip9", "postal-code", "empty"],
    )
    def test_nested(self, address: dict[str, Any], expected: dict[str, Any]) -> None:
        assert build_provider_document(record(address=address))["address"] == expected

    def test_flat_csv_columns(self) -> None:
        doc = build_provider_document(csv_row(city="hartford", state="CT", zip="6106-0001"))
        assert doc["address"] == {"line1": None, "city": "Hartford", "state": "CT", "zip": "06106-0001"}

    def test_string_address_is_line1(self) -> None:
        rec = record(address="12 Oak St", city="Boston", state="MA", zip="02115")
        assert build_provider_document(rec)["address"] == {
            "line1": "12 Oak St",
            "city": "Boston",
            "state": "MA",
            "zip": "02115",
        }

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("state", "Mass", "state must be a 2-letter code, got 'Mass'"),
            ("state", "M1", "state must be a 2-letter code, got 'M1'"),
            ("zip", "0211", None),
            ("zip", "1234567", "zip must be 5 digits or ZIP+4, got '1234567'"),
            ("zip", "ABCDE", "zip must be 5 digits or ZIP+4, got 'ABCDE'"),
            ("zip", "12", "zip must be 5 digits or ZIP+4, got '12'"),
        ],
        ids=["state-long", "state-digit", "zip-4-digits-ok", "zip-7", "zip-letters", "zip-short"],
    )
    def test_validation(self, field: str, value: str, message: str | None) -> None:
        address = {"city": "Boston", "state": "MA", "zip": "02115", field: value}
        if message is None:
            assert build_provider_document(record(address=address))["address"][field] == "00211"
            return
        with pytest.raises(ValueError, match=re.escape(message)):
            build_provider_document(record(address=address))

    def test_non_object_raises(self) -> None:
        with pytest.raises(ValueError, match="address must be an object, got list"):
            build_provider_document(record(address=["12 Oak St"]))


class TestPhone:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("(555) 123-4567", "+15551234567"),
            ("555.123.4567", "+15551234567"),
            ("+1 555 123 4567", "+15551234567"),
            ("555-123-4567", "+15551234567"),
            ("5551234567", "+15551234567"),
            ("1-555-123-4567", "+15551234567"),
            ("555-123-4567 x12", "+15551234567"),
            ("555-123-4567 ext. 300", "+15551234567"),
            (5551234567, "+15551234567"),
            ("123-4567", None),
            ("+44 20 7946 0958", None),
            ("2-555-123-4567", None),
            ("n/a", None),
            ("", None),
            (None, None),
        ],
        ids=[
            "parens",
            "dots",
            "plus-one",
            "dashes",
            "digits",
            "leading-one",
            "extension",
            "ext",
            "json-integer",
            "7-digits",
            "uk",
            "11-digits-not-1",
            "n/a",
            "empty",
            "null",
        ],
    )
    def test_e164_or_null(self, raw: object, expected: str | None) -> None:
        assert build_provider_document(record(phone=raw))["phone"] == expected


class TestAcceptingNewPatients:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("Y", True),
            ("yes", True),
            ("YES", True),
            (" true ", True),
            ("1", True),
            (True, True),
            (1, True),
            ("N", False),
            ("no", False),
            ("False", False),
            ("0", False),
            (False, False),
            (0, False),
            ("", None),
            (None, None),
        ],
    )
    def test_variants(self, raw: object, expected: bool | None) -> None:
        assert build_provider_document(record(accepting_new_patients=raw))["accepting_new_patients"] is expected

    @pytest.mark.parametrize("raw", ["maybe", 2, Decimal("1.0"), ["Y"]])
    def test_unknown_raises(self, raw: object) -> None:
        with pytest.raises(ValueError, match="accepting_new_patients must be yes/no or true/false"):
            build_provider_document(record(accepting_new_patients=raw))


class TestRating:
    @pytest.mark.parametrize(
        "raw",
        [Decimal("4.3500000000000000001"), Decimal("4.50"), 5, 123456789012345678901234567890, None],
        ids=["big-precision", "trailing-zero", "int", "huge-int", "null"],
    )
    def test_kept_exactly(self, raw: object) -> None:
        rating = build_provider_document(record(rating=raw))["rating"]
        assert rating is raw or (rating == raw and type(rating) is type(raw))
        if isinstance(raw, Decimal):
            assert str(rating) == str(raw)

    def test_csv_string_becomes_exact_decimal(self) -> None:
        rating = build_provider_document(csv_row(rating=" 4.3500000000000000001 "))["rating"]
        assert rating == Decimal("4.3500000000000000001")
        assert isinstance(rating, Decimal)

    @pytest.mark.parametrize("raw", ["abc", "NaN", Decimal("Infinity"), float("nan"), True, [4]], ids=lambda v: repr(v))
    def test_invalid_raises(self, raw: object) -> None:
        with pytest.raises(ValueError, match="rating must be a"):
            build_provider_document(record(rating=raw))

    def test_json_round_trip_keeps_digits(self) -> None:
        line = b'{"npi":"1234567893","last_name":"Kim","rating":4.3500000000000000001}'
        out = dumps_document(build_provider_document(loads_record(line)))
        assert b'"rating":4.3500000000000000001' in out
        assert json.loads(out)["rating"] == 4.35  # what a float parser would have kept


class TestThroughTheLoader:
    """The transform as the DAG uses it: bad records become rejects with their line number."""

    ROWS = TextRows([], with_line=True)

    def test_json_lines_rejects_bad_npi(self) -> None:
        lines = [
            simplejson.dumps(record(), use_decimal=True, ensure_ascii=False),
            simplejson.dumps(record(npi="12345"), use_decimal=True),
            simplejson.dumps(record(npi="1245319599"), use_decimal=True),
        ]
        data = ("\n".join(lines) + "\n").encode()
        encoder = JsonLinesEncoder(self.ROWS, transform=resolve_transform(DAG_TRANSFORM))
        [out] = encoder.encode([LineBlock(1, data, 3)])
        assert list(out.lines) == [1, 3]
        assert [(r.line, r.error) for r in out.rejects] == [
            (2, "transform failed: ValueError: npi must be 10 digits, got '12345'")
        ]
        first_row = out.payload.split(b"\n")[0]
        assert b'"rating":4.3500000000000000001' in first_row
        assert first_row.endswith(b"\t1")

    def test_csv_records(self) -> None:
        buf = io.StringIO()
        rows = [csv_row(), csv_row(npi="bad", last_name="Kim"), csv_row(bio="")]
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        data = buf.getvalue().encode()
        encoder = CsvEncoder(self.ROWS, transform=build_provider_document)
        blocks = list(encoder.encode([LineBlock(1, data, data.count(b"\n"))]))
        lines = [n for b in blocks for n in b.lines]
        rejects = [(r.line, r.error) for b in blocks for r in b.rejects]
        # each record whose bio holds a line break spans two lines: records start on lines 2, 4 and 6
        assert lines == [2, 6]
        assert rejects == [(4, "transform failed: ValueError: npi must be 10 digits, got 'bad'")]
