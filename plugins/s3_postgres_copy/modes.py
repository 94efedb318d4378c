"""Load modes: what a load does to the rows already in the table, one strategy object per mode.

A mode decides what happens before the COPY (delete this object's earlier rows, create a
staging table, ...), where the COPY goes, what happens before commit (upsert the staged rows),
which rows the load wrote (what the checks look at) and what its row counts mean (the
reconciliation before commit). The loader calls these hooks and holds no ``if mode == ...``
of its own; the options, the operator and the DAG's form take the list of modes and their
descriptions from :data:`MODES`.

Adding a mode is one :class:`Mode` subclass here (its SQL in a module of its own, as
``merge.py`` and ``snapshot.py`` are) and one entry in :data:`MODES`. This module imports
nothing heavy at import time, so a DAG file can use it at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, get_args

if TYPE_CHECKING:
    from psycopg import sql

    from s3_postgres_copy.ledger import Ledger, LedgerEntry
    from s3_postgres_copy.options import LoadOptions
    from s3_postgres_copy.sink import PostgresSink
    from s3_postgres_copy.stats import LoadStats

ModeName = Literal["replace", "append", "merge", "snapshot"]
"""A ``mode`` option."""


class LoadState(Protocol):
    """What a mode sees of a running load."""

    @property
    def sink(self) -> PostgresSink:
        """The load's transaction."""

    @property
    def options(self) -> LoadOptions:
        """The load's options."""

    @property
    def stats(self) -> LoadStats:
        """The load's running stats."""

    @property
    def ledger(self) -> Ledger | None:
        """The table's load ledger (``None`` with ``ledger=False``)."""


class Mode:
    """A strategy for the rows already in the table. The default hooks do nothing."""

    name: ClassVar[str]
    description: ClassVar[str]
    """One sentence for the trigger form and the docs."""
    needs_source_key: ClassVar[bool] = False
    """Whether the mode finds an object's rows by the ``source_key`` column."""
    counts_what_it_wrote: ClassVar[bool] = False
    """Whether :meth:`written` holds exactly the load's rows, so :meth:`reconcile` counts them before commit."""
    written_rows: ClassVar[str] = "the table"
    """What :meth:`written` is, for messages."""

    def check(self, options: LoadOptions) -> None:
        """Raise ``ValueError`` for options this mode cannot work with."""
        if self.needs_source_key and options.columns.source_key is None:
            raise ValueError(f"mode={self.name!r} needs the source_key column; use mode='append' without it")
        if options.merge_key is not None and self.name != "merge":
            raise ValueError(f"merge_key is for mode='merge', not mode={self.name!r}")
        if options.stage is not None and self.name != "snapshot":
            raise ValueError(f"stage is for mode='snapshot', not mode={self.name!r}")

    def prepare(self, load: LoadState) -> None:
        """Run after the table is ready (created or checked), before it is locked."""

    def before_copy(self, load: LoadState) -> None:
        """Run in the load's transaction after the table is ready and locked, before any row is sent."""

    def before_commit(self, load: LoadState) -> None:
        """Run in the load's transaction after the last row, before the checks and the commit."""

    def written(self, load: LoadState) -> sql.Composable:
        """The rows this load wrote, as a ``FROM`` item (what the checks look at)."""
        from psycopg import sql

        return sql.SQL("(SELECT * FROM {} WHERE {} = {})").format(
            load.sink.table, sql.Identifier(_required(load, "source_key")), sql.Literal(load.options.key)
        )

    def reconcile(self, load: LoadState, copied: int) -> list[str]:
        """What does not add up once the rows are in (``copied``: the rows the server's COPYs reported)."""
        stats = load.stats
        problems = []
        if copied != stats.rows_copied:
            problems.append(f"the server's COPY commands took {copied} rows, the load sent {stats.rows_copied}")
        if stats.unaccounted_lines:
            problems.append(
                f"{stats.lines_read} lines read but {stats.lines_read - stats.unaccounted_lines} accounted for"
            )
        if self.counts_what_it_wrote:
            held = _count(load, self.written(load))
            if held != stats.rows_copied:
                problems.append(f"{self.written_rows} holds {held} rows, the load copied {stats.rows_copied}")
        return problems

    def ledger_state(self, load: LoadState) -> str:
        """The load's ``state`` in the ledger."""
        return "committed"

    def after_commit(self, sink: PostgresSink, entries: Sequence[LedgerEntry]) -> list[str]:
        """After commit: what does not add up between the table and the loads' ledger rows."""
        from psycopg import sql

        problems = []
        for entry in entries:
            rows = self.left_rows(sink, entry)
            if rows is None:
                continue
            held = int(sink.scalar(sql.SQL("SELECT count(*) FROM {} AS rows").format(rows)))
            expected = self.left_count(entry)
            if held != expected:
                problems.append(
                    f"{entry.source_key}: the table holds {held} rows for it, the load reported {expected} "
                    f"(batch {entry.batch_id})"
                )
        return problems

    def left_rows(self, sink: PostgresSink, entry: LedgerEntry) -> sql.Composable | None:
        """The rows a committed load left in the table, as a ``FROM`` item (``None``: nothing to count alone)."""
        from psycopg import sql

        return sql.SQL("(SELECT 1 FROM {} WHERE {} = {})").format(
            sink.table, sql.Identifier(sink.columns.batch_id or "batch_id"), sql.Literal(entry.batch_id)
        )

    def left_count(self, entry: LedgerEntry) -> int:
        """How many rows :meth:`left_rows` must hold."""
        return int(entry.counts["rows_copied"] or 0)


def _required(load: LoadState, role: str) -> str:
    name = getattr(load.options.columns, role)
    if name is None:
        raise ValueError(f"mode={load.options.mode!r} with checks needs the {role} column")
    return str(name)


def _count(load: LoadState, rows: sql.Composable) -> int:
    from psycopg import sql

    return int(load.sink.scalar(sql.SQL("SELECT count(*) FROM {} AS rows").format(rows)))


class Replace(Mode):
    """Delete the object's earlier rows (by ``source_key``) in the same transaction, then load."""

    name = "replace"
    description = (
        "the object's earlier rows (same key) are replaced: one set of rows per file, re-runs never duplicate."
    )
    needs_source_key = True
    counts_what_it_wrote = True
    written_rows = "the table, for the key,"

    def before_copy(self, load: LoadState) -> None:
        """Delete the rows (and rejects) of an earlier load of this key."""
        load.stats.rows_deleted = load.sink.delete_source(load.options.key, rejects=load.options.tolerant)

    def left_rows(self, sink: PostgresSink, entry: LedgerEntry) -> sql.Composable | None:
        """The object's rows (by key)."""
        from psycopg import sql

        return sql.SQL("(SELECT 1 FROM {} WHERE {} = {})").format(
            sink.table, sql.Identifier(sink.columns.source_key or "source_key"), sql.Literal(entry.source_key)
        )


class Append(Mode):
    """Add the object's rows to whatever the table holds; a re-run of the same batch replaces its own rows."""

    name = "append"
    description = "the rows are added to the table (an event log); re-running a run replaces only that run's rows."

    def before_copy(self, load: LoadState) -> None:
        """A re-run of a committed batch (a cleared or retried task) deletes that batch's rows first."""
        options = load.options
        if options.batch_id and load.ledger is not None and options.columns.batch_id is not None:
            if load.ledger.has_batch(options.batch_id):
                load.stats.rows_deleted = load.sink.delete_batch(options.batch_id, rejects=options.tolerant)

    def written(self, load: LoadState) -> sql.Composable:
        """The rows of this batch."""
        from psycopg import sql

        return sql.SQL("(SELECT * FROM {} WHERE {} = {})").format(
            load.sink.table, sql.Identifier(_required(load, "batch_id")), sql.Literal(load.options.batch_id)
        )


class Merge(Mode):
    """Upsert by ``merge_key`` from a staging table: new keys inserted, changed ones updated, the rest untouched."""

    name = "merge"
    description = (
        "rows are upserted by merge_key (e.g. npi): new keys inserted, changed documents updated, "
        "identical ones left untouched; other keys stay."
    )

    def check(self, options: LoadOptions) -> None:
        """``merge_key`` is required: a non-empty list of top-level document fields."""
        from s3_postgres_copy.merge import check_merge_key

        super().check(options)
        check_merge_key(options.merge_key)

    def prepare(self, load: LoadState) -> None:
        """A new table gets the key's unique index; an existing one must have it."""
        from s3_postgres_copy.merge import check_merge_key, create_unique_index, require_unique_index

        keys = check_merge_key(load.options.merge_key)
        if load.sink.created:
            create_unique_index(load.sink, keys)
        else:
            require_unique_index(load.sink, keys)

    def before_copy(self, load: LoadState) -> None:
        """Rows go to a transaction-local staging table."""
        from s3_postgres_copy.merge import check_merge_key, create_staging

        create_staging(load.sink, check_merge_key(load.options.merge_key))

    def before_commit(self, load: LoadState) -> None:
        """Upsert the staged rows; count inserts, updates, unchanged and deduplicated records."""
        from s3_postgres_copy.merge import check_merge_key, upsert

        counts = upsert(load.sink, check_merge_key(load.options.merge_key))
        stats = load.stats
        stats.rows_inserted, stats.rows_updated = counts.inserted, counts.updated
        stats.rows_unchanged, stats.rows_deduplicated = counts.unchanged, counts.deduplicated
        load.sink.copy_table = load.sink.table

    def written(self, load: LoadState) -> sql.Composable:
        """The file's rows as staged (unchanged and deduplicated ones included)."""
        from s3_postgres_copy.merge import STAGING

        return STAGING

    def left_count(self, entry: LedgerEntry) -> int:
        """The rows of this batch are the inserted and updated ones (unchanged rows keep their batch)."""
        return int(entry.counts["rows_inserted"] or 0) + int(entry.counts["rows_updated"] or 0)

    def reconcile(self, load: LoadState, copied: int) -> list[str]:
        """Every staged row was inserted, updated, left unchanged or deduplicated."""
        problems = super().reconcile(load, copied)
        stats = load.stats
        outcomes = (stats.rows_inserted or 0) + (stats.rows_updated or 0) + (stats.rows_unchanged or 0)
        if outcomes + (stats.rows_deduplicated or 0) != stats.rows_copied:
            problems.append(
                f"{stats.rows_copied} rows staged but {outcomes} upserted or unchanged and "
                f"{stats.rows_deduplicated} deduplicated"
            )
        return problems


class Snapshot(Mode):
    """The table becomes exactly this load's rows (or, with ``stage``, a prefix's rows, published together)."""

    name = "snapshot"
    description = (
        "the table becomes exactly this run's rows (one object, or every object under the prefix): readers see the "
        "old content until the commit, never a partial one."
    )
    counts_what_it_wrote = True
    written_rows = "the new content"

    def check(self, options: LoadOptions) -> None:
        """Staging an object of a prefix snapshot finds its rows again by ``source_key``."""
        super().check(options)
        if options.stage is not None and options.columns.source_key is None:
            raise ValueError("mode='snapshot' with a stage needs the source_key column")

    def before_copy(self, load: LoadState) -> None:
        """Delete the table's rows (readers keep seeing them until commit), or stage the object's rows."""
        options, sink = load.options, load.sink
        if options.stage is None:
            load.stats.rows_deleted = sink.delete_all(rejects=options.tolerant)
            return
        from s3_postgres_copy.snapshot import prepare_stage

        staging = prepare_stage(sink, options.stage)
        load.stats.rows_deleted = staging.delete_source(options.key, rejects=False)
        sink.copy_table = staging.table

    def written(self, load: LoadState) -> sql.Composable:
        """The table's new content (or the object's staged rows)."""
        from psycopg import sql

        if load.options.stage is None:
            return load.sink.table
        return sql.SQL("(SELECT * FROM {} WHERE {} = {})").format(
            load.sink.copy_table, sql.Identifier(_required(load, "source_key")), sql.Literal(load.options.key)
        )

    def ledger_state(self, load: LoadState) -> str:
        """A staged object is published later, with the others."""
        return "committed" if load.options.stage is None else "staged"

    def after_commit(self, sink: PostgresSink, entries: Sequence[LedgerEntry]) -> list[str]:
        """The table holds exactly the rows of the snapshot's loads."""
        from psycopg import sql

        held = int(sink.scalar(sql.SQL("SELECT count(*) FROM {}").format(sink.table)))
        expected = sum(int(entry.counts["rows_copied"] or 0) for entry in entries)
        return [] if held == expected else [f"the table holds {held} rows, the snapshot's loads reported {expected}"]


MODES: dict[str, Mode] = {mode.name: mode for mode in (Replace(), Append(), Merge(), Snapshot())}
"""Every mode by name, in the order forms list them."""
if tuple(MODES) != get_args(ModeName):  # pragma: no cover - a programming error
    raise RuntimeError("ModeName and MODES must list the same modes")


def get_mode(name: str) -> Mode:
    """The mode ``name``; ``ValueError`` names the allowed ones."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {name!r}") from None
