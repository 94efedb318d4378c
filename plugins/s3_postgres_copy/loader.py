"""One load, wired from the stages: source → records → documents → COPY rows → sink.

No Airflow here: the operator supplies a connection and a URL factory, and this module can
be driven by tests, the benchmark or any script the same way. Each decision is made by the
object that owns it: the format (``formats``), the compression (``compression``), the row
layout (``rows``), what happens to the table's other rows (``modes``), how the rows are cut
into COPY statements (``segments``) and what a refused row costs (``tolerant``).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.checks import run_checks
from s3_postgres_copy.compression import decompressed
from s3_postgres_copy.dberrors import (
    DRIVER_ERRORS,
    copy_error_row,
    error_detail,
    error_reason,
    is_data_error,
    load_error,
)
from s3_postgres_copy.encoders import encoder_for
from s3_postgres_copy.exceptions import (
    BadRecordError,
    CheckFailedError,
    ConfigurationError,
    LoadError,
    TooManyBadRecordsError,
)
from s3_postgres_copy.formats import SNIFF_BYTES, detect_format
from s3_postgres_copy.ledger import Ledger
from s3_postgres_copy.merge import missing_key_reason
from s3_postgres_copy.options import LoadOptions, PreparedLoad
from s3_postgres_copy.pipeline import encoded_blocks
from s3_postgres_copy.records import LineTooLongError, line_blocks
from s3_postgres_copy.rows import RowLayout, choose_layout
from s3_postgres_copy.segments import Segment, Segments
from s3_postgres_copy.sink import PostgresSink
from s3_postgres_copy.stats import REPORTED_REJECTS, LoadStats, ProgressCallback
from s3_postgres_copy.stream import coalesce, peek
from s3_postgres_copy.tolerant import TolerantCopy

if TYPE_CHECKING:
    from s3_postgres_copy.documents import EncodedBlock, Reject
    from s3_postgres_copy.source import HttpObjectSource

log = logging.getLogger(__name__)

__all__ = ["LoadOptions", "LoadStats", "PreparedLoad", "load_object"]


class _Load:
    """The state of one running load (what :class:`~s3_postgres_copy.modes.LoadState` describes)."""

    def __init__(
        self,
        sink: PostgresSink,
        source: HttpObjectSource,
        plan: PreparedLoad,
        progress: ProgressCallback | None,
        progress_interval: float,
    ) -> None:
        self.sink = sink
        self.source = source
        self.plan = plan
        self.options = options = plan.options
        self.progress = progress
        self.progress_interval = progress_interval
        self.started = time.monotonic()
        self.loaded_at = datetime.datetime.now(datetime.UTC)
        self.stats = LoadStats(options.bucket, options.key, options.table, options.batch_id, options.mode)
        self.pending_rejects: list[Reject] = []
        self.ledger: Ledger | None = None
        self.copied = 0
        """Rows the server's COPY commands reported."""

    # -- stages --------------------------------------------------------------------------
    def blocks(self, layout: RowLayout) -> Iterator[EncodedBlock]:
        """The object's encoded blocks: decompressed, its format detected, cut into lines, encoded.

        The record path (a transform or a schema) is encoded by ``transform_workers`` processes, in order
        (:mod:`~s3_postgres_copy.pipeline`); they start at the first block, before any thread of the load.
        """
        options, stats = self.options, self.stats
        stats.compression, chunks = decompressed(self.source.chunks(), options.compression, options.location)
        # Tiny chunks (one per gzip member, say) are joined into reads' sizes: per-block work stays amortised.
        head, chunks = peek(self._counted(coalesce(chunks, self.source.chunk_size)), SNIFF_BYTES)
        stats.format = detect_format(options.key, head, options.format, delimiter=options.csv_delimiter)
        encoder = encoder_for(stats.format, layout, self.plan.transform, self.plan.validate, options)
        lines = line_blocks(chunks, options.max_line_bytes)
        return encoded_blocks(encoder, lines, options.transform_workers, location=options.location, stats=stats)

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.stats.bytes_decompressed += len(chunk)
            yield chunk

    def layout(self) -> RowLayout:
        """The row layout: binary rows where strict mode and the column types allow them, text rows otherwise."""
        options = self.options
        values: dict[str, object] = {
            "source_key": options.key,
            "source_etag": self.source.etag,
            "batch_id": options.batch_id,
            "loaded_at": self.loaded_at,
        }
        constants = {role: values[role] for role in options.columns.constant_roles()}
        layout = choose_layout(
            options.copy_format,
            self.sink.role_types(),
            constants,
            with_line=options.columns.source_line is not None,
            tolerant=options.tolerant,
            table=options.table,
        )
        self.stats.copy_format = layout.name
        return layout

    # -- accounting ----------------------------------------------------------------------
    def account(self, block: EncodedBlock) -> None:
        """Count a block's lines and rows, record its rejects and report progress."""
        stats = self.stats
        stats.lines_read += block.lines_read
        stats.blank_lines += block.blank_lines
        stats.header_lines += block.header_lines
        stats.continuation_lines += block.continuation_lines
        stats.rows_streamed += len(block.lines)
        for reject in block.rejects:
            self.reject(reject)
        if self.progress is not None:
            stats.record_source(self.source)
            stats.seconds = time.monotonic() - self.started
            self.progress(stats)

    def reject(self, reject: Reject) -> None:
        """A bad record: the load's error in strict mode, else a row for the rejects table."""
        options, stats = self.options, self.stats
        if not options.tolerant:
            raise BadRecordError(options.location, reject.line, reject.reason)
        stats.rows_rejected += 1
        if len(stats.first_rejects) < REPORTED_REJECTS:
            stats.first_rejects.append({"line": reject.line, "error": reject.reason})
        if stats.rows_rejected > options.max_bad_rows and options.max_bad_ratio is None:
            raise self.too_many()
        self.pending_rejects.append(reject)

    def too_many(self) -> TooManyBadRecordsError:
        """The error for more bad records than allowed."""
        stats = self.stats
        first = sorted((r["line"], r["error"]) for r in stats.first_rejects)
        return TooManyBadRecordsError(self.options.location, self.options.max_bad_rows, first, stats.rows_rejected)

    def check_ratio(self) -> None:
        """With ``max_bad_ratio``, fail once all records are counted if too many were bad."""
        options, stats = self.options, self.stats
        if options.max_bad_ratio is None:
            return
        total = stats.rows_copied + stats.rows_rejected
        if stats.rows_rejected > options.max_bad_rows and total and stats.rows_rejected / total > options.max_bad_ratio:
            raise self.too_many()

    def flush_rejects(self) -> None:
        """Write the rejects recorded so far to ``<table>_rejects``."""
        options, limit = self.options, self.options.raw_limit
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

    # -- the transaction -------------------------------------------------------------------
    def run(self) -> LoadStats:
        """Prepare and lock the table, let the mode act, COPY every segment, check, record; return the stats."""
        mode, stats = self.plan.mode, self.stats
        self.prepare()
        mode.prepare(self)
        self.lock()
        if self.unchanged():
            return stats
        mode.before_copy(self)
        self.copy_all()
        self.check_ratio()
        mode.before_commit(self)
        self.verify()
        stats.record_source(self.source)
        if self.ledger is not None:
            started_at = self.loaded_at
            self.ledger.record(stats, started_at=started_at, state=mode.ledger_state(self))
        return stats

    def prepare(self) -> None:
        """The table (and the rejects table, and the ledger) exist with the columns the load writes."""
        options, sink = self.options, self.sink
        sink.lock_timeout, sink.lock_interval = options.lock_timeout, self.progress_interval
        sink.prepare(create_table=options.create_table, with_rejects=options.tolerant)
        if options.ledger is False:
            return
        ledger = Ledger(sink)
        if not ledger.exists():
            if not options.create_table:
                name = sink.quoted(ledger.table)
                if options.ledger or options.skip_unchanged:
                    raise ConfigurationError(
                        f"the load ledger {name} does not exist and create_table is False; create it (a load "
                        "with create_table=True does), or set ledger=False (and skip_unchanged=False)"
                    )
                log.warning("No load ledger %s (create_table is False): this load is not recorded", name)
                return
            ledger.create()
        self.ledger = ledger

    def lock(self) -> None:
        """Lock the table for writing and the object against a concurrent load of it, logging any wait."""
        options, sink, stats = self.options, self.sink, self.stats
        timeout, interval = options.lock_timeout, self.progress_interval
        stats.lock_wait_seconds += sink.lock_table(timeout=timeout, interval=interval)
        if options.columns.source_key is not None:
            stats.lock_wait_seconds += sink.lock_source(options.key, timeout=timeout, interval=interval)
        if timeout is not None:  # the rest of the transaction (row locks of a merge, say) too
            sink.execute(sql.SQL("SELECT set_config('lock_timeout', %s, true)"), [f"{int(timeout * 1000)}ms"])

    def unchanged(self) -> bool:
        """With ``skip_unchanged``: whether the object is the one the last committed load of its key loaded."""
        options, stats = self.options, self.stats
        if not options.skip_unchanged or self.ledger is None or not self.source.etag:
            return False
        last = self.ledger.last_load(options.key)
        if last is None or last.source_etag != self.source.etag:
            return False
        self.source.close()
        stats.record_source(self.source)
        stats.skipped = True
        stats.skip_reason = (
            f"unchanged: ETag {last.source_etag} was loaded by batch {last.batch_id} "
            f"at {last.finished_at:%Y-%m-%d %H:%M:%S %Z} ({last.mode}); nothing was rewritten"
        )
        log.info("Skipping %s: %s", options.location, stats.skip_reason)
        return True

    def copy_all(self) -> None:
        """COPY the object's rows, segment by segment."""
        options, sink, stats = self.options, self.sink, self.stats
        layout = self.layout()
        tolerant = (
            TolerantCopy(
                sink,
                layout,
                reject=self.reject,
                server_error=self.server_error,
                describe=self.describe_refusal,
                parse_documents=self.plan.transform is None and self.plan.validate is None,
            )
            if options.tolerant
            else None
        )
        # A table created in this transaction can take frozen rows (no later freezing VACUUM, no hint-bit writes).
        freeze = sink.created and sink.copy_table == sink.table and tolerant is None
        # Closed on any failure: transform worker processes stop at once, not when the load is collected.
        blocks = self.blocks(layout)
        keep = tolerant is not None
        try:
            for segment, payloads in Segments(
                blocks, segment_bytes=options.segment_bytes, keep_payloads=keep, on_block=self.account
            ):
                if tolerant is not None:
                    copied = tolerant.copy(segment, payloads)
                    stats.rows_copied += copied
                    stats.copy_statements = tolerant.statements
                    self.copied += copied
                    if self.pending_rejects:
                        self.flush_rejects()
                else:
                    self.copy_strict(segment, payloads, layout, freeze=freeze)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    def verify(self) -> None:
        """Before commit: the mode's row counts add up, and the user's checks hold for the rows written."""
        options, mode = self.options, self.plan.mode
        if options.reconcile:
            problems = mode.reconcile(self, self.copied)
            if problems:
                raise CheckFailedError(options.location, "row count", "; ".join(problems))
        if self.plan.checks:
            passed = run_checks(self.sink, self.plan.checks, mode.written(self), location=options.location)
            log.info("Checks passed for %s before commit: %s", options.location, ", ".join(passed))

    def copy_strict(self, segment: Segment, payloads: Iterator[bytes], layout: RowLayout, *, freeze: bool) -> None:
        """COPY one segment; a refused row fails the load, naming its source line."""
        self.stats.copy_statements += 1
        try:
            self.copied += self.sink.copy(payloads, layout, freeze=freeze)
        except DRIVER_ERRORS as err:
            raise self.server_error(err, segment) from None
        self.stats.rows_copied += segment.rows

    def server_error(self, err: BaseException, segment: Segment | None = None) -> LoadError:
        """The load's error for a driver error: a bad record (with its line) only if it is about a row's data."""
        row = copy_error_row(err)
        if segment is not None and row is not None and is_data_error(err):
            line = segment.lines.line_of(row)
            if line is not None:
                return BadRecordError(self.options.location, line, self.row_error_reason(err))
        return load_error(err, location=self.options.location, table=self.options.table)

    def describe_refusal(self, err: BaseException) -> tuple[str, str]:
        """A refused row's reason for the rejects table (the server's detail) and for logs (without values)."""
        reason = self.row_error_reason(err)
        return (error_detail(err) if reason == error_reason(err) else reason), reason

    def row_error_reason(self, err: BaseException) -> str:
        """Why the server refused a row, without the row's values (a missing merge key said as such)."""
        if self.options.merge_key is not None:
            reason = missing_key_reason(
                getattr(getattr(err, "diag", None), "constraint_name", None), self.options.merge_key
            )
            if reason is not None:
                return reason
        return error_reason(err)


def load_object(
    conn: Any,
    source: HttpObjectSource,
    options: LoadOptions | PreparedLoad,
    *,
    progress: ProgressCallback | None = None,
    progress_interval: float = 10.0,
) -> LoadStats:
    """Load one S3 object into ``options.table`` in one transaction; return its stats.

    :param progress: called with the running stats after each block.
    :param progress_interval: seconds between log lines while waiting for a lock.

    On any error the transaction is rolled back and a :class:`~s3_postgres_copy.exceptions.LoadError`
    says what went wrong, where, and (terminal or transient) whether a retry can help.
    """
    plan = options.prepare() if isinstance(options, LoadOptions) else options  # before any I/O
    sink = PostgresSink(conn, plan.options.table, plan.options.columns)
    load = _Load(sink, source, plan, progress, progress_interval)
    try:
        source.open()
        stats = load.run()
        sink.commit()
    except LineTooLongError as err:
        sink.rollback()
        raise BadRecordError(plan.options.location, err.line, str(err)) from None
    except ConfigurationError as err:
        sink.rollback()
        raise type(err)(f"Loading {plan.options.location} into {plan.options.table} failed: {err}") from err
    except LoadError:
        sink.rollback()
        raise
    except ValueError as err:
        sink.rollback()
        raise ConfigurationError(f"Loading {plan.options.location} into {plan.options.table} failed: {err}") from err
    except DRIVER_ERRORS as err:
        sink.rollback()
        raise load.server_error(err) from None
    except BaseException:
        sink.rollback()
        raise
    stats.seconds = time.monotonic() - load.started
    return stats
