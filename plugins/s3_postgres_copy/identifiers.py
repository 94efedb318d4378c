"""Validation of table and column names before any SQL runs."""

from __future__ import annotations

import re

from psycopg import sql

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_name(name: str, what: str = "column") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} is not a plain identifier: use letters, digits and _ "
            "(not starting with a digit, at most 63 characters)"
        )
    return name


def split_table(name: str) -> tuple[str, ...]:
    """Split ``schema.table`` (or ``table``) into validated parts."""
    if not isinstance(name, str):
        raise ValueError(f"table name must be a string, got {type(name).__name__}")
    parts = name.split(".")
    if len(parts) > 2:
        raise ValueError(f"table name {name!r} must be 'table' or 'schema.table'")
    return tuple(check_name(part, "table") for part in parts)


def table_identifier(name: str, suffix: str = "") -> sql.Identifier:
    """``schema.table`` as a quoted identifier; ``suffix`` is appended to the table part."""
    parts = split_table(name)
    table = check_name(parts[-1] + suffix, "table")
    return sql.Identifier(*parts[:-1], table)
