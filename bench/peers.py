"""What the peers and the seed baseline run: one JSON-lines parser, then INSERTs.

The parser is the same for every peer: ``json.loads`` each line (validation: a non-object is an
error, as in the loader's strict mode) and yield the line's own text as the document, so numbers
stay exact and no ``json.dumps`` is paid (the most favourable choice for the peers), with the
same metadata values the loader writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from bench.server import COPY_COLUMNS, TABLE

Row = tuple[str, str, str, str, str, int]


def parse_lines(lines: Iterable[bytes], constants: Sequence[str]) -> Iterator[Row]:
    """JSON lines → ``(document, source_key, source_etag, batch_id, loaded_at, source_line)`` rows."""
    key, etag, batch_id, loaded_at = constants
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError(f"line {number}: not a JSON object")
        yield (line.rstrip(b"\r\n").decode("utf-8"), key, etag, batch_id, loaded_at, number)


def parse_file(path: str, constants: Sequence[str]) -> Iterator[Row]:
    """The ``S3ToSqlOperator`` parser: a local file path → rows (bind ``constants`` with ``functools.partial``)."""
    with open(path, "rb") as f:
        yield from parse_lines(f, constants)


def execute_values_load(dsn: str, lines: list[bytes], constants: Sequence[str], page_size: int = 1000) -> float:
    """``psycopg2.extras.execute_values`` of the parsed rows in one transaction; return seconds."""
    import psycopg2
    from psycopg2.extras import execute_values

    started = time.monotonic()
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            execute_values(
                cur,
                f"INSERT INTO {TABLE} ({COPY_COLUMNS}) VALUES %s",
                parse_lines(lines, constants),
                page_size=page_size,
            )
        conn.commit()
    finally:
        conn.close()
    return time.monotonic() - started


def seed_load(dsn: str, lines: list[bytes], constants: Sequence[str], options: str | None = None) -> float:
    """The seed's way: one INSERT and one COMMIT per record (psycopg 3, autocommit off); return seconds.

    ``options`` are libpq options for the session (e.g. ``-c synchronous_commit=off``).
    """
    import psycopg

    placeholders = ", ".join(["%s"] * 6)
    query = f"INSERT INTO {TABLE} ({COPY_COLUMNS}) VALUES ({placeholders})"
    extra = {"options": options} if options else {}
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=False, **extra) as conn:
        cur: Any = conn.cursor()
        for row in parse_lines(lines, constants):
            cur.execute(query, row)
            conn.commit()
    return time.monotonic() - started
