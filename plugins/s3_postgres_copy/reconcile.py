"""After commit: the table holds what each load reported, and every line read is accounted for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import sql

from s3_postgres_copy.exceptions import CheckFailedError
from s3_postgres_copy.identifiers import table_identifier
from s3_postgres_copy.stats import unaccounted_lines


def check_loads(conn: Any, table: str, results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Raise :class:`CheckFailedError` unless the table holds exactly the rows each load reported.

    :param results: the loads' stats (their XComs): ``source_key``, ``batch_id``, ``rows_copied``, the line counts.
    :returns: ``{"objects": n, "rows": rows in the table for them}``.
    """
    query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE batch_id = %s) FROM {} WHERE source_key = %s").format(
        table_identifier(table)
    )
    cursor = conn.cursor()
    problems, total, objects = [], 0, 0
    try:
        for stats in results:
            objects += 1
            cursor.execute(query.as_string(None), [stats["batch_id"], stats["source_key"]])
            in_table, in_batch = cursor.fetchone()
            where = f"s3://{stats['source_bucket']}/{stats['source_key']}"
            if in_table != stats["rows_copied"] or in_batch != stats["rows_copied"]:
                problems.append(
                    f"{where}: the table holds {in_table} rows for it ({in_batch} of batch "
                    f"{stats['batch_id']}), the load reported {stats['rows_copied']}"
                )
            missing = unaccounted_lines(stats)
            if missing:
                problems.append(
                    f"{where}: {stats['lines_read']} lines read but {stats['lines_read'] - missing} accounted for"
                )
            total += in_table
    finally:
        conn.rollback()
    if problems:
        raise CheckFailedError(table, "row count", "; ".join(problems), after_commit=True)
    return {"objects": objects, "rows": total}
