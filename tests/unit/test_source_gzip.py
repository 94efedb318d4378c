"""``gunzip`` and ``sniff_gzip`` only; the HTTP source is tested elsewhere."""

from __future__ import annotations

import gzip
import random
import re
import zlib
from collections.abc import Iterator

import pytest

from s3_postgres_copy.exceptions import LoadError, SourceError
from s3_postgres_copy.source import CHUNK_SIZE, gunzip, sniff_gzip

PARTS = [b"alpha line\n" * 40, b"", random.Random(5).randbytes(300), b"omega"]
MEMBERS = [gzip.compress(part, mtime=0) for part in PARTS]
STREAM = b"".join(MEMBERS)
PLAIN = b"".join(PARTS)
BOUNDARIES = [sum(len(m) for m in MEMBERS[:i]) for i in range(1, len(MEMBERS))]


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run(chunks: list[bytes], max_output: int = CHUNK_SIZE, name: str = "s3://b/k.gz") -> list[bytes]:
    return list(gunzip(iter(chunks), max_output=max_output, name=name))


class TestGunzip:
    def test_single_member(self) -> None:
        assert b"".join(run([gzip.compress(b"hello\n")])) == b"hello\n"

    def test_multi_member(self) -> None:
        assert len(MEMBERS) == 4
        assert b"".join(run([STREAM])) == PLAIN

    @pytest.mark.parametrize("max_output", [1, 7, 64, CHUNK_SIZE], ids=lambda n: f"out{n}")
    def test_every_chunking(self, max_output: int) -> None:
        for size in range(1, len(STREAM) + 2):
            out = run(split(STREAM, size), max_output)
            assert b"".join(out) == PLAIN, size
            assert all(0 < len(piece) <= max_output for piece in out), size

    @pytest.mark.parametrize("boundary", range(len(MEMBERS) - 1), ids=lambda i: f"after-member{i + 1}")
    def test_member_boundary_at_chunk_boundary(self, boundary: int) -> None:
        cut = BOUNDARIES[boundary]
        for chunks in (
            [STREAM[:cut], STREAM[cut:]],
            [STREAM[: cut - 1], STREAM[cut - 1 : cut], STREAM[cut:]],
            [STREAM[:cut], STREAM[cut : cut + 1], STREAM[cut + 1 :]],
            [STREAM[:cut], b"", STREAM[cut:]],
        ):
            assert b"".join(run(chunks, max_output=16)) == PLAIN

    def test_members_as_chunks(self) -> None:
        assert b"".join(run(MEMBERS)) == PLAIN

    def test_empty_stream_and_empty_member(self) -> None:
        assert run([]) == []
        assert run([b""]) == []
        assert run([gzip.compress(b"")]) == []

    def test_output_bounded_for_highly_compressible_input(self) -> None:
        data = b"a" * 1_000_000
        out = run([gzip.compress(data)], max_output=4096)
        assert [len(piece) for piece in out] == [4096] * 244 + [576]
        assert b"".join(out) == data

    @pytest.mark.parametrize("size", [1, 2, 100], ids=lambda n: f"chunk{n}")
    def test_output_bounded_with_small_input_chunks(self, size: int) -> None:
        # Each input byte inflates to far more than max_output: output stays pending inside zlib
        # with no unconsumed input left, and must still be drained in bounded steps.
        data = b"a" * 200_000
        compressed = gzip.compress(data)
        assert len(compressed) < 1000
        out = run(split(compressed, size), max_output=100)
        assert max(len(piece) for piece in out) == 100
        assert b"".join(out) == data

    def test_truncated_everywhere(self) -> None:
        cuts = [cut for cut in range(1, len(STREAM)) if cut not in BOUNDARIES]
        assert len(cuts) == len(STREAM) - 4
        for cut in cuts:
            with pytest.raises(SourceError, match=r"^s3://b/k\.gz is truncated: the gzip stream ends mid-member$"):
                run(split(STREAM[:cut], 37))

    @pytest.mark.parametrize("boundary", range(len(MEMBERS) - 1), ids=lambda i: f"after-member{i + 1}")
    def test_cut_at_member_boundary_is_not_truncation(self, boundary: int) -> None:
        # A stream that ends between members is a complete (shorter) gzip file.
        assert b"".join(run([STREAM[: BOUNDARIES[boundary]]])) == b"".join(PARTS[: boundary + 1])

    def test_truncated_is_a_load_error(self) -> None:
        with pytest.raises(LoadError):
            run([STREAM[:10]])

    @pytest.mark.parametrize(
        ("chunks", "detail"),
        [
            ([b"this is not gzip"], "incorrect header check"),
            ([b"\x1f\x8b\x09garbage"], "unknown compression method"),
            ([MEMBERS[0] + b"trailing junk"], "incorrect header check"),
            ([MEMBERS[0], b"junk"], "incorrect header check"),
            ([MEMBERS[0][:-8] + b"\0\0\0\0" + MEMBERS[0][-4:]], "incorrect data check"),
            ([MEMBERS[0][:-4] + b"\0\0\0\0"], "incorrect length check"),
        ],
        ids=["plain-text", "bad-method", "junk-after-member", "junk-in-next-chunk", "bad-crc", "bad-length"],
    )
    def test_garbage(self, chunks: list[bytes], detail: str) -> None:
        expected = f"s3://b/k.gz is not valid gzip: Error -3 while decompressing data: {detail}"
        with pytest.raises(SourceError, match=f"^{re.escape(expected)}$"):
            run(chunks)

    def test_default_name(self) -> None:
        with pytest.raises(SourceError, match=r"^object is not valid gzip: "):
            list(gunzip(iter([b"not gzip"])))

    def test_zero_padding_after_last_member(self) -> None:
        assert b"".join(run([STREAM + b"\0" * 512])) == PLAIN

    @pytest.mark.parametrize(
        "chunks",
        [[STREAM, b"\0" * 512], [STREAM + b"\0" * 2, b"\0" * 510]],
        ids=["padding-in-own-chunk", "padding-split"],
    )
    def test_zero_padding_in_a_later_chunk(self, chunks: list[bytes]) -> None:
        assert gzip.decompress(b"".join(chunks)) == PLAIN
        assert b"".join(run(chunks)) == PLAIN

    @pytest.mark.parametrize("max_output", [1, 3, 100], ids=lambda n: f"out{n}")
    @pytest.mark.parametrize("size", [1, 17], ids=lambda n: f"chunk{n}")
    def test_drains_before_pulling_the_next_chunk(self, max_output: int, size: int) -> None:
        # zlib can hold decoded output after consuming all input given (no unconsumed_tail);
        # it must be yielded before gunzip asks for more input.
        rng = random.Random(11)
        data = bytes(rng.randrange(3) for _ in range(3000))
        chunks = split(gzip.compress(data, compresslevel=9, mtime=0), size)
        yielded_before: list[int] = []
        total = 0

        def source() -> Iterator[bytes]:
            for chunk in chunks:
                yielded_before.append(total)
                yield chunk

        for piece in gunzip(source(), max_output=max_output):
            total += len(piece)
        assert total == len(data)
        decodable = []
        reference = zlib.decompressobj(wbits=31)
        produced = 0
        for chunk in chunks:
            decodable.append(produced)
            produced += len(reference.decompress(chunk))
        assert yielded_before == decodable

    def test_lazy(self) -> None:
        pulled = []

        def chunks() -> Iterator[bytes]:
            for chunk in split(STREAM, 10):
                pulled.append(chunk)
                yield chunk

        out = gunzip(chunks(), max_output=8)
        assert next(out) == PLAIN[:8]
        assert len(pulled) < 5


class TestSniffGzip:
    @pytest.mark.parametrize(
        ("chunks", "is_gzip"),
        [
            ([STREAM], True),
            (split(STREAM, 1), True),
            ([b"", b"\x1f", b"", b"\x8b", b"rest"], True),
            ([b'{"a":1}\n'], False),
            ([b"\x1f"], False),
            ([b"\x8b\x1f"], False),
            ([b"\x1f", b"x"], False),
            ([b""], False),
            ([], False),
        ],
        ids=[
            "gzip",
            "gzip-1-byte-chunks",
            "gzip-empty-chunks",
            "json",
            "one-byte",
            "reversed",
            "half-magic",
            "empty-chunk",
            "none",
        ],
    )
    def test_detects_and_returns_everything(self, chunks: list[bytes], is_gzip: bool) -> None:
        detected, rest = sniff_gzip(iter(chunks))
        assert detected is is_gzip
        assert b"".join(rest) == b"".join(chunks)

    def test_chunks_unchanged_after_the_head(self) -> None:
        detected, rest = sniff_gzip(iter([b"", b"\x1f", b"\x8bab", b"", b"cd"]))
        assert detected is True
        assert list(rest) == [b"\x1f\x8bab", b"", b"cd"]

    def test_consumes_only_what_it_needs(self) -> None:
        pulled = []

        def chunks() -> Iterator[bytes]:
            for chunk in (b"\x1f", b"\x8b", b"third", b"fourth"):
                pulled.append(chunk)
                yield chunk

        detected, rest = sniff_gzip(chunks())
        assert detected is True
        assert pulled == [b"\x1f", b"\x8b"]
        assert list(rest) == [b"\x1f\x8b", b"third", b"fourth"]

    def test_feeds_gunzip(self) -> None:
        detected, rest = sniff_gzip(iter(split(STREAM, 3)))
        assert detected is True
        assert b"".join(gunzip(rest)) == PLAIN
