"""Encoding of field values into PostgreSQL COPY text-format rows.

Every field is escaped: a backslash, tab, newline or carriage return inside a
value would otherwise end the field or the row, or start an escape sequence.
Escaping is done with ``bytes.replace`` on whole blocks, which runs at memory
speed; per-row Python work is limited to one ``%`` format per row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

NULL = b"\\N"


def escape(data: bytes) -> bytes:
    r"""Escape ``data`` (one field, or many lines joined by ``\n``... minus ``\n``) for COPY text."""
    return data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\r", b"\\r")


def escape_field(data: bytes) -> bytes:
    """Escape one field value, newlines included."""
    return escape(data).replace(b"\n", b"\\n")


def encode_value(value: object) -> bytes:
    """Encode a constant metadata value (``None`` becomes ``NULL``)."""
    if value is None:
        return NULL
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

    @staticmethod
    def document_of(row: bytes) -> bytes:
        """The unescaped document field of one encoded row (without its newline)."""
        return unescape(row.split(b"\t", 1)[0])
