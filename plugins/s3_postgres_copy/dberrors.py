"""What a database driver error means for a load: one function maps it onto the load's errors.

PostgreSQL says what went wrong in the error's SQLSTATE; only errors about the data of one
row (classes 22 and 23, and 54 for a document nested too deeply for ``jsonb``) are bad
records. Everything else the server or the network does — a cancelled statement, a
restart, a time-out, a full disk, a lost connection — is transient: the load was rolled
back and a retry may succeed. Errors about the table or the user's rights are
configuration errors (terminal).

Messages never quote a row's values: PostgreSQL's ``DETAIL`` of a constraint violation
(``Failing row contains (...)``, ``Key (npi)=(...)``) and ``CONTEXT`` carry record data,
which belongs in the rejects table, not in task logs or XComs.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from s3_postgres_copy.exceptions import ConfigurationError, LoadError, LockTimeoutError, ServerError


def _driver_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg2
    except ImportError:  # psycopg2 is optional
        return (psycopg.Error,)
    return (psycopg.Error, psycopg2.Error)


DRIVER_ERRORS = _driver_errors()
"""Errors the database drivers raise (psycopg 3, and psycopg2 when installed)."""

_COPY_LINE = re.compile(r"\bCOPY [^,]+, line (\d+)")
_KEY_COLUMNS = re.compile(r"^Key \((.+?)\)=\(")
# SQLSTATE classes (first two characters) and what they mean for a load.
_DATA = ("22", "23", "54")
_CONFIGURATION = ("42", "3F", "3D", "0A", "28")
_CONNECTION = ("08", "57P01", "57P02", "57P03")


def _diag(err: BaseException, name: str) -> str | None:
    value = getattr(getattr(err, "diag", None), name, None)
    return str(value) if value else None


def sqlstate(err: BaseException) -> str:
    """The error's SQLSTATE, or ``""`` (a client-side error: e.g. the connection is gone)."""
    return _diag(err, "sqlstate") or getattr(err, "pgcode", None) or ""


def copy_error_row(err: BaseException) -> int | None:
    """The 1-based COPY input line a server error points at, if any."""
    match = _COPY_LINE.search(_diag(err, "context") or "")
    return int(match.group(1)) if match else None


def error_detail(err: BaseException) -> str:
    """The server's message and detail (for the rejects table, which holds the raw record anyway)."""
    primary = _diag(err, "message_primary")
    if not primary:
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    detail = _diag(err, "message_detail")
    return f"{primary}: {detail}" if detail else primary


def error_reason(err: BaseException) -> str:
    """The server's message without any of the row's values (for logs, exceptions and XComs).

    A constraint violation keeps the names PostgreSQL gives (constraint, column, the key's
    columns); the ``DETAIL`` and ``CONTEXT``, which quote the row, are left out.
    """
    primary = _diag(err, "message_primary")
    if not primary:
        return error_detail(err)
    code = sqlstate(err)
    if code[:2] not in _DATA:
        detail = _diag(err, "message_detail")
        return f"{primary}: {detail}" if detail else primary
    names = []
    keys = _KEY_COLUMNS.match(_diag(err, "message_detail") or "")
    if keys:
        names.append(f"key ({keys.group(1)})")
    column = _diag(err, "column_name")
    if column and f'"{column}"' not in primary:
        names.append(f"column {column}")
    return f"{primary} ({', '.join(names)})" if names else primary


def is_data_error(err: BaseException) -> bool:
    """Whether a server error is about one row's data (SQLSTATE classes 22, 23 and 54)."""
    return sqlstate(err)[:2] in _DATA


def _what_happened(err: BaseException) -> str:
    """A sentence for a transient server or connection error."""
    code = sqlstate(err)
    primary = _diag(err, "message_primary") or error_detail(err)
    if code == "57014":
        timeout = "statement timeout" in primary
        why = "statement timeout" if timeout else "a cancel request (pg_cancel_backend or a user)"
        return f"the server cancelled the COPY ({why})"
    if code.startswith(_CONNECTION) or not code:
        return f"the connection was closed by the server ({primary})"
    if code.startswith("53"):
        return f"the server ran out of resources ({primary})"
    return f"the server refused the load ({primary})"


def load_error(err: BaseException, *, location: str, table: str) -> LoadError:
    """The load error for a driver error that is not about one row's data.

    Terminal for errors about the table, the schema or the user's rights; transient for the
    rest, with a message that says what happened and that the load will be retried.
    """
    code = sqlstate(err)
    if code == "55P03":
        return LockTimeoutError(f"Loading {location} into {table}: {error_reason(err)}; nothing was changed")
    if code.startswith(_CONFIGURATION):
        return ConfigurationError(f"Loading {location} into {table} failed: {error_reason(err)}")
    return ServerError(
        f"Loading {location} into {table} was interrupted: {_what_happened(err)}; "
        "the load was rolled back and will be retried"
    )


def driver_error_text(err: Any) -> str:
    """A one-line description of any driver error, for log lines."""
    return f"{type(err).__name__}: {error_reason(err)}"
