"""Tolerant mode: a COPY segment the server refused in part is loaded without the refused rows.

PostgreSQL names the first row it refuses (``COPY t, line N``) and rolls the whole COPY
back (to the segment's savepoint). The refused row becomes a reject; the rows before it
were accepted once, so they are sent again as one COPY; the rows after it are sent in
windows that start small after each refusal and double while they succeed. A refusal
therefore costs about the rows between it and the start of its window twice, never the
rest of the segment: the cost per refusal is bounded, whatever the segment's size.

JSON the server refuses as JSON is first looked for in one pass of Python parsing over the
segment (raw JSON lines only), so a file with many invalid lines does not cost one COPY
per line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from s3_postgres_copy.dberrors import DRIVER_ERRORS, copy_error_row, is_data_error, sqlstate
from s3_postgres_copy.documents import Reject, loads_record

if TYPE_CHECKING:
    from s3_postgres_copy.rows import RowLayout
    from s3_postgres_copy.segments import Segment
    from s3_postgres_copy.sink import PostgresSink

log = logging.getLogger(__name__)

FIRST_WINDOW = 256
"""Rows in the first COPY after a refusal; each success doubles it."""
_INVALID_JSON = "22P02"  # invalid_text_representation: "invalid input syntax for type json"


class Refused(Exception):
    """A COPY of rows the server refused at its ``row``-th row (1-based), for a reason about that row."""

    def __init__(self, row: int, error: BaseException) -> None:
        super().__init__(row)
        self.row = row
        self.error = error


class TolerantCopy:
    """Copy segments in tolerant mode.

    :param sink: the load's transaction.
    :param layout: the segments' row layout (splits a payload into rows).
    :param reject: records one refused row (raises when there are too many).
    :param server_error: the load's error for a driver error that is not about one row.
    :param describe: a refused row's reason for the rejects table and for logs (the latter without values).
    :param parse_documents: whether documents are raw JSON lines, worth one Python parsing pass.
    """

    def __init__(
        self,
        sink: PostgresSink,
        layout: RowLayout,
        *,
        reject: Callable[[Reject], None],
        server_error: Callable[[BaseException], BaseException],
        describe: Callable[[BaseException], tuple[str, str]],
        parse_documents: bool,
    ) -> None:
        self.sink = sink
        self.layout = layout
        self.reject = reject
        self.server_error = server_error
        self.describe = describe
        self.parse_documents = parse_documents
        self.statements = 0
        """COPY statements sent, the segments' own and those that recovered refused ones."""

    def copy(self, segment: Segment, payloads: Iterator[bytes]) -> int:
        """COPY a segment fed by ``payloads`` (which fill the segment); return how many rows were loaded."""
        try:
            self._attempt(payloads)
        except Refused as refused:
            return self._recover(segment, refused)
        return segment.rows

    def _attempt(self, payloads: Iterator[bytes]) -> None:
        sink = self.sink
        self.statements += 1
        sink.savepoint()
        try:
            sink.copy(payloads, self.layout)
        except DRIVER_ERRORS as err:
            row = copy_error_row(err)
            if row is None or not is_data_error(err):
                raise self.server_error(err) from None
            sink.rollback_segment()
            raise Refused(row, err) from None
        sink.release()

    def _recover(self, segment: Segment, refused: Refused) -> int:
        # Row by row from each payload (no joined copy of the segment), and the payloads let go.
        rows = [row for payload in segment.payloads for row in self.layout.split(payload)]
        segment.payloads.clear()
        lines = list(segment.lines)
        failure: Refused | None = refused
        if self.parse_documents and sqlstate(refused.error) == _INVALID_JSON:
            kept_rows, kept_lines = self._drop_invalid_json(rows, lines)
            if len(kept_rows) < len(rows):
                rows, lines = kept_rows, kept_lines
                failure = None  # what is left gets the server's check again
        copied = 0
        window = FIRST_WINDOW
        # Ranges still to load, the next one last: (first row, end, whether to send it whole).
        pending: list[tuple[int, int, bool]] = [(0, len(rows), failure is None)]
        while pending:
            lo, hi, whole = pending.pop()
            end = hi if whole else min(hi, lo + window)
            if failure is None:
                try:
                    self._attempt(iter([b"".join(rows[lo:end])]))
                except Refused as again:
                    failure = again
                else:
                    copied += end - lo
                    window *= 2
                    if end < hi:
                        pending.append((end, hi, False))
                    continue
            bad = lo + failure.row - 1
            error, summary = self.describe(failure.error)
            self.reject(Reject(lines[bad], self.layout.document_of(rows[bad]), error, summary=summary))
            failure = None
            window = FIRST_WINDOW
            if bad + 1 < hi:
                pending.append((bad + 1, hi, False))
            if bad > lo:
                pending.append((lo, bad, True))  # accepted before the refused row: normally accepted again
        return copied

    def _drop_invalid_json(self, rows: list[bytes], lines: list[int]) -> tuple[list[bytes], list[int]]:
        keep_rows, keep_lines = [], []
        for row, line in zip(rows, lines, strict=True):
            raw = self.layout.document_of(row)
            try:
                loads_record(raw)
            except ValueError as bad:
                self.reject(Reject(line, raw, str(bad)))
            else:
                keep_rows.append(row)
                keep_lines.append(line)
        return keep_rows, keep_lines
