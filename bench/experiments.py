"""Optional sections: server settings for big loads (``--settings``), the loader's ``segment_bytes``
(``--segments``).

Settings are measured with the limit's method (psql ``\\copy`` of the final rows) so only the
server changes, on three throwaway servers with the bench settings plus:

* ``replica`` — the main bench server (``wal_level=replica``, fsync off): UNLOGGED table, index
  dropped and rebuilt after the load (``maintenance_work_mem`` 64 MB / 1 GB), table created in the
  load's transaction, ``synchronous_commit=on``;
* ``minimal`` — ``wal_level=minimal``, ``max_wal_senders=0``: COPY into a table created or truncated
  in the same transaction (WAL skipped), with ``FREEZE``; and ``load_object`` into an existing table
  vs a first load (the loader creates the table in its own transaction);
* ``durable`` — ``fsync=on``, ``full_page_writes=on``, ``synchronous_commit=on``: the COPY with
  ``synchronous_commit`` on and off, and the seed baseline (a commit per record) on and off.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import contenders
from bench.report import fmt_ratio, spread
from bench.server import TABLE, Admin, copy_command, create_table, run_psql, start_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.contenders import Context

MINIMAL = {"wal_level": "minimal", "max_wal_senders": "0"}
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
_TIME = re.compile(r"^Time: ([\d.]+) ms", re.MULTILINE)


def _lsn(ctx: Context) -> str:
    return str(ctx.admin.conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]


def _wal_mb(ctx: Context, since: str) -> float:
    row = ctx.admin.conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [since]).fetchone()
    return float(row[0]) / 1e6  # type: ignore[index]


def _settle(ctx: Context) -> None:
    ctx.admin.execute("CHECKPOINT")
    os.sync()


def _psql(ctx: Context, commands: list[str], table: str, options: str | None = None) -> dict[str, Any]:
    since = _lsn(ctx)
    result = run_psql(ctx.pg, commands, options=options)
    wal = _wal_mb(ctx, since)
    rows = ctx.admin.count(table)
    if rows != ctx.records:
        raise RuntimeError(f"{table} holds {rows} rows, expected {ctx.records}")
    out = {"seconds": result.seconds, "server_cpu": result.server_cpu, "wal_mb": wal}
    times = [float(t) / 1000 for t in _TIME.findall(result.output)]
    if times:
        out["index_seconds"] = times[0]  # the first timed statement (the trailing stat SELECT is last)
    return out


def _baseline(ctx: Context) -> dict[str, Any]:
    """COPY into the existing table (the limit's method)."""
    ctx.admin.reset(TABLE)
    return _psql(ctx, [copy_command(ctx.rows_path)], TABLE)


def _same_txn_create(ctx: Context) -> dict[str, Any]:
    """CREATE TABLE and COPY in one transaction (no WAL with wal_level=minimal)."""
    ctx.admin.execute("DROP TABLE IF EXISTS bench_fresh")
    _settle(ctx)
    commands = [
        "BEGIN;",
        f"CREATE TABLE bench_fresh (LIKE {TABLE} INCLUDING ALL);",
        copy_command(ctx.rows_path, "bench_fresh"),
        "COMMIT;",
    ]
    return _psql(ctx, commands, "bench_fresh")


def _variants_replica(ctx: Context) -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    rows = ctx.rows_path
    create_table(ctx.pg, "bench_unlogged", unlogged=True)
    ctx.admin.execute(f"CREATE TABLE IF NOT EXISTS bench_noidx (LIKE {TABLE} INCLUDING DEFAULTS)")
    ctx.admin.execute(f"CREATE TABLE IF NOT EXISTS bench_text (LIKE {TABLE} INCLUDING ALL)")
    ctx.admin.execute("ALTER TABLE bench_text ALTER COLUMN document TYPE text")

    def unlogged() -> dict[str, Any]:
        ctx.admin.reset("bench_unlogged")
        return _psql(ctx, [copy_command(rows, "bench_unlogged")], "bench_unlogged")

    def rebuild(memory: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            ctx.admin.execute("DROP INDEX IF EXISTS bench_noidx_source_key_idx")
            ctx.admin.reset("bench_noidx")
            commands = [
                copy_command(rows, "bench_noidx"),
                f"SET maintenance_work_mem = '{memory}';",
                "\\timing on",
                "CREATE INDEX bench_noidx_source_key_idx ON bench_noidx (source_key);",
            ]
            return _psql(ctx, commands, "bench_noidx")

        return run

    def text_document() -> dict[str, Any]:
        ctx.admin.reset("bench_text")
        return _psql(ctx, [copy_command(rows, "bench_text")], "bench_text")

    def sync_on() -> dict[str, Any]:
        ctx.admin.reset(TABLE)
        return _psql(ctx, [copy_command(rows)], TABLE, options="-c synchronous_commit=on")

    return {
        "baseline": ("COPY into the existing table with its source_key index (= the limit)", partial(_baseline, ctx)),
        "text_document": ("document column text, not jsonb: the same COPY without jsonb parsing", text_document),
        "unlogged": ("UNLOGGED table (no WAL; emptied by a crash, not replicated)", unlogged),
        "same_txn_create": (
            "CREATE TABLE (LIKE ... INCLUDING ALL) + COPY in one transaction",
            partial(_same_txn_create, ctx),
        ),
        "drop_index_64MB": ("no index during COPY, CREATE INDEX after (maintenance_work_mem 64MB)", rebuild("64MB")),
        "drop_index_1GB": ("no index during COPY, CREATE INDEX after (maintenance_work_mem 1GB)", rebuild("1GB")),
        "synchronous_commit_on": ("synchronous_commit=on for the COPY session", sync_on),
    }


def _variants_minimal(ctx: Context) -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    rows = ctx.rows_path

    def same_txn_truncate(freeze: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            ctx.admin.reset(TABLE)
            copy = copy_command(rows, TABLE, "FREEZE" if freeze else "")
            return _psql(ctx, ["BEGIN;", f"TRUNCATE {TABLE};", copy, "COMMIT;"], TABLE)

        return run

    def operator(first_load: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            table = "bench_first" if first_load else TABLE
            if first_load:
                ctx.admin.execute("DROP TABLE IF EXISTS bench_first")
                _settle(ctx)
            else:
                ctx.admin.reset(TABLE)
            since = _lsn(ctx)
            result = contenders.operator(ctx, ctx.main, "plain", table=table, reset=False)
            return {"seconds": result["seconds"], "server_cpu": result["server_cpu"], "wal_mb": _wal_mb(ctx, since)}

        return run

    return {
        "baseline": ("COPY into the existing table (created earlier)", partial(_baseline, ctx)),
        "same_txn_create": ("CREATE TABLE + COPY in one transaction (WAL skipped)", partial(_same_txn_create, ctx)),
        "same_txn_truncate": ("TRUNCATE + COPY in one transaction (WAL skipped)", same_txn_truncate(False)),
        "same_txn_truncate_freeze": ("TRUNCATE + COPY ... WITH (FREEZE) in one transaction", same_txn_truncate(True)),
        "operator_existing": ("load_object (plain) into the existing table", operator(False)),
        "operator_first_load": (
            "load_object (plain), first load: it creates the table in its transaction",
            operator(True),
        ),
    }


def _variants_durable(ctx: Context, seed_records: int) -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    rows = ctx.rows_path

    def copy(options: str | None) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            ctx.admin.reset(TABLE)
            return _psql(ctx, [copy_command(rows)], TABLE, options=options)

        return run

    def seed(options: str | None) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            result = contenders.seed(ctx, seed_records, options)
            seconds = result["seconds"]
            return {"seconds": seconds, "records": seed_records, "per_record_ms": seconds / seed_records * 1000}

        return run

    return {
        "baseline": ("COPY into the existing table, synchronous_commit=on", copy(None)),
        "synchronous_commit_off": ("COPY with synchronous_commit=off", copy("-c synchronous_commit=off")),
        "seed_sync_on": (f"seed baseline, {seed_records} records, a commit each, synchronous_commit=on", seed(None)),
        "seed_sync_off": (
            f"seed baseline, {seed_records} records, a commit each, synchronous_commit=off",
            seed("-c synchronous_commit=off"),
        ),
    }


def _run_server(
    name: str,
    ctx: Context,
    variants: dict[str, tuple[str, Callable[[], dict[str, Any]]]],
    reps: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in variants}
    for rep in range(reps):
        for key, (_label, func) in variants.items():
            result = func()
            runs[key].append(result)
            extra = f", index {result['index_seconds']:.2f} s" if "index_seconds" in result else ""
            wal = f", WAL {result['wal_mb']:.0f} MB" if "wal_mb" in result else ""
            log(f"  [{name} {rep + 1}/{reps}] {key}: {result['seconds']:.2f} s{extra}{wal}")
    return {key: {"label": variants[key][0], "runs": runs[key]} for key in variants}


def settings_experiments(
    ctx: Context, reps: int, log: Callable[[str], None], seed_records: int = 1000
) -> dict[str, Any]:
    """Measure the server-side options for big loads on three servers; return a table section."""
    from bench.server import effective_settings

    servers: dict[str, Any] = {}
    log(f"settings: wal_level=replica (the bench server), {reps} reps")
    servers["replica"] = {
        "settings": effective_settings(ctx.pg),
        "variants": _run_server("replica", ctx, _variants_replica(ctx), reps, log),
    }
    for name, extra, make in (
        ("minimal", MINIMAL, _variants_minimal),
        ("durable", DURABLE, lambda c: _variants_durable(c, seed_records)),
    ):
        log(f"settings: second server {name} ({', '.join(f'{k}={v}' for k, v in extra.items())})")
        pg = start_server(extra)
        try:
            create_table(pg)
            other = dataclasses.replace(ctx, pg=pg, admin=Admin(pg))
            servers[name] = {
                "settings": effective_settings(pg),
                "variants": _run_server(name, other, make(other), reps, log),
            }
            other.admin.close()
        finally:
            pg.stop()
    rows = []
    for name, server in servers.items():
        base = statistics.median(r["seconds"] for r in server["variants"]["baseline"]["runs"])
        for key, variant in server["variants"].items():
            seconds = [r["seconds"] for r in variant["runs"]]
            med = statistics.median(seconds)
            is_seed = key.startswith("seed")
            variant["seconds"] = spread(seconds)
            variant["speedup_vs_baseline"] = None if is_seed else base / med
            wal = [r["wal_mb"] for r in variant["runs"] if "wal_mb" in r]
            index = [r["index_seconds"] for r in variant["runs"] if "index_seconds" in r]
            cpu = [r["server_cpu"] for r in variant["runs"] if "server_cpu" in r and not math.isnan(r["server_cpu"])]
            note = variant["label"]
            if index:
                note += f"; of which CREATE INDEX {statistics.median(index):.2f} s"
            if is_seed:
                per = statistics.median(r["per_record_ms"] for r in variant["runs"])
                note += f"; {per:.2f} ms/record → 10M records {per * 1e7 / 1000 / 3600:.1f} h"
            rows.append(
                [
                    name,
                    key,
                    f"{med:.2f}",
                    "—" if is_seed else f"{base / med:.2f}x",
                    f"{statistics.median(cpu):.2f}" if cpu else "—",
                    f"{statistics.median(wal):.0f}" if wal else "—",
                    note,
                ]
            )
    return {
        "records": ctx.records,
        "reps": reps,
        "servers": servers,
        "headers": ["server", "variant", "seconds", "speedup", "server CPU", "WAL MB", "what"],
        "rows": rows,
        "notes": [
            "speedup = the server's baseline median / the variant's median (same server, same rows).",
            "fsync=off on replica and minimal: a WAL-skipped table is not fsynced at commit there; on a durable "
            "server it is (its data is written once, at commit, instead of to WAL and later by checkpoints).",
        ],
    }


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _paired_runs(
    ctx: Context,
    reps: int,
    variants: dict[str, dict[str, Any]],
    log: Callable[[str], None],
    compression: str = "plain",
) -> dict[str, list[dict[str, Any]]]:
    """``reps`` rounds of (limit, operator with a variant's keyword arguments) pairs; runs by variant."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    for rep in range(reps):
        for label, kwargs in variants.items():
            lim = contenders.limit(ctx)
            op = contenders.operator(ctx, ctx.main, compression, **kwargs)
            op["limit_seconds"] = lim["seconds"]
            op["ratio"] = lim["seconds"] / op["seconds"]
            runs[label].append(op)
            log(
                f"  [{rep + 1}/{reps}] {label}: {op['seconds']:.2f} s, ratio {op['ratio']:.3f}, "
                f"client CPU {op['client_cpu']:.2f}, peak {op['peak_rss_mb']:.0f} MB"
            )
    return runs


def segment_experiment(ctx: Context, sizes: str, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """load_object (plain) at several ``segment_bytes``, each run paired with a limit run."""
    values = [(s.strip(), _parse_size(s)) for s in sizes.split(",")]
    rows_bytes = ctx.binary_rows_path.stat().st_size
    log(f"segments: {', '.join(label for label, _ in values)}, {reps} pairs each")
    runs = _paired_runs(ctx, reps, {label: {"segment_bytes": size} for label, size in values}, log)
    rows = []
    for label, size in values:
        rs = runs[label]
        rows.append(
            [
                label,
                str(max(1, math.ceil(rows_bytes / size))),
                f"{statistics.median(r['seconds'] for r in rs):.2f}",
                fmt_ratio(spread([r["ratio"] for r in rs])),
                f"{statistics.median(r['client_cpu'] for r in rs):.2f}",
                f"{max(r['peak_rss_mb'] for r in rs):.0f} MB",
            ]
        )
    return {
        "records": ctx.records,
        "reps": reps,
        "runs": runs,
        "headers": ["segment_bytes", "COPY statements", "seconds", "ratio to limit", "client CPU", "peak RSS"],
        "rows": rows,
        "notes": [
            "One COPY per segment; strict mode keeps only a segment's line numbers (to name a refused row's "
            "line), tolerant mode its rows (to re-send them)."
        ],
    }


# drop_sent_payloads is in the plugin since 40d659e (strict mode keeps only line numbers per segment).
