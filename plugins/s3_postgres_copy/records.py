"""Bytes → records: line blocks for JSON lines, a streaming CSV reader.

Line numbers are physical, 1-based, in the decompressed object: blank lines
count, a CRLF line is one line, and a CSV record is numbered by the line it
starts on.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

DEFAULT_MAX_LINE_BYTES = 64 << 20
JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Whole lines of the object: ``data`` ends with a newline except at the end of the object.

    :param first_line: the 1-based number of the first line in ``data``.
    :param data: the raw bytes; a leading UTF-8 BOM of the object is already removed.
    :param count: the number of physical lines in ``data``.
    """

    first_line: int
    data: bytes
    count: int


class LineTooLongError(ValueError):
    """A line exceeded the configured maximum; the object is probably not line-oriented."""

    def __init__(self, line: int, limit: int) -> None:
        self.line = line
        super().__init__(f"line {line} is longer than {limit} bytes; is the format right?")


def line_blocks(chunks: Iterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[LineBlock]:
    """Cut a stream of byte chunks at line boundaries, carrying partial lines over."""
    carry = b""
    line_no = 1
    first = True
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        if first and data:
            if len(data) < len(codecs.BOM_UTF8) and codecs.BOM_UTF8.startswith(data):
                carry = data
                continue
            first = False
            if data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > max_line_bytes:
                raise LineTooLongError(line_no, max_line_bytes)
            carry = data
            continue
        block = data[:cut] if cut < len(data) else data
        carry = data[cut:]
        count = block.count(b"\n")
        if len(carry) > max_line_bytes:
            raise LineTooLongError(line_no + count, max_line_bytes)
        yield LineBlock(line_no, block, count)
        line_no += count
    if carry:
        yield LineBlock(line_no, carry, 1)


@dataclass(slots=True)
class LineCount:
    """Physical lines read so far, and how many of them were blank."""

    lines: int = 0
    blank: int = 0
    current: list[str] = field(default_factory=list)
    """The lines read for the record being parsed (to show a bad record's raw text)."""


def csv_lines(blocks: Iterable[LineBlock], counter: LineCount) -> Iterator[str]:
    """Decode line blocks into lines for :mod:`csv` (line endings kept).

    Invalid UTF-8 is kept as lone surrogates (``surrogateescape``) so the record
    holding it can be rejected with its line number instead of failing the stream.
    ``counter.lines`` is kept equal to the number of lines yielded so far.
    """
    for block in blocks:
        lines = block.data.decode("utf-8", "surrogateescape").split("\n")
        if block.data.endswith(b"\n"):
            lines.pop()  # the empty tail after the final newline
        for line in lines:
            counter.lines += 1
            counter.current.append(line)
            yield line + "\n"


@dataclass(frozen=True, slots=True)
class CsvRecord:
    """One CSV record: its starting line and fields, or why it could not be parsed."""

    line: int
    fields: list[str] | None
    error: str | None = None
    raw: str = ""


def csv_records(
    blocks: Iterable[LineBlock],
    *,
    delimiter: str = ",",
    quotechar: str = '"',
    max_field_bytes: int = 16 << 20,
) -> tuple[Iterator[CsvRecord], LineCount]:
    """Parse CSV (RFC 4180 quoting) into records with their starting line number.

    Blank lines are skipped (they still count as lines). Returns the records and the
    running count of physical and blank lines read so far.
    """
    csv.field_size_limit(max(max_field_bytes, csv.field_size_limit()))
    counter = LineCount()
    lines = csv_lines(blocks, counter)
    reader = csv.reader(lines, delimiter=delimiter, quotechar=quotechar, strict=True)

    def records() -> Iterator[CsvRecord]:
        while True:
            start = counter.lines + 1
            try:
                counter.current.clear()
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield CsvRecord(start, None, f"invalid CSV: {err}", "\n".join(counter.current))
                continue
            if fields:
                yield CsvRecord(start, fields)
            else:
                counter.blank += 1

    return records(), counter
