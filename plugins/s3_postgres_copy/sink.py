"""PostgreSQL side of a load: table DDL, one transaction, streaming COPY; psycopg 3 or psycopg2."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.dberrors import DRIVER_ERRORS, sqlstate
from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.identifiers import check_name, split_table, table_identifier
from s3_postgres_copy.stream import open_chunks

if TYPE_CHECKING:
    from s3_postgres_copy.rows import RowLayout

COPY_READ_SIZE = 1 << 20
_CREATE_SAVEPOINT = "s3_postgres_copy_create"
_DUPLICATE_TABLE = "42P07"


@dataclass(frozen=True, slots=True)
class Columns:
    """Names of the target table's columns; any metadata column may be ``None`` (left out).

    The table's other columns keep their defaults.
    """

    document: str = "document"
    source_key: str | None = "source_key"
    source_etag: str | None = "source_etag"
    batch_id: str | None = "batch_id"
    loaded_at: str | None = "loaded_at"
    source_line: str | None = "source_line"

    TYPES = {
        "document": "jsonb NOT NULL",
        "source_key": "text",
        "source_etag": "text",
        "batch_id": "text",
        "loaded_at": "timestamptz",
        "source_line": "bigint",
    }
    CONSTANTS = ("source_key", "source_etag", "batch_id", "loaded_at")

    def __post_init__(self) -> None:
        names = [name for _, name in self.roles()]
        for name in names:
            check_name(name)
        if len(set(names)) != len(names):
            raise ValueError(f"column names must differ, got {names}")

    def roles(self) -> list[tuple[str, str]]:
        """``(role, column name)`` in COPY order: document, constant metadata, line number last."""
        order = ("document", *self.CONSTANTS, "source_line")
        return [(role, getattr(self, role)) for role in order if getattr(self, role) is not None]

    def constant_roles(self) -> list[str]:
        """The metadata roles that are constant for a load, in COPY order."""
        return [role for role in self.CONSTANTS if getattr(self, role) is not None]


def driver_of(conn: Any) -> str:
    """``"psycopg"`` for a psycopg 3 connection, ``"psycopg2"`` for psycopg2."""
    module = type(conn).__module__
    if module.startswith("psycopg2"):
        return "psycopg2"
    if module.startswith("psycopg"):
        return "psycopg"
    raise TypeError(f"unsupported connection type {type(conn).__module__}.{type(conn).__name__}")


def _framed(payloads: Iterable[bytes], layout: RowLayout) -> Iterator[bytes]:
    header, trailer = layout.header(), layout.trailer()
    if header:
        yield header
    yield from payloads
    if trailer:
        yield trailer


def derived_identifier(table: str, suffix: str) -> sql.Identifier:
    """``<table><suffix>`` (the rejects table, the ledger, an index) as an identifier of at most 63 characters.

    A name that would be longer keeps the first characters of the table's name and a hash of
    the whole, so it is deterministic and never the name of another table's companion.
    """
    parts = split_table(table)
    name = parts[-1] + suffix
    if len(name) > 63:
        name = f"{parts[-1][: 63 - len(suffix) - 9]}_{zlib.crc32(table.encode()):08x}{suffix}"
    return sql.Identifier(*parts[:-1], check_name(name, "table"))


class PostgresSink:
    """One load's transaction on a DB-API connection from ``PostgresHook.get_conn()``.

    :param conn: a psycopg 3 or psycopg2 connection; autocommit is switched off.
    :param table: ``table`` or ``schema.table``.
    :param columns: the target columns.
    """

    def __init__(self, conn: Any, table: str, columns: Columns) -> None:
        self.conn = conn
        self.driver = driver_of(conn)
        self.table_name = table
        self.table = table_identifier(table)
        self.columns = columns
        if conn.autocommit:
            conn.autocommit = False
        self.cursor = conn.cursor()
        self._names = sql.SQL(", ").join(sql.Identifier(name) for _, name in columns.roles())
        self.types: dict[str, str] = {}
        """The target table's column types (``regtype`` names) by column name, after :meth:`prepare`."""
        self.copy_table: sql.Identifier = self.table
        """Where :meth:`copy` sends rows: the target, or a staging table a mode chose."""
        self.created = False
        """Whether :meth:`prepare` created the target in this transaction (its COPY can then ``FREEZE`` rows)."""
        self.lock_timeout: float | None = None
        """Seconds the creation lock (:meth:`create_lock`) may be waited for (``None``: as long as it takes)."""
        self.lock_interval = 10.0
        """Seconds between the log lines that say who holds a lock this load waits for."""

    @property
    def rejects_table(self) -> sql.Identifier:
        """``<table>_rejects`` (only needed in tolerant mode)."""
        return derived_identifier(self.table_name, "_rejects")

    # -- SQL helpers -----------------------------------------------------------------------
    def _render(self, query: sql.Composable) -> Any:
        return query if self.driver == "psycopg" else query.as_string(None)

    def execute(self, query: sql.Composable, params: Sequence[Any] | None = None) -> Any:
        """Run one statement; return the cursor."""
        self.cursor.execute(self._render(query), params)
        return self.cursor

    def scalar(self, query: sql.Composable, params: Sequence[Any] | None = None) -> Any:
        """Run a query returning one value."""
        row = self.execute(query, params).fetchone()
        return None if row is None else row[0]

    def quoted(self, ident: sql.Identifier) -> str:
        """An identifier as SQL text (for ``to_regclass`` and ``regclass`` parameters)."""
        return ident.as_string(None)

    # -- DDL ---------------------------------------------------------------------------------
    def relation_columns(self, ident: sql.Identifier) -> dict[str, str] | None:
        """Column name → type (``regtype``) of a table, or None if it does not exist."""
        oid = self.scalar(sql.SQL("SELECT to_regclass(%s)::oid"), [self.quoted(ident)])
        if oid is None:
            return None
        rows = self.execute(
            sql.SQL(
                "SELECT attname, atttypid::regtype::text FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
            ),
            [oid],
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def table_columns(self, suffix: str = "") -> dict[str, str] | None:
        """Column name → type (``regtype``) of the target (or a companion) table, or None if it does not exist."""
        return self.relation_columns(derived_identifier(self.table_name, suffix) if suffix else self.table)

    def create_lock(self) -> None:
        """Serialise the creation of this table by concurrent loads (``CREATE ... IF NOT EXISTS`` would race).

        The key is the schema-qualified name the table would be created under (``t`` and
        ``public.t`` are the same table), as it has no OID yet.
        """
        from s3_postgres_copy.locks import acquire, advisory_holders, key_of

        parts = split_table(self.table_name)
        schema = parts[0] if len(parts) == 2 else self.scalar(sql.SQL("SELECT current_schema()"))
        lock = key_of(self, f"ddl:{schema}.{parts[-1]}")
        acquire(
            self,
            sql.SQL("SELECT pg_advisory_xact_lock(%s)"),
            [lock],
            what=f"creating {self.table_name} (another load is creating it)",
            holders=lambda: advisory_holders(self, lock),
            timeout=self.lock_timeout,
            interval=self.lock_interval,
        )

    def prepare(self, *, create_table: bool, with_rejects: bool) -> None:
        """Create the tables if allowed and missing; check that the columns exist."""
        existing = self.table_columns()
        if existing is None:
            if not create_table:
                raise ConfigurationError(f"table {self.table_name} does not exist and create_table is False")
            self.create_lock()
            existing = self._create_unless_created_meanwhile()
        if not self.created:
            missing = [name for _, name in self.columns.roles() if name not in existing]
            if missing:
                raise ConfigurationError(
                    f"table {self.table_name} has no column(s) {', '.join(missing)}; "
                    f"it has {', '.join(sorted(existing))}. Set the column names or leave them out (None)."
                )
        self.types = existing
        if with_rejects and self.table_columns("_rejects") is None:
            if not create_table:
                raise ConfigurationError(
                    f"table {self.quoted(self.rejects_table)} does not exist and create_table is False"
                )
            self.create_lock()  # two IF NOT EXISTS at once can still collide (on pg_type)
            self.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (batch_id text, source_key text, source_line bigint, "
                    "raw text, error text, rejected_at timestamptz NOT NULL DEFAULT now())"
                ).format(self.rejects_table)
            )

    def _create_unless_created_meanwhile(self) -> dict[str, str]:
        """Create the table (under the creation lock), or find the one a concurrent load committed first.

        This session looked the table up before it waited for the lock, and its catalog cache
        may still say "missing" after the other load's commit; ``CREATE TABLE`` itself sees the
        table (``DuplicateTable``), so it runs in a savepoint and that error means "use it".
        Returns the table's columns; :attr:`created` says which happened.
        """
        self.savepoint(_CREATE_SAVEPOINT)
        try:
            self._create()
        except DRIVER_ERRORS as err:
            self.rollback_segment(_CREATE_SAVEPOINT)
            self.created = False
            existing = self.table_columns() if sqlstate(err) == _DUPLICATE_TABLE else None
            if existing is None:
                raise  # not the table (e.g. an index of that name on another table)
            return existing
        self.release(_CREATE_SAVEPOINT)
        return self.table_columns() or {}

    def _create(self) -> None:
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(Columns.TYPES[role]))
            for role, name in self.columns.roles()
        )
        self.execute(sql.SQL("CREATE TABLE {} ({})").format(self.table, defs))
        self.created = True
        if self.columns.source_key is not None:
            self.execute(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    self.index_name("source_key"), self.table, sql.Identifier(self.columns.source_key)
                )
            )

    def index_name(self, what: str) -> sql.Identifier:
        """A deterministic index name of at most 63 characters, so it never matches another table's index."""
        name = split_table(self.table_name)[-1]
        return sql.Identifier(f"{name[:39]}_{zlib.crc32(self.table_name.encode()):08x}_{what}_idx"[:63])

    # -- locks -------------------------------------------------------------------------------
    def lock_table(self, *, timeout: float | None, interval: float) -> float:
        """Take ``ROW EXCLUSIVE`` on the target (what its writes need), logging who blocks it; return seconds waited."""
        from s3_postgres_copy.locks import acquire, relation_holders

        qualified = self.quoted(self.table)
        return acquire(
            self,
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(self.table),
            [],
            what=f"the table {self.table_name}",
            holders=lambda: relation_holders(self, qualified),
            timeout=timeout,
            interval=interval,
        )

    def lock_source(self, key: str, *, timeout: float | None = None, interval: float = 10.0) -> float:
        """Serialise loads of the same object into the same table until commit; return seconds waited.

        The lock is on the table's identity (its OID, whatever the spelling: ``t``, ``public.t``)
        plus the key.
        """
        from s3_postgres_copy.locks import acquire, advisory_holders, key_of

        oid = self.scalar(sql.SQL("SELECT to_regclass(%s)::oid"), [self.quoted(self.table)])
        lock = key_of(self, f"load:{oid}:{key}")
        return acquire(
            self,
            sql.SQL("SELECT pg_advisory_xact_lock(%s)"),
            [lock],
            what=f"loading {key} into {self.table_name} (another load of the same object)",
            holders=lambda: advisory_holders(self, lock),
            timeout=timeout,
            interval=interval,
        )

    # -- writes ------------------------------------------------------------------------------
    def delete_source(self, key: str, *, rejects: bool) -> int:
        """Delete the rows of an earlier load of ``key``; return how many."""
        if self.columns.source_key is None:
            raise ConfigurationError("deleting an object's earlier rows needs the source_key column")
        return self._delete(self.columns.source_key, "source_key", key, rejects=rejects)

    def delete_batch(self, batch_id: str, *, rejects: bool) -> int:
        """Delete the rows of an earlier run of this batch (a re-run of an append); return how many."""
        if self.columns.batch_id is None:
            raise ConfigurationError("replacing a batch's rows needs the batch_id column")
        return self._delete(self.columns.batch_id, "batch_id", batch_id, rejects=rejects)

    def _delete(self, column: str, rejects_column: str, value: str, *, rejects: bool) -> int:
        cur = self.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(self.table, sql.Identifier(column)), [value])
        deleted = int(cur.rowcount)
        if rejects and self.table_columns("_rejects") is not None:
            self.execute(
                sql.SQL("DELETE FROM {} WHERE {} = %s").format(self.rejects_table, sql.Identifier(rejects_column)),
                [value],
            )
        return deleted

    def delete_all(self, *, rejects: bool) -> int:
        """Delete every row of the target (a snapshot's old content; readers keep seeing it until commit)."""
        deleted = int(self.execute(sql.SQL("DELETE FROM {}").format(self.table)).rowcount)
        if rejects and self.table_columns("_rejects") is not None:
            self.execute(sql.SQL("DELETE FROM {}").format(self.rejects_table))
        return deleted

    def role_types(self) -> dict[str, str]:
        """The type of each loaded column by role (after :meth:`prepare`)."""
        return {role: self.types[name] for role, name in self.columns.roles()}

    @property
    def column_list(self) -> sql.Composable:
        """The loaded columns, in COPY order, as SQL."""
        return self._names

    def copy_sql(self, layout: RowLayout, *, freeze: bool = False) -> sql.Composed:
        """``COPY <table> (<columns>) FROM STDIN`` with the row layout's options (and ``FREEZE``)."""
        options = [*layout.copy_options, *(("FREEZE",) if freeze else ())]
        with_options = sql.SQL(f" ({', '.join(options)})" if options else "")
        return sql.SQL("COPY {} ({}) FROM STDIN{}").format(self.copy_table, self._names, with_options)

    def copy(self, payloads: Iterable[bytes], layout: RowLayout, *, freeze: bool = False) -> int:
        """Run one ``COPY ... FROM STDIN`` fed by ``payloads`` (rows in ``layout``, framed by it); return rows copied.

        :param freeze: ``COPY ... FREEZE``: only for a table created in this (sub)transaction.
        """
        payloads = _framed(payloads, layout)
        statement = self.copy_sql(layout, freeze=freeze)
        if self.driver == "psycopg":
            with self.cursor.copy(statement) as copy:
                for payload in payloads:
                    copy.write(payload)
            return int(self.cursor.rowcount)
        failure: list[BaseException] = []

        def guarded() -> Iterable[bytes]:
            try:
                yield from payloads
            except BaseException as err:  # psycopg2 would hide it behind its own error
                failure.append(err)
                raise

        stream = open_chunks(guarded(), COPY_READ_SIZE)
        try:
            self.cursor.copy_expert(self._render(statement), stream, size=COPY_READ_SIZE)
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        finally:
            stream.close()
        return int(self.cursor.rowcount)

    def savepoint(self, name: str = "s3_postgres_copy_segment") -> None:
        """Start a savepoint (one segment in tolerant mode, one lock attempt)."""
        self.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(name)))

    def release(self, name: str = "s3_postgres_copy_segment") -> None:
        """Keep what was done since the savepoint."""
        self.execute(sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(name)))

    def rollback_segment(self, name: str = "s3_postgres_copy_segment") -> None:
        """Undo what was done since the savepoint only."""
        self.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(name)))

    def insert_rejects(self, rows: Sequence[tuple[str | None, str, int, str, str]]) -> None:
        """Write rejected records: ``(batch_id, source_key, source_line, raw, error)``."""
        if rows:
            self.cursor.executemany(
                self._render(
                    sql.SQL(
                        "INSERT INTO {} (batch_id, source_key, source_line, raw, error) VALUES (%s, %s, %s, %s, %s)"
                    ).format(self.rejects_table)
                ),
                rows,
            )

    def commit(self) -> None:
        """Commit the load."""
        self.conn.commit()

    def rollback(self) -> None:
        """Undo everything; never raises (the connection may already be gone)."""
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001, S110 - the original error matters, not this one
            pass
