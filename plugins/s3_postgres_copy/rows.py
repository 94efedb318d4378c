"""COPY row layouts: documents and metadata as the bytes ``COPY ... FROM STDIN`` reads.

A layout owns everything about its framing, as psycopg's ``Formatter``/``BinaryFormatter``
do: the COPY option it needs, what goes before and after the rows, how documents become
rows, and how a payload splits back into rows (to re-send part of it). Nobody else knows
which format is in use.

:class:`TextRows`: every field is escaped: a backslash, tab, newline or carriage return
inside a value would otherwise end the field or the row, or start an escape sequence.
Escaping is done with ``bytes.replace`` on whole blocks, which runs at memory speed;
per-row Python work is limited to one ``%`` format per row.

:class:`BinaryRows`: each field is its length and its bytes, so nothing is escaped, and the
server skips line splitting, de-escaping and the text parsing of the timestamp and the line
number (the same rows load ~1.2-1.3x faster). Only for the column types whose binary form is
simple and fixed (:func:`binary_rows`); the server still parses every ``jsonb`` document and
checks every text value's encoding.
"""

from __future__ import annotations

import datetime
import functools
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from s3_postgres_copy.exceptions import ConfigurationError

CopyFormat = Literal["auto", "text", "binary"]
"""The ``copy_format`` option: ``auto`` picks binary rows where the column types allow."""

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


class RowLayout(ABC):
    """How a load's rows look on the wire: the document, constant metadata, the line number last."""

    name: ClassVar[str]
    """``"text"`` or ``"binary"`` (reported as ``LoadStats.copy_format``)."""
    copy_options: ClassVar[tuple[str, ...]]
    """The ``COPY ... FROM STDIN`` options this layout needs (SQL, e.g. ``("FORMAT binary",)``)."""

    with_line: bool

    def header(self) -> bytes:
        """What each COPY's data starts with."""
        return b""

    def trailer(self) -> bytes:
        """What each COPY's data ends with."""
        return b""

    @abstractmethod
    def fields(self, data: bytes) -> list[bytes]:
        """Newline-separated documents → their COPY fields (the last item is what follows the last newline)."""

    @abstractmethod
    def rows(self, fields: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of document fields (from :meth:`fields`) with their source line numbers."""

    @abstractmethod
    def encode(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of documents (each without a newline) with their source line numbers."""

    @abstractmethod
    def split(self, payload: bytes) -> list[bytes]:
        """The rows of a payload made by :meth:`rows` or :meth:`encode`, one item per row, in order.

        ``b"".join(split(payload)) == payload``: any run of rows is a payload again.
        """

    @abstractmethod
    def document_of(self, row: bytes) -> bytes:
        """The (unescaped) document of one row from :meth:`split`."""

    @property
    @abstractmethod
    def row_overhead(self) -> int:
        """Bytes each row adds to its document (metadata and framing): bounds a payload's size by rows."""


class TextRows(RowLayout):
    """COPY text rows: escaped fields separated by tabs, one row per line.

    :param constants: metadata values that are the same for every row of a load.
    :param with_line: whether the source line number is a column (it is always last).
    """

    name = "text"
    copy_options = ()

    def __init__(self, constants: Sequence[object], *, with_line: bool) -> None:
        fixed = b"".join(b"\t" + encode_value(v).replace(b"%", b"%%") for v in constants)
        self.with_line = with_line
        self._template = b"%b" + fixed + (b"\t%d\n" if with_line else b"\n")
        self._overhead = len(fixed) + (21 if with_line else 1)

    def rows(self, fields: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """Encode already-escaped documents with their source line numbers into COPY rows."""
        template = self._template
        if self.with_line:
            return b"".join([template % pair for pair in zip(fields, lines, strict=False)])
        return b"".join([template % (doc,) for doc in fields])

    def fields(self, data: bytes) -> list[bytes]:
        """Newline-separated documents → escaped document fields."""
        return escape(data).split(b"\n")

    def encode(self, documents: Sequence[bytes], lines: Iterable[int]) -> bytes:
        """COPY rows of unescaped documents (each without a newline)."""
        return self.rows(self.fields(b"\n".join(documents)), lines)

    def split(self, payload: bytes) -> list[bytes]:
        """One item per row, with its newline (nothing inside a field is a raw newline or carriage return)."""
        return payload.splitlines(keepends=True)

    def document_of(self, row: bytes) -> bytes:
        """The unescaped document field of one row (with or without its newline)."""
        return unescape(row.rstrip(b"\n").split(b"\t", 1)[0])

    @property
    def row_overhead(self) -> int:
        """Tabs, constants, the line number and the newline."""
        return self._overhead


BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
"""What a binary COPY's data starts with."""
BINARY_TRAILER = struct.pack(">h", -1)
"""What a binary COPY's data ends with."""
_NULL_FIELD = struct.pack(">i", -1)
_POSTGRES_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_FIELD_COUNT = struct.Struct(">h")
_FIELD_LENGTH = struct.Struct(">i")

# Column types (``regtype`` names) with a binary form the loader writes itself.
DOCUMENT_PREFIXES = {"jsonb": b"\x01", "json": b"", "text": b""}  # jsonb's binary form is version 1 + the text
TEXT_TYPES = ("text", "character varying")
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


class BinaryRowsUnavailable(ConfigurationError):
    """The table's column types have no binary form the loader writes (the message says which column)."""


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


def binary_rows(types: Mapping[str, str], constants: Mapping[str, object], *, with_line: bool) -> BinaryRows:
    """The binary layout for these column types (role → ``regtype`` name).

    :param types: the type of every loaded column by role (``document``, the constants, ``source_line``).
    :param constants: the constant metadata values by role, in COPY order.
    :raises BinaryRowsUnavailable: naming the column whose type has no binary form here.
    """
    document = types["document"]
    if document not in DOCUMENT_PREFIXES:
        raise BinaryRowsUnavailable(f"the document column is {document}, not one of {', '.join(DOCUMENT_PREFIXES)}")
    fixed = []
    for role, value in constants.items():
        field = _binary_constant(value, types[role])
        if field is None:
            raise BinaryRowsUnavailable(f"the {role} column is {types[role]}")
        fixed.append(field)
    if with_line and types["source_line"] != "bigint":
        raise BinaryRowsUnavailable(f"the source_line column is {types['source_line']}, not bigint")
    return BinaryRows(DOCUMENT_PREFIXES[document], b"".join(fixed), len(constants), with_line=with_line)


class BinaryRows(RowLayout):
    """Binary COPY rows; the signature and trailer frame each COPY.

    :param prefix: bytes before each document (jsonb's version byte).
    :param fixed: the constant fields, already encoded.
    :param constants: how many constant fields ``fixed`` holds.
    :param with_line: whether the source line number (``bigint``) is the last column.
    """

    name = "binary"
    copy_options = ("FORMAT binary",)

    def __init__(self, prefix: bytes, fixed: bytes, constants: int, *, with_line: bool) -> None:
        self.with_line = with_line
        self._constants = constants
        self._count = 1 + constants + (1 if with_line else 0)
        # Field count, the document's length and its prefix (jsonb's version byte, or nothing) in one pack.
        self._head = struct.Struct(f">hi{len(prefix)}s").pack
        self._prefix = prefix
        self._fixed = fixed
        self._line = struct.Struct(">iq").pack

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its arguments (the packers it keeps do not pickle): for spawned transform workers.
        return functools.partial(BinaryRows, with_line=self.with_line), (self._prefix, self._fixed, self._constants)

    def header(self) -> bytes:
        """PostgreSQL's binary COPY signature, flags and (empty) header extension."""
        return BINARY_SIGNATURE

    def trailer(self) -> bytes:
        """The end-of-data field count (-1)."""
        return BINARY_TRAILER

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

    def split(self, payload: bytes) -> list[bytes]:
        """Walk the length-prefixed fields: one item per row."""
        rows = []
        view = memoryview(payload)
        start = 0
        while start < len(view):
            (count,) = _FIELD_COUNT.unpack_from(view, start)
            end = start + _FIELD_COUNT.size
            for _ in range(count):
                (length,) = _FIELD_LENGTH.unpack_from(view, end)
                end += _FIELD_LENGTH.size + max(length, 0)
            rows.append(bytes(view[start:end]))
            start = end
        return rows

    def document_of(self, row: bytes) -> bytes:
        """The document of one row (without jsonb's version byte)."""
        (length,) = _FIELD_LENGTH.unpack_from(row, _FIELD_COUNT.size)
        start = _FIELD_COUNT.size + _FIELD_LENGTH.size + len(self._prefix)
        return row[start : start + length - len(self._prefix)]

    @property
    def row_overhead(self) -> int:
        """Field count, lengths, prefix, constants and the line number."""
        return 6 + len(self._prefix) + len(self._fixed) + (12 if self.with_line else 0)


def choose_layout(
    copy_format: str,
    types: Mapping[str, str],
    constants: Mapping[str, object],
    *,
    with_line: bool,
    tolerant: bool,
    table: str,
) -> RowLayout:
    """The layout a load uses: binary rows where the option, the mode and the column types allow.

    :param copy_format: ``auto``, ``text`` or ``binary`` (which raises if binary rows cannot be used).
    :param tolerant: tolerant loads send text rows (their refused rows' reasons are the text parser's).
    :param table: the target, for the message when ``copy_format="binary"`` cannot be had.
    """
    if copy_format != "text" and not tolerant:
        try:
            return binary_rows(types, constants, with_line=with_line)
        except BinaryRowsUnavailable as err:
            if copy_format == "binary":
                raise BinaryRowsUnavailable(f"copy_format='binary' cannot load {table}: {err}") from None
    return TextRows(list(constants.values()), with_line=with_line)
