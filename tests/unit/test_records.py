from __future__ import annotations

import codecs

import pytest

from s3_postgres_copy.records import (
    CsvRecord,
    LineBlock,
    LineCount,
    LineTooLongError,
    csv_records,
    line_blocks,
)

BOM = codecs.BOM_UTF8
# CRLF, blank lines (LF and CRLF), whitespace-only, 2/3/4-byte UTF-8, last line without newline.
TEXT = 'first line\r\n\nünïcödé ✓ 𝄞 €\r\n\r\n  \n\t{"k": "€€€"}\nlast line, no newline ✓'.encode()
TEXT_LINES = TEXT.split(b"\n")  # the physical lines (the last one has no newline)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def numbered_lines(blocks: list[LineBlock]) -> list[tuple[int, bytes]]:
    out = []
    for block in blocks:
        lines = block.data.split(b"\n")
        if block.data.endswith(b"\n"):
            lines.pop()
        assert len(lines) == block.count
        out.extend(enumerate(lines, block.first_line))
    return out


class TestLineBlocks:
    @pytest.mark.parametrize("size", range(1, 18), ids=lambda n: f"chunk{n}")
    @pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
    def test_every_chunk_size(self, size: int, bom: bool) -> None:
        data = BOM + TEXT if bom else TEXT
        blocks = list(line_blocks(split(data, size)))
        assert b"".join(b.data for b in blocks) == TEXT
        assert blocks[0].first_line == 1
        for prev, block in zip(blocks, blocks[1:], strict=False):
            assert block.first_line == prev.first_line + prev.count
            assert prev.data.endswith(b"\n")
        assert sum(b.count for b in blocks) == len(TEXT_LINES) == 7
        assert numbered_lines(blocks) == list(enumerate(TEXT_LINES, 1))
        for block in blocks:
            block.data.decode("utf-8")  # never cuts inside a character
            assert block.count == block.data.count(b"\n") + (not block.data.endswith(b"\n"))

    def test_exact_blocks(self) -> None:
        assert list(line_blocks([b"a\nb", b"c\nd"])) == [
            LineBlock(1, b"a\n", 1),
            LineBlock(2, b"bc\n", 1),
            LineBlock(3, b"d", 1),
        ]

    def test_several_lines_per_block(self) -> None:
        assert list(line_blocks([b"a\n\nb\r\nc", b"\n"])) == [LineBlock(1, b"a\n\nb\r\n", 3), LineBlock(4, b"c\n", 1)]

    @pytest.mark.parametrize(
        "chunks",
        [
            [BOM + b"a\n"],
            [b"\xef", b"\xbb\xbfa\n"],
            [b"\xef\xbb", b"\xbfa\n"],
            [b"\xef\xbb", b"\xbf", b"a\n"],
            [b"\xef", b"\xbb", b"\xbf", b"a", b"\n"],
            [b"", b"\xef", b"", b"\xbb\xbf", b"a\n"],
            [BOM, b"a\n"],
        ],
        ids=["whole", "1+rest", "2+rest", "2+1+rest", "1+1+1", "with-empty-chunks", "bom-alone"],
    )
    def test_bom_removed_however_split(self, chunks: list[bytes]) -> None:
        assert list(line_blocks(chunks)) == [LineBlock(1, b"a\n", 1)]

    @pytest.mark.parametrize(
        ("chunks", "expected"),
        [
            ([b"a\n" + BOM + b"b\n"], [LineBlock(1, b"a\n" + BOM + b"b\n", 2)]),
            ([b"\xef\xbbX\n"], [LineBlock(1, b"\xef\xbbX\n", 1)]),
            ([b"\xef", b"\xbb"], [LineBlock(1, b"\xef\xbb", 1)]),
            ([BOM + BOM + b"x"], [LineBlock(1, BOM + b"x", 1)]),
            ([BOM], []),
        ],
        ids=["bom-not-first", "bom-prefix-only", "bom-prefix-at-end", "only-first-bom", "bom-only"],
    )
    def test_bom_edge_cases(self, chunks: list[bytes], expected: list[LineBlock]) -> None:
        assert list(line_blocks(chunks)) == expected

    @pytest.mark.parametrize("chunks", [[], [b""], [b"", b""]], ids=["no-chunks", "one-empty", "two-empty"])
    def test_empty(self, chunks: list[bytes]) -> None:
        assert list(line_blocks(chunks)) == []

    def test_only_newlines(self) -> None:
        assert list(line_blocks([b"\n", b"\n\n"])) == [LineBlock(1, b"\n", 1), LineBlock(2, b"\n\n", 2)]


class TestLineTooLong:
    def test_reports_the_long_line(self) -> None:
        blocks = line_blocks([b"ab\ncdefgh", b"ij"], max_line_bytes=5)
        with pytest.raises(LineTooLongError, match=r"^line 2 is longer than 5 bytes; is the format right\?$") as info:
            next(blocks)
        assert info.value.line == 2
        assert isinstance(info.value, ValueError)

    def test_line_number_after_many_lines(self) -> None:
        chunks = [b"x\n" * 10, b"y" * 4, b"y" * 4]
        with pytest.raises(LineTooLongError) as info:
            list(line_blocks(chunks, max_line_bytes=6))
        assert info.value.line == 11

    def test_first_line(self) -> None:
        with pytest.raises(LineTooLongError, match="^line 1 is longer than 3 bytes"):
            list(line_blocks([b"abcd"], max_line_bytes=3))

    def test_line_at_the_limit_is_fine(self) -> None:
        assert list(line_blocks([b"abc", b"de", b"\nxy"], max_line_bytes=5)) == [
            LineBlock(1, b"abcde\n", 1),
            LineBlock(2, b"xy", 1),
        ]

    @pytest.mark.parametrize(
        "chunks", [[b"a\n" + b"b" * 10, b"b\n"], [b"a\n" + b"b" * 10]], ids=["newline-later", "last-line"]
    )
    def test_long_line_after_a_newline_in_the_same_chunk(self, chunks: list[bytes]) -> None:
        with pytest.raises(LineTooLongError):
            list(line_blocks(chunks, max_line_bytes=5))


def parse(data: bytes, chunk_size: int, **kwargs: str) -> tuple[list[CsvRecord], LineCount]:
    records, counter = csv_records(line_blocks(split(data, chunk_size)), **kwargs)
    return list(records), counter


R = CsvRecord
CSV_CASES = {
    "simple": (b"a,b\n1,2\n", [R(1, ["a", "b"]), R(2, ["1", "2"])], 2, 0),
    "quoted-comma": (b'a,"b,c"\n', [R(1, ["a", "b,c"])], 1, 0),
    "doubled-quotes": (b'"say ""hi""",x\n', [R(1, ['say "hi"', "x"])], 1, 0),
    "empty-fields": (b'"",x,\n', [R(1, ["", "x", ""])], 1, 0),
    "newline-in-quotes": (
        b'h\n"multi\nline",z\nnext,1\n',
        [R(1, ["h"]), R(2, ["multi\nline", "z"]), R(4, ["next", "1"])],
        4,
        0,
    ),
    "crlf-and-crlf-in-quotes": (
        b'a,b\r\n"x\r\ny",2\r\nc,d\r\n',
        [R(1, ["a", "b"]), R(2, ["x\r\ny", "2"]), R(4, ["c", "d"])],
        4,
        0,
    ),
    "blank-lines": (b"\na\n\n\r\nb\n\n", [R(2, ["a"]), R(5, ["b"])], 6, 4),
    "blank-line-in-quotes-is-data": (b'"x\n\ny"\nz\n', [R(1, ["x\n\ny"]), R(4, ["z"])], 4, 0),
    "last-line-without-newline": (b"a,b\nc,d", [R(1, ["a", "b"]), R(2, ["c", "d"])], 2, 0),
    "quoted-last-line-without-newline": (b'a\n"c\nd"', [R(1, ["a"]), R(2, ["c\nd"])], 3, 0),
    "bom": (BOM + b"h\n1\n", [R(1, ["h"]), R(2, ["1"])], 2, 0),
    "utf8": ("é,ü✓\n𝄞,€\n".encode(), [R(1, ["é", "ü✓"]), R(2, ["𝄞", "€"])], 2, 0),
    "invalid-utf8-kept-as-surrogates": (b"a\xff,b\n", [R(1, ["a\udcff", "b"])], 1, 0),
    "whitespace-line-is-a-record": (b" \n", [R(1, [" "])], 1, 0),
    "empty": (b"", [], 0, 0),
}


class TestCsvRecords:
    @pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1000], ids=lambda n: f"chunk{n}")
    @pytest.mark.parametrize(
        ("data", "expected", "lines", "blank"), list(CSV_CASES.values()), ids=list(CSV_CASES.keys())
    )
    def test_records(self, data: bytes, expected: list[CsvRecord], lines: int, blank: int, chunk_size: int) -> None:
        records, counter = parse(data, chunk_size)
        assert records == expected
        assert (counter.lines, counter.blank) == (lines, blank)

    def test_delimiter(self) -> None:
        records, _ = parse(b'a;"b;c";d\n', 3, delimiter=";")
        assert records == [R(1, ["a", "b;c", "d"])]

    def test_malformed_quote_then_continues(self) -> None:
        records, counter = parse(b'h\n"a"b,c\nd,e\n', 4)
        assert records == [
            R(1, ["h"]),
            R(2, None, "invalid CSV: ',' expected after '\"'", '"a"b,c'),
            R(3, ["d", "e"]),
        ]
        assert (counter.lines, counter.blank) == (3, 0)

    def test_malformed_quote_inside_multiline_record(self) -> None:
        records, counter = parse(b'"ab\ncd"x\nok\n', 1)
        assert records == [R(1, None, "invalid CSV: ',' expected after '\"'", '"ab\ncd"x'), R(3, ["ok"])]
        assert counter.lines == 3

    def test_unterminated_quote_at_end(self) -> None:
        records, counter = parse(b'a\n"open\nmore\n', 5)
        assert records == [R(1, ["a"]), R(2, None, "invalid CSV: unexpected end of data", '"open\nmore')]
        assert counter.lines == 3

    def test_counter_is_live(self) -> None:
        records, counter = csv_records(line_blocks([b"a\n\nb\nc\n"]))
        assert next(records) == R(1, ["a"])
        assert (counter.lines, counter.blank) == (1, 0)
        assert next(records) == R(3, ["b"])
        assert (counter.lines, counter.blank) == (3, 1)

    def test_large_field(self) -> None:
        big = b"x" * 300_000  # larger than the csv module's default 131072 field limit
        records, _ = parse(b"a," + big + b"\n", 1 << 20)
        assert records == [R(1, ["a", big.decode()])]
