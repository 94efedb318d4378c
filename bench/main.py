"""``python -m bench``: every contender in one run, on the same generated data and the same server.

1. **Limit**: psql ``\\copy`` of the final COPY rows from a local file.
2. **This project**: ``load_object`` streaming the object from S3 (plain, gzip; psycopg 3, and once
   psycopg2), interleaved with the limit (limit, operator, limit, operator, ...): ratios pair by pair.
   Optionally (``--dag``, default in full mode) the whole DAG's ``load`` task (with the API transform).
3. **Peers** on samples, extrapolated linearly: ``S3ToSqlOperator``, ``execute_values``.
4. **Seed baseline** on a sample: one INSERT + COMMIT per record.
5. **Memory**: peak RSS of the load at two sizes, plain and gzip.

6. **Record path** (``--record-path``, default in full mode): the operator with a transform (the
   shipped API transform and a cheaper one) at ``transform_workers`` 1, 2, ..., against psql of its
   own final rows plus the transform alone in one process (``bench/record_path.py``).

Optional sections: ``--settings`` (server settings for big loads), ``--segments`` (the loader's
``segment_bytes``), ``--profile`` (py-spy of the worker and the client's per-stage CPU).
Maintenance sections, on by default (:mod:`bench.sections`): ``--merge``, ``--snapshot``,
``--small-records``, ``--refusals``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, add_paths

add_paths()

from bench import contenders, data, report, sections  # noqa: E402 - paths first
from bench.procstat import cpu_model, mem_total_mb  # noqa: E402
from bench.server import (  # noqa: E402
    TABLE,
    Admin,
    create_table,
    effective_settings,
    psql_version,
    requested_settings,
    role_types,
    server_version,
    start_server,
)
from harness.airflow_env import airflow_connection_env, prepare_airflow_home  # noqa: E402
from harness.s3 import LocalS3  # noqa: E402

FULL = {
    "records": 1_000_000,
    "reps": 5,
    "psycopg2_reps": 2,
    "text_reps": 2,
    "dag": True,
    "dag_records": 200_000,
    "mem_sizes": "200000,2000000",
    "s3tosql_sample": 20_000,
    "execute_values_sample": 50_000,
    "seed_sample": 5_000,
    "warmup": True,
    "peer_fixed": True,
    "record_path": True,
    "record_records": None,  # = records
    "record_reps": 2,
    "record_mem_size": 200_000,
}
QUICK = {
    "records": 100_000,
    "reps": 2,
    "psycopg2_reps": 1,
    "text_reps": 1,
    "dag": False,
    "dag_records": 20_000,
    "mem_sizes": "50000,200000",
    "s3tosql_sample": 5_000,
    "execute_values_sample": 10_000,
    "seed_sample": 1_000,
    "warmup": False,
    "peer_fixed": False,
    "record_path": False,
    "record_records": None,
    "record_reps": 1,
    "record_mem_size": 20_000,
}
SEED_SCALE = 10_000_000
STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line with the elapsed time."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k records, fewer repetitions (< 1 minute)")
    parser.add_argument("--records", type=int, help="records in the main comparison (default 1M; quick 100k)")
    parser.add_argument("--reps", type=int, help="interleaved limit/operator pairs per variant (5; quick 2)")
    parser.add_argument("--psycopg2-reps", type=int, help="pairs for the psycopg2 variant (2; quick 1)")
    parser.add_argument(
        "--text-reps", type=int, help="pairs of text-format COPY rows: psql and the loader (2; quick 1)"
    )
    parser.add_argument(
        "--dag",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the DAG's load task (with the API transform); default on in full mode, off in quick",
    )
    parser.add_argument("--dag-records", type=int, help="records for the DAG run (200k; quick 20k)")
    parser.add_argument(
        "--mem-sizes", help="two record counts for the memory runs (200000,2000000; quick 50000,200000)"
    )
    parser.add_argument("--s3tosql-sample", type=int, help="records for S3ToSqlOperator (20k; quick 5k)")
    parser.add_argument("--execute-values-sample", type=int, help="records for execute_values (50k; quick 10k)")
    parser.add_argument("--seed-sample", type=int, help="records for the seed baseline (5k; quick 1k)")
    parser.add_argument(
        "--peer-fixed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a tiny run per peer measures its fixed cost (default on; quick: off, proportional)",
    )
    parser.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=None, help="one unmeasured pair first"
    )
    parser.add_argument("--settings", action="store_true", help="also measure server settings for big loads (slow)")
    parser.add_argument("--settings-reps", type=int, default=2, help="repetitions per settings variant")
    parser.add_argument("--segments", action="store_true", help="also compare the loader's segment_bytes")
    parser.add_argument("--segment-sizes", default="8M,32M,1G", help="segment_bytes values for --segments")
    parser.add_argument("--segment-reps", type=int, default=2, help="pairs per segment size")
    parser.add_argument("--profile", action="store_true", help="also py-spy the worker and time each client stage")
    parser.add_argument(
        "--record-path",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the operator with a transform (API, cheaper) at transform_workers 1, 2, ... vs psql of its rows + the "
        "transform alone; default on in full mode, off in quick",
    )
    parser.add_argument("--record-records", type=int, help="records for --record-path (default: --records)")
    parser.add_argument("--record-reps", type=int, help="rounds of --record-path pairs (2; quick 1)")
    parser.add_argument(
        "--record-mem-size", type=int, help="records of the smaller --record-path memory run (200k; quick 20k)"
    )
    parser.add_argument("--skip-main", action="store_true", help="skip the main comparison (for optional sections)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where the JSON goes (default: bench/results/latest.json; quick.json with --quick)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data files, COPY rows)")
    sections.add_arguments(parser)
    args = parser.parse_args(argv)
    sections.resolve(args)
    defaults = QUICK if args.quick else FULL
    if args.output is None:
        args.output = RESULTS / ("quick.json" if args.quick else "latest.json")
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.mem_sizes = [int(v) for v in str(args.mem_sizes).split(",")]
    if len(args.mem_sizes) != 2:
        parser.error("--mem-sizes takes two record counts")
    args.dag_records = min(args.dag_records, max(args.records, *args.mem_sizes))
    if args.record_records is None:
        args.record_records = args.records
    args.record_mem_size = min(args.record_mem_size, args.record_records)
    return args


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for name in (
        "psycopg",
        "psycopg-binary",
        "psycopg2-binary",
        "apache-airflow",
        "apache-airflow-providers-amazon",
        "apache-airflow-providers-postgres",
        "apache-airflow-providers-common-sql",
        "requests",
        "urllib3",
        "moto",
        "simplejson",
        "msgspec",
        "SQLAlchemy",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_mb": round(mem_total_mb()),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
        "packages": versions,
    }


def tiny(sample: int) -> int:
    """The size of the run that measures a peer's fixed cost (connections, clients, set-up)."""
    return max(100, sample // 100)


def wanted_sizes(args: argparse.Namespace) -> dict[int, set[str]]:
    sizes: dict[int, set[str]] = {}

    def want(n: int, *kinds: str) -> None:
        sizes.setdefault(n, set()).update(kinds)

    want(args.records, "plain", "gzip")
    if not args.skip_main:
        for n in args.mem_sizes:
            want(n, "plain", "gzip")
        want(args.s3tosql_sample, "plain")
        if args.peer_fixed:
            want(tiny(args.s3tosql_sample), "plain")
        if args.dag:
            want(args.dag_records, "gzip")
    if args.record_path:
        want(args.record_records, "plain", "gzip")
        want(args.record_mem_size, "plain", "gzip")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    log(f"bench ({mode}): {args.records:,} records, {args.reps} interleaved reps, dag={args.dag}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine_info(),
    }
    pg = start_server()
    try:
        with LocalS3() as s3:
            out["postgres"] = {
                "version": server_version(pg),
                "psql": psql_version(pg),
                "requested_settings": requested_settings(),
                "effective_settings": effective_settings(pg),
            }
            log(f"PostgreSQL {out['postgres']['version'].split(' on ')[0]}; S3 at {s3.endpoint_url}")
            ctx = prepare(args, pg, s3, tmp, out)
            if not args.skip_main:
                run_main(args, ctx, out)
            if args.settings:
                from bench.experiments import settings_experiments

                out["settings_experiments"] = settings_experiments(ctx, args.settings_reps, log)
            if args.segments:
                from bench.experiments import segment_experiment

                out["segment_experiment"] = segment_experiment(ctx, args.segment_sizes, args.segment_reps, log)
            if args.record_path:
                from bench.record_path import record_path
                from s3_postgres_copy.pipeline import default_transform_workers

                small = ctx.data[args.record_mem_size] if args.record_mem_size < args.record_records else None
                out["record_path"] = record_path(
                    ctx,
                    ctx.data[args.record_records],
                    small,
                    reps=args.record_reps,
                    cores=os.cpu_count() or 1,
                    default_workers=default_transform_workers(),
                    log=log,
                    dag=args.dag,
                )
            if args.profile:
                from bench.profiling import profile

                out["profile"] = profile(ctx, out, log)
            sections.run(args, ctx, out, log)
            ctx.admin.close()
    finally:
        pg.stop()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["total_seconds"] = round(time.monotonic() - STARTED, 1)
    report.finish(out, args.output)
    log(f"done in {out['total_seconds']:.0f} s; results in {args.output}")
    return 0


def prepare(args: argparse.Namespace, pg: Any, s3: LocalS3, tmp: Path, out: dict[str, Any]) -> contenders.Context:
    sizes = wanted_sizes(args)
    t0 = time.monotonic()
    datasets = data.generate(tmp / "data", sizes)
    generated = time.monotonic() - t0
    uploaded = data.upload(s3, datasets, sizes)
    main_data = datasets[args.records]
    create_table(pg)
    rows_path = tmp / "rows.copy"
    binary_rows_path = tmp / "rows.pgcopy"
    t0 = time.monotonic()
    rows_bytes = data.write_copy_rows(main_data, binary_rows_path, role_types(pg))
    text_rows_bytes = data.write_copy_rows(main_data, rows_path)
    encoded = time.monotonic() - t0
    out["data"] = {
        "records": args.records,
        "seed": data.SEED,
        "gzip_level": data.GZIP_LEVEL,
        "jsonl_bytes": main_data.plain_bytes,
        "gzip_bytes": main_data.gz_bytes,
        "bytes_per_record": round(main_data.plain_bytes / args.records, 1),
        "copy_rows_bytes": rows_bytes,
        "copy_format": "binary",
        "text_rows_bytes": text_rows_bytes,
        "sizes": {str(n): sorted(kinds) for n, kinds in sorted(sizes.items())},
        "setup_seconds": {"generate": round(generated, 1), "upload": round(uploaded, 1), "encode": round(encoded, 1)},
    }
    log(
        f"data: {args.records:,} records, {main_data.plain_bytes / 1e6:.0f} MB JSON lines "
        f"({main_data.plain_bytes / args.records:.0f} B/record), {(main_data.gz_bytes or 0) / 1e6:.0f} MB gzip -1, "
        f"{rows_bytes / 1e6:.0f} MB binary COPY rows ({text_rows_bytes / 1e6:.0f} MB as text); "
        f"generated {generated:.0f} s, uploaded {uploaded:.0f} s, encoded {encoded:.0f} s"
    )
    airflow_env = {
        **os.environ,
        **prepare_airflow_home(tmp / "airflow-home"),
        **airflow_connection_env(s3, pg),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return contenders.Context(
        pg=pg,
        s3=s3,
        admin=Admin(pg),
        tmp=tmp,
        data=datasets,
        records=args.records,
        rows_path=rows_path,
        binary_rows_path=binary_rows_path,
        airflow_env=airflow_env,
        log=log,
    )


def _fmt_run(run: dict[str, Any]) -> str:
    parts = [f"{run['seconds']:.2f} s"]
    if run.get("client_cpu") is not None:
        parts.append(f"client {run['client_cpu']:.2f}")
    if run.get("server_cpu") is not None:
        parts.append(f"server {run['server_cpu']:.2f}")
    if run.get("peak_rss_mb") is not None:
        parts.append(f"peak {run['peak_rss_mb']:.0f} MB")
    return ", ".join(parts)


def run_main(args: argparse.Namespace, ctx: contenders.Context, out: dict[str, Any]) -> None:
    main_data = ctx.main
    runs: dict[str, list[dict[str, Any]]] = {
        "limit": [],
        "plain": [],
        "gzip": [],
        "psycopg2": [],
        "limit_text": [],
        "text": [],
    }
    pairs: dict[str, list[dict[str, float]]] = {"plain": [], "gzip": [], "psycopg2": [], "text": []}
    if args.warmup:
        log("warm-up pair (not counted)")
        contenders.limit(ctx)
        contenders.operator(ctx, main_data, "plain")

    def pair(
        variant: str, compression: str, driver: str, *, operator_first: bool = False, copy_format: str = "auto"
    ) -> None:
        # Counterbalanced order (limit first in one pair, the operator first in the next) so that
        # whatever a run leaves behind for the next one weighs on both sides alike.
        text = copy_format == "text"

        def limit() -> dict[str, Any]:
            return contenders.limit(ctx, rows=ctx.rows_path if text else None)

        def operator() -> dict[str, Any]:
            return contenders.operator(ctx, main_data, compression, driver=driver, copy_format=copy_format)

        if operator_first:
            op = operator()
            lim = limit()
        else:
            lim = limit()
            op = operator()
        runs["limit_text" if text else "limit"].append(lim)
        runs[variant].append(op)
        pairs[variant].append(
            {
                "limit": lim["seconds"],
                "operator": op["seconds"],
                "ratio": lim["seconds"] / op["seconds"],
                "operator_first": operator_first,
            }
        )
        runs_text = [f"limit {_fmt_run(lim)}", f"{variant} {_fmt_run(op)}"]
        if operator_first:
            runs_text.reverse()
        log(f"  {' | '.join(runs_text)} | ratio {lim['seconds'] / op['seconds']:.3f}")

    for rep in range(args.reps):
        log(f"rep {rep + 1}/{args.reps}")
        pair("plain", "plain", "psycopg", operator_first=rep % 2 == 1)
        pair("gzip", "gzip", "psycopg", operator_first=rep % 2 == 0)
    for rep in range(args.psycopg2_reps):
        log(f"psycopg2 rep {rep + 1}/{args.psycopg2_reps}")
        pair("psycopg2", "plain", "psycopg2", operator_first=rep % 2 == 1)
    for rep in range(args.text_reps):
        log(f"text rows rep {rep + 1}/{args.text_reps}")
        pair("text", "plain", "psycopg", operator_first=rep % 2 == 0, copy_format="text")
    out["runs"] = runs
    out["pairs"] = pairs

    # Peers: a tiny run measures the fixed cost, the sample the per-record cost; seconds = fixed + per-record x N.
    peers: dict[str, Any] = {}
    samples = (
        ("s3_to_sql", "S3ToSqlOperator", args.s3tosql_sample, lambda n: contenders.s3_to_sql(ctx, ctx.data[n])),
        ("execute_values", "execute_values", args.execute_values_sample, lambda n: contenders.execute_values(ctx, n)),
        ("seed", "seed baseline (INSERT + COMMIT per record)", args.seed_sample, lambda n: contenders.seed(ctx, n)),
    )
    for key, label, sample, run in samples:
        points = []
        for n in (tiny(sample), sample) if args.peer_fixed else (sample,):
            log(f"{label} on {n:,} records")
            point = run(n)
            point["records"] = n
            points.append(point)
            log(f"  {_fmt_run(point)}")
        peers[key] = {"sample": sample, "points": points, **report.fit(points)}
    out["peers"] = peers

    memory: list[dict[str, Any]] = []
    for n in args.mem_sizes:
        for compression in ("plain", "gzip"):
            log(f"memory: load_object {compression} {n:,} records")
            run = contenders.operator(ctx, ctx.data[n], compression)
            run.update({"records": n, "compression": compression})
            memory.append(run)
            log(f"  {_fmt_run(run)}, baseline {run['baseline_rss_mb']:.0f} MB")
    out["memory"] = memory

    if args.dag:
        log(f"DAG run of {contenders.DAG_ID} on {args.dag_records:,} gzip records (with the API transform)")
        dag = contenders.dag_run(ctx, ctx.data[args.dag_records])
        dag["records"] = args.dag_records
        out["dag"] = dag
        load = dag.get("load") or {}
        log(
            f"  load task {load.get('seconds', float('nan')):.2f} s ({load.get('rows_copied')} rows), "
            f"whole DAG run {dag['dag_run_seconds']:.1f} s, migrate {dag['migrate_seconds']:.1f} s"
        )
    out["seed_scale"] = SEED_SCALE
    out["table"] = TABLE
