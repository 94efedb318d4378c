"""Encoding of documents and metadata into PostgreSQL COPY rows, text or binary format.

Text format (:class:`RowFormat`): every field is escaped: a backslash, tab, newline or
carriage return inside a value would otherwise end the field or the row, or start an
escape sequence. Escaping is done with ``bytes.replace`` on whole blocks, which runs at
memory speed; per-row Python work is limited to one ``%`` format per row.

Binary format (:class:`BinaryRowFormat`): each field is its length and its bytes, so
nothing is escaped, and the server skips line splitting, de-escaping and the text parsing
of the timestamp and the line number (the same rows load ~1.2-1.3x faster). Only for the
column types whose binary form is simple and fixed (:func:`binary_row_format`); the
server still parses every ``jsonb`` document and checks every text value's encoding.
"""

from __future__ import annotations

import datetime
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

NULL = b"\\N"


def escape(data: bytes) -> bytes:
    r"""Escape ``data`` (one field, or many lines joined by ``\n``... minus ``\n``) for COPY text."""
    return data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\r", b"\\r")


def escape_field(data: bytes) -> bytes:
    """Escape one field value, newlines included."""
    return escape(data).replace(b"\n", b"\\n")


def encode_value(value: object) -> bytes:
    """Encode a constant metadata value (``None`` becomes ``NULL``, a datetime its ISO 8601 text)."""
    if value is None:
        return NULL
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    if isinstance(value, bytes):
        return escape_field(value)
    return escape_field(str(value).encode("utf-8"))


_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_UNESCAPES = {b"\\": b"\\", b"t": b"\t", b"r": b"\r", b"n": b"\n"}


def unescape(field: bytes) -> bytes:
    """Reverse :func:`escape_field` (used to show a rejected row's raw text)."""
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field)


class RowFormat:
    """Builds COPY rows: the document, constant metadata fields, and the line number last.

    :param constants: metadata values that are the same for every row of a load.
    :param with_line: whether the source line number is a column (it is always last).
    """

    binary = False

    def __init__(self, constants: Sequence[object], *, with_line: bool) -> None:
        fixed = b"".join(b"\t" + encode_value(v).replace(b"%", b"%%") for v in constants)
        self.with_line = with_line
        self._template = b"%b" + fixed + (b"\t%d\n" if with_line else b"\n")

    def rows(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """Encode already-escaped documents with their source line numbers into COPY rows."""
        template = self._template
        if self.with_line:
            return b"".join([template % pair for pair in zip(documents, lines, strict=False)])
        return b"".join([template % (doc,) for doc in documents])

    def fields(self, data: bytes) -> list[bytes]:
        """Newline-separated documents → escaped document fields."""
        return escape(data).split(b"\n")

    def encode(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of unescaped documents (each without a newline)."""
        return self.rows(self.fields(b"\n".join(documents)), lines)

    @staticmethod
    def document_of(row: bytes) -> bytes:
        """The unescaped document field of one encoded row (without its newline)."""
        return unescape(row.split(b"\t", 1)[0])


class CopyRows(Protocol):
    """A COPY row layout: the text format (:class:`RowFormat`) or the binary one."""

    binary: bool

    def fields(self, data: bytes) -> list[bytes]:
        """Newline-separated documents → their COPY fields (the last item is what follows the last newline)."""

    def rows(self, fields: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of document fields (from :meth:`fields`) with their source line numbers."""

    def encode(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of documents (each without a newline) with their source line numbers."""


BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
"""What a binary COPY's data starts with."""
BINARY_TRAILER = struct.pack(">h", -1)
"""What a binary COPY's data ends with."""
_NULL_FIELD = struct.pack(">i", -1)
_POSTGRES_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

# Column types (``regtype`` names) with a binary form the loader writes itself.
DOCUMENT_PREFIXES = {"jsonb": b"\x01", "json": b"", "text": b""}  # jsonb's binary form is version 1 + the text
TEXT_TYPES = ("text", "character varying")
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


def _binary_constant(value: object, type_name: str) -> bytes | None:
    """The binary field (length + bytes) of a constant metadata value, or None if the type is not supported."""
    if value is None:
        return _NULL_FIELD
    if isinstance(value, datetime.datetime):
        if type_name in TIMESTAMP_TYPES:
            # Microseconds since 2000-01-01 UTC; a timestamp column gets the UTC wall time, as the text form would.
            micros = (value - _POSTGRES_EPOCH) // datetime.timedelta(microseconds=1)
            return struct.pack(">iq", 8, micros)
        value = value.isoformat()
    if type_name in TEXT_TYPES:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        return struct.pack(">i", len(data)) + data
    return None


def binary_row_format(
    types: Mapping[str, str], constants: Mapping[str, object], *, with_line: bool
) -> BinaryRowFormat | str:
    """The binary layout for these column types (role → ``regtype`` name), or why there is none.

    :param types: the type of every loaded column by role (``document``, the constants, ``source_line``).
    :param constants: the constant metadata values by role, in COPY order.
    """
    document = types["document"]
    if document not in DOCUMENT_PREFIXES:
        return f"the document column is {document}, not one of {', '.join(DOCUMENT_PREFIXES)}"
    fixed = []
    for role, value in constants.items():
        field = _binary_constant(value, types[role])
        if field is None:
            return f"the {role} column is {types[role]}"
        fixed.append(field)
    if with_line and types["source_line"] != "bigint":
        return f"the source_line column is {types['source_line']}, not bigint"
    return BinaryRowFormat(DOCUMENT_PREFIXES[document], b"".join(fixed), len(constants), with_line=with_line)


class BinaryRowFormat:
    """Builds binary COPY rows (without the signature and trailer, which go around each COPY).

    :param prefix: bytes before each document (jsonb's version byte).
    :param fixed: the constant fields, already encoded.
    :param constants: how many constant fields ``fixed`` holds.
    :param with_line: whether the source line number (``bigint``) is the last column.
    """

    binary = True

    def __init__(self, prefix: bytes, fixed: bytes, constants: int, *, with_line: bool) -> None:
        self.with_line = with_line
        self._count = 1 + constants + (1 if with_line else 0)
        # Field count, the document's length and its prefix (jsonb's version byte, or nothing) in one pack.
        self._head = struct.Struct(f">hi{len(prefix)}s").pack
        self._prefix = prefix
        self._fixed = fixed
        self._line = struct.Struct(">iq").pack

    def fields(self, data: bytes) -> list[bytes]:
        """Newline-separated documents → document fields (nothing to escape)."""
        return data.split(b"\n")

    def rows(self, fields: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """Binary COPY rows of documents with their source line numbers."""
        head, count, prefix, fixed, line_field = self._head, self._count, self._prefix, self._fixed, self._line
        extra = len(prefix)
        parts: list[bytes] = []
        add = parts.extend
        if self.with_line:
            for doc, line in zip(fields, lines, strict=False):
                add((head(count, len(doc) + extra, prefix), doc, fixed, line_field(8, line)))
        else:
            for doc in fields:
                add((head(count, len(doc) + extra, prefix), doc, fixed))
        return b"".join(parts)

    def encode(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """Binary COPY rows of documents (each without a newline)."""
        return self.rows(documents, lines)
