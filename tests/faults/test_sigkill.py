"""SIGKILL of a process in the middle of its COPY: nothing of that batch is visible, a re-run is exact.

The child process streams a 300k-line object through the fault proxy, which stalls
after a few MB; the test waits until the proxy is stalling *and* the child's backend is
running its ``COPY`` (``pg_stat_activity``) and holds the per-object advisory lock, then
SIGKILLs it. The server sees the client's socket close, aborts the transaction and
releases the lock; the table is exactly as before, and a re-run loads the exact set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.fault_proxy import Stall

if TYPE_CHECKING:
    from .support import FaultEnv

LINES = 300_000
KEY = "in/big.jsonl"
CHILD = Path(__file__).with_name("load_child.py")


def _big_object() -> bytes:
    return b"".join(b'{"id":%d,"name":"provider-%d","tags":["a","b"]}\n' % (i, i) for i in range(1, LINES + 1))


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_copy_leaves_no_rows_and_rerun_is_exact(env: FaultEnv, table: str) -> None:
    # before: an earlier version of the object and another object, committed
    env.put(KEY, b"".join(b'{"id":%d,"old":true}\n' % i for i in range(1, 51)))
    env.load(KEY, table, batch_id="old")
    other_etag = env.put("in/other.jsonl", b'{"other":1}\n{"other":2}\n')
    env.load("in/other.jsonl", table, batch_id="other")
    before = env.snapshot(table)
    assert before is not None
    assert len(before) == 52

    data = _big_object()
    etag = env.put(KEY, data)
    stall_at = len(data) // 3
    env.proxy.clear()
    env.proxy.plan(Stall(after=stall_at, seconds=60))  # woken by the proxy's stop at teardown

    app = f"sigkill-{uuid.uuid4().hex[:8]}"
    spec = {
        "dsn": env.postgres.dsn,
        "application_name": app,
        "url": env.factory(KEY)(),
        "bucket": env.bucket,
        "key": KEY,
        "table": table,
        "batch_id": "killed",
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for("the stall", lambda: env.proxy.stalled.is_set() or child.poll() is not None, 60)
        assert child.poll() is None, child.communicate()

        def backend() -> tuple[int, str, str] | None:
            rows = env.execute(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'COPY %%'",
                [app],
            )
            return rows[0] if rows else None

        _wait_for("the child's COPY", lambda: (backend() or (0, ""))[1] == "active")
        found = backend()
        assert found is not None
        pid = found[0]
        locks = env.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", [pid])
        assert locks == [(1,)], "the child holds the per-object advisory lock"
        assert env.proxy.gets[0].body_bytes == stall_at
        # the server has already taken rows of this COPY (in the child's open transaction)
        _wait_for(
            "rows to reach the server",
            lambda: (
                env.execute("SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = %s", [pid])[0][0] > 10_000
            ),
        )
        assert child.poll() is None, child.communicate()
        assert env.snapshot(table) == before  # the COPY's rows are not visible to others

        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    assert child.returncode == -signal.SIGKILL

    # the server notices the dead client: the backend, its transaction and its lock go away
    _wait_for(
        "the killed backend to go away",
        lambda: env.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]) == [(0,)],
    )
    assert env.execute("SELECT count(*) FROM pg_locks WHERE pid = %s", [pid]) == [(0,)]
    assert env.snapshot(table) == before

    # a re-run (no fault) loads exactly the new version, once
    stats = env.load(KEY, table, batch_id="rerun")
    assert stats.rows_copied == LINES
    assert stats.rows_deleted == 50
    summary = env.execute(
        "SELECT batch_id, source_etag, count(*), min(source_line), max(source_line), count(DISTINCT source_line),"
        " count(*) FILTER (WHERE (document->>'id')::bigint = source_line"
        " AND document->>'name' = 'provider-' || source_line)"
        f" FROM {table} GROUP BY 1, 2 ORDER BY 1"
    )
    assert summary == [
        ("other", other_etag, 2, 1, 2, 2, 0),
        ("rerun", etag, LINES, 1, LINES, LINES, LINES),
    ]
