from __future__ import annotations

import datetime
import random
import re
import struct

import pytest

from s3_postgres_copy.rows import (
    BINARY_SIGNATURE,
    BINARY_TRAILER,
    NULL,
    BinaryRows,
    BinaryRowsUnavailable,
    RowLayout,
    TextRows,
    binary_rows,
    choose_layout,
    encode_value,
    escape,
    escape_field,
    unescape,
)

SPECIAL = [b"\\", b"\t", b"\r", b"\n"]


def random_bytes(rng: random.Random, max_len: int = 40) -> bytes:
    """Byte strings rich in the characters COPY cares about (and in what follows a backslash)."""
    alphabet = [*SPECIAL, b"t", b"r", b"n", b"N", b".", b"%", b"\x00", b"\xff", b"\xc3\xa9"]
    parts = []
    for _ in range(rng.randrange(max_len + 1)):
        if rng.random() < 0.7:
            parts.append(rng.choice(alphabet))
        else:
            parts.append(bytes([rng.randrange(256)]))
    return b"".join(parts)


RANDOM_FIELDS = [random_bytes(random.Random(20240601 + i)) for i in range(1500)]


class TestEscapeField:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"", b""),
            (b"plain text", b"plain text"),
            (b"a\\b", b"a\\\\b"),
            (b"a\tb", b"a\\tb"),
            (b"a\rb", b"a\\rb"),
            (b"a\nb", b"a\\nb"),
            (b"\r\n", b"\\r\\n"),
            (b"\\t", b"\\\\t"),
            (b"\\\t", b"\\\\\\t"),
            (b"\\N", b"\\\\N"),
            (b"\\\\", b"\\\\\\\\"),
            (b"100%\x00\xff", b"100%\x00\xff"),
            (b'{"a":"x\\ty"}', b'{"a":"x\\\\ty"}'),
        ],
        ids=[
            "empty",
            "plain",
            "backslash",
            "tab",
            "cr",
            "lf",
            "crlf",
            "backslash-t-literal",
            "backslash-then-tab",
            "backslash-N-is-not-null",
            "two-backslashes",
            "other-bytes-untouched",
            "json-escape-sequence",
        ],
    )
    def test_escapes(self, raw: bytes, expected: bytes) -> None:
        assert escape_field(raw) == expected

    def test_output_has_no_raw_separators(self) -> None:
        for raw in RANDOM_FIELDS:
            escaped = escape_field(raw)
            assert b"\t" not in escaped
            assert b"\n" not in escaped
            assert b"\r" not in escaped


class TestEscape:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"a\nb", b"a\nb"),
            (b"a\tb\n", b"a\\tb\n"),
            (b'{"p":"C:\\\\d"}\n{"q":"\r"}\n', b'{"p":"C:\\\\\\\\d"}\n{"q":"\\r"}\n'),
            (b"\\\n\\", b"\\\\\n\\\\"),
        ],
        ids=["newline-kept", "tab-escaped", "two-lines", "backslash-around-newline"],
    )
    def test_keeps_newlines(self, raw: bytes, expected: bytes) -> None:
        assert escape(raw) == expected

    def test_block_equals_per_field_escaping(self) -> None:
        rng = random.Random(7)
        for _ in range(200):
            fields = [random_bytes(rng).replace(b"\n", b"") for _ in range(rng.randrange(1, 6))]
            assert escape(b"\n".join(fields)).split(b"\n") == [escape_field(f) for f in fields]


class TestUnescape:
    @pytest.mark.parametrize(
        ("escaped", "expected"),
        [
            (b"", b""),
            (b"a\\tb", b"a\tb"),
            (b"\\r\\n", b"\r\n"),
            (b"\\\\", b"\\"),
            (b"\\\\t", b"\\t"),
            (b"\\x", b"x"),
            (b"\\N", b"N"),
        ],
        ids=["empty", "tab", "crlf", "backslash", "escaped-backslash-then-t", "unknown-escape", "null-marker"],
    )
    def test_unescape(self, escaped: bytes, expected: bytes) -> None:
        assert unescape(escaped) == expected

    def test_round_trip_random(self) -> None:
        assert len(set(RANDOM_FIELDS)) > 1000  # the generator really varies
        for raw in RANDOM_FIELDS:
            assert unescape(escape_field(raw)) == raw, raw

    @pytest.mark.parametrize(
        "raw", [b"\\", b"\\\\\\", b"\\\n", b"\t\\t", b"\\r\r"], ids=["1", "3", "bs-lf", "tab", "cr"]
    )
    def test_round_trip_edge_cases(self, raw: bytes) -> None:
        assert unescape(escape_field(raw)) == raw


class TestEncodeValue:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, b"\\N"),
            ("s3://b/k.jsonl", b"s3://b/k.jsonl"),
            ("a\tb\nc\\d\re", b"a\\tb\\nc\\\\d\\re"),
            ("\\N", b"\\\\N"),
            ("", b""),
            (b"raw\tbytes", b"raw\\tbytes"),
            (42, b"42"),
            ("é✓", "é✓".encode()),
        ],
        ids=["none-is-null", "plain", "specials", "literal-backslash-N", "empty-not-null", "bytes", "int", "unicode"],
    )
    def test_encode(self, value: object, expected: bytes) -> None:
        assert encode_value(value) == expected

    def test_null_constant(self) -> None:
        assert NULL == b"\\N"


class TestTextRows:
    def test_with_line(self) -> None:
        fmt = TextRows(["k.jsonl", None, "b1"], with_line=True)
        assert fmt.with_line is True
        assert fmt.rows([b"{}", b'{"a":1}'], [7, 3]) == b'{}\tk.jsonl\t\\N\tb1\t7\n{"a":1}\tk.jsonl\t\\N\tb1\t3\n'

    def test_without_line_ignores_lines(self) -> None:
        fmt = TextRows(["k", None], with_line=False)
        assert fmt.with_line is False
        assert fmt.rows([b"{}", b"[]"], [1, 2]) == b"{}\tk\t\\N\n[]\tk\t\\N\n"

    @pytest.mark.parametrize(
        ("with_line", "expected"),
        [(True, b"{}\t5\n{}\t6\n"), (False, b"{}\n{}\n")],
        ids=["line-only", "document-only"],
    )
    def test_no_constants(self, with_line: bool, expected: bytes) -> None:
        assert TextRows([], with_line=with_line).rows([b"{}", b"{}"], range(5, 7)) == expected

    @pytest.mark.parametrize("with_line", [True, False], ids=["with-line", "without-line"])
    def test_no_documents(self, with_line: bool) -> None:
        assert TextRows(["k"], with_line=with_line).rows([], []) == b""

    @pytest.mark.parametrize(
        ("constant", "encoded"),
        [
            ("100%", b"100%"),
            ("%d%s%b%%", b"%d%s%b%%"),
            ("%", b"%"),
            ("a\tb", b"a\\tb"),
            ("C:\\dir\\", b"C:\\\\dir\\\\"),
            ("line1\nline2\r", b"line1\\nline2\\r"),
            (None, b"\\N"),
        ],
        ids=["percent", "format-directives", "lone-percent", "tab", "backslashes", "newlines", "none"],
    )
    @pytest.mark.parametrize("with_line", [True, False], ids=["with-line", "without-line"])
    def test_constant_values(self, constant: object, encoded: bytes, with_line: bool) -> None:
        fmt = TextRows([constant, "x%"], with_line=with_line)
        tail = b"\t9\n" if with_line else b"\n"
        assert fmt.rows([b"{}"], [9]) == b"{}\t" + encoded + b"\tx%" + tail

    def test_document_with_percent_is_not_a_format(self) -> None:
        fmt = TextRows(["%s"], with_line=True)
        assert fmt.rows([b'{"p":"%d%s%%"}'], [1]) == b'{"p":"%d%s%%"}\t%s\t1\n'

    def test_lines_from_generator(self) -> None:
        fmt = TextRows([], with_line=True)
        assert fmt.rows([b"a", b"b"], (n * 10 for n in (1, 2))) == b"a\t10\nb\t20\n"


class TestDocumentOf:
    @pytest.mark.parametrize(
        ("row", "expected"),
        [
            (b'{"a":1}\tk\t\\N\t3', b'{"a":1}'),
            (b'{"a":"x\\\\ty"}\tk\t3', b'{"a":"x\\ty"}'),
            (b'{"a":"x\\ty"}\t3', b'{"a":"x\ty"}'),
            (b'{"a":1}', b'{"a":1}'),
            (b"", b""),
        ],
        ids=["with-constants", "escaped-backslash", "escaped-tab", "no-tab", "empty"],
    )
    def test_document_of(self, row: bytes, expected: bytes) -> None:
        assert TextRows([], with_line=False).document_of(row) == expected

    @pytest.mark.parametrize("with_line", [True, False], ids=["with-line", "without-line"])
    def test_round_trip_through_rows(self, with_line: bool) -> None:
        fmt = TextRows(["k\t1", None, "b\\2"], with_line=with_line)
        docs = RANDOM_FIELDS[:300]
        payload = fmt.rows([escape_field(d) for d in docs], range(1, len(docs) + 1))
        rows = payload.split(b"\n")
        assert rows.pop() == b""
        assert [TextRows([], with_line=False).document_of(row) for row in rows] == docs


# -- binary format -------------------------------------------------------------------------
STANDARD = {
    "document": "jsonb",
    "source_key": "text",
    "source_etag": "text",
    "batch_id": "character varying",
    "loaded_at": "timestamp with time zone",
    "source_line": "bigint",
}
LOADED_AT = datetime.datetime(2000, 1, 2, 0, 0, 0, 5, tzinfo=datetime.UTC)  # one day and 5 µs after PostgreSQL's epoch
CONSTANTS = {"source_key": "k/é.jsonl", "source_etag": None, "batch_id": "b1", "loaded_at": LOADED_AT}


def field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


class TestBinaryRows:
    def test_rows_are_length_prefixed_fields_with_jsonb_version_byte(self) -> None:
        layout = binary_rows(STANDARD, CONSTANTS, with_line=True)
        assert isinstance(layout, BinaryRows)

        rows = layout.encode([b'{"a": "\\\\ tab\\t"}', b"{}"], [7, 9])

        fixed = (
            field("k/é.jsonl".encode())
            + struct.pack(">i", -1)  # NULL etag
            + field(b"b1")
            + field(struct.pack(">q", 86_400_000_005))
        )
        assert rows == (
            struct.pack(">h", 6)
            + field(b'\x01{"a": "\\\\ tab\\t"}')  # nothing escaped: the bytes go as they are
            + fixed
            + field(struct.pack(">q", 7))
            + struct.pack(">h", 6)
            + field(b"\x01{}")
            + fixed
            + field(struct.pack(">q", 9))
        )

    @pytest.mark.parametrize("document", ["json", "text"])
    def test_json_and_text_documents_have_no_version_byte(self, document: str) -> None:
        layout = binary_rows({"document": document}, {}, with_line=False)
        assert isinstance(layout, BinaryRows)
        assert layout.rows(layout.fields(b"{}\n[1]"), []) == struct.pack(">h", 1) + field(b"{}") + struct.pack(
            ">h", 1
        ) + field(b"[1]")

    def test_timestamp_without_time_zone_gets_the_utc_wall_time_and_text_gets_iso(self) -> None:
        for loaded_at_type, expected in (
            ("timestamp without time zone", field(struct.pack(">q", 86_400_000_005))),
            ("text", field(LOADED_AT.isoformat().encode())),
        ):
            layout = binary_rows(
                {"document": "jsonb", "loaded_at": loaded_at_type}, {"loaded_at": LOADED_AT}, with_line=False
            )
            assert isinstance(layout, BinaryRows)
            assert layout.encode([b"{}"], []) == struct.pack(">h", 2) + field(b"\x01{}") + expected

    @pytest.mark.parametrize(
        ("role", "type_name", "reason"),
        [
            ("document", "bytea", "the document column is bytea, not one of jsonb, json, text"),
            ("source_key", "citext", "the source_key column is citext"),
            ("loaded_at", "date", "the loaded_at column is date"),
            ("source_line", "integer", "the source_line column is integer, not bigint"),
            ("source_line", "numeric", "the source_line column is numeric, not bigint"),
        ],
    )
    def test_other_column_types_say_why_there_is_no_binary_layout(self, role: str, type_name: str, reason: str) -> None:
        with pytest.raises(BinaryRowsUnavailable, match=f"^{re.escape(reason)}$"):
            binary_rows({**STANDARD, role: type_name}, CONSTANTS, with_line=True)

    def test_signature_and_trailer_are_postgresqls(self) -> None:
        assert BINARY_SIGNATURE == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
        assert BINARY_TRAILER == b"\xff\xff"

    def test_text_and_binary_layouts_split_blocks_alike(self) -> None:
        data = b'{"a": "x\\\\y"}\n{"b": 1}\n'
        text = TextRows([], with_line=False)
        binary = binary_rows({"document": "json"}, {}, with_line=False)
        assert isinstance(binary, BinaryRows)
        assert text.fields(data) == [b'{"a": "x\\\\\\\\y"}', b'{"b": 1}', b""]
        assert binary.fields(data) == [b'{"a": "x\\\\y"}', b'{"b": 1}', b""]
        assert (text.name, binary.name) == ("text", "binary")


class TestFraming:
    """Each layout owns its framing: COPY options, what goes around the rows, how a payload splits into rows."""

    @pytest.mark.parametrize("with_line", [True, False], ids=["line", "no-line"])
    def test_binary_rows_split_back_into_rows_and_documents(self, with_line: bool) -> None:
        layout = binary_rows(STANDARD, CONSTANTS, with_line=with_line)
        docs = [b'{"a": "tab\\t"}', b"{}", '{"\u00e9": [1, 2]}'.encode()]
        payload = layout.encode(docs, [3, 5, 8])
        rows = layout.split(payload)
        assert len(rows) == 3
        assert b"".join(rows) == payload
        assert [layout.document_of(row) for row in rows] == docs
        assert layout.split(rows[1] + rows[0]) == [rows[1], rows[0]]

    def test_binary_split_keeps_null_fields(self) -> None:
        layout = binary_rows(STANDARD, {**CONSTANTS, "batch_id": None}, with_line=False)
        payload = layout.encode([b"{}", b"[]"], [])
        assert [layout.document_of(row) for row in layout.split(payload)] == [b"{}", b"[]"]

    def test_text_rows_split_back_into_rows_and_documents(self) -> None:
        layout = TextRows(["k\t1", None], with_line=True)
        docs = [b'{"a": "x\\y\tz"}', b"{}"]
        payload = layout.encode(docs, [1, 2])
        rows = layout.split(payload)
        assert len(rows) == 2
        assert b"".join(rows) == payload
        assert [layout.document_of(row) for row in rows] == docs

    def test_each_layout_frames_its_copy(self) -> None:
        text = TextRows([], with_line=False)
        binary = binary_rows({"document": "jsonb"}, {}, with_line=False)
        assert (text.copy_options, text.header(), text.trailer()) == ((), b"", b"")
        assert (binary.copy_options, binary.header(), binary.trailer()) == (
            ("FORMAT binary",),
            BINARY_SIGNATURE,
            BINARY_TRAILER,
        )

    @pytest.mark.parametrize(
        ("copy_format", "tolerant", "types", "expected"),
        [
            ("auto", False, STANDARD, "binary"),
            ("auto", True, STANDARD, "text"),
            ("text", False, STANDARD, "text"),
            ("binary", False, STANDARD, "binary"),
            ("auto", False, {**STANDARD, "document": "bytea"}, "text"),
        ],
        ids=["auto-strict", "auto-tolerant", "text", "binary", "auto-falls-back"],
    )
    def test_choose_layout(self, copy_format: str, tolerant: bool, types: dict[str, str], expected: str) -> None:
        layout = choose_layout(copy_format, types, CONSTANTS, with_line=True, tolerant=tolerant, table="t")
        assert layout.name == expected

    def test_binary_that_cannot_be_had_says_why(self) -> None:
        with pytest.raises(
            BinaryRowsUnavailable, match="^copy_format='binary' cannot load s.t: the source_key column is citext$"
        ):
            choose_layout(
                "binary", {**STANDARD, "source_key": "citext"}, CONSTANTS, with_line=True, tolerant=False, table="s.t"
            )

    @pytest.mark.parametrize(
        "layout",
        [TextRows(["k" * 1000], with_line=True), binary_rows(STANDARD, CONSTANTS, with_line=True)],
        ids=["text", "binary"],
    )
    def test_row_overhead_bounds_the_bytes_a_row_adds(self, layout: RowLayout) -> None:
        payload = layout.encode([b"{}"] * 10, range(10**15, 10**15 + 10))
        assert len(payload) <= 10 * (2 + layout.row_overhead)


def test_layouts_pickle_as_their_arguments() -> None:
    """Spawned transform workers get the load's layout by pickle (``BinaryRows`` keeps unpicklable packers)."""
    import pickle

    for layout in (
        TextRows(["k", None], with_line=True),
        binary_rows(STANDARD, CONSTANTS, with_line=True),
    ):
        copy = pickle.loads(pickle.dumps(layout))
        assert type(copy) is type(layout)
        assert copy.encode([b'{"a":1}'], [7]) == layout.encode([b'{"a":1}'], [7])
        assert copy.row_overhead == layout.row_overhead
