"""PostgreSQL side of a load: table DDL, one transaction, streaming COPY; psycopg 3 or psycopg2."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.identifiers import check_name, split_table, table_identifier
from s3_postgres_copy.stream import open_chunks

if TYPE_CHECKING:
    from s3_postgres_copy.rows import RowLayout

COPY_READ_SIZE = 1 << 20


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

    @property
    def rejects_table(self) -> sql.Identifier:
        """``<table>_rejects`` (only needed in tolerant mode)."""
        return table_identifier(self.table_name, "_rejects")

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

    # -- DDL ---------------------------------------------------------------------------------
    def table_columns(self, suffix: str = "") -> dict[str, str] | None:
        """Column name → type (``regtype``) of the target (or rejects) table, or None if it does not exist."""
        parts = split_table(self.table_name)
        qualified = sql.Identifier(*parts[:-1], parts[-1] + suffix).as_string(None)
        oid = self.scalar(sql.SQL("SELECT to_regclass(%s)::oid"), [qualified])
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

    def prepare(self, *, create_table: bool, with_rejects: bool) -> None:
        """Create the tables if allowed and missing; check that the columns exist."""
        existing = self.table_columns()
        if existing is None:
            if not create_table:
                raise ConfigurationError(f"table {self.table_name} does not exist and create_table is False")
            # Two loads creating the same new table at once would race in CREATE ... IF NOT EXISTS.
            self.execute(sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), [f"{self.table_name}:ddl"])
            existing = self.table_columns()
        if existing is None:
            defs = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(Columns.TYPES[role]))
                for role, name in self.columns.roles()
            )
            self.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.table, defs))
            if self.columns.source_key is not None:
                # Deterministic and at most 63 characters, so IF NOT EXISTS never matches another table's index.
                name = split_table(self.table_name)[-1]
                index = sql.Identifier(f"{name[:40]}_{zlib.crc32(self.table_name.encode()):08x}_source_key_idx")
                self.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                        index, self.table, sql.Identifier(self.columns.source_key)
                    )
                )
            existing = self.table_columns() or {}
        else:
            missing = [name for _, name in self.columns.roles() if name not in existing]
            if missing:
                raise ConfigurationError(
                    f"table {self.table_name} has no column(s) {', '.join(missing)}; "
                    f"it has {', '.join(sorted(existing))}. Set the column names or leave them out (None)."
                )
        self.types = existing
        if with_rejects and self.table_columns("_rejects") is None:
            if not create_table:
                raise ConfigurationError(f"table {self.table_name}_rejects does not exist and create_table is False")
            self.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (batch_id text, source_key text, source_line bigint, "
                    "raw text, error text, rejected_at timestamptz NOT NULL DEFAULT now())"
                ).format(self.rejects_table)
            )

    # -- the transaction -------------------------------------------------------------------
    def lock_source(self, key: str) -> None:
        """Serialise loads of the same object into the same table until commit."""
        self.execute(sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), [f"{self.table_name}:{key}"])

    def delete_source(self, key: str, *, rejects: bool) -> int:
        """Delete the rows of an earlier load of ``key``; return how many."""
        if self.columns.source_key is None:
            raise ConfigurationError("deleting an object's earlier rows needs the source_key column")
        cur = self.execute(
            sql.SQL("DELETE FROM {} WHERE {} = %s").format(self.table, sql.Identifier(self.columns.source_key)),
            [key],
        )
        deleted = int(cur.rowcount)
        if rejects and self.table_columns("_rejects") is not None:
            self.execute(sql.SQL("DELETE FROM {} WHERE source_key = %s").format(self.rejects_table), [key])
        return deleted

    def role_types(self) -> dict[str, str]:
        """The type of each loaded column by role (after :meth:`prepare`)."""
        return {role: self.types[name] for role, name in self.columns.roles()}

    def copy_sql(self, layout: RowLayout) -> sql.Composed:
        """``COPY <table> (<columns>) FROM STDIN`` with the options of the row layout."""
        return sql.SQL("COPY {} ({}) FROM STDIN{}").format(self.table, self._names, sql.SQL(layout.copy_options))

    def copy(self, payloads: Iterable[bytes], layout: RowLayout) -> None:
        """Run one ``COPY ... FROM STDIN`` fed by ``payloads``: rows in ``layout``, framed by its header and trailer."""
        payloads = _framed(payloads, layout)
        if self.driver == "psycopg":
            with self.cursor.copy(self.copy_sql(layout)) as copy:
                for payload in payloads:
                    copy.write(payload)
            return
        failure: list[BaseException] = []

        def guarded() -> Iterable[bytes]:
            try:
                yield from payloads
            except BaseException as err:  # psycopg2 would hide it behind its own error
                failure.append(err)
                raise

        stream = open_chunks(guarded(), COPY_READ_SIZE)
        try:
            self.cursor.copy_expert(self._render(self.copy_sql(layout)), stream, size=COPY_READ_SIZE)
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        finally:
            stream.close()

    def savepoint(self) -> None:
        """Start a savepoint for one segment (tolerant mode)."""
        self.execute(sql.SQL("SAVEPOINT s3_postgres_copy_segment"))

    def release(self) -> None:
        """Keep the segment."""
        self.execute(sql.SQL("RELEASE SAVEPOINT s3_postgres_copy_segment"))

    def rollback_segment(self) -> None:
        """Undo the segment only."""
        self.execute(sql.SQL("ROLLBACK TO SAVEPOINT s3_postgres_copy_segment"))

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
