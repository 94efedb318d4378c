"""Maintaining an application's table (issue #13): ``--merge`` and ``--snapshot``.

**Merge** (``--merge``): a file of N records (90 % identical to the stored ones, 5 % changed,
5 % new, interleaved so that every prefix has the same mix) merged by ``npi`` into a table of N
rows, paired (counterbalanced) with (a) the same file appended to a table of N rows, and (b) on
a sample, extrapolated as the other peers are, the providers' own upsert,
``PostgresHook.insert_rows(..., replace=True, replace_index=["npi"])`` (:mod:`bench.upsert_peer`).
For the merge: rows rewritten (``n_tup_upd``/``n_tup_hot_upd``) and WAL written, by record
type. Then SQL only, on the same staged rows: the loader's ``INSERT ... ON CONFLICT`` (its own
``merge.upsert``), PostgreSQL 15's ``MERGE``, and ``INSERT ... ON CONFLICT`` fed only the
rows that differ from the stored ones, each in its own transaction (rolled back, the target
vacuumed after), interleaved; and the same three over the identical rows alone (what
unchanged rows cost).

**Snapshot** (``--snapshot``): the main data set's object as ``mode="snapshot"`` into a table
holding N rows of the same key vs ``mode="replace"`` of it, paired; a reader looping on
``SELECT count(*), min(batch_id), max(batch_id)`` during one more snapshot load (and, for
contrast, during a ``TRUNCATE`` + ``COPY`` reload); the WAL of each; and a first load into a
new table on a ``wal_level=minimal`` server (the loader creates the table in the load's
transaction and ``COPY ... FREEZE``s into it).
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from bench import contenders, tablestate
from bench.data import BATCH_ID, BUCKET, SEED, STEP, constants
from bench.report import fit
from bench.server import COPY_COLUMNS, TABLE, Admin, copy_command, create_table, run_psql, start_server
from bench.tablestate import count, expect, load, restore, settle
from harness.sample import jsonl_lines

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.contenders import Context

STORED = "bench_stored"
"""The base table: the main data set's N rows as the limit loads them (its key, ETag and batch)."""
MERGE_TABLE, APPEND_TABLE, PEER_TABLE = "bench_merge", "bench_append", "bench_merge_peer"
STAGE, STAGE_SAME = "bench_merge_stage", "bench_merge_stage_same"
SNAPSHOT_TABLE, FIRST_TABLE = "bench_snapshot", "bench_first"
MERGE_KEY = ("npi",)
GROUP = 20
"""Every group of 20 lines of the merge file: 19 stored records (the first one changed), then a new one."""
CHANGED_SUFFIX = b',"revision":2}\n'


# -- data ------------------------------------------------------------------------------------
@dataclass
class MergeFile:
    """The merge file: its object and what it holds."""

    path: Path
    key: str
    etag: str
    records: int
    identical: int
    changed: int
    new: int
    bytes: int

    def prefix_mix(self, lines: int) -> dict[str, int]:
        """How many identical, changed and new records the first ``lines`` lines hold."""
        groups, rest = divmod(lines, GROUP)
        changed = groups + (1 if rest else 0)
        return {"identical": lines - groups - changed, "changed": changed, "new": groups}


def write_merge_file(directory: Path, n: int, seed: int = SEED) -> tuple[Path, dict[str, int]]:
    """N lines: the stored records ``0 .. N - N/20 - 1`` (every 19th changed), a new record after every 19."""
    new_count = n // GROUP
    stored = n - new_count
    path = directory / f"merge-{n}.jsonl"
    new_lines = jsonl_lines(new_count, seed, start=n)
    mix = {"identical": 0, "changed": 0, "new": 0}
    with open(path, "wb") as out:
        for start in range(0, stored, STEP):
            parts = []
            for i, line in enumerate(jsonl_lines(min(STEP, stored - start), seed, start=start), start):
                if i % (GROUP - 1) == 0:
                    parts.append(line[:-2] + CHANGED_SUFFIX)
                    mix["changed"] += 1
                else:
                    parts.append(line)
                    mix["identical"] += 1
                if i % (GROUP - 1) == GROUP - 2:
                    parts.append(next(new_lines))
                    mix["new"] += 1
            out.write(b"".join(parts))
        for line in new_lines:
            out.write(line)
            mix["new"] += 1
    return path, mix


def upload(ctx: Context, path: Path, key: str) -> str:
    """Put a file into the bench bucket; return its ETag."""
    with open(path, "rb") as f:
        return str(ctx.s3.put_object(BUCKET, key, f)["ETag"])  # type: ignore[arg-type]


def ensure_stored(ctx: Context) -> float:
    """The base table of N stored rows (psql ``\\copy`` of the limit's rows), created once; return seconds."""
    if tablestate.exists(ctx, STORED) and count(ctx, STORED) == ctx.records:
        return 0.0
    ctx.admin.execute(f"DROP TABLE IF EXISTS {STORED}")
    ctx.admin.execute(f"CREATE TABLE {STORED} (LIKE {TABLE} INCLUDING DEFAULTS)")
    result = run_psql(ctx.pg, [copy_command(ctx.binary_rows_path, STORED)])
    expect(f"{STORED} rows", count(ctx, STORED), ctx.records)
    ctx.admin.execute(f"VACUUM (FREEZE, ANALYZE) {STORED}")
    return result.seconds


def drop(ctx: Context, *tables: str) -> None:
    """Drop tables and their companions (rejects, ledger)."""
    for table in tables:
        for name in (table, f"{table}_rejects", f"{table}_loads"):
            ctx.admin.execute(f"DROP TABLE IF EXISTS {name}")


def unique_index(ctx: Context, table: str) -> None:
    """The merge key's unique index, as the loader creates it with a table (``merge.index_statement``)."""
    from s3_postgres_copy.merge import create_unique_index
    from s3_postgres_copy.sink import Columns, PostgresSink

    with ctx.pg.connect(autocommit=False) as conn:
        create_unique_index(PostgresSink(conn, table, Columns()), MERGE_KEY)
        conn.commit()


def _log_run(log: Callable[[str], None], label: str, run: dict[str, Any]) -> None:
    wal = f", WAL {run['wal_bytes'] / 1e6:.1f} MB" if "wal_bytes" in run else ""
    log(
        f"  {label}: {run['seconds']:.2f} s (client {run['client_cpu']:.2f}, server {run['server_cpu']:.2f}){wal}, "
        f"peak {run['peak_rss_mb']:.0f} MB"
    )


# -- merge -----------------------------------------------------------------------------------
def merge_section(
    ctx: Context,
    *,
    reps: int,
    peer_sample: int,
    peer_fixed: bool,
    sql_rounds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Merge vs append vs ``insert_rows(replace=True)``; ``MERGE`` vs ``INSERT ... ON CONFLICT``."""
    n = ctx.records
    started = time.monotonic()
    path, mix = write_merge_file(ctx.tmp / "data", n)
    key = f"bench/{path.name}"
    etag = upload(ctx, path, key)
    merge_file = MergeFile(path, key, etag, n, mix["identical"], mix["changed"], mix["new"], path.stat().st_size)
    walinspect = tablestate.enable_walinspect(ctx)
    stored_seconds = ensure_stored(ctx)
    drop(ctx, MERGE_TABLE, APPEND_TABLE, PEER_TABLE, STAGE, STAGE_SAME)
    create_table(ctx.pg, MERGE_TABLE)
    unique_index(ctx, MERGE_TABLE)
    create_table(ctx.pg, APPEND_TABLE)
    log(
        f"merge: {n:,} records ({mix['identical']:,} identical, {mix['changed']:,} changed, {mix['new']:,} new), "
        f"{merge_file.bytes / 1e6:.0f} MB, into {n:,} stored rows; set-up {time.monotonic() - started:.0f} s "
        f"(stored rows {stored_seconds:.0f} s)"
    )
    out: dict[str, Any] = {
        "records": n,
        "mix": mix,
        "bytes": merge_file.bytes,
        "key": key,
        "merge_key": list(MERGE_KEY),
        "walinspect": walinspect,
    }

    runs: dict[str, list[dict[str, Any]]] = {"merge": [], "append": []}
    pairs = []
    for rep in range(reps):
        merge_first = rep % 2 == 0
        order = ("merge", "append") if merge_first else ("append", "merge")
        log(f"merge rep {rep + 1}/{reps}: {' then '.join(order)}")
        pair: dict[str, Any] = {"merge_first": merge_first}
        for kind in order:
            run = _merge_run(ctx, merge_file, rep) if kind == "merge" else _append_run(ctx, merge_file, rep)
            runs[kind].append(run)
            pair[kind] = run["seconds"]
            _log_run(log, kind, run)
        pair["ratio"] = pair["merge"] / pair["append"]
        pairs.append(pair)
        log(f"  merge / append {pair['ratio']:.2f}")
    out["runs"], out["pairs"] = runs, pairs

    out["peer"] = _peer(ctx, merge_file, peer_sample, peer_fixed, log)
    out["sql"] = _sql_comparison(ctx, merge_file, sql_rounds, log)
    drop(ctx, MERGE_TABLE, APPEND_TABLE, PEER_TABLE, STAGE, STAGE_SAME)
    out["seconds"] = time.monotonic() - started
    return out


def _merge_run(ctx: Context, merge_file: MergeFile, rep: int) -> dict[str, Any]:
    restore_seconds = restore(ctx, MERGE_TABLE, STORED)
    run = load(
        ctx,
        merge_file.key,
        MERGE_TABLE,
        options={"mode": "merge", "merge_key": list(MERGE_KEY)},
        batch_id=f"merge-{rep}",
    )
    stats = run["stats"]
    got = {name: stats[f"rows_{name}"] for name in ("copied", "inserted", "updated", "unchanged", "deduplicated")}
    expect(
        "merge counts",
        got,
        {
            "copied": merge_file.records,
            "inserted": merge_file.new,
            "updated": merge_file.changed,
            "unchanged": merge_file.identical,
            "deduplicated": 0,
        },
    )
    expect(f"{MERGE_TABLE} rows after the merge", count(ctx, MERGE_TABLE), ctx.records + merge_file.new)
    expect("rows updated (n_tup_upd)", run["counters"]["n_tup_upd"], merge_file.changed)
    expect("rows inserted (n_tup_ins)", run["counters"]["n_tup_ins"], merge_file.new)
    run["wal_records"] = tablestate.wal_records(ctx, run["wal_start"], run["wal_end"])
    run["restore_seconds"] = restore_seconds
    run["copy_statements"] = run.get("copy_statements")
    return _slim(run)


def _append_run(ctx: Context, merge_file: MergeFile, rep: int) -> dict[str, Any]:
    restore_seconds = restore(ctx, APPEND_TABLE, STORED)
    run = load(ctx, merge_file.key, APPEND_TABLE, options={"mode": "append"}, batch_id=f"append-{rep}")
    expect("append rows", run["rows"], merge_file.records)
    expect(f"{APPEND_TABLE} rows after the append", count(ctx, APPEND_TABLE), ctx.records + merge_file.records)
    run["restore_seconds"] = restore_seconds
    return _slim(run)


def _slim(run: dict[str, Any]) -> dict[str, Any]:
    """A run without what the results need not repeat (the whole stats dict keeps its counts)."""
    stats = run.pop("stats", None) or {}
    run["stats"] = {k: v for k, v in stats.items() if k.startswith("rows_") or k in ("copy_format", "mode")}
    return run


def _peer(ctx: Context, merge_file: MergeFile, sample: int, fixed: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """``PostgresHook.insert_rows(replace=True)`` on a prefix of the merge file (and a tiny one: fixed costs)."""
    columns = [*COPY_COLUMNS.split(", "), "npi"]
    create_table(ctx.pg, PEER_TABLE)
    ctx.admin.execute(f"ALTER TABLE {PEER_TABLE} ADD COLUMN npi text")
    ctx.admin.execute(f"CREATE UNIQUE INDEX {PEER_TABLE}_npi_idx ON {PEER_TABLE} (npi)")
    sample = min(sample, merge_file.records)
    sizes = (max(100, sample // 100), sample) if fixed else (sample,)
    points = []
    for size in sizes:
        restore(ctx, PEER_TABLE, STORED, columns=", ".join(columns), select=f"{COPY_COLUMNS}, document->>'npi'")
        before = tablestate.counters(ctx, PEER_TABLE)
        spec = {
            "path": str(merge_file.path),
            "records": size,
            "table": PEER_TABLE,
            "columns": columns,
            "conflict": "npi",
            "constants": constants(merge_file.key, merge_file.etag),
            "commit_every": 1000,
        }
        log(f"merge peer: insert_rows(replace=True) of {size:,} records")
        since = tablestate.wal_lsn(ctx)
        point = contenders.child(ctx, "bench.upsert_peer", spec, ctx.airflow_env)
        point["wal_bytes"] = tablestate.wal_bytes(ctx, since)
        after = tablestate.counters(ctx, PEER_TABLE)
        mix = merge_file.prefix_mix(size)
        expect(f"{PEER_TABLE} rows after the peer", count(ctx, PEER_TABLE), ctx.records + mix["new"])
        point["records"] = size
        point["rows_updated"] = after["n_tup_upd"] - before["n_tup_upd"]
        point["rows_hot_updated"] = after["n_tup_hot_upd"] - before["n_tup_hot_upd"]
        point["mix"] = mix
        points.append(point)
        log(
            f"  {point['seconds']:.2f} s, {point['rows_updated']:,} rows rewritten "
            f"({mix['identical']:,} of them identical), WAL {point['wal_bytes'] / 1e6:.1f} MB"
        )
    fitted = fit(points)
    largest = points[-1]
    return {
        "sample": sample,
        "points": points,
        **fitted,
        "per_record_us": fitted["per_record"] * 1e6,  # report._clean rounds floats to 4 decimals
        "seconds": fitted["fixed"] + fitted["per_record"] * merge_file.records,
        "wal_bytes": largest["wal_bytes"] / largest["records"] * merge_file.records,
        "conflict_column": "npi text with a unique index (replace_index takes column names, not expressions)",
    }


# -- SQL only: MERGE vs INSERT ... ON CONFLICT -------------------------------------------------
def _merge_statement(target: sql.Composable, columns: list[str], document: str) -> sql.Composed:
    """PostgreSQL 15's ``MERGE`` of the staged rows (last record of a key wins, identical ones untouched)."""
    from s3_postgres_copy.merge import SEQUENCE, STAGING, key_expressions, keys_match

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    keys = sql.SQL(", ").join(key_expressions(document, MERGE_KEY))
    match = keys_match(document, MERGE_KEY, "stored", "latest")
    sets = sql.SQL(", ").join(sql.SQL("{0} = latest.{0}").format(sql.Identifier(c)) for c in columns)
    values = sql.SQL(", ").join(sql.SQL("latest.{}").format(sql.Identifier(c)) for c in columns)
    return sql.SQL(
        "MERGE INTO {target} AS stored USING ("
        "  SELECT DISTINCT ON ({keys}) {cols} FROM {staging} ORDER BY {keys}, {seq} DESC"
        ") AS latest ON {match}"
        " WHEN MATCHED AND stored.{doc} IS DISTINCT FROM latest.{doc} THEN UPDATE SET {sets}"
        " WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
    ).format(
        target=target,
        keys=keys,
        cols=cols,
        staging=STAGING,
        seq=SEQUENCE,
        match=match,
        doc=sql.Identifier(document),
        sets=sets,
        values=values,
    )


def _prefiltered_statement(target: sql.Composable, columns: list[str], document: str) -> sql.Composed:
    """The loader's upsert fed only the staged rows whose document differs from the stored one (or is new).

    Identical rows never reach ``ON CONFLICT``, which locks every conflicting row it looks at
    (a ``Heap/LOCK`` WAL record each) even when its ``WHERE`` leaves the row as it is.
    """
    from s3_postgres_copy.merge import SEQUENCE, STAGING, key_expressions, keys_match

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    keys = sql.SQL(", ").join(key_expressions(document, MERGE_KEY))
    match = keys_match(document, MERGE_KEY, "stored", "l")
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns)
    return sql.SQL(
        "WITH latest AS MATERIALIZED ("
        "  SELECT DISTINCT ON ({keys}) {cols} FROM {staging} ORDER BY {keys}, {seq} DESC"
        "), differing AS ("
        "  SELECT l.* FROM latest l WHERE NOT EXISTS ("
        "    SELECT 1 FROM {target} stored WHERE {match} AND stored.{doc} = l.{doc})"
        "), upserted AS ("
        "  INSERT INTO {target} AS stored ({cols}) SELECT {cols} FROM differing"
        "  ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        "  WHERE stored.{doc} IS DISTINCT FROM EXCLUDED.{doc}"
        "  RETURNING (xmax = 0) AS inserted"
        ") SELECT (SELECT count(*) FROM {staging}), (SELECT count(*) FROM latest),"
        "  count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
    ).format(
        keys=keys,
        cols=cols,
        staging=STAGING,
        seq=SEQUENCE,
        target=target,
        match=match,
        doc=sql.Identifier(document),
        updates=updates,
    )


SQL_VARIANTS = {
    "on_conflict": "INSERT ... ON CONFLICT DO UPDATE ... WHERE IS DISTINCT FROM (the loader's merge.upsert)",
    "merge": "MERGE INTO ... USING (SELECT DISTINCT ON ...) WHEN MATCHED AND IS DISTINCT FROM ... WHEN NOT MATCHED",
    "prefiltered": "INSERT ... ON CONFLICT of the rows NOT EXISTS an identical stored document (not in the loader)",
}


def _sql_run(ctx: Context, variant: str, source: str, expected: dict[str, int]) -> dict[str, Any]:
    """One upsert statement from a staging table filled like the loader's, in its own transaction, rolled back."""
    from s3_postgres_copy.merge import STAGING, UPSERT_WORK_MEM, create_staging, upsert
    from s3_postgres_copy.sink import Columns, PostgresSink

    columns = Columns()
    names = [name for _, name in columns.roles()]
    with psycopg.connect(ctx.pg.dsn, autocommit=False) as conn:
        sink = PostgresSink(conn, MERGE_TABLE, columns)
        create_staging(sink, MERGE_KEY)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in names)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY seq").format(
                STAGING, cols, cols, sql.Identifier(source)
            )
        )
        oid = conn.execute("SELECT %s::regclass::oid", [MERGE_TABLE]).fetchone()[0]  # type: ignore[index]
        start = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]
        cpu0 = _backend_cpu(conn)
        t0 = time.monotonic()
        if variant == "on_conflict":
            counts = upsert(sink, MERGE_KEY)
            affected = counts.inserted + counts.updated
            unchanged: int | None = counts.unchanged
        else:
            statement = (_merge_statement if variant == "merge" else _prefiltered_statement)(
                sink.table, names, columns.document
            )
            # the work_mem the loader's upsert raises itself to, so the three compare like for like
            conn.execute("SELECT set_config('work_mem', %s, true)", [UPSERT_WORK_MEM])
            cur = conn.execute(statement)
            if variant == "merge":
                affected, unchanged = int(cur.rowcount), None
            else:
                _staged, distinct, inserted, updated = cur.fetchone()  # type: ignore[misc]
                affected, unchanged = int(inserted) + int(updated), int(distinct) - int(inserted) - int(updated)
        seconds = time.monotonic() - t0
        server_cpu = _backend_cpu(conn) - cpu0
        end = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]
        wal = int(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", [end, start]).fetchone()[0])  # type: ignore[index]
        xact = conn.execute(
            "SELECT pg_stat_get_xact_tuples_inserted(%(o)s), pg_stat_get_xact_tuples_updated(%(o)s), "
            "pg_stat_get_xact_tuples_hot_updated(%(o)s)",
            {"o": oid},
        ).fetchone()
        assert xact is not None
        conn.rollback()
    inserted, updated, hot = (int(v) for v in xact)
    expect(f"{variant}: rows inserted", inserted, expected["new"])
    expect(f"{variant}: rows updated", updated, expected["changed"])
    expect(f"{variant}: rows inserted or updated", affected, expected["new"] + expected["changed"])
    if unchanged is not None:
        expect(f"{variant}: rows unchanged", unchanged, expected["identical"])
    run = {
        "variant": variant,
        "seconds": seconds,
        "server_cpu": server_cpu,
        "wal_bytes": wal,
        "rows_inserted": inserted,
        "rows_updated": updated,
        "rows_hot_updated": hot,
        "wal_records": tablestate.wal_records(ctx, start, end),
    }
    ctx.admin.execute(f"VACUUM (FREEZE) {MERGE_TABLE}")  # the rolled-back rows and row locks, gone
    settle(ctx)
    return run


def _explain_upsert(ctx: Context) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the loader's own upsert statement over the staged rows (rolled back)."""
    from s3_postgres_copy.merge import STAGING, UPSERT_WORK_MEM, create_staging, upsert
    from s3_postgres_copy.sink import Columns, PostgresSink

    names = [name for _, name in Columns().roles()]
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in names)
    with psycopg.connect(ctx.pg.dsn, autocommit=False) as conn:
        sink = PostgresSink(conn, MERGE_TABLE, Columns())
        create_staging(sink, MERGE_KEY)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY seq").format(
                STAGING, cols, cols, sql.Identifier(STAGE)
            )
        )
        captured: list[sql.Composable] = []

        class Captured:
            def fetchone(self) -> tuple[int, ...]:
                return (0, 0, 0, 0)

        def capture(query: sql.Composable, params: Any = None) -> Captured:
            captured.append(query)
            return Captured()

        sink.execute = capture  # type: ignore[method-assign,assignment]
        upsert(sink, MERGE_KEY)  # only builds the statement
        conn.execute("SELECT set_config('work_mem', %s, true)", [UPSERT_WORK_MEM])  # as upsert() runs it
        plan = [row[0] for row in conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + captured[-1]).fetchall()]
        conn.rollback()
    ctx.admin.execute(f"VACUUM (FREEZE) {MERGE_TABLE}")
    settle(ctx)
    return {"plan": plan, "summary": explain_summary(plan)}


def explain_summary(plan: list[str]) -> str:
    """The plan's total time, its sort (method, disk, time) and the conflict counts, in one line."""
    import re

    text = "\n".join(plan)
    parts = []
    total = re.search(r"Execution Time: ([\d.]+) ms", text)
    if total:
        parts.append(f"{float(total.group(1)) / 1000:.2f} s in all")
    sort = re.search(r"->  Sort .*?actual time=[\d.]+\.\.([\d.]+) .*?\n.*?\n\s*Sort Method: ([^\n]+)", text)
    if sort:
        parts.append(f"the DISTINCT ON sort {float(sort.group(1)) / 1000:.2f} s ({sort.group(2).strip()})")
    for label in ("Conflicting Tuples", "Rows Removed by Conflict Filter", "Tuples Inserted"):
        found = re.search(rf"{label}: (\d+)", text)
        if found:
            parts.append(f"{label.lower()} {int(found.group(1)):,}")
    return "; ".join(parts)


def _backend_cpu(conn: Any) -> float:
    from bench.procstat import backend_cpu

    return backend_cpu(conn.cursor())


def _sql_comparison(ctx: Context, merge_file: MergeFile, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The three upsert statements on the same staged rows, interleaved; then over the identical rows alone."""
    create_table(ctx.pg, STAGE)
    ctx.admin.execute(f"ALTER TABLE {STAGE} ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY")
    staged = load(ctx, merge_file.key, STAGE, options={"mode": "append"}, batch_id="merge-stage", wal=False)
    expect(f"{STAGE} rows", staged["rows"], merge_file.records)
    ctx.admin.execute(
        f"CREATE TABLE {STAGE_SAME} AS SELECT s.* FROM {STAGE} s JOIN {STORED} b "
        "ON (b.document ->> 'npi') = (s.document ->> 'npi') AND b.document = s.document"
    )
    expect(f"{STAGE_SAME} rows (the identical records)", count(ctx, STAGE_SAME), merge_file.identical)
    restore(ctx, MERGE_TABLE, STORED)
    full = {"identical": merge_file.identical, "changed": merge_file.changed, "new": merge_file.new}
    same = {"identical": merge_file.identical, "changed": 0, "new": 0}
    names = list(SQL_VARIANTS)
    variants: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    ratios: list[dict[str, Any]] = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        log(f"merge SQL round {r + 1}/{rounds}: {', '.join(order)}")
        this_round = {}
        for name in order:
            run = _sql_run(ctx, name, STAGE, full)
            variants[name].append(run)
            this_round[name] = run["seconds"]
            log(
                f"  {name}: {run['seconds']:.2f} s, WAL {run['wal_bytes'] / 1e6:.1f} MB, server {run['server_cpu']:.2f}"
            )
        ratios.append({**this_round, "order": order})
    unchanged_only = {}
    log(f"merge SQL over the {merge_file.identical:,} identical rows alone")
    for name in names:
        run = _sql_run(ctx, name, STAGE_SAME, same)
        unchanged_only[name] = run
        log(f"  {name}: {run['seconds']:.2f} s, WAL {run['wal_bytes']:,} bytes")
    explain = _explain_upsert(ctx)
    log(f"merge SQL: EXPLAIN ANALYZE of the loader's upsert: {explain['summary']}")
    return {
        "explain_on_conflict": explain,
        "rounds": rounds,
        "labels": SQL_VARIANTS,
        "variants": variants,
        "per_round": ratios,
        "unchanged_only": unchanged_only,
        "identical_rows": merge_file.identical,
    }


# -- snapshot --------------------------------------------------------------------------------
class Reader(threading.Thread):
    """A concurrent reader: ``SELECT count(*), min(batch_id), max(batch_id)`` in a loop, each query timed."""

    def __init__(self, dsn: str, table: str, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.pause = dsn, table, pause
        self.samples: list[tuple[float, float, tuple[Any, ...]]] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        query = f"SELECT count(*), min(batch_id), max(batch_id) FROM {self.table}"
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stopping.is_set():
                    t0 = time.monotonic()
                    row = conn.execute(query).fetchone()
                    self.samples.append((t0, time.monotonic(), tuple(row or ())))
                    self.stopping.wait(self.pause)
        except BaseException as err:  # reported by stop()
            self.error = err

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the reader failed: {self.error}") from self.error


def reader_summary(
    samples: list[tuple[float, float, tuple[Any, ...]]], start: float, end: float, allowed: set[tuple[Any, ...]]
) -> dict[str, Any]:
    """Query times of a reader before (idle) and during ``[start, end]``, and whether it saw only ``allowed``."""
    idle = [t1 - t0 for t0, t1, _ in samples if t1 <= start]
    during = [t1 - t0 for t0, t1, _ in samples if t1 > start and t0 < end]
    seen = sorted({row for _, _, row in samples}, key=str)
    return {
        "queries_during": len(during),
        "max_seconds": max(during, default=float("nan")),
        "median_seconds": statistics.median(during) if during else float("nan"),
        "idle_median_seconds": statistics.median(idle) if idle else float("nan"),
        "queries_idle": len(idle),
        "seen": [list(row) for row in seen],
        "only_old_or_new": set(seen) <= allowed,
    }


def snapshot_section(ctx: Context, *, reps: int, minimal: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Snapshot vs replace (paired), a concurrent reader, WAL; a first load on a ``wal_level=minimal`` server."""
    n = ctx.records
    started = time.monotonic()
    key = ctx.main.key("plain")
    tablestate.enable_walinspect(ctx)
    stored_seconds = ensure_stored(ctx)
    drop(ctx, SNAPSHOT_TABLE)
    create_table(ctx.pg, SNAPSHOT_TABLE)
    log(f"snapshot: {n:,} records into {n:,} stored rows of the same key (stored rows {stored_seconds:.0f} s)")
    runs: dict[str, list[dict[str, Any]]] = {"snapshot": [], "replace": []}
    pairs = []
    for rep in range(reps):
        order = ("snapshot", "replace") if rep % 2 == 0 else ("replace", "snapshot")
        log(f"snapshot rep {rep + 1}/{reps}: {' then '.join(order)}")
        pair: dict[str, Any] = {"snapshot_first": order[0] == "snapshot"}
        for mode in order:
            run = _snapshot_or_replace(ctx, key, mode, f"{mode}-{rep}")
            runs[mode].append(run)
            pair[mode] = run["seconds"]
            _log_run(log, mode, run)
        pair["ratio"] = pair["snapshot"] / pair["replace"]
        pairs.append(pair)
        log(f"  snapshot / replace {pair['ratio']:.2f}")
    out: dict[str, Any] = {"records": n, "key": key, "runs": runs, "pairs": pairs}

    log("snapshot with a concurrent reader")
    restore(ctx, SNAPSHOT_TABLE, STORED)
    reader = Reader(ctx.pg.dsn, SNAPSHOT_TABLE)
    reader.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    try:
        run = load(ctx, key, SNAPSHOT_TABLE, options={"mode": "snapshot"}, batch_id="snapshot-read", wal=False)
        t1 = time.monotonic()
        time.sleep(0.5)
    finally:
        reader.stop()
    old, new = (n, BATCH_ID, BATCH_ID), (n, "snapshot-read", "snapshot-read")
    out["reader"] = {"load_seconds": run["seconds"], **reader_summary(reader.samples, t0, t1, {old, new})}
    log(
        f"  load {run['seconds']:.2f} s; reader: {out['reader']['queries_during']} queries during it, max "
        f"{out['reader']['max_seconds']:.3f} s, median {out['reader']['median_seconds']:.3f} s (idle "
        f"{out['reader']['idle_median_seconds']:.3f} s); saw {out['reader']['seen']}"
    )

    log("contrast: TRUNCATE + COPY in one transaction with the same reader")
    restore(ctx, SNAPSHOT_TABLE, STORED)
    reader = Reader(ctx.pg.dsn, SNAPSHOT_TABLE)
    reader.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    try:
        psql = run_psql(
            ctx.pg,
            ["BEGIN;", f"TRUNCATE {SNAPSHOT_TABLE};", copy_command(ctx.binary_rows_path, SNAPSHOT_TABLE), "COMMIT;"],
        )
        t1 = time.monotonic()
        time.sleep(0.5)
    finally:
        reader.stop()
    out["truncate_reader"] = {"load_seconds": psql.seconds, **reader_summary(reader.samples, t0, t1, {old})}
    log(
        f"  load {psql.seconds:.2f} s; reader max {out['truncate_reader']['max_seconds']:.3f} s, "
        f"median {out['truncate_reader']['median_seconds']:.3f} s"
    )
    drop(ctx, SNAPSHOT_TABLE)
    if minimal:
        out["minimal"] = _minimal_first_loads(ctx, key, log)
    out["seconds"] = time.monotonic() - started
    return out


def _snapshot_or_replace(
    ctx: Context, key: str, mode: str, batch_id: str, table: str = SNAPSHOT_TABLE
) -> dict[str, Any]:
    restore_seconds = restore(ctx, table, STORED)
    run = load(ctx, key, table, options={"mode": mode}, batch_id=batch_id)
    expect(f"{mode}: rows copied", run["rows"], ctx.records)
    expect(f"{mode}: rows deleted", run["stats"]["rows_deleted"], ctx.records)
    expect(f"{table} rows of the new batch", count(ctx, table, f"batch_id = '{batch_id}'"), ctx.records)
    expect(f"{table} rows", count(ctx, table), ctx.records)
    run["wal_records"] = tablestate.wal_records(ctx, run["wal_start"], run["wal_end"])
    run["restore_seconds"] = restore_seconds
    return _slim(run)


def _minimal_first_loads(ctx: Context, key: str, log: Callable[[str], None]) -> dict[str, Any]:
    """A first load (the loader creates the table) as snapshot and as replace on a ``wal_level=minimal`` server."""
    from bench.experiments import MINIMAL

    log("snapshot: first loads into a new table on a wal_level=minimal server")
    pg = start_server(MINIMAL)
    other = dataclasses.replace(ctx, pg=pg, admin=Admin(pg))
    out: dict[str, Any] = {"settings": MINIMAL, "runs": {}}
    try:
        other.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        tablestate.enable_walinspect(other)
        for mode in ("snapshot", "replace"):
            drop(other, FIRST_TABLE)
            settle(other)
            run = load(other, key, FIRST_TABLE, options={"mode": mode}, batch_id=f"first-{mode}")
            expect(f"first {mode}: rows", count(other, FIRST_TABLE), ctx.records)
            row = other.admin.conn.execute(
                "SELECT all_visible, all_frozen, pg_relation_size(%s::regclass) / current_setting('block_size')::int "
                "FROM pg_visibility_map_summary(%s::regclass)",
                [FIRST_TABLE, FIRST_TABLE],
            ).fetchone()
            assert row is not None
            run["pages"], run["all_visible"], run["all_frozen"] = int(row[2]), int(row[0]), int(row[1])
            run["wal_records"] = tablestate.wal_records(other, run["wal_start"], run["wal_end"])
            out["runs"][mode] = _slim(run)
            log(
                f"  first {mode}: {run['seconds']:.2f} s, WAL {run['wal_bytes'] / 1e6:.2f} MB, "
                f"{run['all_frozen']:,} of {run['pages']:,} pages all-frozen"
            )
        drop(other, FIRST_TABLE)
    finally:
        other.admin.close()
        pg.stop()
    return out
