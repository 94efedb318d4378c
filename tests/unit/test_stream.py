from __future__ import annotations

import array
import io
from collections.abc import Iterator
from operator import methodcaller

import pytest

from s3_postgres_copy.stream import DEFAULT_BUFFER_SIZE, ChunkStream, open_chunks

DATA = b"first line\nsecond, a bit longer line\n\nfourth\nlast without newline"


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class Tracked:
    """A generator of chunks that records whether it was closed and how far it got."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.closed = False
        self.gen = self._gen()

    def _gen(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                self.pulled += 1
                yield chunk
        finally:
            self.closed = True


class TestChunkStream:
    def test_capabilities(self) -> None:
        stream = ChunkStream([b"x"])
        assert stream.readable() is True
        assert stream.seekable() is False
        assert stream.writable() is False

    def test_readinto_consumes_at_most_the_current_chunk(self) -> None:
        stream = ChunkStream([b"abc", b"defgh"])
        buf = bytearray(4)
        assert stream.readinto(buf) == 3
        assert buf == b"abc\x00"
        assert stream.readinto(buf) == 4
        assert buf == b"defg"
        assert stream.readinto(buf) == 1
        assert buf[:1] == b"h"
        assert stream.readinto(buf) == 0
        assert stream.readinto(buf) == 0  # still at EOF
        assert stream.bytes_served == 8

    def test_readinto_memoryview_slice(self) -> None:
        buf = bytearray(b"......")
        stream = ChunkStream([b"abcdef"])
        assert stream.readinto(memoryview(buf)[2:5]) == 3
        assert buf == b"..abc."

    def test_readinto_non_byte_memoryview(self) -> None:
        target = array.array("H", [0, 0])
        stream = ChunkStream([b"\x01\x00\x02\x00\x03"])
        assert stream.readinto(memoryview(target)) == 4
        assert target.tolist() == [1, 2]

    def test_empty_chunks_are_skipped(self) -> None:
        stream = ChunkStream([b"", b"a", b"", b"", b"bc", b""])
        buf = bytearray(10)
        assert stream.readinto(buf) == 1
        assert stream.readinto(buf) == 2
        assert buf[:2] == b"bc"
        assert stream.readinto(buf) == 0

    @pytest.mark.parametrize("chunks", [[], [b""], [b"", b""]], ids=["no-chunks", "one-empty", "two-empty"])
    def test_empty(self, chunks: list[bytes]) -> None:
        stream = ChunkStream(chunks)
        assert stream.readinto(bytearray(8)) == 0
        assert stream.read() == b""
        assert stream.bytes_served == 0

    def test_readall(self) -> None:
        assert ChunkStream(split(DATA, 5)).readall() == DATA

    def test_readinto_after_close_raises(self) -> None:
        stream = ChunkStream([b"abc"])
        stream.close()
        assert stream.closed
        with pytest.raises(ValueError, match="I/O operation on closed stream"):
            stream.readinto(bytearray(3))

    def test_close_closes_generator(self) -> None:
        source = Tracked([b"a", b"b", b"c"])
        stream = ChunkStream(source.gen)
        assert stream.readinto(bytearray(1)) == 1
        assert not source.closed
        stream.close()
        assert source.closed
        assert source.pulled == 1
        stream.close()  # idempotent

    def test_close_with_plain_iterable(self) -> None:
        stream = ChunkStream([b"abc"])  # a list iterator has no close()
        stream.close()
        assert stream.closed


class TestOpenChunks:
    @pytest.mark.parametrize("chunk_size", range(1, 12), ids=lambda n: f"chunk{n}")
    @pytest.mark.parametrize("buffer_size", [1, 4, 16, DEFAULT_BUFFER_SIZE], ids=lambda n: f"buf{n}")
    def test_read_all(self, chunk_size: int, buffer_size: int) -> None:
        with open_chunks(split(DATA, chunk_size), buffer_size) as f:
            assert f.read() == DATA
            assert f.read() == b""

    @pytest.mark.parametrize("n", [1, 2, 3, 7, 64], ids=lambda n: f"read{n}")
    @pytest.mark.parametrize("buffer_size", [2, 5, DEFAULT_BUFFER_SIZE], ids=lambda n: f"buf{n}")
    def test_read_n_across_boundaries(self, n: int, buffer_size: int) -> None:
        chunks = [b"abc", b"de", b"", b"fghij", b"k"]
        f = open_chunks(chunks, buffer_size)
        pieces = []
        while piece := f.read(n):
            assert len(piece) == min(n, 11 - sum(map(len, pieces)))
            pieces.append(piece)
        assert b"".join(pieces) == b"abcdefghijk"

    def test_read_n_exact_values(self) -> None:
        f = open_chunks([b"abc", b"de", b"", b"fghij"], 2)
        assert [f.read(4), f.read(4), f.read(4), f.read(4)] == [b"abcd", b"efgh", b"ij", b""]

    def test_readline_across_chunks(self) -> None:
        f = open_chunks([b"ab", b"c\nd", b"ef\n", b"", b"\n", b"gh"], 4)
        assert [f.readline() for _ in range(5)] == [b"abc\n", b"def\n", b"\n", b"gh", b""]

    @pytest.mark.parametrize("chunk_size", [1, 3, 50, 1000], ids=lambda n: f"chunk{n}")
    def test_readline_longer_than_buffer(self, chunk_size: int) -> None:
        long_line = bytes(range(32, 127)) * 3 + b"\n"
        data = long_line + b"short\n" + long_line[:-1]
        f = open_chunks(split(data, chunk_size), buffer_size=8)
        assert f.readline() == long_line
        assert f.readline() == b"short\n"
        assert f.readline() == long_line[:-1]
        assert f.readline() == b""

    @pytest.mark.parametrize("chunk_size", range(1, 9), ids=lambda n: f"chunk{n}")
    def test_iteration(self, chunk_size: int) -> None:
        with open_chunks(split(DATA, chunk_size), 4) as f:
            assert list(f) == [
                b"first line\n",
                b"second, a bit longer line\n",
                b"\n",
                b"fourth\n",
                b"last without newline",
            ]

    @pytest.mark.parametrize("chunks", [[], [b""], [b"", b"", b""]], ids=["no-chunks", "one-empty", "three-empty"])
    def test_empty(self, chunks: list[bytes]) -> None:
        f = open_chunks(chunks)
        assert f.read() == b""
        assert f.read(5) == b""
        assert f.readline() == b""
        assert list(f) == []

    def test_readinto_memoryview(self) -> None:
        f = open_chunks([b"ab", b"cd", b"ef"], 3)
        buf = bytearray(b"________")
        got = f.readinto(memoryview(buf)[1:6])
        assert got == 5
        assert buf == b"_abcde__"
        assert f.read() == b"f"

    def test_not_seekable(self) -> None:
        f = open_chunks([b"abc"])
        assert f.seekable() is False
        assert f.readable() is True
        with pytest.raises(io.UnsupportedOperation):
            f.seek(0)

    @pytest.mark.parametrize(
        "call",
        [
            methodcaller("read"),
            methodcaller("read", 1),
            methodcaller("readline"),
            methodcaller("readinto", bytearray(2)),
        ],
        ids=["read", "read-n", "readline", "readinto"],
    )
    def test_read_after_close_raises(self, call: methodcaller) -> None:
        f = open_chunks([b"abc\n", b"def\n"])
        assert f.read(1) == b"a"
        f.close()
        assert f.closed
        with pytest.raises(ValueError, match="closed file"):
            call(f)

    def test_close_closes_generator(self) -> None:
        source = Tracked([b"abc\n", b"def\n", b"ghi\n"])
        f = open_chunks(source.gen, 2)
        assert f.readline() == b"abc\n"
        assert not source.closed
        f.close()
        assert source.closed
        assert source.pulled < 3

    def test_context_manager_closes_generator(self) -> None:
        source = Tracked([b"abc"])
        with open_chunks(source.gen) as f:
            assert f.read(1) == b"a"
        assert source.closed

    def test_generator_error_propagates(self) -> None:
        def chunks() -> Iterator[bytes]:
            yield b"ok\n"
            raise ConnectionResetError("peer went away")

        f = open_chunks(chunks(), 2)
        assert f.readline() == b"ok\n"
        with pytest.raises(ConnectionResetError, match="peer went away"):
            f.read()
