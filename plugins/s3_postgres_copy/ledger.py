"""The load ledger ``<table>_loads``: one row per committed load, written in the load's own transaction.

It is what the after-commit row-count check reads (instead of guessing from ``source_key``),
what ``skip_unchanged`` compares an object's ETag with, and how an append's re-run finds
its own earlier rows. Because it is written in the same transaction as the rows, a ledger
row exists exactly when the load it describes is visible.

``state`` is ``committed`` for a load into the table, ``staged`` for an object of a prefix
snapshot loaded into the staging table, and ``published`` once the snapshot that holds it
is the table's content.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.sink import derived_identifier

if TYPE_CHECKING:
    from s3_postgres_copy.sink import PostgresSink
    from s3_postgres_copy.stats import LoadStats

COUNTS = (
    "rows_copied",
    "rows_rejected",
    "rows_deleted",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_deduplicated",
    "lines_read",
    "blank_lines",
    "header_lines",
    "continuation_lines",
)
"""The row counts of a load the ledger keeps (the stats' names)."""
_COLUMNS = (
    ("batch_id", "text"),
    ("source_bucket", "text NOT NULL"),
    ("source_key", "text NOT NULL"),
    ("source_etag", "text"),
    ("mode", "text NOT NULL"),
    ("state", "text NOT NULL"),
    *((name, "bigint") for name in COUNTS),
    ("started_at", "timestamptz NOT NULL"),
    ("finished_at", "timestamptz NOT NULL DEFAULT clock_timestamp()"),
)
COMMITTED_STATES = ("committed", "published")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of the ledger."""

    batch_id: str
    source_bucket: str
    source_key: str
    source_etag: str | None
    mode: str
    state: str
    counts: dict[str, int | None]
    started_at: datetime.datetime
    finished_at: datetime.datetime


def ledger_identifier(table: str) -> sql.Identifier:
    """``<table>_loads`` (shortened with a hash when the name would pass 63 characters)."""
    return derived_identifier(table, "_loads")


class Ledger:
    """The ledger of one target table, used inside a load's transaction.

    :param sink: the load's transaction.
    """

    def __init__(self, sink: PostgresSink) -> None:
        self.sink = sink
        self.table = ledger_identifier(sink.table_name)

    def exists(self) -> bool:
        """Whether the ledger table exists."""
        return self.sink.relation_columns(self.table) is not None

    def create(self) -> None:
        """Create the ledger (under the table's creation lock) if it is missing."""
        sink = self.sink
        if self.exists():
            return
        sink.create_lock()
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in _COLUMNS
        )
        sink.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.table, defs))
        sink.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (source_key, finished_at)").format(
                sink.index_name("loads_key"), self.table
            )
        )
        sink.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (batch_id)").format(sink.index_name("loads_batch"), self.table)
        )

    def last_load(self, key: str) -> LedgerEntry | None:
        """The latest committed load of ``key`` into the table, if any."""
        rows = self._select(
            sql.SQL("WHERE source_key = %s AND state = ANY(%s) ORDER BY finished_at DESC LIMIT 1"),
            [key, list(COMMITTED_STATES)],
        )
        return rows[0] if rows else None

    def has_batch(self, batch_id: str) -> bool:
        """Whether a load of this batch was committed before (a re-run of the same task)."""
        return bool(
            self.sink.scalar(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE batch_id = %s)").format(self.table), [batch_id]
            )
        )

    def record(self, stats: LoadStats, *, started_at: datetime.datetime, state: str = "committed") -> None:
        """Write the load's row (in its transaction); a re-run of the same batch and key replaces its row."""
        sink = self.sink
        sink.execute(
            sql.SQL("DELETE FROM {} WHERE batch_id = %s AND source_key = %s").format(self.table),
            [stats.batch_id, stats.source_key],
        )
        names = ["batch_id", "source_bucket", "source_key", "source_etag", "mode", "state", *COUNTS, "started_at"]
        values = [
            stats.batch_id,
            stats.source_bucket,
            stats.source_key,
            stats.source_etag,
            stats.mode,
            state,
            *(getattr(stats, name) for name in COUNTS),
            started_at,
        ]
        sink.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self.table,
                sql.SQL(", ").join(sql.Identifier(name) for name in names),
                sql.SQL(", ").join(sql.Placeholder() for _ in names),
            ),
            values,
        )

    def entries(self, batch_ids: Sequence[str]) -> list[LedgerEntry]:
        """The rows of these batches."""
        return self._select(sql.SQL("WHERE batch_id = ANY(%s) ORDER BY batch_id, source_key"), [list(batch_ids)])

    def _select(self, where: sql.Composable, params: Sequence[Any]) -> list[LedgerEntry]:
        names = ["batch_id", "source_bucket", "source_key", "source_etag", "mode", "state", *COUNTS]
        query = sql.SQL("SELECT {}, started_at, finished_at FROM {} {}").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in names), self.table, where
        )
        out = []
        for row in self.sink.execute(query, params).fetchall():
            batch_id, bucket, key, etag, mode, state = row[:6]
            counts = dict(zip(COUNTS, row[6 : 6 + len(COUNTS)], strict=True))
            out.append(LedgerEntry(batch_id, bucket, key, etag, mode, state, counts, row[-2], row[-1]))
        return out
