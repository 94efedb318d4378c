"""Checks evaluated before commit, over the rows a load wrote, in common-sql's ``SQLTableCheckOperator`` form.

``checks={"npi_present": {"check_statement": "COUNT(*) FILTER (WHERE document->>'npi' IS NULL) = 0"}}``:
each statement is evaluated as ``SQLTableCheckOperator`` does — ``MIN(CASE WHEN <statement> THEN 1
ELSE 0 END)`` over the rows (an aggregate gives one row, a row-level predicate must hold for
every row), optionally narrowed by a ``partition_clause`` — but inside the load's transaction,
over the rows the load's mode says it wrote (see :meth:`s3_postgres_copy.modes.Mode.written`),
before anything is visible. A false or failing check rolls the load back and fails the task,
naming the check (terminal: a retry would load the same rows).

The statements are SQL written by the DAG's author, as in ``SQLTableCheckOperator``; they are
never built from run-time parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.dberrors import DRIVER_ERRORS, error_reason
from s3_postgres_copy.exceptions import CheckFailedError, ConfigurationError
from s3_postgres_copy.identifiers import check_name

if TYPE_CHECKING:
    from s3_postgres_copy.sink import PostgresSink

_KEYS = {"check_statement", "partition_clause"}


def parse_checks(checks: Mapping[str, Any] | None) -> dict[str, tuple[str, str | None]]:
    """Validate the ``checks`` option: name → ``(check_statement, partition_clause)``."""
    if checks is None:
        return {}
    if not isinstance(checks, Mapping):
        kind = type(checks).__name__
        raise ConfigurationError(f"checks must be a dict of name → {{'check_statement': ...}}, got {kind}")
    out: dict[str, tuple[str, str | None]] = {}
    for name, spec in checks.items():
        check_name(name, "check")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("check_statement"), str):
            raise ConfigurationError(f"check {name!r} must be a dict with a 'check_statement' string, got {spec!r}")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            allowed = ", ".join(sorted(_KEYS))
            raise ConfigurationError(f"check {name!r}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
        statement = spec["check_statement"].strip()
        partition = spec.get("partition_clause")
        if not statement or (partition is not None and not isinstance(partition, str)):
            raise ConfigurationError(
                f"check {name!r}: the check_statement must be SQL and the partition_clause a string"
            )
        out[name] = (statement, partition)
    return out


def run_checks(
    sink: PostgresSink, checks: Mapping[str, tuple[str, str | None]], rows: sql.Composable, *, location: str
) -> list[str]:
    """Evaluate each check over ``rows`` (a ``FROM`` item); raise :class:`CheckFailedError` for the first that fails.

    Returns the names of the checks that passed. The queries carry no parameters, so a ``%``
    in a statement (``LIKE 'a%'``) is just SQL.
    """
    passed = []
    for name, (statement, partition) in checks.items():
        where = sql.SQL(" WHERE {}").format(sql.SQL(partition)) if partition else sql.SQL("")
        query = sql.SQL(
            "SELECT MIN(ok) FROM (SELECT CASE WHEN {} THEN 1 ELSE 0 END AS ok FROM {} AS rows{}) AS checked"
        ).format(sql.SQL(statement), rows, where)
        sink.savepoint("s3_postgres_copy_check")
        try:
            result = sink.scalar(query)
        except DRIVER_ERRORS as err:
            sink.rollback_segment("s3_postgres_copy_check")
            raise CheckFailedError(location, name, f"the check could not be evaluated: {error_reason(err)}") from None
        sink.release("s3_postgres_copy_check")
        if result == 0:
            raise CheckFailedError(location, name, f"{statement} is false for the rows this load wrote")
        passed.append(name)
    return passed
