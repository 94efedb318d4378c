"""Chunk streams: a read-only file-like object over an iterator of byte chunks, and peeking and coalescing them."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

DEFAULT_BUFFER_SIZE = 1 << 20


class ChunkStream(io.RawIOBase):
    """An ``io.RawIOBase`` whose bytes come from an iterator of ``bytes`` chunks.

    Nothing is read ahead: each ``readinto`` consumes at most the current chunk.
    Use :func:`open_chunks` for a buffered reader with ``read``/``readline``.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] | None = iter(chunks)
        self._view = memoryview(b"")
        self.bytes_served = 0

    def readable(self) -> bool:
        """Return True: the stream can be read."""
        return True

    def seekable(self) -> bool:
        """Return False: a network stream cannot seek."""
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Copy up to ``len(buffer)`` bytes of the current chunk into ``buffer``."""
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        while not self._view:
            if self._chunks is None:
                return 0
            try:
                self._view = memoryview(next(self._chunks))
            except StopIteration:
                self._chunks = None
                return 0
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._view))
        target[:size] = self._view[:size]
        self._view = self._view[size:]
        self.bytes_served += size
        return size

    def close(self) -> None:
        """Close the stream and the underlying iterator if it is a generator."""
        chunks, self._chunks = self._chunks, None
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        self._view = memoryview(b"")
        super().close()


def open_chunks(chunks: Iterable[bytes], buffer_size: int = DEFAULT_BUFFER_SIZE) -> io.BufferedReader:
    """Wrap ``chunks`` as a buffered binary file: ``read(n)``, ``read()``, ``readline()``, iteration."""
    return io.BufferedReader(ChunkStream(chunks), buffer_size=buffer_size)


def peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first ``size`` bytes (or fewer, at the end) of a chunk stream, and the whole stream, nothing consumed."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= size:
            break

    def rest() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return head, rest()


def coalesce(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Join chunks smaller than ``size`` (one tiny chunk per gzip member, say) into chunks of at least ``size``."""
    pending: list[bytes] = []
    pending_size = 0
    for chunk in chunks:
        if not pending and len(chunk) >= size:
            yield chunk
            continue
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending_size:
        yield b"".join(pending)
