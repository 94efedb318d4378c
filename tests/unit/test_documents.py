from __future__ import annotations

import copy
import datetime
import json
import re
import types
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
import simplejson

from s3_postgres_copy.documents import (
    EncodedBlock,
    Reject,
    TransformError,
    describe_non_object,
    dumps_document,
    loads_record,
    resolve_transform,
    schema_validator,
)
from s3_postgres_copy.encoders import CsvEncoder, JsonLinesEncoder
from s3_postgres_copy.records import LineBlock, line_blocks
from s3_postgres_copy.rows import TextRows, unescape

ROWS = TextRows([], with_line=True)  # "<document>\t<line>\n"


def identity(record: dict[str, Any]) -> dict[str, Any]:
    return record


def block(data: bytes, first_line: int = 1) -> LineBlock:
    count = data.count(b"\n") + (not data.endswith(b"\n"))
    return LineBlock(first_line, data, count)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def decode_rows(payload: bytes) -> list[tuple[bytes, int]]:
    """``(unescaped document, line)`` for each row of a ``ROWS`` payload."""
    rows = payload.split(b"\n")
    assert rows.pop() == b""
    out = []
    for row in rows:
        doc, line = row.rsplit(b"\t", 1)
        out.append((unescape(doc), int(line)))
    return out


def parsed(payload: bytes) -> list[tuple[Any, int]]:
    return [(simplejson.loads(doc, use_decimal=True), line) for doc, line in decode_rows(payload)]


def encoder(path: str, **kwargs: Any) -> JsonLinesEncoder:
    """The fast path (no transform) or the record path (an identity transform)."""
    return JsonLinesEncoder(ROWS, transform=None if path == "fast" else identity, **kwargs)


PATHS = pytest.mark.parametrize("path", ["fast", "record"], ids=["fast-path", "record-path"])

ORDINARY = (
    b'{"a": 1, "b": [true, false, null]}\n'
    b'{"s": "tab\\tnewline\\ncr\\rbackslash\\\\ quote\\" unicode \\u00e9 \xe2\x9c\x93"}\r\n'
    b'{"n": 123456789012345678901234567890.123456789, "e": 1e-7, "neg": -0.5}\n'
    b'{"nested": {"k": {"deep": [1, {"x": "y"}]}}, "empty": {}}\n'
    b'{"emoji": "\xf0\x9d\x84\x9e", "escaped_pair": "\\ud834\\udd1e"}'
)


class TestJsonLinesFastPath:
    def test_exact_payload(self) -> None:
        out = JsonLinesEncoder(ROWS).encode_block(block(b'{"a":1}\n{"b":"x\\ty"}\n', first_line=7))
        assert out.payload == b'{"a":1}\t7\n{"b":"x\\\\ty"}\t8\n'
        assert list(out.lines) == [7, 8]
        assert out.rejects == []
        assert (out.lines_read, out.blank_lines, out.header_lines) == (2, 0, 0)

    def test_keeps_the_line_text(self) -> None:
        out = JsonLinesEncoder(ROWS).encode_block(block(b'{ "a" : 1.50 }\n'))
        assert decode_rows(out.payload) == [(b'{ "a" : 1.50 }', 1)]

    def test_crlf_removed(self) -> None:
        out = JsonLinesEncoder(ROWS).encode_block(block(b'{"a":1}\r\n{"b":2}\r\n'))
        assert out.payload == b'{"a":1}\t1\n{"b":2}\t2\n'

    def test_last_line_without_newline(self) -> None:
        out = JsonLinesEncoder(ROWS).encode_block(LineBlock(5, b'{"a":1}', 1))
        assert out.payload == b'{"a":1}\t5\n'
        assert out.lines_read == 1

    def test_constants_and_no_line_column(self) -> None:
        out = JsonLinesEncoder(TextRows(["k%", None], with_line=False)).encode_block(block(b'{"a":1}\n'))
        assert out.payload == b'{"a":1}\tk%\t\\N\n'
        assert list(out.lines) == [1]

    def test_nan_is_left_to_the_server(self) -> None:
        # The fast path does not parse JSON: PostgreSQL's jsonb input rejects it.
        out = JsonLinesEncoder(ROWS).encode_block(block(b'{"a":NaN}\n'))
        assert out.payload == b'{"a":NaN}\t1\n'
        assert out.rejects == []

    def test_encode_yields_one_block_per_line_block(self) -> None:
        blocks = [block(b'{"a":1}\n'), block(b"\n", 2), block(b'{"b":2}', 3)]
        out = list(JsonLinesEncoder(ROWS).encode(blocks))
        assert [o.payload for o in out] == [b'{"a":1}\t1\n', b"", b'{"b":2}\t3\n']
        assert [o.blank_lines for o in out] == [0, 1, 0]


class TestJsonLinesPathsAgree:
    @pytest.mark.parametrize("chunk_size", [1, 5, 64, 1 << 20], ids=lambda n: f"chunk{n}")
    def test_same_documents(self, chunk_size: int) -> None:
        results = {}
        for path in ("fast", "record"):
            docs: list[tuple[Any, int]] = []
            for out in encoder(path).encode(line_blocks(split(ORDINARY, chunk_size))):
                assert out.rejects == []
                docs.extend(parsed(out.payload))
            results[path] = docs
        assert results["fast"] == results["record"]
        assert [line for _, line in results["fast"]] == [1, 2, 3, 4, 5]
        assert results["record"][2][0]["n"] == Decimal("123456789012345678901234567890.123456789")
        assert results["record"][1][0]["s"] == 'tab\tnewline\ncr\rbackslash\\ quote" unicode é ✓'
        assert results["record"][4][0] == {"emoji": "𝄞", "escaped_pair": "𝄞"}

    def test_record_path_serialises_compactly_and_exactly(self) -> None:
        out = encoder("record").encode_block(block(b'{ "n" : 1.50, "big": 123456789012345678901234567890 }\n'))
        assert decode_rows(out.payload) == [(b'{"n":1.50,"big":123456789012345678901234567890}', 1)]

    def test_record_path_escapes_for_copy(self) -> None:
        out = encoder("record").encode_block(block(b'{"p":"C:\\\\dir\\tx"}\n'))
        assert out.payload == b'{"p":"C:\\\\\\\\dir\\\\tx"}\t1\n'


class TestJsonLinesLines:
    @PATHS
    def test_blank_and_whitespace_lines(self, path: str) -> None:
        out = encoder(path).encode_block(block(b'\n{"a":1}\n   \n\t\r\n \t \n{"b":2}\n', first_line=10))
        assert [line for _, line in parsed(out.payload)] == [11, 15]
        assert (out.lines_read, out.blank_lines, out.rejects) == (6, 4, [])

    @PATHS
    def test_leading_whitespace_before_brace(self, path: str) -> None:
        out = encoder(path).encode_block(block(b'  {"a":1}\n\t{"b":2}\r\n{"c":3}'))
        assert parsed(out.payload) == [({"a": 1}, 1), ({"b": 2}, 2), ({"c": 3}, 3)]
        assert out.rejects == []

    @PATHS
    @pytest.mark.parametrize(
        ("raw", "kind"),
        [
            (b"[1]", "an array"),
            (b"[]", "an array"),
            (b"1", "a number"),
            (b"-2.5e3", "a number"),
            (b'"x"', "a string"),
            (b"null", "null"),
            (b"true", "a boolean"),
            (b"false", "a boolean"),
            (b"  [1]  ", "an array"),
        ],
        ids=["array", "empty-array", "int", "float", "string", "null", "true", "false", "padded-array"],
    )
    def test_non_objects_rejected(self, path: str, raw: bytes, kind: str) -> None:
        out = encoder(path).encode_block(block(b'{"ok":1}\n' + raw + b'\r\n{"ok":2}\n'))
        assert out.rejects == [Reject(2, raw, f"not a JSON object (got {kind})")]
        assert parsed(out.payload) == [({"ok": 1}, 1), ({"ok": 2}, 3)]
        assert out.lines_read == 3

    @PATHS
    def test_not_json_at_all(self, path: str) -> None:
        out = encoder(path).encode_block(block(b"nope\n"))
        assert out.rejects == [Reject(1, b"nope", "invalid JSON: Expecting value: line 1 column 1 (char 0)")]
        assert out.payload == b""

    @PATHS
    @pytest.mark.parametrize(
        ("raw", "error"),
        [
            (b'{"a":"\xff"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xc3"}', "invalid UTF-8 at byte 6"),
            (b'{"a":"\xed\xa0\x80"}', "invalid UTF-8 at byte 6"),
            (b'  {"\xfe":1}', "invalid UTF-8 at byte 4"),
        ],
        ids=["ff", "truncated-sequence", "encoded-surrogate", "after-whitespace"],
    )
    def test_invalid_utf8_rejected(self, path: str, raw: bytes, error: str) -> None:
        out = encoder(path).encode_block(block(b'{"ok":1}\n' + raw + b"\n"))
        assert out.rejects == [Reject(2, raw, error)]
        assert parsed(out.payload) == [({"ok": 1}, 1)]

    @pytest.mark.parametrize(
        "raw",
        [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":[1,NaN]}'],
        ids=["nan", "inf", "minus-inf", "nested-nan"],
    )
    def test_nan_and_infinity_rejected_on_record_path(self, raw: bytes) -> None:
        out = encoder("record").encode_block(block(raw + b"\n"))
        assert out.payload == b""
        [reject] = out.rejects
        assert (reject.line, reject.raw) == (1, raw)
        assert reject.error.endswith("Infinity is not a JSON value") or reject.error.endswith("NaN is not a JSON value")
        assert reject.error.startswith("invalid JSON: ")

    def test_invalid_json_rejected_on_record_path(self) -> None:
        out = encoder("record").encode_block(block(b'{"a":1} trailing\n{"b":2}\n'))
        assert out.rejects == [Reject(1, b'{"a":1} trailing', "invalid JSON: Extra data: line 1 column 9 (char 8)")]
        assert parsed(out.payload) == [({"b": 2}, 2)]


class TestJsonLinesTransform:
    def test_transform_applied(self) -> None:
        enc = JsonLinesEncoder(ROWS, transform=lambda r: {"wrapped": r, "n": len(r)})
        out = enc.encode_block(block(b'{"a":1.0}\n'))
        assert decode_rows(out.payload) == [(b'{"wrapped":{"a":1.0},"n":1}', 1)]

    @pytest.mark.parametrize(
        ("transform", "error"),
        [
            (lambda r: r["missing"], "transform failed: KeyError: 'missing'"),
            (lambda r: 1 / 0, "transform failed: ZeroDivisionError: division by zero"),
            (lambda r: [r], "transform returned list, not a JSON object"),
            (lambda r: None, "transform returned NoneType, not a JSON object"),
            (lambda r: json.dumps(r), "transform returned str, not a JSON object"),
            (lambda r: {"x": object()}, "document is not JSON: object is not JSON serialisable"),
            (
                lambda r: {"x": float("nan")},
                "document is not JSON: Out of range float values are not JSON compliant: nan",
            ),
        ],
        ids=["key-error", "zero-division", "list", "none", "str", "unserialisable", "nan"],
    )
    def test_transform_problems_rejected(self, transform: Any, error: str) -> None:
        out = JsonLinesEncoder(ROWS, transform=transform).encode_block(block(b'{"a":1}\n'))
        assert out.rejects == [Reject(1, b'{"a":1}', error)]
        assert out.payload == b""
        assert list(out.lines) == []

    def test_transform_error_type(self) -> None:
        err = TransformError("x")
        assert isinstance(err, ValueError)

    def test_mapping_subclass_accepted(self) -> None:
        out = JsonLinesEncoder(ROWS, transform=lambda r: OrderedDict(r)).encode_block(block(b'{"a":1}\n'))
        assert out.payload == b'{"a":1}\t1\n'

    def test_non_dict_mapping_serialised(self) -> None:
        out = JsonLinesEncoder(ROWS, transform=types.MappingProxyType).encode_block(block(b'{"a":1}\n'))
        assert out.payload == b'{"a":1}\t1\n'

    def test_schema_forces_record_path(self) -> None:
        validate = schema_validator({"type": "object", "properties": {"a": {"type": "integer"}}})
        out = JsonLinesEncoder(ROWS, validate=validate).encode_block(block(b'{ "a" : 1 }\n{"a":"x"}\n'))
        assert decode_rows(out.payload) == [(b'{"a":1}', 1)]
        assert out.rejects == [Reject(2, b'{"a":"x"}', "schema violation at a: 'x' is not of type 'integer'")]

    def test_schema_checks_the_transformed_document(self) -> None:
        validate = schema_validator({"type": "object", "required": ["id"]})
        enc = JsonLinesEncoder(ROWS, transform=lambda r: {"id": r["a"]} if "a" in r else {}, validate=validate)
        out = enc.encode_block(block(b'{"a":1}\n{"b":1}\n'))
        assert decode_rows(out.payload) == [(b'{"id":1}', 1)]
        assert out.rejects == [Reject(2, b'{"b":1}', "schema violation at (document): 'id' is a required property")]


class TestLoadsRecord:
    def test_decimals_exact(self) -> None:
        record = loads_record(b'{"x":1.10,"i":12345678901234567890123,"e":1E+400}')
        assert record == {"x": Decimal("1.10"), "i": 12345678901234567890123, "e": Decimal("1E+400")}
        assert str(record["x"]) == "1.10"
        assert type(record["i"]) is int

    @pytest.mark.parametrize(
        ("raw", "error"),
        [
            (b'"\xff"', "invalid UTF-8 at byte 1"),
            (b"NaN", "invalid JSON: NaN is not a JSON value"),
            (b"{", "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            (b"", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        ],
        ids=["bad-utf8", "nan", "unterminated", "empty"],
    )
    def test_errors(self, raw: bytes, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            loads_record(raw)


class TestDescribeNonObject:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"[1]", "not a JSON object (got an array)"),
            (b"1", "not a JSON object (got a number)"),
            (b"1.5", "not a JSON object (got a number)"),
            (b'"x"', "not a JSON object (got a string)"),
            (b"null", "not a JSON object (got null)"),
            (b"true", "not a JSON object (got a boolean)"),
            (b"nan", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
            (b"\xff", "invalid UTF-8 at byte 0"),
        ],
        ids=["array", "int", "float", "string", "null", "bool", "nan", "bad-utf8"],
    )
    def test_describe(self, raw: bytes, expected: str) -> None:
        assert describe_non_object(raw) == expected


class TestDumpsDocument:
    @pytest.mark.parametrize(
        ("document", "expected"),
        [
            (
                {"d": Decimal("1234567890123456789012345678901234567890")},
                b'{"d":1234567890123456789012345678901234567890}',
            ),
            (
                {"d": Decimal("0.1234567890123456789012345678901234567891")},
                b'{"d":0.1234567890123456789012345678901234567891}',
            ),
            (
                {"d": Decimal("-98765432109876543210.98765432109876543210")},
                b'{"d":-98765432109876543210.98765432109876543210}',
            ),
            ({"i": 2**70, "j": -(2**70)}, b'{"i":1180591620717411303424,"j":-1180591620717411303424}'),
            ({"d": Decimal("1E+400")}, b'{"d":1E+400}'),
            ({"f": 0.1, "t": True, "n": None}, b'{"f":0.1,"t":true,"n":null}'),
            ({"é": "✓ 𝄞"}, '{"é":"✓ 𝄞"}'.encode()),
            ({"a": [1, {"b": []}]}, b'{"a":[1,{"b":[]}]}'),
            ({"ctl": "\t\n\x01"}, b'{"ctl":"\\t\\n\\u0001"}'),
            ({"bs": "\\u0000"}, b'{"bs":"\\\\u0000"}'),
            ({"bs": "\\\\u0000"}, b'{"bs":"\\\\\\\\u0000"}'),
            ({"\\u0000": 1}, b'{"\\\\u0000":1}'),
        ],
        ids=[
            "40-digit-int-decimal",
            "40-digit-fraction",
            "negative-decimal",
            "2**70",
            "huge-exponent",
            "scalars",
            "unicode-not-escaped",
            "nested-compact",
            "control-chars",
            "literal-backslash-u0000",
            "two-backslashes-u0000",
            "literal-in-key",
        ],
    )
    def test_serialises(self, document: Mapping[str, Any], expected: bytes) -> None:
        assert dumps_document(document) == expected

    def test_defaults(self) -> None:
        document = {
            "dt": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
            "d": datetime.date(2024, 5, 6),
            "t": datetime.time(7, 8),
            "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "b": "é".encode(),
            "s": {3, 1, 2},
        }
        assert (
            dumps_document(document)
            == (
                '{"dt":"2024-05-06T07:08:09+00:00","d":"2024-05-06","t":"07:08:00",'
                '"u":"12345678-1234-5678-1234-567812345678","b":"é","s":[1,2,3]}'
            ).encode()
        )

    @pytest.mark.parametrize(
        "document",
        [{"a": "x\x00y"}, {"\x00": 1}, {"a": ["\x00"]}, {"a": "\\\x00"}, {"a": {"b": "\x00"}}],
        ids=["value", "key", "in-list", "after-backslash", "nested"],
    )
    def test_refuses_nul(self, document: Mapping[str, Any]) -> None:
        with pytest.raises(ValueError, match=r"^a string holds \\u0000 \(NUL\), which jsonb cannot store$"):
            dumps_document(document)

    @pytest.mark.parametrize(
        ("document", "code"),
        [({"a": "\ud800"}, "D800"), ({"a": "ok\udcff"}, "DCFF"), ({"\udfff": 1}, "DFFF")],
        ids=["high", "surrogateescape", "in-key"],
    )
    def test_refuses_lone_surrogates(self, document: Mapping[str, Any], code: str) -> None:
        with pytest.raises(ValueError, match=f"^a string holds U\\+{code}, a lone surrogate ") as info:
            dumps_document(document)
        assert str(info.value).endswith("which jsonb cannot store")

    @pytest.mark.parametrize(
        ("document", "error"),
        [
            ({"a": float("nan")}, "document is not JSON: Out of range float values are not JSON compliant: nan"),
            ({"a": float("inf")}, "document is not JSON: Out of range float values are not JSON compliant: inf"),
            ({"a": Decimal("NaN")}, "document is not JSON: Out of range float values are not JSON compliant: nan"),
            (
                {"a": Decimal("-Infinity")},
                "document is not JSON: Out of range float values are not JSON compliant: -inf",
            ),
            ({"a": object()}, "document is not JSON: object is not JSON serialisable"),
            (
                {"a": b"\xff"},
                "document is not JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
            ),
            ([1], "the document must be a JSON object, got list"),
            ("{}", "the document must be a JSON object, got str"),
        ],
        ids=["nan", "inf", "decimal-nan", "decimal-minus-inf", "object", "bad-bytes", "list", "str"],
    )
    def test_refuses_non_json(self, document: Any, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            dumps_document(document)


class TestResolveTransform:
    def test_none_and_callables(self) -> None:
        assert resolve_transform(None) is None
        assert resolve_transform(identity) is identity

    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ("json:dumps", json.dumps),
            ("copy:deepcopy", copy.deepcopy),
            ("os.path:basename", __import__("os").path.basename),
        ],
        ids=["json-dumps", "copy-deepcopy", "dotted-module"],
    )
    def test_dotted_path(self, spec: str, expected: Any) -> None:
        assert resolve_transform(spec) is expected

    def test_resolved_transform_works(self) -> None:
        enc = JsonLinesEncoder(ROWS, transform=resolve_transform("copy:deepcopy"))
        assert enc.encode_block(block(b'{ "a" : [1] }\n')).payload == b'{"a":[1]}\t1\n'

    @pytest.mark.parametrize(
        ("spec", "error"),
        [
            ("json.dumps", "transform must be a callable or 'package.module:function', got 'json.dumps'"),
            ("a:b:c", "transform must be a callable or 'package.module:function', got 'a:b:c'"),
            (42, "transform must be a callable or 'package.module:function', got 42"),
            (
                "no_such_module_xyz:f",
                "transform 'no_such_module_xyz:f': cannot import module 'no_such_module_xyz': "
                "No module named 'no_such_module_xyz'",
            ),
            (
                "json:no_such_function",
                "transform 'json:no_such_function': module 'json' has no callable 'no_such_function'",
            ),
            ("json:__doc__", "transform 'json:__doc__': module 'json' has no callable '__doc__'"),
            ("json:", "transform must be 'package.module:function' (absolute), got 'json:'"),
        ],
        ids=["no-colon", "two-colons", "not-a-string", "missing-module", "missing-attr", "not-callable", "empty-attr"],
    )
    def test_bad_paths(self, spec: Any, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            resolve_transform(spec)

    def test_relative_module_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match=r"must be 'package.module:function' \(absolute\), got '.relative:f'"):
            resolve_transform(".relative:f")


class TestSchemaValidator:
    SCHEMA = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {"type": "object", "properties": {"n": {"type": "string"}}},
        },
    }

    def test_none(self) -> None:
        assert schema_validator(None) is None

    def test_valid_document_passes(self) -> None:
        validate = schema_validator(self.SCHEMA)
        assert validate is not None
        validate({"id": 1, "a": [1, 2], "o": {"n": "x"}})

    @pytest.mark.parametrize(
        ("document", "error"),
        [
            ({"id": 1, "a": [1, "x"]}, "schema violation at a/1: 'x' is not of type 'integer'"),
            ({"id": 1, "o": {"n": 5}}, "schema violation at o/n: 5 is not of type 'string'"),
            ({"a": []}, "schema violation at (document): 'id' is a required property"),
        ],
        ids=["array-item", "nested-property", "root"],
    )
    def test_reports_path(self, document: dict[str, Any], error: str) -> None:
        validate = schema_validator(self.SCHEMA)
        assert validate is not None
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            validate(document)

    def test_invalid_schema(self) -> None:
        with pytest.raises(jsonschema.exceptions.SchemaError, match="is not valid under any of the given schemas"):
            schema_validator({"type": 5})

    def test_pickles_as_its_schema(self) -> None:
        """A spawned transform worker gets the validator by pickle and builds its own."""
        import pickle

        validate = pickle.loads(pickle.dumps(schema_validator(self.SCHEMA)))
        validate({"id": 1})
        with pytest.raises(ValueError, match="'id' is a required property"):
            validate({})


def csv_encode(data: bytes, chunk_size: int = 1 << 20, **kwargs: Any) -> list[EncodedBlock]:
    return list(CsvEncoder(ROWS, **kwargs).encode(line_blocks(split(data, chunk_size))))


class TestCsvEncoder:
    @pytest.mark.parametrize("chunk_size", [1, 4, 1 << 20], ids=lambda n: f"chunk{n}")
    def test_header_to_documents(self, chunk_size: int) -> None:
        [out] = csv_encode(b'id,name\r\n1,Ann\r\n2,"B, ""b"""\r\n3,"multi\r\nline"\r\n', chunk_size)
        assert decode_rows(out.payload) == [
            (b'{"id":"1","name":"Ann"}', 2),
            (b'{"id":"2","name":"B, \\"b\\""}', 3),
            (b'{"id":"3","name":"multi\\r\\nline"}', 4),
        ]
        assert out.lines == [2, 3, 4]
        assert (out.lines_read, out.blank_lines, out.header_lines, out.rejects) == (5, 0, 1, [])

    def test_wrong_width_rejected(self) -> None:
        [out] = csv_encode(b"a,b\n1\n1,2,3\n4,5\n")
        assert out.rejects == [
            Reject(2, b"1", "expected 2 fields (the header's), got 1"),
            Reject(3, b"1,2,3", "expected 2 fields (the header's), got 3"),
        ]
        assert decode_rows(out.payload) == [(b'{"a":"4","b":"5"}', 4)]

    def test_blank_lines_before_header(self) -> None:
        [out] = csv_encode(b"\n\r\nid\n\n1\n")
        assert decode_rows(out.payload) == [(b'{"id":"1"}', 5)]
        assert (out.lines_read, out.blank_lines, out.header_lines) == (5, 3, 1)

    @pytest.mark.parametrize(
        ("data", "error"),
        [
            (b"a,b,a\n1,2,3\n", "line 1: the CSV header repeats column(s) 'a'"),
            (b"\nb,a,b,a,c\n", "line 2: the CSV header repeats column(s) 'a', 'b'"),
            (b",,\n1,2,3\n", "line 1: the CSV header is empty"),
            (b" , \n", "line 1: the CSV header is empty"),
            (b'"a"b\n1\n', "line 1: the CSV header cannot be read: invalid CSV: ',' expected after '\"'"),
        ],
        ids=["duplicate", "two-duplicates", "empty", "spaces", "unreadable"],
    )
    def test_bad_header(self, data: bytes, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            csv_encode(data)

    @pytest.mark.parametrize("data", [b"", b"\n\n"], ids=["empty", "blank-only"])
    def test_no_header(self, data: bytes) -> None:
        [out] = csv_encode(data)
        assert (out.payload, out.rejects, out.header_lines) == (b"", [], 0)
        assert out.blank_lines == data.count(b"\n")

    def test_malformed_record_rejected_and_parsing_continues(self) -> None:
        [out] = csv_encode(b'a,b\n"x"y,1\n2,3\n')
        assert out.rejects == [Reject(2, b'"x"y,1', "invalid CSV: ',' expected after '\"'")]
        assert decode_rows(out.payload) == [(b'{"a":"2","b":"3"}', 3)]

    def test_invalid_utf8_rejected_with_raw_bytes(self) -> None:
        [out] = csv_encode(b"a,b\n1,x\xffy\n2,ok\n")
        [reject] = out.rejects
        assert (reject.line, reject.raw) == (2, b"1,x\xffy")
        assert reject.error.startswith("a string holds U+DCFF, a lone surrogate")
        assert decode_rows(out.payload) == [(b'{"a":"2","b":"ok"}', 3)]

    def test_transform_and_delimiter(self) -> None:
        [out] = csv_encode(
            b"id;v\n1;a\n2;b\n", transform=lambda r: {"id": int(r["id"]), "v": r["v"].upper()}, delimiter=";"
        )
        assert decode_rows(out.payload) == [(b'{"id":1,"v":"A"}', 2), (b'{"id":2,"v":"B"}', 3)]

    def test_transform_failure_rejected(self) -> None:
        [out] = csv_encode(b"id\n1\nx\n", transform=lambda r: {"id": int(r["id"])})
        assert out.rejects == [
            Reject(3, b"x", "transform failed: ValueError: invalid literal for int() with base 10: 'x'")
        ]
        assert decode_rows(out.payload) == [(b'{"id":1}', 2)]

    def test_schema(self) -> None:
        validate = schema_validator({"properties": {"n": {"pattern": "^[0-9]+$"}}})
        [out] = csv_encode(b"n\n12\nx\n", validate=validate)
        assert out.rejects == [Reject(3, b"x", "schema violation at n: 'x' does not match '^[0-9]+$'")]

    @pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20], ids=lambda n: f"chunk{n}")
    def test_accounting_across_blocks(self, chunk_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("s3_postgres_copy.encoders.BLOCK_BYTES", 30)
        data = (
            b"\n"  # 1 blank
            b"k,v\n"  # 2 header
            b"1,aaaa\n"  # 3  {"k":"1","v":"aaaa"} = 20 bytes
            b"\n"  # 4 blank
            b"2,bbbb\n"  # 5  -> 40 bytes: block 1 ends (lines 1-5)
            b"3\n"  # 6 reject (width)
            b'4,"c\r\nc"\r\n'  # 7-8  {"k":"4","v":"c\r\nc"} = 24 bytes
            b"\r\n"  # 9 blank
            b"5,dd\n"  # 10 -> 42 bytes: block 2 ends (lines 6-10)
            b"\n"  # 11 blank
            b"6,e"  # 12 last line without newline; block 3 (lines 11-12)
        )
        blocks = csv_encode(data, chunk_size)
        summary = [
            (o.lines_read, o.blank_lines, o.header_lines, list(o.lines), [r.line for r in o.rejects]) for o in blocks
        ]
        assert summary == [
            (5, 2, 1, [3, 5], []),
            (5, 1, 0, [7, 10], [6]),
            (2, 1, 0, [12], []),
        ]
        assert sum(o.lines_read for o in blocks) == data.count(b"\n") + 1 == 12
        assert [doc for o in blocks for doc, _ in decode_rows(o.payload)] == [
            b'{"k":"1","v":"aaaa"}',
            b'{"k":"2","v":"bbbb"}',
            b'{"k":"4","v":"c\\r\\nc"}',
            b'{"k":"5","v":"dd"}',
            b'{"k":"6","v":"e"}',
        ]

    def test_trailing_blank_lines_counted(self) -> None:
        [out] = csv_encode(b"a\n1\n\n\r\n")
        assert (out.lines_read, out.blank_lines, out.header_lines) == (4, 2, 1)


class TestJsonLinesAccounting:
    @pytest.mark.parametrize("chunk_size", [1, 3, 10, 1 << 20], ids=lambda n: f"chunk{n}")
    @PATHS
    def test_lines_add_up(self, chunk_size: int, path: str) -> None:
        data = b'\n{"a":1}\r\n  \n[1]\n{"b":2}\n\n{"c":3}'
        blocks = list(encoder(path).encode(line_blocks(split(data, chunk_size))))
        assert sum(o.lines_read for o in blocks) == 7
        assert sum(o.blank_lines for o in blocks) == 3
        assert [r.line for o in blocks for r in o.rejects] == [4]
        assert [line for o in blocks for line in o.lines] == [2, 5, 7]


class TestOneNestingLimit:
    """Every path holds records to ``jsoncodec.MAX_DEPTH`` levels (the record path's parser could not go further)."""

    @staticmethod
    def _deep(levels: int) -> bytes:
        return b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    @PATHS
    def test_at_the_limit_loads_past_it_is_a_bad_record(self, path: str) -> None:
        from s3_postgres_copy.jsoncodec import MAX_DEPTH, TOO_DEEP

        data = b'{"ok":1}\n' + self._deep(MAX_DEPTH) + b"\n" + self._deep(MAX_DEPTH + 1) + b"\n" + b'{"ok":2}\n'
        out = encoder(path).encode_block(block(data))
        assert list(out.lines) == [1, 2, 4]
        assert [(r.line, r.error) for r in out.rejects] == [(3, TOO_DEEP)]

    def test_brackets_inside_strings_do_not_count(self) -> None:
        line = b'{"a": "' + b"[" * 5000 + b'", "b": [' + b"{}," * 2000 + b"{}]}"
        out = encoder("fast").encode_block(block(line + b"\n"))
        assert (list(out.lines), out.rejects) == ([1], [])
