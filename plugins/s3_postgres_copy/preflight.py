"""Checks made before a load starts: the object's format from its first bytes, the target table.

Used by the DAG's ``validate`` task so that a bad parameter or object fails with a
precise reason before any row is written.
"""

from __future__ import annotations

import codecs
import zlib
from typing import Any

from psycopg import sql

from s3_postgres_copy.identifiers import split_table
from s3_postgres_copy.loader import format_from_key
from s3_postgres_copy.sink import Columns, PostgresSink
from s3_postgres_copy.source import GZIP_MAGIC

HEAD_BYTES = 64 << 10


def sniff_object(key: str, head: bytes, *, format: str = "auto", compression: str = "auto") -> tuple[str, str]:
    """Return ``(format, compression)`` from an object's first bytes, or raise ``ValueError``.

    :param key: the object key (its suffix hints the format).
    :param head: the first bytes of the object as stored (up to :data:`HEAD_BYTES`).
    """
    where = f"object {key!r}"
    if not head:
        raise ValueError(f"{where} is empty")
    gz = head.startswith(GZIP_MAGIC)
    if compression == "gzip" and not gz:
        raise ValueError(f"{where} is not gzip (compression='gzip'), it starts with {head[:8]!r}")
    if compression == "none" and gz:
        raise ValueError(f"{where} is gzip but compression='none'")
    text = head
    if gz:
        try:
            text = zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
        except zlib.error as err:
            raise ValueError(f"{where} has a gzip header but is not valid gzip: {err}") from None
    body = text.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    if not body:
        raise ValueError(f"{where} holds only blank lines")
    first_line = body.split(b"\n", 1)[0]
    try:
        # An incomplete character at the end of the sample is fine; an invalid one is not.
        codecs.getincrementaldecoder("utf-8")().decode(first_line, final=b"\n" in body)
    except UnicodeDecodeError:
        raise ValueError(
            f"unknown format: {where} does not start with UTF-8 text (first bytes {body[:16]!r}); "
            "expected JSON lines or CSV, optionally gzipped"
        ) from None
    if b"\x00" in first_line:
        raise ValueError(f"unknown format: {where} starts with binary data ({body[:16]!r})")
    detected = "jsonl" if body[:1] == b"{" else "csv"
    if body[:1] in (b"[", b'"') or (detected == "csv" and b"," not in first_line and b"\t" not in first_line):
        raise ValueError(
            f"unknown format: {where} is neither JSON lines (one object per line) nor CSV with a header; "
            f"it starts with {first_line[:60]!r}"
        )
    if format == "auto":
        suffix_says = format_from_key(key)
        if suffix_says is not None and suffix_says != detected:
            raise ValueError(f"{where} is named like {suffix_says} but its content looks like {detected}")
        return detected, "gzip" if gz else "none"
    if format != detected:
        raise ValueError(f"{where} looks like {detected}, not {format}: it starts with {first_line[:60]!r}")
    return format, "gzip" if gz else "none"


def check_table(conn: Any, table: str, columns: Columns | None = None) -> str:
    """Check that ``table`` exists with the needed columns, or that it can be created.

    Returns ``"exists"`` or ``"will be created"``; raises ``ValueError`` saying what is wrong.
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
                raise ValueError(f"table {table} has no column(s) {', '.join(missing)}")
            if not sink.scalar(sql.SQL("SELECT has_table_privilege(%s, 'INSERT')"), [".".join(parts)]):
                raise ValueError(f"the PostgreSQL user may not INSERT into {table}")
            return "exists"
        schema = parts[0] if len(parts) == 2 else sink.scalar(sql.SQL("SELECT current_schema()"))
        if schema is None or sink.scalar(sql.SQL("SELECT to_regnamespace(%s)"), [schema]) is None:
            raise ValueError(f"table {table} does not exist and schema {schema!r} does not exist either")
        if not sink.scalar(sql.SQL("SELECT has_schema_privilege(%s, 'CREATE')"), [schema]):
            raise ValueError(f"table {table} does not exist and the user may not create tables in {schema!r}")
        return "will be created"
    finally:
        sink.rollback()
