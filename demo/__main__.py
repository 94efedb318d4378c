"""Run the DAG end to end: throwaway PostgreSQL, local S3 (moto), generated sample data.

``python -m demo`` (``make demo``) loads one night's gzipped JSON-lines file through a
scheduled-style run, then a small CSV through a manual run with ``conf``, shows a progress
bar per load and a summary, and stops everything it started. Airflow's own output (the task
logs) goes to a log file whose path it prints. ``--standalone`` (``make airflow``) instead
keeps the services up and runs ``airflow standalone`` so the UI can be used.

Nothing is left behind but the log files: the Airflow home (``demo-airflow-*`` in the temp
folder), the PostgreSQL data directory and the S3 server go when the command ends.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "plugins", REPO / "dags"):
    sys.path.insert(0, str(path))

from demo.progress import CopyProgress, TerminalOutput, step  # noqa: E402 - sys.path first
from demo.standalone import LOG_NAME as STANDALONE_LOG  # noqa: E402
from harness.airflow_env import (  # noqa: E402
    airflow_connection_env,
    apply_env,
    migrate_airflow_db,
    prepare_airflow_home,
)
from harness.postgres import ThrowawayPostgres  # noqa: E402
from harness.s3 import LocalS3  # noqa: E402
from harness.sample import csv_bytes, gzip_bytes, jsonl_bytes  # noqa: E402

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("demo")
BUCKET = "imports"
DAG_ID = "s3_to_postgres_import"
HOME_PREFIX = "demo-airflow-"
DEFAULT_LOG_DIR = REPO / "logs"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="JSON-lines records to generate")
    parser.add_argument("--csv-records", type=int, default=1_000, help="CSV records to generate")
    parser.add_argument("--date", default=None, help="logical date of the nightly run (default: yesterday)")
    parser.add_argument("--standalone", action="store_true", help="run airflow standalone with the UI instead")
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=DEFAULT_LOG_DIR,
        help="where the log files go (default: the repository's logs/): demo.log, or standalone.log "
        "and standalone-banner.txt with --standalone",
    )
    return parser.parse_args(argv)


def _upload_samples(s3: LocalS3, day: str, records: int, csv_records: int) -> dict[str, int]:
    t0 = time.monotonic()
    data = gzip_bytes(jsonl_bytes(records, seed=1))
    csv_data = csv_bytes(csv_records, seed=2)
    s3.create_bucket(BUCKET)
    jsonl_key = f"imports/{day}/providers.jsonl.gz"
    csv_key = f"imports/{day}/providers.csv"
    s3.put_object(BUCKET, jsonl_key, data)
    s3.put_object(BUCKET, csv_key, csv_data)
    log.info(
        "Uploaded s3://%s/%s (%d records, %.1f MB gzipped) and %s (%d records) in %.1f s",
        BUCKET,
        jsonl_key,
        records,
        len(data) / 1e6,
        csv_key,
        csv_records,
        time.monotonic() - t0,
    )
    return {jsonl_key: records, csv_key: csv_records}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    log_dir = args.log_dir.resolve()
    if args.standalone:
        from demo.standalone import check_port

        # Before anything starts: a busy port would only show once PostgreSQL, S3 and the data are up.
        problem = check_port()
        if problem:
            print(problem, file=sys.stderr)
            return 1
    log_path = log_dir / (STANDALONE_LOG if args.standalone else "demo.log")
    home = Path(tempfile.mkdtemp(prefix=HOME_PREFIX))
    try:
        with TerminalOutput(log_path) as console:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            console.print(f"Logs (Airflow's included): {log_path}")
            return _demo(args, home, log_dir, log_path, console)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _demo(args: argparse.Namespace, home: Path, log_dir: Path, log_path: Path, console: Console) -> int:
    day = args.date or (dt.date.today() - dt.timedelta(days=1)).isoformat()
    logical_date = dt.datetime.fromisoformat(day).replace(hour=2, tzinfo=dt.UTC)
    t0 = time.monotonic()
    with ExitStack() as stack:
        with step(console, "Starting PostgreSQL and S3, uploading generated sample data ..."):
            pg = stack.enter_context(ThrowawayPostgres())
            s3 = stack.enter_context(LocalS3())
            apply_env(prepare_airflow_home(home))
            apply_env(airflow_connection_env(s3, pg))
            os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
            objects = _upload_samples(s3, day, args.records, args.csv_records)
        seconds = time.monotonic() - t0
        console.print(f"PostgreSQL {pg.host}:{pg.port} and S3 {s3.endpoint_url} are up ({seconds:.1f} s);")
        console.print(
            f"{args.records:,} JSON-lines and {args.csv_records:,} CSV records uploaded to s3://{BUCKET}/imports/{day}/"
        )
        if args.standalone:
            from demo.standalone import run_standalone

            return run_standalone(home, pg, s3, log_dir=log_dir, console=console)
        return _runs(pg, objects, logical_date, log_path, console)


def _runs(
    pg: ThrowawayPostgres, objects: dict[str, int], logical_date: dt.datetime, log_path: Path, console: Console
) -> int:
    from harness.dag_runs import load_dag

    with step(console, "Preparing Airflow's metadata DB and parsing the DAG ..."):
        migrate_airflow_db()
        dag = load_dag(DAG_ID)
    jsonl_key = next(key for key in objects if key.endswith(".jsonl.gz"))
    csv_key = next(key for key in objects if key.endswith(".csv"))
    with CopyProgress(pg, console) as progress:
        log.info("Scheduled-style run for logical date %s", logical_date.date())
        nightly = _run(progress, dag, logical_date, None, f"nightly {Path(jsonl_key).name}", objects[jsonl_key])
        log.info("Manual run with conf: the CSV into the same table")
        conf = {"key": csv_key, "format": "csv", "mode": "replace"}
        later = logical_date + dt.timedelta(minutes=1)
        manual = _run(progress, dag, later, conf, f"manual  {Path(csv_key).name}", objects[csv_key])

    with pg.connect() as conn:
        total = conn.execute("SELECT count(*) FROM provider_directory").fetchone()[0]  # type: ignore[index]
        query = (
            "SELECT document->'name'->>'full' AS name, document->'specialties' AS specialties, "
            "document->'address'->>'state' AS state, source_line FROM provider_directory "
            "WHERE source_key = %s AND document->'specialties' ? 'Cardiology' ORDER BY source_line LIMIT 3"
        )
        sample = conn.execute(query, [jsonl_key]).fetchall()
        by_state = conn.execute(
            "SELECT document->'address'->>'state', count(*) FROM provider_directory GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        ).fetchall()

    out = console.print
    out("=" * 72)
    for title, (run, seconds, stats) in (("Nightly run", nightly), ("Manual run", manual)):
        out(f"{title} {run.run_id}: {run.state}  ({seconds:.1f} s for the whole DAG run)")
        for one in stats:
            out(_stats_line(one))
    out(f"\nprovider_directory now holds {total} rows.")
    out(f"\nSample query:\n  {query.replace('%s', repr(jsonl_key))}")
    for row in sample:
        out(f"  {row}")
    out("\nTop states: " + ", ".join(f"{state}: {count}" for state, count in by_state))
    out(f"\nAirflow's logs of these runs: {log_path}")
    out("=" * 72)
    ok = str(nightly[0].state) == "success" and str(manual[0].state) == "success"
    return 0 if ok else 1


def _run(
    progress: CopyProgress,
    dag: Any,
    logical_date: dt.datetime,
    conf: dict[str, Any] | None,
    description: str,
    records: int,
) -> tuple[Any, float, list[dict[str, Any] | None]]:
    """One ``dag.test()`` run with a progress bar for its load; (run, seconds, load stats)."""
    from harness.dag_runs import run_dag, xcom_values

    t0 = time.monotonic()
    with progress.load(description, records) as bar:
        run = run_dag(dag, logical_date, conf)
        stats = xcom_values(run, "load")
        first = stats[0] if stats and stats[0] else {}
        bar.finish(str(run.state), first.get("rows_copied"), first.get("seconds"))
    return run, time.monotonic() - t0, stats


def _stats_line(stats: dict[str, object] | None) -> str:
    if not stats:
        return "  (no load stats: the load task did not finish)"
    return (
        "  load {source_key}: {rows_copied} rows copied, {rows_rejected} rejected, {lines_read} lines, "
        "{mb:.1f} MB read in {seconds:.2f} s = {rate:,.0f} rows/s (batch {batch_id})".format(
            mb=float(stats["bytes_read"]) / 1e6,  # type: ignore[arg-type]
            rate=float(stats["rows_copied"]) / float(stats["seconds"] or 1),  # type: ignore[arg-type]
            **stats,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
