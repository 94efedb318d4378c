"""Load modes: what a load does to the rows already in the table, one strategy object per mode.

A mode decides what happens before the COPY (delete this object's earlier rows, ...), where
the COPY goes, what happens before commit, and what the load's row counts mean. The loader
calls these hooks and holds no ``if mode == ...`` of its own; the options, the operator and
the DAG's form take the list of modes and their descriptions from :data:`MODES`.

Adding a mode is one :class:`Mode` subclass here (its SQL in the sink) and one entry in
:data:`MODES`. This module imports nothing heavy, so a DAG file can use it at parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, get_args

if TYPE_CHECKING:
    from s3_postgres_copy.options import LoadOptions
    from s3_postgres_copy.sink import PostgresSink
    from s3_postgres_copy.stats import LoadStats

ModeName = Literal["replace", "append"]
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


class Mode:
    """A strategy for the rows already in the table. The default hooks do nothing."""

    name: ClassVar[str]
    description: ClassVar[str]
    """One sentence for the trigger form and the docs."""
    needs_source_key: ClassVar[bool] = False
    """Whether the mode finds an object's rows by the ``source_key`` column."""

    def check(self, options: LoadOptions) -> None:
        """Raise ``ValueError`` for options this mode cannot work with."""
        if self.needs_source_key and options.columns.source_key is None:
            raise ValueError(f"mode={self.name!r} needs the source_key column; use mode='append' without it")

    def before_copy(self, load: LoadState) -> None:
        """Run in the load's transaction after the table is ready and locked, before any row is sent."""

    def before_commit(self, load: LoadState) -> None:
        """Run in the load's transaction after the last row, before commit."""


class Replace(Mode):
    """Delete the object's earlier rows (by ``source_key``) in the same transaction, then load."""

    name = "replace"
    description = "the object's earlier rows (same key) are replaced: re-runs never duplicate."
    needs_source_key = True

    def before_copy(self, load: LoadState) -> None:
        """Delete the rows (and rejects) of an earlier load of this key."""
        load.stats.rows_deleted = load.sink.delete_source(load.options.key, rejects=load.options.tolerant)


class Append(Mode):
    """Add the object's rows to whatever the table holds."""

    name = "append"
    description = "the rows are added to the table (an event log)."


MODES: dict[str, Mode] = {mode.name: mode for mode in (Replace(), Append())}
"""Every mode by name, in the order forms list them."""
assert tuple(MODES) == get_args(ModeName), "ModeName and MODES must list the same modes"


def get_mode(name: str) -> Mode:
    """The mode ``name``; ``ValueError`` names the allowed ones."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {name!r}") from None
