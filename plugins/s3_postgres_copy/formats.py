"""The file formats a load reads: one record per format, and everything else derived from them.

Like smart_open's ``register_compressor``: :func:`register_format` fills one registry, and
whatever needs the list of formats asks it — the options' allowed values, the DAG's param
enum, the key-suffix detection, the content sniffing used by the loader and by the DAG's
``validate`` task, and the encoder that turns the format's records into COPY rows.

Adding a format (say Parquet) is one :class:`FileFormat` record here plus its encoder class
(``encoders.py``); nothing else lists formats. This module imports nothing heavy, so a DAG
file can use it at parse time.
"""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from s3_postgres_copy.exceptions import UnknownFormatError

if TYPE_CHECKING:
    from s3_postgres_copy.encoders import Encoder

FormatName = Literal["auto", "jsonl", "csv"]
"""A ``format`` option (``auto`` = from the key's suffix, else from the first bytes)."""

SNIFF_BYTES = 64 << 10
"""How much of the (decompressed) start of an object the content sniffing looks at."""

_BLANK = b" \t\r\n"
# Byte order marks of the encodings PostgreSQL's jsonb cannot take as they are (UTF-32 first: its
# little-endian mark starts with UTF-16's).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass(frozen=True, slots=True)
class Head:
    """The start of an object's decompressed text, as the sniffers see it.

    :param body: the first bytes after any UTF-8 byte order mark and leading blank lines.
    :param first_line: the first non-blank line (without its newline).
    :param delimiter: the CSV delimiter the load is configured with.
    """

    body: bytes
    first_line: bytes
    delimiter: str = ","


@dataclass(frozen=True, slots=True)
class FileFormat:
    """One format the loader reads.

    :param name: the ``format`` option's value.
    :param suffixes: key suffixes that name the format (before any ``.gz``).
    :param looks_like: whether an object's :class:`Head` is in this format.
    :param encoder: ``"module:Class"`` of its :class:`~s3_postgres_copy.encoders.Encoder`
        (imported when a load starts, not when a DAG is parsed).
    :param description: one sentence for forms and docs.
    """

    name: str
    suffixes: tuple[str, ...]
    looks_like: Callable[[Head], bool]
    encoder: str
    description: str

    def encoder_class(self) -> type[Encoder[Any]]:
        """The encoder class, imported on first use."""
        module, _, attr = self.encoder.partition(":")
        cls: type[Encoder[Any]] = getattr(importlib.import_module(module), attr)
        return cls


_REGISTRY: dict[str, FileFormat] = {}


def register_format(fmt: FileFormat) -> FileFormat:
    """Add a format to the registry (its name must be one of :data:`FormatName`'s)."""
    if fmt.name not in get_args(FormatName) or fmt.name == "auto":
        raise ValueError(f"format {fmt.name!r} must be added to FormatName too")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get_format(name: str) -> FileFormat:
    """The registered format ``name``; ``ValueError`` names the allowed ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(format_names())}; got {name!r}") from None


def format_names(*, auto: bool = True) -> tuple[str, ...]:
    """The ``format`` option's allowed values, ``auto`` first."""
    return (("auto",) if auto else ()) + tuple(_REGISTRY)


def format_from_key(key: str) -> str | None:
    """The format the key's suffix names (``.jsonl``, ``.csv.gz``, ...), if any."""
    name = key.lower().removesuffix(".gz").removesuffix(".gzip")
    for fmt in _REGISTRY.values():
        if name.endswith(fmt.suffixes):
            return fmt.name
    return None


def check_encoding(head: bytes, where: str) -> None:
    """Refuse text in an encoding other than UTF-8, named by its byte order mark."""
    for bom, encoding in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise UnknownFormatError(
                f"{where} is {encoding} text (it starts with a {encoding} byte order mark); "
                "convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8) and upload it again"
            )


def read_head(text: bytes, delimiter: str = ",") -> Head | None:
    """The :class:`Head` of an object's decompressed first bytes; ``None`` if they are blank."""
    body = text.removeprefix(codecs.BOM_UTF8).lstrip(_BLANK)
    if not body:
        return None
    return Head(body, body.split(b"\n", 1)[0].rstrip(b"\r"), delimiter)


def sniff(head: Head, where: str) -> str:
    """The format an object's :class:`Head` is in, or :class:`UnknownFormatError` saying what it starts with."""
    try:
        # An incomplete character at the end of the sample is fine; an invalid one is not.
        codecs.getincrementaldecoder("utf-8")().decode(head.first_line, final=len(head.first_line) < len(head.body))
    except UnicodeDecodeError:
        raise UnknownFormatError(
            f"unknown format: {where} does not start with UTF-8 text (first bytes {head.body[:16]!r}); "
            f"expected {_expected()}, optionally gzipped"
        ) from None
    if b"\x00" in head.first_line:
        raise UnknownFormatError(f"unknown format: {where} starts with binary data ({head.body[:16]!r})")
    for fmt in _REGISTRY.values():
        if fmt.looks_like(head):
            return fmt.name
    raise UnknownFormatError(
        f"unknown format: {where} is neither {_expected()}; it starts with {head.first_line[:60]!r}"
    )


def detect_format(key: str, text: bytes, requested: str = "auto", *, delimiter: str = ",") -> str:
    """The format of an object from the ``format`` option, else its key's suffix, else its first bytes.

    :param text: the start of the decompressed object (up to :data:`SNIFF_BYTES`).
    A blank start is taken as CSV (no rows either way).
    """
    where = f"s3 object {key!r}"
    check_encoding(text, where)
    if requested != "auto":
        return get_format(requested).name
    by_name = format_from_key(key)
    if by_name is not None:
        return by_name
    head = read_head(text, delimiter)
    return "csv" if head is None else sniff(head, where)


def _expected() -> str:
    return " nor ".join(fmt.description for fmt in _REGISTRY.values())


def _looks_like_jsonl(head: Head) -> bool:
    return head.body[:1] == b"{"


def _looks_like_csv(head: Head) -> bool:
    # A JSON array or string is not a CSV header, even though it holds commas.
    if head.body[:1] in b'{["':
        return False
    return head.delimiter.encode() in head.first_line or b"\t" in head.first_line


register_format(
    FileFormat(
        name="jsonl",
        suffixes=(".jsonl", ".ndjson", ".json", ".jsonlines"),
        looks_like=_looks_like_jsonl,
        encoder="s3_postgres_copy.encoders:JsonLinesEncoder",
        description="JSON lines (one object per line)",
    )
)
register_format(
    FileFormat(
        name="csv",
        suffixes=(".csv",),
        looks_like=_looks_like_csv,
        encoder="s3_postgres_copy.encoders:CsvEncoder",
        description="CSV with a header",
    )
)
