"""Waiting for a lock without waiting silently: who holds it is logged, and ``lock_timeout`` bounds the wait.

A load takes two locks before it writes: ``ROW EXCLUSIVE`` on the target table (what any
``INSERT`` takes; an ``ALTER TABLE``, ``VACUUM FULL``, ``CREATE INDEX`` or an explicit
``LOCK TABLE`` in another session blocks it) and an advisory lock on the table's identity
(its OID) plus the object's key, so two loads of one object into one table — however the
table is spelled — run one after the other.

Each lock is asked for in slices of the progress interval (PostgreSQL's ``lock_timeout``,
inside a savepoint): between slices the holders are logged with their pid, application,
user, lock mode and since when; after ``lock_timeout`` seconds in all the load fails with
:class:`~s3_postgres_copy.exceptions.LockTimeoutError` (transient: nothing was changed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from s3_postgres_copy.dberrors import DRIVER_ERRORS, sqlstate
from s3_postgres_copy.exceptions import LockTimeoutError

if TYPE_CHECKING:
    from s3_postgres_copy.sink import PostgresSink

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
# Relation lock modes that conflict with ROW EXCLUSIVE.
_CONFLICTS_WITH_ROW_EXCLUSIVE = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
_HOLDERS = """
SELECT l.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.usename::text, '?'), l.mode,
       to_char(coalesce(a.xact_start, a.backend_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::bigint, coalesce(a.state, '?')
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid() AND {}
ORDER BY 6 DESC, 1
"""


def relation_holders(sink: PostgresSink, qualified: str) -> list[str]:
    """Who holds a lock on the table that conflicts with ``ROW EXCLUSIVE``."""
    where = sql.SQL("l.locktype = 'relation' AND l.relation = to_regclass(%s) AND l.mode = ANY(%s)")
    return _describe(sink.execute(sql.SQL(_HOLDERS).format(where), [qualified, list(_CONFLICTS_WITH_ROW_EXCLUSIVE)]))


def advisory_holders(sink: PostgresSink, key: int) -> list[str]:
    """Who holds the advisory lock ``key`` (a bigint key shows as two 32-bit halves in ``pg_locks``)."""
    where = sql.SQL("l.locktype = 'advisory' AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid")
    return _describe(sink.execute(sql.SQL(_HOLDERS).format(where), [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF]))


def _describe(cursor: Any) -> list[str]:
    return [
        f"pid {pid} (application {app!r}, user {user}, {mode} since {since}, {age} s, {state})"
        for pid, app, user, mode, since, age, state in cursor.fetchall()
    ]


def acquire(
    sink: PostgresSink,
    statement: sql.Composable,
    params: Sequence[Any],
    *,
    what: str,
    holders: Callable[[], list[str]],
    timeout: float | None,
    interval: float,
) -> float:
    """Run ``statement`` (which takes a lock), logging who holds the lock while it waits; return seconds waited.

    :param what: the lock, for messages (``"the table t"``).
    :param timeout: give up after this many seconds (``None``: wait as long as it takes).
    :param interval: seconds between log lines.
    :raises LockTimeoutError: after ``timeout`` seconds; the transaction is as it was before.
    """
    started = time.monotonic()
    previous = sink.scalar(sql.SQL("SELECT current_setting('lock_timeout')"))
    try:
        while True:
            waited = time.monotonic() - started
            slice_s = interval if timeout is None else min(interval, timeout - waited)
            # lock_timeout = 0 means "no limit": a slice is at least a millisecond.
            _set_lock_timeout(sink, f"{max(1, int(slice_s * 1000))}ms")
            sink.savepoint("s3_postgres_copy_lock")
            try:
                sink.execute(statement, params)
            except DRIVER_ERRORS as err:
                if sqlstate(err) != LOCK_NOT_AVAILABLE:
                    raise
                sink.rollback_segment("s3_postgres_copy_lock")
            else:
                sink.release("s3_postgres_copy_lock")
                return time.monotonic() - started
            waited = time.monotonic() - started
            who = "; ".join(holders()) or "a session that has let go of it since"
            if timeout is not None and waited >= timeout:
                raise LockTimeoutError(
                    f"gave up waiting for a lock on {what} after {waited:.1f} s (lock_timeout={timeout:g}); "
                    f"it is held by {who}; nothing was changed"
                )
            log.warning("Waiting for a lock on %s for %.0f s so far; it is held by %s", what, waited, who)
    finally:
        _set_lock_timeout(sink, str(previous))


def _set_lock_timeout(sink: PostgresSink, value: str) -> None:
    sink.execute(sql.SQL("SELECT set_config('lock_timeout', %s, true)"), [value])


def key_of(sink: PostgresSink, text: str) -> int:
    """The bigint advisory-lock key of ``text`` (PostgreSQL's ``hashtextextended``)."""
    return int(sink.scalar(sql.SQL("SELECT hashtextextended(%s, 0)"), [text]))
