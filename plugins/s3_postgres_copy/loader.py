"""One load, wired from the stages: source → records → documents → COPY rows → sink.

No Airflow here: the operator supplies a connection and a URL factory, and this
module can be driven by tests, the benchmark or any script the same way.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from s3_postgres_copy.choices import COMPRESSIONS, COPY_FORMATS, FORMATS, MODES
from s3_postgres_copy.copy_format import BinaryRowFormat, CopyRows, RowFormat, binary_row_format
from s3_postgres_copy.documents import (
    CsvEncoder,
    EncodedBlock,
    JsonLinesEncoder,
    Reject,
    Transform,
    loads_record,
    resolve_transform,
    schema_validator,
)
from s3_postgres_copy.exceptions import BadRecordError, LoadError, TooManyBadRecordsError
from s3_postgres_copy.identifiers import split_table, table_identifier
from s3_postgres_copy.records import DEFAULT_MAX_LINE_BYTES, LineTooLongError, line_blocks
from s3_postgres_copy.sink import (
    DRIVER_ERRORS,
    Columns,
    PostgresSink,
    copy_error_row,
    error_reason,
    is_data_error,
)
from s3_postgres_copy.source import HttpObjectSource, gunzip, sniff_gzip

log = logging.getLogger(__name__)

Format = Literal["auto", "jsonl", "csv"]
Compression = Literal["auto", "none", "gzip"]
Mode = Literal["replace", "append"]
CopyFormat = Literal["auto", "text", "binary"]
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonlines")
CSV_SUFFIXES = (".csv",)
SEGMENT_BYTES = 32 << 20
REPORTED_REJECTS = 5


@dataclass(slots=True)
class LoadOptions:
    """What to load and how; validated by :meth:`check` before any I/O."""

    bucket: str
    key: str
    table: str
    format: Format = "auto"
    compression: Compression = "auto"
    mode: Mode = "replace"
    max_bad_rows: int = 0
    max_bad_ratio: float | None = None
    transform: str | Transform | None = None
    schema: Mapping[str, Any] | None = None
    columns: Columns = field(default_factory=Columns)
    create_table: bool = True
    batch_id: str | None = None
    csv_delimiter: str = ","
    raw_limit: int = 10_000
    segment_bytes: int = SEGMENT_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    copy_format: CopyFormat = "auto"
    """COPY rows: ``binary`` is faster for the server; ``auto`` uses it in strict mode when the column
    types allow (jsonb/json/text document, text/varchar metadata, timestamptz/timestamp ``loaded_at``,
    bigint ``source_line``) and text rows otherwise; tolerant mode always sends text rows."""

    @property
    def location(self) -> str:
        """``s3://bucket/key`` for messages."""
        return f"s3://{self.bucket}/{self.key}"

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        split_table(self.table)
        for name, value, allowed in (
            ("format", self.format, FORMATS),
            ("compression", self.compression, COMPRESSIONS),
            ("mode", self.mode, MODES),
            ("copy_format", self.copy_format, COPY_FORMATS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.bucket or not self.key:
            raise ValueError("s3_bucket and s3_key must not be empty")
        for name, minimum in (("max_bad_rows", 0), ("raw_limit", 0), ("segment_bytes", 1), ("max_line_bytes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                kind = "non-negative" if minimum == 0 else "positive"
                raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
        if self.max_bad_ratio is not None and (
            isinstance(self.max_bad_ratio, bool)
            or not isinstance(self.max_bad_ratio, int | float)
            or not 0 <= self.max_bad_ratio <= 1
        ):
            raise ValueError(f"max_bad_ratio must be a number between 0 and 1, got {self.max_bad_ratio!r}")
        if self.tolerant:
            table_identifier(self.table, "_rejects")
            if self.copy_format == "binary":
                raise ValueError(
                    "copy_format='binary' needs strict mode (max_bad_rows=0, no max_bad_ratio): "
                    "tolerant mode re-sends refused segments as text rows"
                )
        if self.mode == "replace" and self.columns.source_key is None:
            raise ValueError("mode='replace' needs the source_key column; use mode='append' without it")
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n':
            raise ValueError(
                f"csv_delimiter must be one character other than a quote or newline, got {self.csv_delimiter!r}"
            )
        resolve_transform(self.transform)
        try:
            schema_validator(self.schema)
        except Exception as err:  # jsonschema's SchemaError is not a ValueError
            raise ValueError(f"schema is not a valid JSON Schema: {err}") from err

    @property
    def tolerant(self) -> bool:
        """Whether bad records go to the rejects table instead of failing the load."""
        return self.max_bad_rows > 0 or bool(self.max_bad_ratio)


@dataclass(slots=True)
class LoadStats:
    """What a load did; the operator returns :meth:`as_dict` as its XCom."""

    source_bucket: str
    source_key: str
    table: str
    batch_id: str | None
    mode: str
    source_etag: str | None = None
    format: str | None = None
    compression: str | None = None
    copy_format: str | None = None
    rows_copied: int = 0
    rows_streamed: int = 0
    rows_rejected: int = 0
    rows_deleted: int = 0
    lines_read: int = 0
    blank_lines: int = 0
    header_lines: int = 0
    continuation_lines: int = 0
    bytes_read: int = 0
    bytes_decompressed: int = 0
    content_length: int | None = None
    requests: int = 0
    resumes: int = 0
    resigns: int = 0
    seconds: float = 0.0
    first_rejects: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (rates included)."""
        out = asdict(self)
        out["rows_per_second"] = round(self.rows_copied / self.seconds, 1) if self.seconds else None
        out["mb_per_second"] = round(self.bytes_decompressed / 1e6 / self.seconds, 2) if self.seconds else None
        return out


ProgressCallback = Callable[[LoadStats], None]


def format_from_key(key: str) -> Literal["jsonl", "csv"] | None:
    """The format the key's suffix names (``.jsonl``, ``.csv.gz``, ...), if any."""
    name = key.lower().removesuffix(".gz").removesuffix(".gzip")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def detect_format(key: str, head: bytes) -> Literal["jsonl", "csv"]:
    """JSON lines or CSV, from the key's suffix or else the first non-blank byte."""
    by_name = format_from_key(key)
    if by_name is not None:
        return by_name
    start = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return "jsonl" if start[:1] == b"{" else "csv"


def _peek(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 4096:
            break

    def rest() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return head, rest()


class _Load:
    """The state of one running load."""

    def __init__(
        self,
        sink: PostgresSink,
        source: HttpObjectSource,
        options: LoadOptions,
        progress: ProgressCallback | None,
    ) -> None:
        self.sink = sink
        self.source = source
        self.options = options
        self.progress = progress
        self.started = time.monotonic()
        self.loaded_at = datetime.datetime.now(datetime.UTC)
        self.stats = LoadStats(options.bucket, options.key, options.table, options.batch_id, options.mode)
        self.pending_rejects: list[Reject] = []

    # -- stages --------------------------------------------------------------------------
    def decompressed(self) -> Iterator[bytes]:
        options, stats = self.options, self.stats
        chunks = self.source.chunks()
        if options.compression == "none":
            gz = False
        else:
            gz, chunks = sniff_gzip(chunks)
            if options.compression == "gzip" and not gz:
                raise LoadError(f"{options.location} is not gzip (compression='gzip' but no gzip header)")
        stats.compression = "gzip" if gz else "none"
        stream = gunzip(chunks, name=options.location) if gz else chunks
        for chunk in stream:
            stats.bytes_decompressed += len(chunk)
            yield chunk

    def detected(self) -> tuple[str, Iterator[bytes]]:
        """The object's format (from the options, or its key and first bytes) and its decompressed chunks."""
        options = self.options
        head, chunks = _peek(self.decompressed())
        fmt = detect_format(options.key, head) if options.format == "auto" else options.format
        self.stats.format = fmt
        return fmt, chunks

    def row_format(self) -> CopyRows:
        """Binary COPY rows where strict mode and the column types allow them, text rows otherwise."""
        options, sink = self.options, self.sink
        with_line = options.columns.source_line is not None
        values: dict[str, object] = {
            "source_key": options.key,
            "source_etag": self.source.etag,
            "batch_id": options.batch_id,
            "loaded_at": self.loaded_at,
        }
        constants = {role: values[role] for role in options.columns.constant_roles()}
        if options.copy_format != "text" and not options.tolerant:
            layout = binary_row_format(sink.role_types(), constants, with_line=with_line)
            if isinstance(layout, BinaryRowFormat):
                sink.binary = True
                self.stats.copy_format = "binary"
                return layout
            if options.copy_format == "binary":
                raise ValueError(f"copy_format='binary' cannot load {options.table}: {layout}")
        self.stats.copy_format = "text"
        return RowFormat(list(constants.values()), with_line=with_line)

    def encoded(self, fmt: str, chunks: Iterator[bytes], row_format: CopyRows) -> Iterator[EncodedBlock]:
        options = self.options
        transform = resolve_transform(options.transform)
        validate = schema_validator(options.schema)
        blocks = line_blocks(chunks, options.max_line_bytes)
        if fmt == "csv":
            return CsvEncoder(row_format, transform, validate, delimiter=options.csv_delimiter).encode(blocks)
        return JsonLinesEncoder(row_format, transform, validate).encode(blocks)

    # -- accounting ----------------------------------------------------------------------
    def account(self, block: EncodedBlock) -> None:
        stats = self.stats
        stats.lines_read += block.lines_read
        stats.blank_lines += block.blank_lines
        stats.header_lines += block.header_lines
        stats.continuation_lines += block.continuation_lines
        stats.bytes_read = self.source.offset
        stats.content_length = self.source.content_length
        stats.rows_streamed += len(block.lines)
        for reject in block.rejects:
            self.reject(reject)
        if self.progress is not None:
            stats.seconds = time.monotonic() - self.started
            self.progress(stats)

    def reject(self, reject: Reject) -> None:
        options, stats = self.options, self.stats
        if not options.tolerant:
            raise BadRecordError(options.location, reject.line, reject.error)
        stats.rows_rejected += 1
        if len(stats.first_rejects) < REPORTED_REJECTS:
            stats.first_rejects.append({"line": reject.line, "error": reject.error})
        if stats.rows_rejected > options.max_bad_rows and options.max_bad_ratio is None:
            raise self.too_many()
        self.pending_rejects.append(reject)

    def too_many(self) -> TooManyBadRecordsError:
        stats = self.stats
        first = sorted((r["line"], r["error"]) for r in stats.first_rejects)
        limit = self.options.max_bad_rows
        return TooManyBadRecordsError(self.options.location, limit, first, stats.rows_rejected)

    def flush_rejects(self) -> None:
        options = self.options
        limit = options.raw_limit
        rows = [
            (
                options.batch_id,
                options.key,
                r.line,
                r.raw.decode("utf-8", "replace").replace("\x00", "\\u0000")[:limit],
                r.error.replace("\x00", "\\u0000"),
            )
            for r in self.pending_rejects
        ]
        self.pending_rejects.clear()
        self.sink.insert_rejects(rows)

    # -- COPY ----------------------------------------------------------------------------
    def run(self) -> LoadStats:
        options, sink, stats = self.options, self.sink, self.stats
        fmt, chunks = self.detected()
        sink.prepare(create_table=options.create_table, with_rejects=options.tolerant)
        if options.columns.source_key is not None:
            sink.lock_source(options.key)
        if options.mode == "replace":
            stats.rows_deleted = sink.delete_source(options.key, rejects=options.tolerant)
        blocks = iter(self.encoded(fmt, chunks, self.row_format()))
        upcoming = next(blocks, None)
        while upcoming is not None:
            segment: list[EncodedBlock] = []

            def feed(segment: list[EncodedBlock] = segment) -> Iterator[bytes]:
                nonlocal upcoming
                size = 0
                while upcoming is not None:
                    block = upcoming
                    self.account(block)
                    if block.payload:
                        # Tolerant mode may have to re-send the segment; strict mode keeps only
                        # the line numbers (to name the line of a row the server refuses).
                        segment.append(block if options.tolerant else EncodedBlock(b"", block.lines))
                        size += len(block.payload)
                        yield block.payload
                    # The next block is read and encoded before this segment's COPY ends, while
                    # the server still parses the rows in flight: the next COPY starts with its
                    # first rows ready instead of leaving the server idle for a block's work.
                    upcoming = next(blocks, None)
                    if size >= options.segment_bytes:
                        return

            self.copy_segment(feed(), segment)
            if self.pending_rejects:
                self.flush_rejects()
        if options.max_bad_ratio is not None:
            total = stats.rows_copied + stats.rows_rejected
            if (
                stats.rows_rejected > options.max_bad_rows
                and total
                and stats.rows_rejected / total > options.max_bad_ratio
            ):
                raise self.too_many()
        stats.bytes_read = self.source.offset
        stats.source_etag = self.source.etag
        stats.content_length = self.source.content_length
        stats.requests, stats.resumes, stats.resigns = (
            self.source.requests,
            self.source.resumes,
            self.source.resigns,
        )
        return stats

    def copy_segment(self, payloads: Iterable[bytes], segment: list[EncodedBlock]) -> None:
        sink, options = self.sink, self.options
        if options.tolerant:
            sink.savepoint()
        try:
            sink.copy(payloads)
        except LoadError:
            raise
        except DRIVER_ERRORS as err:
            row = copy_error_row(err)
            if not (options.tolerant and row is not None and is_data_error(err)):
                raise self.server_error(err, row, segment) from None
            sink.rollback_segment()
            self.retry_segment(segment, row, err)
        else:
            if options.tolerant:
                sink.release()
            self.stats.rows_copied += sum(len(block.lines) for block in segment)

    def server_error(self, err: Exception, row: int | None, segment: list[EncodedBlock]) -> LoadError:
        location = self.options.location
        if row is not None:
            line = _line_of(segment, row)
            if line is not None:
                return BadRecordError(location, line, error_reason(err))
        return LoadError(f"Loading {location} into {self.options.table} failed: {error_reason(err)}")

    def retry_segment(self, segment: list[EncodedBlock], row: int, err: Exception) -> None:
        """Tolerant mode: reject the rows the server refused and load the rest of the segment."""
        sink = self.sink
        rows = b"".join(block.payload for block in segment).split(b"\n")
        rows.pop()
        lines = [line for block in segment for line in block.lines]
        # One pass of Python validation finds invalid JSON in bulk; the server finds the rest.
        if self.stats.format == "jsonl" and self.options.transform is None and self.options.schema is None:
            keep = []
            for index, encoded in enumerate(rows):
                raw = RowFormat.document_of(encoded)
                try:
                    loads_record(raw)
                except ValueError as bad:
                    self.reject(Reject(lines[index], raw, str(bad)))
                else:
                    keep.append(index)
            if len(keep) < len(rows):
                rows, lines = [rows[i] for i in keep], [lines[i] for i in keep]
                row = 0  # re-run the server check on what is left
        pending: Exception | None = err if row else None
        while rows:
            if pending is not None:
                position = (copy_error_row(pending) or 1) - 1
                self.reject(Reject(lines[position], RowFormat.document_of(rows[position]), error_reason(pending)))
                del rows[position], lines[position]
                pending = None
                if not rows:
                    break
            sink.savepoint()
            try:
                sink.copy([b"\n".join(rows) + b"\n"])
            except DRIVER_ERRORS as again:
                if not (copy_error_row(again) and is_data_error(again)):
                    raise self.server_error(again, copy_error_row(again), [EncodedBlock(b"", lines)]) from None
                sink.rollback_segment()
                pending = again
            else:
                sink.release()
                self.stats.rows_copied += len(rows)
                return


def _line_of(segment: list[EncodedBlock], row: int) -> int | None:
    """The source line of the ``row``-th (1-based) COPY row of a segment."""
    for block in segment:
        if row <= len(block.lines):
            return block.lines[row - 1]
        row -= len(block.lines)
    return None


def load_object(
    conn: Any,
    source: HttpObjectSource,
    options: LoadOptions,
    *,
    progress: ProgressCallback | None = None,
) -> LoadStats:
    """Load one S3 object into ``options.table`` in one transaction; return its stats.

    On any error the transaction is rolled back and a :class:`LoadError` (or
    ``ValueError`` for bad options) says what went wrong, where.
    """
    options.check()  # names, choices, transform and schema: before any I/O
    sink = PostgresSink(conn, options.table, options.columns)
    load = _Load(sink, source, options, progress)
    try:
        source.open()
        stats = load.run()
        sink.commit()
    except LineTooLongError as err:
        sink.rollback()
        raise BadRecordError(options.location, err.line, str(err)) from None
    except (LoadError, ValueError) as err:
        sink.rollback()
        if isinstance(err, ValueError) and not isinstance(err, LoadError):
            raise LoadError(f"Loading {options.location} into {options.table} failed: {err}") from err
        raise
    except BaseException:
        sink.rollback()
        raise
    stats.seconds = time.monotonic() - load.started
    return stats
