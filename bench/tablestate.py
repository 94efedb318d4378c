"""What the maintenance sections need around a load: stored tables restored to one state, WAL and row counters.

Every measured load into a table that already holds rows starts from the same state: the
table is emptied, refilled from a base table with ``INSERT ... SELECT``, ``VACUUM (FREEZE,
ANALYZE)``d (a settled table: hint bits set, every page all-visible and frozen), then
``CHECKPOINT`` and ``sync``. None of that is timed.

Around each load: the WAL written (``pg_current_wal_insert_lsn()`` before and after, from
the bench's admin connection; nothing else writes on the bench server meanwhile), what it
was by record type (``pg_walinspect``'s ``pg_get_wal_stats``, when the extension is there)
and the table's row counters (``pg_stat_user_tables`` ``n_tup_ins``/``n_tup_upd``/
``n_tup_hot_upd``/``n_tup_del``, read once the worker's backend has exited, which flushes them,
and the admin connection's own pending counts are flushed too).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from bench import contenders
from bench.data import BATCH_ID, BUCKET
from bench.server import COPY_COLUMNS, CpuWindow

if TYPE_CHECKING:
    from bench.contenders import Context
    from harness.postgres import ThrowawayPostgres

COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")


def scalar(ctx: Context, query: str, params: list[Any] | None = None) -> Any:
    """One value from the admin connection."""
    row = ctx.admin.conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def exists(ctx: Context, table: str) -> bool:
    """Whether ``table`` exists."""
    return scalar(ctx, "SELECT to_regclass(%s) IS NOT NULL", [table]) is True


def settle(ctx: Context) -> None:
    """CHECKPOINT and sync: the next run does not pay for the last one's dirty pages."""
    ctx.admin.execute("CHECKPOINT")
    os.sync()


def restore(ctx: Context, table: str, base: str, *, columns: str = COPY_COLUMNS, select: str | None = None) -> float:
    """Make ``table`` hold exactly ``base``'s rows, vacuumed and frozen; return the seconds it took.

    ``select``: the select list over ``base`` (default: ``columns``), e.g. to fill an extra column.
    """
    started = time.monotonic()
    truncate(ctx, table)
    ctx.admin.execute(f"INSERT INTO {table} ({columns}) SELECT {select or columns} FROM {base}")
    ctx.admin.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
    settle(ctx)
    return time.monotonic() - started


def truncate(ctx: Context, table: str) -> None:
    """Empty ``table`` and its companions (``_rejects``; the ledger ``_loads`` keeps its rows)."""
    ctx.admin.execute(f"TRUNCATE {table}")
    if exists(ctx, f"{table}_rejects"):
        ctx.admin.execute(f"TRUNCATE {table}_rejects")


def wal_lsn(ctx: Context) -> str:
    """The WAL insert position now."""
    return str(scalar(ctx, "SELECT pg_current_wal_insert_lsn()"))


def wal_bytes(ctx: Context, since: str) -> int:
    """WAL bytes written since ``since``."""
    return int(scalar(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [since]))


def enable_walinspect(ctx: Context) -> bool:
    """``CREATE EXTENSION pg_walinspect`` (PostgreSQL 15+ contrib) if it can; whether it is there."""
    try:
        ctx.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    except Exception:
        return False
    return True


def wal_records(ctx: Context, start: str, end: str, top: int = 6) -> list[dict[str, Any]] | None:
    """The WAL between two positions by record type (the biggest ``top``), or None without pg_walinspect."""
    if not scalar(ctx, "SELECT count(*) FROM pg_proc WHERE proname = 'pg_get_wal_stats'"):
        return None
    if scalar(ctx, "SELECT pg_wal_lsn_diff(%s, %s) <= 0", [end, start]):
        return []
    deadline = time.monotonic() + 5
    while scalar(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s) < 0", [end]):
        if time.monotonic() > deadline:
            ctx.admin.execute("CHECKPOINT")  # flushes the WAL
            break
        time.sleep(0.05)
    rows = ctx.admin.conn.execute(
        'SELECT "resource_manager/record_type", count, combined_size FROM pg_get_wal_stats(%s, %s, true) '
        "WHERE count > 0 ORDER BY combined_size DESC LIMIT %s",
        [start, end, top],
    ).fetchall()
    return [{"record": r[0], "count": int(r[1]), "bytes": int(r[2])} for r in rows]


def wait_for_backends(ctx: Context, timeout: float = 10.0) -> None:
    """Wait until no other client backend is connected (an exited backend has flushed its statistics)."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    while scalar(ctx, query) and time.monotonic() < deadline:
        time.sleep(0.02)


def counters(ctx: Context, table: str) -> dict[str, int]:
    """``pg_stat_user_tables`` row counters of ``table`` (after the other backends' statistics are flushed)."""
    wait_for_backends(ctx)
    # The admin connection's own writes (a restore's INSERT) are flushed when it next goes idle.
    ctx.admin.execute("SELECT pg_stat_force_next_flush()")
    ctx.admin.execute("SELECT pg_stat_clear_snapshot()")
    row = ctx.admin.conn.execute(
        f"SELECT {', '.join(COUNTERS)} FROM pg_stat_user_tables WHERE relid = %s::regclass", [table]
    ).fetchone()
    assert row is not None
    return dict(zip(COUNTERS, (int(v) for v in row), strict=True))


def load(
    ctx: Context,
    key: str,
    table: str,
    *,
    options: dict[str, Any] | None = None,
    copy_format: str = "auto",
    batch_id: str = BATCH_ID,
    worker: str = "bench.load_worker",
    pg: ThrowawayPostgres | None = None,
    wal: bool = True,
) -> dict[str, Any]:
    """One ``load_object`` of ``key`` into ``table`` in a worker process, with its WAL and row counters.

    ``options``: more ``LoadOptions`` fields (``mode``, ``merge_key``, ``max_bad_rows``, ...).
    ``worker``: ``bench.load_worker`` counts the COPY statements; ``bench.worker`` is the main
    bench's worker as it is (for memory readings).
    """
    spec = {
        "mode": "load",
        "dsn": (pg or ctx.pg).dsn,
        "driver": "psycopg",
        "url": ctx.presign(key),
        "bucket": BUCKET,
        "key": key,
        "table": table,
        "batch_id": batch_id,
        "copy_format": copy_format,
        "options": options or {},
    }
    before = counters(ctx, table) if wal and exists(ctx, table) else None
    since = wal_lsn(ctx) if wal else None
    window = CpuWindow()
    result = contenders.child(ctx, worker, spec)
    cpu = window.close()
    result["s3_cpu"] = cpu["bench_process"]
    if since is not None:
        result["wal_bytes"] = wal_bytes(ctx, since)
        result["wal_start"], result["wal_end"] = since, wal_lsn(ctx)
        if before is not None:
            after = counters(ctx, table)
            result["counters"] = {name: after[name] - before[name] for name in COUNTERS}
    return result


def count(ctx: Context, table: str, where: str = "") -> int:
    """Rows in ``table`` (``where``: a condition)."""
    return int(scalar(ctx, f"SELECT count(*) FROM {table}{f' WHERE {where}' if where else ''}"))


def expect(what: str, got: object, expected: object) -> None:
    """Fail the bench run, naming what did not hold (results that are wrong are not results)."""
    if got != expected:
        raise RuntimeError(f"{what}: got {got!r}, expected {expected!r}")
