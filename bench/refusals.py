"""Tolerant mode with server-side refusals (issue #11 item 5): ``--refusals``.

A table with a unique index on ``(document->>'npi')``; objects of N lines of which k are
copies of an earlier line (the line 7 before), evenly spread, so the server refuses each
copy as a unique violation inside a COPY and tolerant mode (``max_bad_rows=1000``) makes it
a reject and re-sends the rest. k = 0, 10, 50, 150, interleaved in rounds (the order rotates),
each load from an empty table. Every run is checked: rows copied = N - k, rejects = k, the
table and its rejects table hold exactly those, at exactly the duplicates' lines.
COPY statements are counted in the worker (``bench.load_worker``: every ``PostgresSink.copy``
call, and ``TolerantCopy.statements``, which the loader does not report).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench.data import first_lines
from bench.maintenance import drop, upload
from bench.server import create_table
from bench.tablestate import count, expect, load, settle, truncate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bench.contenders import Context

TABLE = "bench_unique"
DUPLICATES = (0, 10, 50, 150)
BACK = 7
"""A duplicate copies the line this many lines before it."""
MAX_BAD_ROWS = 1000


def duplicate_positions(n: int, k: int) -> list[int]:
    """0-based indexes of the k duplicates among n lines, evenly spread (none in the first lines)."""
    return [(j + 1) * n // (k + 1) for j in range(k)]


def write_with_duplicates(path: Path, records: list[bytes], n: int, k: int) -> list[int]:
    """n lines: the records, k of them replaced by copies of an earlier line; return the copies' line numbers."""
    positions = duplicate_positions(n, k)
    wanted = set(positions)
    source = iter(records)
    out: list[bytes] = []
    for index in range(n):
        out.append(out[index - BACK] if index in wanted else next(source))
    path.write_bytes(b"".join(out))
    return [p + 1 for p in positions]


def refusals_section(
    ctx: Context, *, lines: int, rounds: int, log: Callable[[str], None], duplicates: tuple[int, ...] = DUPLICATES
) -> dict[str, Any]:
    """Seconds and COPY statements of tolerant loads with k server-side refusals, k = ``duplicates``."""
    started = time.monotonic()
    lines = min(lines, ctx.records)
    records = first_lines(ctx.main, lines)
    objects = {}
    for k in duplicates:
        path = ctx.tmp / "data" / f"refusals-{lines}-k{k}.jsonl"
        reject_lines = write_with_duplicates(path, records, lines, k)
        key = f"bench/{path.name}"
        upload(ctx, path, key)
        objects[k] = (key, reject_lines)
    drop(ctx, TABLE)
    create_table(ctx.pg, TABLE)
    ctx.admin.execute(f"CREATE UNIQUE INDEX {TABLE}_npi_idx ON {TABLE} ((document ->> 'npi'))")
    log(f"refusals: {lines:,} lines, k = {', '.join(map(str, duplicates))} duplicates, {rounds} rounds")
    runs: dict[str, list[dict[str, Any]]] = {str(k): [] for k in duplicates}
    per_round = []
    for r in range(rounds):
        order = list(duplicates[r % len(duplicates) :] + duplicates[: r % len(duplicates)])
        seconds = {}
        for k in order:
            key, reject_lines = objects[k]
            truncate(ctx, TABLE)
            settle(ctx)
            run = load(ctx, key, TABLE, options={"max_bad_rows": MAX_BAD_ROWS}, batch_id=f"refusals-{k}-{r}", wal=False)
            stats = run.pop("stats")
            expect(f"k={k}: rows copied", stats["rows_copied"], lines - k)
            expect(f"k={k}: rows rejected", stats["rows_rejected"], k)
            expect(f"k={k}: rows in {TABLE}", count(ctx, TABLE), lines - k)
            if k:
                got = [
                    int(row[0])
                    for row in ctx.admin.conn.execute(
                        f"SELECT source_line FROM {TABLE}_rejects WHERE error LIKE '%%duplicate key%%' ORDER BY 1"
                    ).fetchall()
                ]
                expect(f"k={k}: the rejects' lines (unique violations)", got, reject_lines)
                expect(f"k={k}: rows in {TABLE}_rejects", count(ctx, f"{TABLE}_rejects"), k)
            run.update(k=k, rows_copied=stats["rows_copied"], rows_rejected=stats["rows_rejected"])
            runs[str(k)].append(run)
            seconds[k] = run["seconds"]
            log(
                f"  [{r + 1}/{rounds}] k={k}: {run['seconds']:.2f} s, {run['copy_statements']} COPY statements "
                f"({run['copy_refused']} refused, {run['tolerant_statements']} sent to recover), "
                f"server {run['server_cpu']:.2f} s, peak {run['peak_rss_mb']:.0f} MB"
            )
        per_round.append({"order": order, "seconds": {str(k): v for k, v in seconds.items()}})
    drop(ctx, TABLE)
    return {
        "lines": lines,
        "duplicates": list(duplicates),
        "max_bad_rows": MAX_BAD_ROWS,
        "rounds": rounds,
        "runs": runs,
        "per_round": per_round,
        "seconds": time.monotonic() - started,
    }
