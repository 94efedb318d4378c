"""Blocks of lines → COPY rows, one encoder class per file format (as dlt has one load job per format).

Each encoder turns the :class:`~s3_postgres_copy.records.LineBlock` stream of its format into
:class:`~s3_postgres_copy.documents.EncodedBlock` payloads in the load's row layout
(:mod:`s3_postgres_copy.rows`), with the records that could not become a document as rejects.
The format registry (:mod:`s3_postgres_copy.formats`) names the class of each format.

What one payload holds is bounded by its *output* size (:data:`PAYLOAD_BYTES`): a block of
tiny records under a long key would otherwise grow many times over (each row repeats the key,
ETag, batch and timestamp).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from s3_postgres_copy.documents import (
    DocumentBuilder,
    EncodedBlock,
    Reject,
    Transform,
    Validator,
    all_lines_open_objects,
    describe_non_object,
    is_utf8,
    reason_of,
)
from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.records import JSON_WHITESPACE, LineBlock, LineCount, csv_records

if TYPE_CHECKING:
    from s3_postgres_copy.options import LoadOptions
    from s3_postgres_copy.rows import RowLayout

PAYLOAD_BYTES = 4 << 20
"""About the most COPY row bytes one encoded block holds."""
BLOCK_BYTES = 1 << 20
"""Documents per CSV block (before the row layout adds its fields)."""
_UTF8_BOM = b"\xef\xbb\xbf"


class Encoder(ABC):
    """One file format's records → COPY rows in the load's row layout.

    :param row_format: the COPY row layout (metadata constants, line column).
    :param transform: record → document; ``None`` keeps the record as it is.
    :param validate: a schema check applied to each document.
    """

    def __init__(self, row_format: RowLayout, transform: Transform | None = None, validate: Validator | None = None):
        self.row_format = row_format
        self.builder = DocumentBuilder(transform, validate)

    @classmethod
    def for_load(
        cls, row_format: RowLayout, transform: Transform | None, validate: Validator | None, options: LoadOptions
    ) -> Encoder:
        """The encoder for a load (formats with options of their own read them from ``options``)."""
        return cls(row_format, transform, validate)

    @abstractmethod
    def encode(self, blocks: Iterable[LineBlock]) -> Iterator[EncodedBlock]:
        """Encode the object's line blocks."""


class JsonLinesEncoder(Encoder):
    """JSON lines → COPY rows: each line's text is the document (fast path) or the record path's."""

    def encode(self, blocks: Iterable[LineBlock]) -> Iterator[EncodedBlock]:
        """Encode every block; one whose rows would exceed :data:`PAYLOAD_BYTES` in pieces of fewer lines."""
        overhead = self.row_format.row_overhead
        for block in blocks:
            if len(block.data) + block.count * overhead <= PAYLOAD_BYTES:
                yield self.encode_block(block)
                continue
            per_line = len(block.data) / block.count + overhead
            for piece in split_block(block, max(1, int(PAYLOAD_BYTES // per_line))):
                yield self.encode_block(piece)

    def encode_block(self, block: LineBlock) -> EncodedBlock:
        """Encode one block; lines that cannot be documents become rejects."""
        data = block.data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        if self.builder.keeps_lines and all_lines_open_objects(data, block.count) and is_utf8(data):
            docs = self.row_format.fields(data)
            if data.endswith(b"\n"):
                docs.pop()
            lines = range(block.first_line, block.first_line + block.count)
            return EncodedBlock(self.row_format.rows(docs, lines), lines, lines_read=block.count)
        return self._encode_lines(block, data)

    def _encode_lines(self, block: LineBlock, data: bytes) -> EncodedBlock:
        raws = data.split(b"\n")
        if data.endswith(b"\n"):
            raws.pop()
        fast = self.builder.keeps_lines
        docs: list[bytes] = []
        lines: list[int] = []
        out = EncodedBlock(b"", lines, lines_read=block.count)
        for number, raw in enumerate(raws, block.first_line):
            if raw[:1] != b"{":
                stripped = raw.strip(JSON_WHITESPACE)
                if not stripped:
                    out.blank_lines += 1
                    continue
                if stripped[:1] != b"{":
                    out.rejects.append(Reject(number, raw, _not_an_object(stripped)))
                    continue
            try:
                if fast:
                    raw.decode("utf-8")
                    docs.append(raw)
                else:
                    docs.append(self.builder.from_json(raw))
            except ValueError as err:
                out.rejects.append(Reject(number, raw, reason_of(err)))
                continue
            lines.append(number)
        if docs:
            out.payload = self.row_format.encode(docs, lines)
        return out


def _not_an_object(stripped: bytes) -> str:
    if stripped.startswith(_UTF8_BOM):
        return (
            "a UTF-8 byte order mark in the middle of the object (were files concatenated?); "
            "remove it (only the object's first bytes may be one)"
        )
    return describe_non_object(stripped)


def split_block(block: LineBlock, max_lines: int) -> Iterator[LineBlock]:
    """Cut a block into blocks of at most ``max_lines`` lines (line numbers kept)."""
    parts = block.data.split(b"\n")
    ends_with_newline = block.data.endswith(b"\n")
    if ends_with_newline:
        parts.pop()
    for start in range(0, len(parts), max_lines):
        piece = parts[start : start + max_lines]
        last = start + max_lines >= len(parts)
        data = b"\n".join(piece) + (b"\n" if ends_with_newline or not last else b"")
        yield LineBlock(block.first_line + start, data, len(piece))


class CsvEncoder(Encoder):
    """CSV with a header row → COPY rows of ``{header: value}`` documents (or transformed ones)."""

    def __init__(
        self,
        row_format: RowLayout,
        transform: Transform | None = None,
        validate: Validator | None = None,
        *,
        delimiter: str = ",",
    ):
        super().__init__(row_format, transform, validate)
        self.delimiter = delimiter

    @classmethod
    def for_load(
        cls, row_format: RowLayout, transform: Transform | None, validate: Validator | None, options: LoadOptions
    ) -> Encoder:
        """CSV reads ``csv_delimiter``."""
        return cls(row_format, transform, validate, delimiter=options.csv_delimiter)

    def encode(self, blocks: Iterable[LineBlock]) -> Iterator[EncodedBlock]:
        """Encode the whole CSV stream, yielding blocks of about 1 MiB of documents."""
        records, counter = csv_records(blocks, delimiter=self.delimiter)
        header: list[str] | None = None
        seen = LineCount()
        docs: list[bytes] = []
        lines: list[int] = []
        out = EncodedBlock(b"", lines)
        size = rows_size = 0
        overhead = self.row_format.row_overhead
        for record in records:
            out.continuation_lines += counter.lines - record.line
            if header is None:
                if record.fields is None:
                    raise ConfigurationError(f"line {record.line}: the CSV header cannot be read: {record.error}")
                header = _check_header(record.fields, record.line)
                out.header_lines = 1
                continue
            reject = self._reject(record.fields, record.error, header)
            if reject is None:
                assert record.fields is not None
                try:
                    doc = self.builder.build(dict(zip(header, record.fields, strict=True)))
                except ValueError as err:
                    reject = str(err)
                else:
                    docs.append(doc)
                    lines.append(record.line)
                    size += len(doc)
                    rows_size += len(doc) + overhead
            if reject is not None:
                raw = record.raw if record.fields is None else self.delimiter.join(record.fields)
                out.rejects.append(Reject(record.line, raw.encode("utf-8", "surrogateescape"), reject))
            if size >= BLOCK_BYTES or rows_size >= PAYLOAD_BYTES:
                out = self._finish(out, docs, counter, seen)
                yield out
                docs, lines, size, rows_size = [], [], 0, 0
                out = EncodedBlock(b"", lines)
        yield self._finish(out, docs, counter, seen)

    @staticmethod
    def _reject(fields: list[str] | None, error: str | None, header: list[str]) -> str | None:
        """Why a parsed record cannot be a document before it is built, if it cannot."""
        if fields is None:
            return error or "invalid CSV"
        if len(fields) != len(header):
            return f"expected {len(header)} fields (the header's), got {len(fields)}"
        return None

    def _finish(self, out: EncodedBlock, docs: list[bytes], counter: LineCount, seen: LineCount) -> EncodedBlock:
        out.lines_read, out.blank_lines = counter.lines - seen.lines, counter.blank - seen.blank
        seen.lines, seen.blank = counter.lines, counter.blank
        if docs:
            out.payload = self.row_format.encode(docs, out.lines)
        return out


def _check_header(fields: list[str], line: int) -> list[str]:
    names = list(fields)
    if not any(name.strip() for name in names):
        raise ConfigurationError(f"line {line}: the CSV header is empty")
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ConfigurationError(f"line {line}: the CSV header repeats column(s) {', '.join(map(repr, dupes))}")
    return names


def encoder_for(
    fmt: str, row_format: RowLayout, transform: Transform | None, validate: Validator | None, options: LoadOptions
) -> Encoder:
    """The encoder of format ``fmt`` for a load."""
    from s3_postgres_copy.formats import get_format

    return get_format(fmt).encoder_class().for_load(row_format, transform, validate, options)
