"""Checks made before a load starts: the object exists and what format it is in, the target table is usable.

Used by the DAG's ``validate`` task so that a bad parameter or object fails with a precise
reason before any row is written. The format is told by the same registry the loader uses
(:mod:`s3_postgres_copy.formats`), so the two never disagree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from s3_postgres_copy.exceptions import ConfigurationError, SourceError, UnknownFormatError
from s3_postgres_copy.formats import SNIFF_BYTES, check_encoding, format_from_key, read_head, sniff
from s3_postgres_copy.identifiers import split_table
from s3_postgres_copy.sink import Columns, PostgresSink
from s3_postgres_copy.source import GZIP_MAGIC

HEAD_BYTES = SNIFF_BYTES
"""How much of an object's start is read to tell its format."""


def sniff_object(
    key: str, head: bytes, *, format: str = "auto", compression: str = "auto", delimiter: str = ","
) -> tuple[str, str]:
    """Return ``(format, compression)`` from an object's first bytes, or raise ``ValueError``.

    :param key: the object key (its suffix hints the format).
    :param head: the first bytes of the object as stored (up to :data:`HEAD_BYTES`).
    """
    where = f"object {key!r}"
    if not head:
        raise ConfigurationError(f"{where} is empty")
    gz = head.startswith(GZIP_MAGIC)
    if compression == "gzip" and not gz:
        raise ConfigurationError(f"{where} is not gzip (compression='gzip'), it starts with {head[:8]!r}")
    if compression == "none" and gz:
        raise ConfigurationError(f"{where} is gzip but compression='none'")
    text = head
    if gz:
        try:
            text = zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
        except zlib.error as err:
            raise ConfigurationError(f"{where} has a gzip header but is not valid gzip: {err}") from None
    check_encoding(text, where)
    first = read_head(text, delimiter)
    if first is None:
        raise ConfigurationError(f"{where} holds only blank lines")
    detected = sniff(first, where)
    if format == "auto":
        suffix_says = format_from_key(key)
        if suffix_says is not None and suffix_says != detected:
            raise UnknownFormatError(f"{where} is named like {suffix_says} but its content looks like {detected}")
    elif format != detected:
        raise UnknownFormatError(
            f"{where} looks like {detected}, not {format}: it starts with {first.first_line[:60]!r}"
        )
    return detected, "gzip" if gz else "none"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object that passed :func:`check_object`."""

    key: str
    size: int
    etag: str | None
    format: str
    compression: str


def check_object(client: Any, bucket: str, key: str, *, format: str = "auto", delimiter: str = ",") -> ObjectInfo:
    """HEAD the object and sniff its first bytes; raise with the reason it cannot be loaded.

    :param client: a boto3 S3 client (``S3Hook.get_conn()``).
    """
    from botocore.exceptions import ClientError

    where = f"s3://{bucket}/{key}"
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        size = int(head.get("ContentLength") or 0)
        if not size:
            raise ConfigurationError(f"{where} is empty (0 bytes)")
        first = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES - 1}")["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise SourceError(f"{where} does not exist") from None
        raise SourceError(f"{where} cannot be read: {code or err}") from None
    fmt, compression = sniff_object(key, first, format=format, delimiter=delimiter)
    return ObjectInfo(key, size, head.get("ETag"), fmt, compression)


def check_table(conn: Any, table: str, columns: Columns | None = None) -> str:
    """Check that ``table`` exists with the needed columns, or that it can be created.

    Returns ``"exists"`` or ``"will be created"``; raises :class:`ConfigurationError` saying what is wrong.
    Runs in a transaction that is rolled back: nothing is changed.
    """
    columns = columns or Columns()
    parts = split_table(table)
    sink = PostgresSink(conn, table, columns)
    try:
        existing = sink.table_columns()
        if existing is not None:
            missing = [name for _, name in columns.roles() if name not in existing]
            if missing:
                raise ConfigurationError(f"table {table} has no column(s) {', '.join(missing)}")
            if not sink.scalar(sql.SQL("SELECT has_table_privilege(%s, 'INSERT')"), [".".join(parts)]):
                raise ConfigurationError(f"the PostgreSQL user may not INSERT into {table}")
            return "exists"
        schema = parts[0] if len(parts) == 2 else sink.scalar(sql.SQL("SELECT current_schema()"))
        if schema is None or sink.scalar(sql.SQL("SELECT to_regnamespace(%s)"), [schema]) is None:
            raise ConfigurationError(f"table {table} does not exist and schema {schema!r} does not exist either")
        if not sink.scalar(sql.SQL("SELECT has_schema_privilege(%s, 'CREATE')"), [schema]):
            raise ConfigurationError(f"table {table} does not exist and the user may not create tables in {schema!r}")
        return "will be created"
    finally:
        sink.rollback()
