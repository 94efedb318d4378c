"""Concurrent first loads into a table that does not exist yet: one creates it, the others use it.

Real PostgreSQL; both drivers. The second session looks the table up (missing: the first has
not committed), waits for the creation lock, and must then find the table the first committed,
although its own catalog cache still says it is missing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from s3_postgres_copy.exceptions import LockTimeoutError
from s3_postgres_copy.sink import Columns, PostgresSink

if TYPE_CHECKING:
    from .helpers import IntegrationEnv


def test_a_table_created_by_a_concurrent_load_is_used_not_created_again(denv: IntegrationEnv, table: str) -> None:
    first = denv.db_connect()
    second = denv.db_connect()
    outcome: dict[str, Any] = {}
    try:
        creator = PostgresSink(first, table, Columns())
        creator.prepare(create_table=True, with_rejects=True)
        assert creator.created

        def prepare_second() -> None:
            sink = PostgresSink(second, table, Columns())
            try:
                sink.prepare(create_table=True, with_rejects=True)
            except Exception as err:  # noqa: BLE001 - reported below
                outcome["error"] = err
            else:
                outcome["created"], outcome["types"] = sink.created, dict(sink.types)

        waiter = threading.Thread(target=prepare_second)
        waiter.start()
        time.sleep(1.0)  # the second session has looked the table up and waits for the creation lock
        assert waiter.is_alive()
        first.commit()
        waiter.join(30)
        assert not waiter.is_alive()
        second.commit()
    finally:
        first.close()
        second.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["created"] is False
    assert set(outcome["types"]) == {name for _, name in Columns().roles()}
    assert denv.count(table) == 0


def test_waiting_for_the_creation_lock_is_logged_and_bounded_by_lock_timeout(
    denv: IntegrationEnv, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = denv.db_connect()
    second = denv.db_connect()
    try:
        PostgresSink(first, table, Columns()).prepare(create_table=True, with_rejects=False)
        waiter = PostgresSink(second, table, Columns())
        waiter.lock_timeout, waiter.lock_interval = 1.0, 0.3
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="s3_postgres_copy.locks"):
            with pytest.raises(LockTimeoutError, match=rf"creating {table} \(another load is creating it\)"):
                waiter.prepare(create_table=True, with_rejects=False)
        assert time.monotonic() - started < 10
        assert any(f"Waiting for a lock on creating {table}" in r.getMessage() for r in caplog.records)
        second.rollback()
        first.rollback()
    finally:
        first.close()
        second.close()
    assert denv.execute(f"SELECT to_regclass('{table}')") == [(None,)]
