"""COPY segments: the encoded blocks of an object cut into COPY statements of about ``segment_bytes``.

A segment remembers the source line of each of its rows (to name the line of a row the
server refuses) in compact runs, so a strict load's memory does not grow with its rows; in
tolerant mode it also keeps its payloads, to re-send the rows the server did not refuse.

The next block is read and encoded before a segment's COPY ends, while the server still
parses the rows in flight: the next COPY starts with its first rows ready instead of leaving
the server idle for a block's work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s3_postgres_copy.documents import EncodedBlock


class LineIndex:
    """Source line numbers of rows, in order, stored as runs of consecutive lines."""

    __slots__ = ("_runs", "rows")

    def __init__(self) -> None:
        self._runs: list[list[int]] = []  # [first line, count]
        self.rows = 0

    def extend(self, lines: Sequence[int]) -> None:
        """Append the lines of the next rows."""
        if isinstance(lines, range) and lines.step == 1:
            self._add(lines.start, len(lines))
            return
        for line in lines:
            self._add(line, 1)

    def _add(self, first: int, count: int) -> None:
        if not count:
            return
        self.rows += count
        runs = self._runs
        if runs and runs[-1][0] + runs[-1][1] == first:
            runs[-1][1] += count
        else:
            runs.append([first, count])

    def line_of(self, row: int) -> int | None:
        """The source line of the ``row``-th (1-based) row, or None if there is no such row."""
        if row < 1:
            return None
        for first, count in self._runs:
            if row <= count:
                return first + row - 1
            row -= count
        return None

    def __iter__(self) -> Iterator[int]:
        for first, count in self._runs:
            yield from range(first, first + count)

    def __len__(self) -> int:
        return self.rows


@dataclass(slots=True)
class Segment:
    """The rows of one COPY statement: their source lines and, when kept, their payloads."""

    lines: LineIndex = field(default_factory=LineIndex)
    payloads: list[bytes] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """How many rows were sent."""
        return self.lines.rows


class Segments:
    """Cut encoded blocks into segments; iterate to get ``(segment, payloads)`` pairs to COPY in turn.

    :param blocks: the encoded blocks of the object.
    :param segment_bytes: a segment ends after the block that reaches this many payload bytes.
    :param keep_payloads: whether segments keep their payloads (tolerant mode).
    :param on_block: called with each block as it is read (accounting, rejects, progress).
    """

    def __init__(
        self,
        blocks: Iterator[EncodedBlock],
        *,
        segment_bytes: int,
        keep_payloads: bool,
        on_block: Callable[[EncodedBlock], None],
    ) -> None:
        self._blocks = blocks
        self._segment_bytes = segment_bytes
        self._keep = keep_payloads
        self._on_block = on_block
        self._upcoming: EncodedBlock | None = next(blocks, None)

    def __iter__(self) -> Iterator[tuple[Segment, Iterator[bytes]]]:
        while self._upcoming is not None:
            segment = Segment()
            yield segment, self._feed(segment)

    def _feed(self, segment: Segment) -> Iterator[bytes]:
        size = 0
        while self._upcoming is not None:
            block = self._upcoming
            self._on_block(block)
            if block.payload:
                segment.lines.extend(block.lines)
                if self._keep:
                    segment.payloads.append(block.payload)
                size += len(block.payload)
                yield block.payload
            self._upcoming = next(self._blocks, None)
            if size >= self._segment_bytes:
                return
