"""The SQL of ``mode="merge"``: rows are upserted by ``merge_key`` from a transaction-local staging table.

The object's rows are COPYed into a temporary table (``ON COMMIT DROP``) that has the
target's columns and constraints, a sequence number in file order and one ``CHECK`` per
key field (so a record without the key is refused by COPY with its line, like any bad
record). Before commit one statement upserts them:

* several records of one key: the last in file order wins (``DISTINCT ON`` the key, the
  highest sequence number), the others are counted as deduplicated;
* a key not in the table is inserted; a key whose stored document differs is updated,
  metadata included; a record whose document equals the stored one (``jsonb`` equality)
  leaves the row as it is — no new row version, not even a row lock, so no WAL, its old
  metadata kept;
* rows of other keys are not touched.

``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`` needs a unique index on the key
expressions; the loader creates it with the table, and refuses an existing table without
one, printing the ``CREATE UNIQUE INDEX`` statement to run. Measured on the same staged rows
(``bench/README.md``): at PostgreSQL's default ``work_mem`` PostgreSQL 15's ``MERGE`` was the
faster (0.55-0.84x); with the upsert's ``work_mem`` raised (:data:`UPSERT_WORK_MEM`) this
statement is (``MERGE`` 1.13-1.44x its time). ``MERGE`` also has no ``RETURNING`` in 15 to tell
inserts from updates, and may fail on a concurrent insert of the same key.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from s3_postgres_copy.dberrors import DRIVER_ERRORS, sqlstate
from s3_postgres_copy.exceptions import ConfigurationError

if TYPE_CHECKING:
    from s3_postgres_copy.sink import PostgresSink

STAGING = sql.Identifier("s3_postgres_copy_merge")
SEQUENCE = sql.Identifier("s3_postgres_copy_seq")
KEY_CHECK_PREFIX = "s3_postgres_copy_merge_key_"
"""The staging table's constraint for merge key field ``i`` is named ``<prefix><i>``."""
_NO_MATCHING_INDEX = "42P10"
UPSERT_WORK_MEM = "256MB"
"""The ``work_mem`` the upsert statement runs with when the session's is lower (never lowered).

At PostgreSQL's default (4 MB) the hash join of a 1M-row file with a 1M-row table spills
both sides to 64 temp batches: raising it for this one statement made the upsert ~1.5x
faster here (``bench/README.md``). It is set with ``set_config(..., true)`` inside the
load's transaction and put back right after the statement.
"""


@dataclass(frozen=True, slots=True)
class MergeCounts:
    """What an upsert did."""

    staged: int
    inserted: int
    updated: int
    unchanged: int
    deduplicated: int


def check_merge_key(merge_key: object) -> tuple[str, ...]:
    """The ``merge_key`` option as a tuple of field names, or ``ValueError`` saying what is wrong."""
    if isinstance(merge_key, str):
        merge_key = [merge_key]
    if not isinstance(merge_key, Sequence) or not merge_key:
        raise ValueError(
            f"mode='merge' needs merge_key: a list of top-level document fields, e.g. ['npi']; got {merge_key!r}"
        )
    fields = tuple(merge_key)
    for field in fields:
        if not isinstance(field, str) or not field or "\x00" in field or len(field) > 200:
            raise ValueError(f"merge_key fields must be non-empty strings (top-level document fields); got {field!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"merge_key repeats a field: {list(fields)}")
    return fields


def key_expressions(document: str, merge_key: Sequence[str], alias: str | None = None) -> list[sql.Composable]:
    """``(document ->> 'field')`` for each key field (the text of the top-level value)."""
    column = sql.Identifier(alias, document) if alias else sql.Identifier(document)
    return [sql.SQL("({} ->> {})").format(column, sql.Literal(field)) for field in merge_key]


def keys_match(document: str, merge_key: Sequence[str], left: str, right: str) -> sql.Composed:
    """``left``'s key expressions equal ``right``'s (a join condition between two aliases)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(a, b)
        for a, b in zip(
            key_expressions(document, merge_key, left), key_expressions(document, merge_key, right), strict=True
        )
    )


def index_statement(sink: PostgresSink, merge_key: Sequence[str]) -> sql.Composed:
    """``CREATE UNIQUE INDEX ... ON <table> ((document ->> 'field'), ...)``."""
    digest = zlib.crc32("\x00".join(merge_key).encode())
    expressions = sql.SQL(", ").join(key_expressions(sink.columns.document, merge_key))
    return sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
        sink.index_name(f"merge_{digest:08x}"), sink.table, expressions
    )


def create_unique_index(sink: PostgresSink, merge_key: Sequence[str]) -> None:
    """Create the key's unique index (with a table the loader just created)."""
    sink.execute(index_statement(sink, merge_key))


def has_unique_index(sink: PostgresSink, merge_key: Sequence[str]) -> bool:
    """Whether ``ON CONFLICT`` on the key finds a unique index (asked of PostgreSQL's own inference)."""
    document = sql.Identifier(sink.columns.document)
    probe = sql.SQL("EXPLAIN INSERT INTO {} ({}) VALUES ('{{}}') ON CONFLICT ({}) DO NOTHING").format(
        sink.table, document, sql.SQL(", ").join(key_expressions(sink.columns.document, merge_key))
    )
    sink.savepoint("s3_postgres_copy_probe")
    try:
        sink.execute(probe)
    except DRIVER_ERRORS as err:
        sink.rollback_segment("s3_postgres_copy_probe")
        if sqlstate(err) == _NO_MATCHING_INDEX:
            return False
        raise
    sink.release("s3_postgres_copy_probe")
    return True


def require_unique_index(sink: PostgresSink, merge_key: Sequence[str]) -> None:
    """Refuse a table without the key's unique index, with the statement that creates it."""
    if not has_unique_index(sink, merge_key):
        statement = index_statement(sink, merge_key).as_string(None)
        raise ConfigurationError(
            f"mode='merge' needs a unique index on the merge key of {sink.table_name}; none matches "
            f"{list(merge_key)}. Create it (outside the load), then load again:\n  {statement};\n"
            "(on a big table in use, CREATE UNIQUE INDEX CONCURRENTLY does not block writers)"
        )


def create_staging(sink: PostgresSink, merge_key: Sequence[str]) -> None:
    """The transaction-local staging table: the target's columns and constraints, file order, key checks."""
    sink.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED) "
            "ON COMMIT DROP"
        ).format(STAGING, sink.table)
    )
    sink.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint GENERATED ALWAYS AS IDENTITY").format(STAGING, SEQUENCE))
    for i, expression in enumerate(key_expressions(sink.columns.document, merge_key)):
        sink.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL)").format(
                STAGING, sql.Identifier(f"{KEY_CHECK_PREFIX}{i}"), expression
            )
        )
    sink.copy_table = STAGING


def missing_key_reason(constraint: str | None, merge_key: Sequence[str]) -> str | None:
    """The reason for a staging row refused by a key check (``None`` for another constraint)."""
    if not constraint or not constraint.startswith(KEY_CHECK_PREFIX):
        return None
    field = merge_key[int(constraint.removeprefix(KEY_CHECK_PREFIX))]
    return f"the record has no value for the merge key field {field!r} (missing or null)"


def upsert(sink: PostgresSink, merge_key: Sequence[str]) -> MergeCounts:
    """Upsert the staged rows into the target; return what it did.

    Only the rows that are new or differ from the stored document reach the ``INSERT``:
    ``ON CONFLICT DO UPDATE`` locks every row it matches, whatever its ``WHERE`` says, and
    a lock on an unchanged row would cost a page write and WAL. The last record of each key
    is found by sorting the key and the sequence number only, not whole rows. The
    ``ON CONFLICT ... WHERE`` stays for a concurrent load of the same keys.
    """
    names = [name for _, name in sink.columns.roles()]
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
    staged_columns = sql.SQL(", ").join(sql.Identifier("staged", name) for name in names)
    document = sql.Identifier(sink.columns.document)
    keys = key_expressions(sink.columns.document, merge_key)
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in names)
    query = sql.SQL(
        "WITH last AS MATERIALIZED ("
        "  SELECT DISTINCT ON ({keys}) {sequence} FROM {staging} ORDER BY {keys}, {sequence} DESC"
        "), changed AS ("
        "  SELECT {staged_columns} FROM {staging} AS staged JOIN last USING ({sequence})"
        "  LEFT JOIN {target} AS stored ON ({stored_match})"
        "  WHERE stored.{document} IS NULL OR stored.{document} IS DISTINCT FROM staged.{document}"
        "), upserted AS ("
        "  INSERT INTO {target} AS stored ({columns}) SELECT {columns} FROM changed"
        "  ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        "  WHERE stored.{document} IS DISTINCT FROM EXCLUDED.{document}"
        "  RETURNING (xmax = 0) AS inserted"
        ") SELECT (SELECT count(*) FROM {staging}), (SELECT count(*) FROM last),"
        "  count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
    ).format(
        keys=sql.SQL(", ").join(keys),
        staged_columns=staged_columns,
        columns=columns,
        staging=STAGING,
        sequence=SEQUENCE,
        target=sink.table,
        stored_match=keys_match(sink.columns.document, merge_key, "stored", "staged"),
        updates=updates,
        document=document,
    )
    previous = sink.execute(
        sql.SQL(
            "SELECT current_setting('work_mem'), pg_size_bytes(current_setting('work_mem')) < pg_size_bytes({})"
        ).format(sql.Literal(UPSERT_WORK_MEM))
    ).fetchone()
    if previous[1]:
        sink.execute(sql.SQL("SELECT set_config('work_mem', {}, true)").format(sql.Literal(UPSERT_WORK_MEM)))
    staged, distinct, inserted, updated = sink.execute(query).fetchone()
    if previous[1]:
        sink.execute(sql.SQL("SELECT set_config('work_mem', {}, true)").format(sql.Literal(previous[0])))
    return MergeCounts(
        staged=int(staged),
        inserted=int(inserted),
        updated=int(updated),
        unchanged=int(distinct) - int(inserted) - int(updated),
        deduplicated=int(staged) - int(distinct),
    )
