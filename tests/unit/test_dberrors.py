"""``dberrors``: what a driver error means for a load, and what of it may be shown (no row values)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from s3_postgres_copy.dberrors import copy_error_row, error_detail, error_reason, is_data_error, load_error, sqlstate
from s3_postgres_copy.exceptions import (
    ConfigurationError,
    LockTimeoutError,
    ServerError,
    TerminalError,
    TransientError,
    is_terminal,
)


@dataclass
class Diag:
    sqlstate: str | None = None
    message_primary: str | None = None
    message_detail: str | None = None
    context: str | None = None
    column_name: str | None = None


class FakeError(Exception):
    def __init__(self, text: str = "", **diag: str | None) -> None:
        super().__init__(text)
        self.diag = Diag(**diag)


class TestCopyErrorRow:
    @pytest.mark.parametrize(
        ("context", "row"),
        [
            ("COPY t, line 12, column document: \"{'a'\"", 12),
            ('COPY "my table", line 3', 3),
            ("JSON data, line 1: {...\nCOPY s.t, line 457856, column document", 457856),
            ("SQL statement", None),
            (None, None),
        ],
        ids=["column", "quoted-table", "after-json-context", "no-copy", "none"],
    )
    def test_row(self, context: str | None, row: int | None) -> None:
        assert copy_error_row(FakeError(context=context)) == row

    def test_without_diag(self) -> None:
        assert copy_error_row(ValueError("x")) is None


class TestReasons:
    def test_check_violation_names_the_constraint_not_the_row(self) -> None:
        err = FakeError(
            sqlstate="23514",
            message_primary='new row for relation "t" violates check constraint "npi_digits"',
            message_detail='Failing row contains ({"npi": "MARKER-123"}, k, ...).',
        )
        assert error_reason(err) == 'new row for relation "t" violates check constraint "npi_digits"'
        assert "MARKER-123" in error_detail(err)  # for the rejects table only

    def test_unique_violation_names_the_key_columns_not_the_values(self) -> None:
        err = FakeError(
            sqlstate="23505",
            message_primary='duplicate key value violates unique constraint "t_npi_key"',
            message_detail="Key ((document ->> 'npi'::text))=(MARKER-9) already exists.",
        )
        reason = error_reason(err)
        assert reason == (
            "duplicate key value violates unique constraint \"t_npi_key\" (key ((document ->> 'npi'::text)))"
        )
        assert "MARKER" not in reason

    def test_not_null_names_the_column_once(self) -> None:
        err = FakeError(
            sqlstate="23502",
            message_primary='null value in column "document" of relation "t" violates not-null constraint',
            message_detail="Failing row contains (null, MARKER).",
            column_name="document",
        )
        assert error_reason(err) == 'null value in column "document" of relation "t" violates not-null constraint'

    def test_data_exception_detail_is_left_out(self) -> None:
        err = FakeError(
            sqlstate="22P02",
            message_primary="invalid input syntax for type json",
            message_detail='Token "MARKER" is invalid.',
            context="JSON data, line 1: {MARKER...",
        )
        assert error_reason(err) == "invalid input syntax for type json"
        assert error_detail(err) == 'invalid input syntax for type json: Token "MARKER" is invalid.'

    def test_other_errors_keep_their_detail(self) -> None:
        err = FakeError(sqlstate="53100", message_primary="could not extend file", message_detail="No space left")
        assert error_reason(err) == "could not extend file: No space left"

    def test_client_side_error_without_diag(self) -> None:
        assert error_reason(FakeError("server closed the connection unexpectedly\n\tThis probably means")) == (
            "server closed the connection unexpectedly"
        )
        assert error_reason(FakeError("")) == "FakeError"


class TestClassification:
    @pytest.mark.parametrize(
        ("code", "data"),
        [("22P02", True), ("23505", True), ("23514", True), ("54001", True), ("57014", False), ("08006", False)],
    )
    def test_data_errors_are_classes_22_23_54(self, code: str, data: bool) -> None:
        assert is_data_error(FakeError(sqlstate=code)) is data

    @pytest.mark.parametrize(
        ("diag", "kind", "says"),
        [
            (
                {"sqlstate": "57014", "message_primary": "canceling statement due to statement timeout"},
                ServerError,
                "the server cancelled the COPY (statement timeout)",
            ),
            (
                {"sqlstate": "57014", "message_primary": "canceling statement due to user request"},
                ServerError,
                "the server cancelled the COPY (a cancel request (pg_cancel_backend or a user))",
            ),
            (
                {"sqlstate": "57P01", "message_primary": "terminating connection due to administrator command"},
                ServerError,
                "the connection was closed by the server (terminating connection due to administrator command)",
            ),
            ({}, ServerError, "the connection was closed by the server"),
            (
                {"sqlstate": "53100", "message_primary": 'could not extend file "base/1/2"'},
                ServerError,
                "the server ran out of resources",
            ),
            (
                {"sqlstate": "55P03", "message_primary": "canceling statement due to lock timeout"},
                LockTimeoutError,
                "lock",
            ),
            ({"sqlstate": "3F000", "message_primary": 'schema "nope" does not exist'}, ConfigurationError, "nope"),
            (
                {"sqlstate": "42501", "message_primary": "permission denied for table t"},
                ConfigurationError,
                "permission",
            ),
            ({"sqlstate": "42P01", "message_primary": 'relation "t" does not exist'}, ConfigurationError, "relation"),
        ],
        ids=[
            "statement-timeout",
            "cancel",
            "admin-shutdown",
            "connection-lost",
            "disk-full",
            "lock",
            "schema",
            "privilege",
            "undefined-table",
        ],
    )
    def test_load_error(self, diag: dict[str, str], kind: type[Exception], says: str) -> None:
        err = load_error(FakeError("server closed the connection unexpectedly", **diag), location="s3://b/k", table="t")
        assert type(err) is kind
        assert says in str(err)
        assert str(err).startswith("Loading s3://b/k into t")
        if isinstance(err, TransientError):
            assert not is_terminal(err)
            assert "rolled back" in str(err) or "nothing was changed" in str(err)
        else:
            assert isinstance(err, TerminalError)
            assert is_terminal(err)

    def test_sqlstate_of_psycopg2_style_errors(self) -> None:
        class Pg2Error(Exception):
            pgcode = "57P01"

        assert sqlstate(Pg2Error()) == "57P01"

    @pytest.mark.parametrize(
        ("err", "terminal"),
        [(ValueError("x"), True), (TypeError("x"), True), (RuntimeError("x"), False), (OSError("x"), False)],
    )
    def test_is_terminal_for_plain_errors(self, err: Exception, terminal: bool) -> None:
        assert is_terminal(err) is terminal
