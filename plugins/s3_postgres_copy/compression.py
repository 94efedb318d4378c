"""Compressions a load reads, in one registry (as smart_open's ``register_compressor``): name, magic bytes, inflater.

``auto`` tells a compression by the stream's first bytes, not by the key's suffix: a ``.gz``
key that holds plain text (or the reverse) still loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.stream import peek

Compression = Literal["auto", "none", "gzip"]
"""A ``compression`` option."""


@dataclass(frozen=True, slots=True)
class Codec:
    """One compression: its magic bytes and how to inflate a chunk stream (``name`` names it in errors)."""

    name: str
    magic: bytes
    inflate: Callable[[Iterator[bytes], str], Iterator[bytes]]


def _gunzip(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    from s3_postgres_copy.source import gunzip

    return gunzip(chunks, name=name)


_CODECS: dict[str, Codec] = {"gzip": Codec("gzip", b"\x1f\x8b", _gunzip)}


def compression_names() -> tuple[str, ...]:
    """The ``compression`` option's allowed values."""
    return ("auto", "none", *_CODECS)


def decompressed(chunks: Iterator[bytes], requested: str, name: str) -> tuple[str, Iterator[bytes]]:
    """``(compression used, decompressed chunks)`` for the stored bytes of object ``name``."""
    if requested == "none":
        return "none", chunks
    head, chunks = peek(chunks, max(len(codec.magic) for codec in _CODECS.values()))
    for codec in _CODECS.values():
        if head.startswith(codec.magic) and requested in ("auto", codec.name):
            return codec.name, codec.inflate(chunks, name)
    if requested != "auto":
        raise ConfigurationError(f"{name} is not {requested} (compression={requested!r} but no {requested} header)")
    return "none", chunks
