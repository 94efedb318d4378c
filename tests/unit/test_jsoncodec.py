"""``jsoncodec``: the same values, bytes and error texts as the stdlib/simplejson record path, faster.

The reference is what ``documents.py`` did before it took the codec's functions (kept verbatim
in ``json_reference.py``: ``reference.loads_record`` and ``reference.dumps_document``); every
JSONTestSuite file and every naughty string must give the same result from both, apart from
the deliberate differences listed in :data:`DELIBERATE`.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import sys
import types
import uuid
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import json_reference as reference
import pytest

from harness.sample import jsonl_lines
from provider_directory.documents import build_provider_document
from s3_postgres_copy import documents, jsoncodec
from s3_postgres_copy.jsoncodec import MAX_DEPTH, dumps_document, loads_record

POINT = namedtuple("POINT", "x y")  # simplejson encodes a namedtuple as an object
TESTDATA = Path(__file__).resolve().parents[1] / "data"  # the vendored suites: tests/data/README.md
SUITE = TESTDATA / "jsontestsuite" / "test_parsing"
SUITE_FILES = sorted(p.name for p in SUITE.glob("*.json") if p.name[:2] in ("y_", "n_", "i_"))
BLNS: list[str] = json.loads((TESTDATA / "naughty-strings" / "blns.json").read_text(encoding="utf-8"))
EXTRA_STRINGS = ["\x00", "a\x00b", "\\u0000", "\r\n", "\x85\u2028\u2029", "\ud800", "x\udcff", "\U0001d11e", "\x7f"]

# Where the codec differs from today's functions on purpose (today's result is a crash or
# depends on the caller's stack depth): the reference's outcome → the codec's.
DEEP_TODAY = "JSON nested too deeply to parse"
DELIBERATE = {
    # today: decimal.InvalidOperation escapes loads_record (not a ValueError: the load crashes)
    "i_number_huge_exp.json": "invalid JSON: a number's exponent is too large to keep exactly",
}


def outcome(func: Callable[[Any], Any], arg: Any) -> tuple[str, str]:
    """``("ok", repr(value))`` or ``(error class, message)``: repr keeps ``Decimal`` spellings and types."""
    try:
        return "ok", repr(func(arg))
    except Exception as err:  # noqa: BLE001 - the class is the result
        return type(err).__name__, str(err)


def _parsed_today(name: str) -> bool:
    try:
        reference.loads_record((SUITE / name).read_bytes())
    except (ValueError, ArithmeticError):
        return False
    return True


PARSED_TODAY = [name for name in SUITE_FILES if _parsed_today(name)]


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def at_stack_depth(frames: int, func: Callable[[], Any]) -> Any:
    """Call ``func`` with about ``frames`` Python frames below it (as a deep caller would)."""
    if frames <= 0:
        return func()
    return at_stack_depth(frames - 1, func)


def provider_lines(n: int) -> list[bytes]:
    return [line.rstrip(b"\n") for line in jsonl_lines(n, seed=7)]


class TestJsonTestSuite:
    def test_suite_is_there(self) -> None:
        assert len(SUITE_FILES) > 300
        assert sum(name.startswith("y_") for name in SUITE_FILES) == 95

    @pytest.mark.parametrize("name", SUITE_FILES)
    def test_parse_same_as_stdlib(self, name: str) -> None:
        raw = (SUITE / name).read_bytes()
        ours = outcome(loads_record, raw)
        if name in DELIBERATE:
            assert ours == ("ValueError", DELIBERATE[name])
            return
        today = outcome(reference.loads_record, raw)
        if today == ("ValueError", DEEP_TODAY):
            assert ours == ("ValueError", jsoncodec._PARSE_TOO_DEEP)
        else:
            assert ours == today
        if name.startswith("y_"):
            assert ours[0] == "ok"
        if name.startswith("n_"):
            assert ours[0] == "ValueError"

    @pytest.mark.parametrize("name", PARSED_TODAY)
    def test_serialise_same_as_simplejson(self, name: str) -> None:
        document = {"v": reference.loads_record((SUITE / name).read_bytes())}
        assert outcome(dumps_document, document) == outcome(reference.dumps_document, document)


class TestNaughtyStrings:
    @pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "escaped"])
    def test_parse_same_as_stdlib(self, ensure_ascii: bool) -> None:
        for i, text in enumerate(BLNS + EXTRA_STRINGS):
            raw = json.dumps({"i": i, "s": text}, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
            assert outcome(loads_record, raw) == outcome(reference.loads_record, raw), (i, text)

    def test_serialise_same_as_simplejson(self) -> None:
        for i, text in enumerate(BLNS + EXTRA_STRINGS):
            for document in ({"i": i, "s": text}, {text: [text]}):
                assert outcome(dumps_document, document) == outcome(reference.dumps_document, document), (i, text)

    def test_every_code_point_serialises_as_simplejson(self) -> None:
        chars = [chr(c) for c in range(0x110000)]
        for start in range(0, len(chars), 4096):
            piece = "".join(chars[start : start + 4096])
            document = {"s": piece, piece: 1}
            assert outcome(dumps_document, document) == outcome(reference.dumps_document, document), start


class TestNumbers:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"1.0", "Decimal('1.0')"),
            (b"-0", "0"),
            (b"-0.0", "Decimal('-0.0')"),
            (b"1E400", "Decimal('1E+400')"),
            (b"1e5", "Decimal('1E+5')"),
            (b"0.1234567890123456789012345678901234567891", "Decimal('0.1234567890123456789012345678901234567891')"),
            (b"123456789012345678901234567890123456789", "123456789012345678901234567890123456789"),
            (b"-18446744073709551617", "-18446744073709551617"),
            (b"123.456e-789", "Decimal('1.23456E-787')"),
        ],
        ids=["1.0", "minus-zero", "minus-zero-fraction", "1E400", "int-exponent", "40-digits", "39-digit-int",
             "below-int64", "tiny"],
    )  # fmt: skip
    def test_exact(self, raw: bytes, expected: str) -> None:
        assert repr(loads_record(raw)) == expected == repr(reference.loads_record(raw))

    @pytest.mark.parametrize(
        "document",
        [
            {"d": Decimal("1234567890123456789012345678901234567890"), "e": Decimal("-0.0"), "x": Decimal("1E+400")},
            {"i": 2**70, "j": -(2**64) - 1, "k": 0},
            {"f": 0.1, "g": 1e16, "h": 1e-7, "m": 5e-324, "n": -0.0, "o": 1.7976931348623157e308, "p": 3.0},
        ],
        ids=["decimals", "big-ints", "floats"],
    )
    def test_serialised_as_simplejson(self, document: dict[str, Any]) -> None:
        assert dumps_document(document) == reference.dumps_document(document)

    def test_random_floats_and_decimals(self) -> None:
        rng = random.Random(5)
        for _ in range(2000):
            document = {
                "f": rng.random() * 10 ** rng.randrange(-320, 308),
                "d": Decimal(f"{rng.choice('-+')}{rng.randrange(10 ** rng.randrange(1, 45))}E{rng.randrange(-60, 60)}"),
            }
            assert dumps_document(document) == reference.dumps_document(document), document

    def test_round_trip_is_exact(self) -> None:
        raw = (
            b'{"a":1.10,"b":-0.0,"c":1E+400,"d":123456789012345678901234567890,'
            b'"e":0.1234567890123456789012345678901234567891}'
        )
        assert dumps_document(loads_record(raw)) == raw

    @pytest.mark.parametrize(
        ("raw", "error"),
        [
            (b'{"a":NaN}', "invalid JSON: NaN is not a JSON value"),
            (b'{"a":Infinity}', "invalid JSON: Infinity is not a JSON value"),
            (b'{"a":-Infinity}', "invalid JSON: -Infinity is not a JSON value"),
            (b"[1,nan]", "invalid JSON: Expecting value: line 1 column 4 (char 3)"),
        ],
        ids=["nan", "inf", "minus-inf", "lower-nan"],
    )
    def test_constants_refused(self, raw: bytes, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            loads_record(raw)
        assert outcome(reference.loads_record, raw) == ("ValueError", error)

    @pytest.mark.parametrize(
        ("value", "text"),
        [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"), (Decimal("NaN"), "nan"),
         (Decimal("-Infinity"), "-inf"), (Decimal("sNaN"), "nan")],
        ids=["nan", "inf", "minus-inf", "decimal-nan", "decimal-minus-inf", "decimal-snan"],
    )  # fmt: skip
    def test_non_finite_refused(self, value: object, text: str) -> None:
        error = f"document is not JSON: Out of range float values are not JSON compliant: {text}"
        for document in ({"a": value}, {"a": [1, {"b": value}]}):
            with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
                dumps_document(document)
            assert outcome(reference.dumps_document, document) == ("ValueError", error)


class TestStrings:
    def test_duplicate_keys_last_wins(self) -> None:
        assert repr(loads_record(b'{"a":1,"b":2,"a":3}')) == "{'a': 3, 'b': 2}"
        assert repr(reference.loads_record(b'{"a":1,"b":2,"a":3}')) == "{'a': 3, 'b': 2}"

    def test_line_separators_kept_raw(self) -> None:
        raw = '{"s":"a\u2028b\u2029c\x85d"}'.encode()
        assert loads_record(raw) == {"s": "a\u2028b\u2029c\x85d"}
        assert dumps_document(loads_record(raw)) == raw

    def test_output_is_utf8_and_compact(self) -> None:
        assert (
            dumps_document({"é": ["✓", {"k": "𝄞"}], "t": "\t\x01"}) == '{"é":["✓",{"k":"𝄞"}],"t":"\\t\\u0001"}'.encode()
        )

    @pytest.mark.parametrize(
        ("raw", "value"),
        [
            (b'{"a":"\\ud800"}', {"a": "\ud800"}),
            (b'{"\\udfaa":0}', {"\udfaa": 0}),
            (b'["\\udd1e\\ud834"]', ["\udd1e\ud834"]),
        ],
        ids=["high", "low-in-key", "inverted-pair"],
    )  # fmt: skip
    def test_lone_surrogate_escapes_parse_as_the_stdlib_does(self, raw: bytes, value: Any) -> None:
        # msgspec refuses these; the stdlib accepts them and serialising refuses them (jsonb cannot store them).
        assert loads_record(raw) == value == reference.loads_record(raw)

    @pytest.mark.parametrize(
        ("document", "code"),
        [({"a": "\ud800"}, "D800"), ({"a": ["ok\udcff"]}, "DCFF"), ({"\udfff": 1}, "DFFF")],
        ids=["high", "surrogateescape", "in-key"],
    )
    def test_lone_surrogate_refused(self, document: dict[str, Any], code: str) -> None:
        error = (
            f"a string holds U+{code}, a lone surrogate (invalid UTF-8 in the source or an unpaired "
            "\\uD800-\\uDFFF escape), which jsonb cannot store"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            dumps_document(document)
        assert outcome(reference.dumps_document, document) == ("ValueError", error)

    @pytest.mark.parametrize(
        "document",
        [{"a": "x\x00y"}, {"\x00": 1}, {"a": ["\x00"]}, {"a": "\\\x00"}, {"a": {"b": "\x00"}}, {"a": "\x00\ud800"}],
        ids=["value", "key", "in-list", "after-backslash", "nested", "before-a-surrogate"],
    )
    def test_nul_refused(self, document: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match=r"^a string holds \\u0000 \(NUL\), which jsonb cannot store$"):
            dumps_document(document)

    def test_escaped_nul_parses(self) -> None:
        assert loads_record(b'{"a":"\\u0000"}') == {"a": "\x00"}

    @pytest.mark.parametrize(
        "document",
        [{"bs": "\\u0000"}, {"bs": "\\\\u0000"}, {"\\u0000": 1}],
        ids=["literal-backslash-u0000", "two-backslashes", "literal-in-key"],
    )
    def test_literal_backslash_u0000_is_not_nul(self, document: dict[str, Any]) -> None:
        assert dumps_document(document) == reference.dumps_document(document)

    @pytest.mark.parametrize(
        ("raw", "error"),
        [
            (b'{"a":"\xff"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xc3"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xed\xa0\x80"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xf4\x90\x80\x80"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xc0\xaf"}', "invalid UTF-8 at byte 6"),
            (b'  {"\xfe":1}', "invalid UTF-8 at byte 4"),
        ],
        ids=["ff", "truncated", "encoded-surrogate", "above-max", "overlong", "in-key"],
    )
    def test_invalid_utf8_refused(self, raw: bytes, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            loads_record(raw)


class TestErrorTexts:
    @pytest.mark.parametrize(
        "raw",
        [b"", b"{", b"nope", b'{"a":1} trailing', b"[1,]", b"01", b'{"a" 1}', b'"\x01"', b"\xef\xbb\xbf{}", b"{'a':1}",
         b'{"a":' + b"1" * 5000 + b"}"],
        ids=["empty", "unterminated", "word", "extra-data", "trailing-comma", "leading-zero", "no-colon",
             "control-char", "bom", "single-quotes", "int-over-python-digit-limit"],
    )  # fmt: skip
    def test_parse_errors_are_the_stdlib_ones(self, raw: bytes) -> None:
        today = outcome(reference.loads_record, raw)
        assert today[0] == "ValueError"
        assert outcome(loads_record, raw) == today

    @pytest.mark.parametrize(
        "document",
        [{"a": object()}, {"a": b"\xff"}, {"a": {1, "x"}}, {(1, 2): 3}, {"a": bytearray(b"x")}, [1], "{}", None],
        ids=["object", "bad-bytes", "unsortable-set", "tuple-key", "bytearray", "list", "str", "none"],
    )
    def test_serialise_errors_are_the_simplejson_ones(self, document: Any) -> None:
        today = outcome(reference.dumps_document, document)
        assert today[0] == "ValueError"
        assert outcome(dumps_document, document) == today


class TestTransformTypes:
    @pytest.mark.parametrize(
        "value",
        [
            datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
            datetime.datetime(2024, 5, 6, 7, 8, 9, 120000),
            datetime.datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
            datetime.date(2024, 5, 6),
            datetime.time(7, 8),
            datetime.time(7, 8, 9, 500, tzinfo=datetime.UTC),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "é".encode(),
            {3, 1, 2},
            frozenset({"b", "a"}),
            {datetime.date(2024, 1, 2), datetime.date(2023, 1, 2)},
            (1, "x", None),
            OrderedDict([("b", 1), ("a", 2)]),
            POINT(1, 2),
            True,
            None,
        ],
        ids=["utc-datetime", "naive-datetime-ms", "offset-datetime", "date", "time", "utc-time", "uuid", "bytes",
             "set", "frozenset", "set-of-dates", "tuple", "ordered-dict", "namedtuple", "bool", "none"],
    )  # fmt: skip
    def test_same_output_as_simplejson(self, value: object) -> None:
        for document in ({"v": value}, {"v": [value, {"w": value}], "n": 1}):
            assert dumps_document(document) == reference.dumps_document(document)

    def test_defaults(self) -> None:
        document = {
            "dt": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
            "d": datetime.date(2024, 5, 6),
            "t": datetime.time(7, 8),
            "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "b": "é".encode(),
            "s": {3, 1, 2},
            "f": 1e16,
        }
        assert (
            dumps_document(document)
            == (
                '{"dt":"2024-05-06T07:08:09+00:00","d":"2024-05-06","t":"07:08:00",'
                '"u":"12345678-1234-5678-1234-567812345678","b":"é","s":[1,2,3],"f":1e+16}'
            ).encode()
        )

    @pytest.mark.parametrize(
        ("document", "expected"),
        [
            ({1: "a", 2.5: "b", Decimal("1.5"): "c"}, b'{"1":"a","2.5":"b","1.5":"c"}'),
            ({True: 1, None: 2, False: 3}, b'{"true":1,"null":2,"false":3}'),
            ({"a": {7: [1]}}, b'{"a":{"7":[1]}}'),
            ({1: "int", "1": "str"}, b'{"1":"int","1":"str"}'),
        ],
        ids=["numbers", "constants", "nested", "collision"],
    )
    def test_non_string_keys_as_simplejson(self, document: dict[Any, Any], expected: bytes) -> None:
        assert dumps_document(document) == expected == reference.dumps_document(document)

    def test_mappings_at_any_level(self) -> None:
        # Deliberate: today a Mapping that is not a dict is serialised only at the top (through
        # _apply's dict()); the codec serialises one anywhere.
        document = types.MappingProxyType({"a": types.MappingProxyType({"b": [types.MappingProxyType({"c": 1})]})})
        assert dumps_document(document) == b'{"a":{"b":[{"c":1}]}}'
        assert dumps_document(types.MappingProxyType({"a": 1})) == b'{"a":1}'

    def test_subclasses_as_simplejson(self) -> None:
        class Text(str):
            pass

        class Number(int):
            pass

        class Fraction(Decimal):
            pass

        class Items(list[Any]):
            pass

        assert dumps_document({Text("k"): 1}) == reference.dumps_document({Text("k"): 1}) == b'{"k":1}'
        document = {Text("k"): Text("v"), "n": Number(5), "d": Fraction("1.5"), "l": Items([1]), "b": False}
        assert (
            dumps_document(document)
            == reference.dumps_document(document)
            == b'{"k":"v","n":5,"d":1.5,"l":[1],"b":false}'
        )


class TestNesting:
    @pytest.mark.parametrize("open_", [b"[", b'{"a":'], ids=["arrays", "objects"])
    def test_parse_limit(self, open_: bytes) -> None:
        close = b"]" if open_ == b"[" else b"}"
        inner = b"1" if open_ == b"[" else b"1"
        at_limit = open_ * MAX_DEPTH + inner + close * MAX_DEPTH
        assert loads_record(at_limit) is not None
        over = open_ * (MAX_DEPTH + 1) + inner + close * (MAX_DEPTH + 1)
        with pytest.raises(ValueError, match=f"^invalid JSON: nested deeper than {MAX_DEPTH} levels"):
            loads_record(over)

    def test_brackets_in_strings_do_not_count(self) -> None:
        raw = b'{"s":"' + b"[{" * 2000 + b'\\"[["}'
        assert loads_record(raw) == {"s": "[{" * 2000 + '"[['}

    def test_unclosed_is_too_deep(self) -> None:
        with pytest.raises(ValueError, match="nested deeper than"):
            loads_record(b"[" * 100_000)

    def test_serialise_limit(self) -> None:
        at_limit = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
        assert dumps_document({"a": deep_list(MAX_DEPTH - 1)}) == at_limit
        error = f"document is not JSON: nested deeper than {MAX_DEPTH} levels (or it contains itself)"
        with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
            dumps_document({"a": deep_list(MAX_DEPTH)})
        with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
            dumps_document({"a": [datetime.date(2024, 1, 1), deep_list(MAX_DEPTH)]})  # the converting path

    def test_parsed_at_limit_serialises(self) -> None:
        raw = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
        assert dumps_document(loads_record(raw)) == raw

    def test_self_reference_refused(self) -> None:
        loop: dict[str, Any] = {}
        loop["me"] = loop
        with pytest.raises(ValueError, match="or it contains itself"):
            dumps_document(loop)

    def test_limit_holds_for_a_deep_caller(self) -> None:
        frames = sys.getrecursionlimit() - MAX_DEPTH // 2  # too little room left for MAX_DEPTH levels
        raw = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
        document = {"a": deep_list(MAX_DEPTH - 1)}
        assert at_stack_depth(frames, lambda: loads_record(raw)) == deep_list(MAX_DEPTH)
        assert at_stack_depth(frames, lambda: dumps_document(document)) == b'{"a":' + raw[1:-1] + b"}"
        surrogate = b"[" * MAX_DEPTH + b'"\\ud800"' + b"]" * MAX_DEPTH  # the stdlib fallback, deep
        assert at_stack_depth(frames, lambda: loads_record(surrogate)) is not None


class TestFastPath:
    """The provider records and documents never need the reference implementations."""

    @pytest.fixture
    def no_reference(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(_: Any) -> Any:
            raise AssertionError("the reference implementation was used")

        monkeypatch.setattr(jsoncodec, "_reference_loads", refuse)
        monkeypatch.setattr(jsoncodec, "_reference_dumps", refuse)

    @pytest.mark.usefixtures("no_reference")
    def test_provider_records(self) -> None:
        for line in provider_lines(3000):
            record = loads_record(line)
            assert isinstance(record, dict)
            dumps_document(record)
            dumps_document(build_provider_document(record))

    @pytest.mark.usefixtures("no_reference")
    def test_converted_types(self) -> None:
        dumps_document({"at": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), "f": 0.5, "tags": {"b", "a"}})

    def test_provider_records_same_as_today(self) -> None:
        for line in provider_lines(3000):
            record = loads_record(line)
            assert repr(record) == repr(reference.loads_record(line))
            document = build_provider_document(record)
            assert dumps_document(document) == reference.dumps_document(document)
            assert dumps_document(record) == reference.dumps_document(record)


def test_api() -> None:
    assert jsoncodec.__all__ == ["MAX_DEPTH", "dumps_document", "loads_record", "nested_deeper_than_limit"]
    assert isinstance(MAX_DEPTH, int)
    assert isinstance(dumps_document({}), bytes)
    assert isinstance(loads_record(b"{}"), Mapping)


def test_the_record_path_uses_the_codec() -> None:
    assert documents.loads_record is jsoncodec.loads_record
    assert documents.dumps_document is jsoncodec.dumps_document
