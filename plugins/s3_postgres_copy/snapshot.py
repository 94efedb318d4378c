"""The SQL of ``mode="snapshot"`` for a prefix: objects are staged in parallel, then published together.

One object's snapshot needs no staging: the load deletes the table's rows and COPYs the new
ones in one transaction (readers see the old content until commit, and are never blocked).
A snapshot of every object under a prefix is loaded by several tasks at once, each object in
its own transaction, into an ``UNLOGGED`` staging table made ``LIKE`` the target (no WAL is
written for it); :func:`publish` then, in one transaction, runs the checks over the staged
rows, deletes the table's rows, inserts the staged ones and drops the staging table. The
table keeps its OID, so its views, grants, indexes, constraints and defaults stay as they
are; a failure anywhere leaves it as it was.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from s3_postgres_copy.checks import parse_checks, run_checks
from s3_postgres_copy.exceptions import CheckFailedError, ConfigurationError
from s3_postgres_copy.identifiers import split_table
from s3_postgres_copy.ledger import Ledger, LedgerEntry
from s3_postgres_copy.sink import Columns, PostgresSink, derived_identifier


def stage_name(table: str, run_id: str) -> str:
    """The staging table of a run's prefix snapshot (schema-qualified like ``table``)."""
    parts = split_table(table)
    name = derived_identifier(parts[-1], f"_stage_{zlib.crc32(run_id.encode()):08x}").as_string(None).strip('"')
    return ".".join((*parts[:-1], name))


def prepare_stage(sink: PostgresSink, stage: str) -> PostgresSink:
    """Create the staging table (``UNLOGGED``, ``LIKE`` the target, indexed on ``source_key``) if missing.

    Returns a sink on the staging table in the same transaction.
    """
    staging = PostgresSink(sink.conn, stage, sink.columns)
    staging.lock_timeout, staging.lock_interval = sink.lock_timeout, sink.lock_interval
    if staging.table_columns() is None:
        staging.create_lock()
        sink.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE IF NOT EXISTS {} "
                "(LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
            ).format(staging.table, sink.table)
        )
        if sink.columns.source_key is not None:
            sink.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    staging.index_name("source_key"), staging.table, sql.Identifier(sink.columns.source_key)
                )
            )
    staging.types = sink.types
    return staging


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish` did."""

    objects: int
    rows: int
    rows_deleted: int
    checks: list[str]


def publish(
    conn: Any,
    table: str,
    stage: str,
    batch_ids: Sequence[str],
    *,
    columns: Columns | None = None,
    checks: Mapping[str, Any] | None = None,
    lock_timeout: float | None = None,
    interval: float = 10.0,
) -> Published:
    """Replace the table's content with the staged objects' rows, in one transaction; drop the stage.

    :param batch_ids: the batches of every object of the snapshot (one per object): all must
        be staged, or nothing is published (and the stage is dropped).
    :raises CheckFailedError: a check is false; the table is unchanged.
    """
    columns = columns or Columns()
    sink = PostgresSink(conn, table, columns)
    staging = PostgresSink(conn, stage, columns)
    parsed = parse_checks(checks)
    try:
        ledger = Ledger(sink)
        staged = _staged(sink, staging, ledger, batch_ids)
        sink.lock_table(timeout=lock_timeout, interval=interval)
        passed = run_checks(sink, parsed, staging.table, location=f"the snapshot of {table}")
        deleted = sink.delete_all(rejects=False)
        names = sql.SQL(", ").join(sql.Identifier(name) for _, name in columns.roles())
        insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(sink.table, names, names, staging.table)
        rows = int(sink.execute(insert).rowcount)
        expected = sum(int(entry.counts["rows_copied"] or 0) for entry in staged)
        if rows != expected:
            reason = f"the staging table holds {rows} rows, the loads staged {expected}"
            raise CheckFailedError(table, "row count", reason)
        published = sql.SQL(
            "UPDATE {} SET state = 'published', finished_at = clock_timestamp() WHERE batch_id = ANY(%s)"
        )
        sink.execute(published.format(ledger.table), [list(batch_ids)])
        drop_stage(sink, staging)
        sink.commit()
    except BaseException:
        sink.rollback()
        raise
    return Published(len(staged), rows, deleted, passed)


def _staged(sink: PostgresSink, staging: PostgresSink, ledger: Ledger, batch_ids: Sequence[str]) -> list[LedgerEntry]:
    """The ledger rows of the staged objects; every object must be there (else the stage is dropped)."""
    if staging.table_columns() is None:
        raise ConfigurationError(
            f"the snapshot's staging table {staging.table_name} does not exist: no object was staged"
        )
    staged = [entry for entry in ledger.entries(batch_ids) if entry.state == "staged"]
    missing = sorted(set(batch_ids) - {entry.batch_id for entry in staged})
    if missing:
        drop_stage(sink, staging)
        sink.commit()
        raise CheckFailedError(
            sink.table_name,
            "snapshot complete",
            f"{len(missing)} of {len(batch_ids)} objects were not staged (first: {missing[0]}); "
            "the table was left as it was and the staging table dropped",
        )
    return staged


def drop_stage(sink: PostgresSink, staging: PostgresSink) -> None:
    """Drop the staging table (in the caller's transaction)."""
    sink.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging.table))
