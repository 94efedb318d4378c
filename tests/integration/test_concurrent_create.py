"""Concurrent first loads into a table that does not exist yet: one creates it, the others use it.

Real PostgreSQL; both drivers. The second session looks the table up (missing: the first has
not committed), waits for the creation lock, and must then find the table the first committed,
although its own catalog cache still says it is missing.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

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
