"""Blocks of lines → COPY rows, one encoder class per file format (as dlt has one load job per format).

Each encoder turns the :class:`~s3_postgres_copy.records.LineBlock` stream of its format into
:class:`~s3_postgres_copy.documents.EncodedBlock` payloads in the load's row layout
(:mod:`s3_postgres_copy.rows`), with the records that could not become a document as rejects.
The format registry (:mod:`s3_postgres_copy.formats`) names the class of each format.

What one payload holds is bounded by its *output* size (:data:`PAYLOAD_BYTES`): a block of
tiny records under a long key would otherwise grow many times over (each row repeats the key,
ETag, batch and timestamp).

Each encoder works in two steps: :meth:`Encoder.units` (the stateful part: cutting blocks,
parsing CSV with its header, counting lines) and :meth:`Encoder.encode_unit` (a pure function
of one unit: records → documents → rows). The record path's units can therefore be encoded in
worker processes, in order (:mod:`s3_postgres_copy.pipeline`, ``transform_workers``), with the
same rows, rejects and line counts as in this process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

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
from s3_postgres_copy.jsoncodec import MAX_DEPTH, TOO_DEEP, nested_deeper_than_limit
from s3_postgres_copy.records import JSON_WHITESPACE, LineBlock, LineCount, csv_records

if TYPE_CHECKING:
    from s3_postgres_copy.options import LoadOptions
    from s3_postgres_copy.rows import RowLayout

PAYLOAD_BYTES = 4 << 20
"""About the most COPY row bytes one encoded block holds."""
BLOCK_BYTES = 1 << 20
"""Documents per CSV block (before the row layout adds its fields)."""
_UTF8_BOM = b"\xef\xbb\xbf"

U = TypeVar("U")


class Encoder(ABC, Generic[U]):
    """One file format's records → COPY rows in the load's row layout.

    ``encode(blocks)`` is ``map(encode_unit, units(blocks))``: :meth:`units` holds the stream's
    state, :meth:`encode_unit` none (it may run in another process, on a copy of the encoder).

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
    ) -> Encoder[Any]:
        """The encoder for a load (formats with options of their own read them from ``options``)."""
        return cls(row_format, transform, validate)

    @property
    def runs_user_code(self) -> bool:
        """Whether each record goes through a transform or a schema check (what worker processes can spread)."""
        return not self.builder.keeps_lines

    def encode(self, blocks: Iterable[LineBlock]) -> Iterator[EncodedBlock]:
        """Encode the object's line blocks, in this process."""
        return map(self.encode_unit, self.units(blocks))

    @abstractmethod
    def units(self, blocks: Iterable[LineBlock]) -> Iterator[U]:
        """The object's units of work, in order (the encoder's stateful part)."""

    @abstractmethod
    def encode_unit(self, unit: U) -> EncodedBlock:
        """One unit's COPY rows, rejects and line counts (no state: it may run in a worker process)."""


class JsonLinesEncoder(Encoder[LineBlock]):
    """JSON lines → COPY rows: each line's text is the document (fast path) or the record path's."""

    def units(self, blocks: Iterable[LineBlock]) -> Iterator[LineBlock]:
        """Every block; one whose rows would exceed :data:`PAYLOAD_BYTES` in pieces of fewer lines."""
        overhead = self.row_format.row_overhead
        for block in blocks:
            if len(block.data) + block.count * overhead <= PAYLOAD_BYTES:
                yield block
                continue
            per_line = len(block.data) / block.count + overhead
            yield from split_block(block, max(1, int(PAYLOAD_BYTES // per_line)))

    def encode_unit(self, unit: LineBlock) -> EncodedBlock:
        """Encode one block (:meth:`encode_block`)."""
        return self.encode_block(unit)

    def encode_block(self, block: LineBlock) -> EncodedBlock:
        """Encode one block; lines that cannot be documents become rejects."""
        data = block.data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        if self.builder.keeps_lines and all_lines_open_objects(data, block.count) and is_utf8(data):
            docs = self.row_format.fields(data)
            if data.endswith(b"\n"):
                docs.pop()
            # A line can only nest deeper than the limit if it is long: only then is anything scanned.
            if max(map(len, docs), default=0) <= 2 * MAX_DEPTH + 1 or not any(map(nested_deeper_than_limit, docs)):
                lines = range(block.first_line, block.first_line + block.count)
                return EncodedBlock(self.row_format.rows(docs, lines), lines, lines_read=block.count)
        return self._encode_lines(block, data)

    def _encode_lines(self, block: LineBlock, data: bytes) -> EncodedBlock:
        raws = data.split(b"\n")
        if data.endswith(b"\n"):
            raws.pop()
        fast = self.builder.keeps_lines
        from_json = self.builder.from_json
        docs: list[bytes] = []
        lines: list[int] = []
        add_doc, add_line = docs.append, lines.append
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
                    if nested_deeper_than_limit(raw):
                        raise ValueError(TOO_DEEP)
                    add_doc(raw)
                else:
                    add_doc(from_json(raw))
            except ValueError as err:
                out.rejects.append(Reject(number, raw, reason_of(err)))
                continue
            add_line(number)
        if docs:
            out.payload = self.row_format.encode(docs, lines)
            if lines[-1] - lines[0] + 1 == len(lines):  # no gap: a range (segments store it as one run)
                out.lines = range(lines[0], lines[-1] + 1)
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


CsvRow = tuple[int, list[str] | None, str | None, str]
"""A parsed CSV record as a unit carries it: ``(line, fields or None, error or None, raw text)``."""


@dataclass(slots=True)
class CsvBatch:
    """Parsed CSV records to encode, and the physical lines read for them (the parent's count).

    :param header: the header's column names.
    :param records: the records after the header, in order.
    """

    header: list[str]
    records: list[CsvRow]
    lines_read: int = 0
    blank_lines: int = 0
    header_lines: int = 0
    continuation_lines: int = 0


class CsvEncoder(Encoder[CsvBatch]):
    """CSV with a header row → COPY rows of ``{header: value}`` documents (or transformed ones).

    The stream is parsed here (:meth:`units`: a record may span lines and blocks, and the header
    comes first); batches of parsed records of about :data:`BLOCK_BYTES` of documents (estimated
    from the fields' and the header's lengths) become rows in :meth:`encode_unit`.
    """

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
    ) -> Encoder[Any]:
        """CSV reads ``csv_delimiter``."""
        return cls(row_format, transform, validate, delimiter=options.csv_delimiter)

    def units(self, blocks: Iterable[LineBlock]) -> Iterator[CsvBatch]:
        """Parse the whole CSV stream into batches of records (the last one may hold none)."""
        records, counter = csv_records(blocks, delimiter=self.delimiter)
        header: list[str] | None = None
        seen = LineCount()
        batch = CsvBatch([], [])
        rows: list[CsvRow] = batch.records
        size = rows_size = fixed = width = 0
        overhead = self.row_format.row_overhead
        for record in records:
            batch.continuation_lines += counter.lines - record.line
            if header is None:
                if record.fields is None:
                    raise ConfigurationError(f"line {record.line}: the CSV header cannot be read: {record.error}")
                header = _check_header(record.fields, record.line)
                batch.header, batch.header_lines = header, 1
                width, fixed = len(header), 1 + sum(len(name) + 6 for name in header)  # {"k":"v",...}: {}, "":"" and ,
                continue
            fields = record.fields
            rows.append((record.line, fields, record.error, record.raw))
            if fields is None or len(fields) != width:
                continue  # a reject: no row
            doc = fixed + sum(map(len, fields))  # the document's size without a transform (or escapes)
            size += doc
            rows_size += doc + overhead
            if size >= BLOCK_BYTES or rows_size >= PAYLOAD_BYTES:
                yield _counted(batch, counter, seen)
                batch = CsvBatch(header, [])
                rows, size, rows_size = batch.records, 0, 0
        yield _counted(batch, counter, seen)

    def encode_unit(self, unit: CsvBatch) -> EncodedBlock:
        """The batch's documents as rows; records that cannot be documents as rejects."""
        header, delimiter, build = unit.header, self.delimiter, self.builder.build
        docs: list[bytes] = []
        lines: list[int] = []
        out = EncodedBlock(
            b"",
            lines,
            lines_read=unit.lines_read,
            blank_lines=unit.blank_lines,
            header_lines=unit.header_lines,
            continuation_lines=unit.continuation_lines,
        )
        for line, fields, error, raw in unit.records:
            reject = self._reject(fields, error, header)
            if reject is None:
                assert fields is not None
                try:
                    doc = build(dict(zip(header, fields, strict=True)))
                except ValueError as err:
                    reject = str(err)
                else:
                    docs.append(doc)
                    lines.append(line)
                    continue
            text = raw if fields is None else delimiter.join(fields)
            out.rejects.append(Reject(line, text.encode("utf-8", "surrogateescape"), reject))
        if docs:
            out.payload = self.row_format.encode(docs, lines)
        return out

    @staticmethod
    def _reject(fields: list[str] | None, error: str | None, header: list[str]) -> str | None:
        """Why a parsed record cannot be a document before it is built, if it cannot."""
        if fields is None:
            return error or "invalid CSV"
        if len(fields) != len(header):
            return f"expected {len(header)} fields (the header's), got {len(fields)}"
        return None


def _counted(batch: CsvBatch, counter: LineCount, seen: LineCount) -> CsvBatch:
    """Give the batch the lines (and blank lines) read since the previous batch."""
    batch.lines_read, batch.blank_lines = counter.lines - seen.lines, counter.blank - seen.blank
    seen.lines, seen.blank = counter.lines, counter.blank
    return batch


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
) -> Encoder[Any]:
    """The encoder of format ``fmt`` for a load."""
    from s3_postgres_copy.formats import get_format

    return get_format(fmt).encoder_class().for_load(row_format, transform, validate, options)
