"""Run the DAG end to end: throwaway PostgreSQL, local S3 (moto), generated sample data.

``python -m demo`` (``make demo``) loads one night's gzipped JSON-lines file through a
scheduled-style run, then a small CSV through a manual run with ``conf``, prints a
summary and stops everything it started. ``--standalone`` (``make airflow``) instead
keeps the services up and runs ``airflow standalone`` so the UI can be used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "plugins", REPO / "dags"):
    sys.path.insert(0, str(path))

from harness.airflow_env import (  # noqa: E402 - sys.path first
    airflow_connection_env,
    apply_env,
    migrate_airflow_db,
    prepare_airflow_home,
)
from harness.dag_runs import load_dag, run_dag, xcom_values  # noqa: E402
from harness.postgres import ThrowawayPostgres  # noqa: E402
from harness.s3 import LocalS3  # noqa: E402
from harness.sample import csv_bytes, gzip_bytes, jsonl_bytes  # noqa: E402

log = logging.getLogger("demo")
BUCKET = "imports"
DAG_ID = "s3_to_postgres_import"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="JSON-lines records to generate")
    parser.add_argument("--csv-records", type=int, default=1_000, help="CSV records to generate")
    parser.add_argument("--date", default=None, help="logical date of the nightly run (default: yesterday)")
    parser.add_argument("--standalone", action="store_true", help="run airflow standalone with the UI instead")
    return parser.parse_args()


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


def _run(dag: Any, logical_date: dt.datetime, conf: dict[str, Any] | None = None) -> tuple[Any, float]:
    t0 = time.monotonic()
    run = run_dag(dag, logical_date, conf)
    return run, time.monotonic() - t0


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    day = args.date or (dt.date.today() - dt.timedelta(days=1)).isoformat()
    logical_date = dt.datetime.fromisoformat(day).replace(hour=2, tzinfo=dt.UTC)
    home = Path(tempfile.mkdtemp(prefix="demo-airflow-"))
    with ThrowawayPostgres() as pg, LocalS3() as s3:
        apply_env(prepare_airflow_home(home))
        apply_env(airflow_connection_env(s3, pg))
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        objects = _upload_samples(s3, day, args.records, args.csv_records)
        if args.standalone:
            from demo.standalone import run_standalone

            return run_standalone(home, pg, s3)
        migrate_airflow_db()
        dag = load_dag(DAG_ID)

        log.info("Scheduled-style run for logical date %s", day)
        run, seconds = _run(dag, logical_date)
        nightly = xcom_values(run, "load")
        log.info("Manual run with conf: the CSV into the same table")
        csv_key = next(key for key in objects if key.endswith(".csv"))
        manual, manual_seconds = _run(
            dag, logical_date + dt.timedelta(minutes=1), {"key": csv_key, "format": "csv", "mode": "replace"}
        )
        manual_stats = xcom_values(manual, "load")

        with pg.connect() as conn:
            total = conn.execute("SELECT count(*) FROM provider_directory").fetchone()[0]  # type: ignore[index]
            query = (
                "SELECT document->'name'->>'full' AS name, document->'specialties' AS specialties, "
                "document->'address'->>'state' AS state, source_line FROM provider_directory "
                "WHERE source_key = %s AND document->'specialties' ? 'Cardiology' ORDER BY source_line LIMIT 3"
            )
            sample = conn.execute(query, [next(iter(objects))]).fetchall()
            by_state = conn.execute(
                "SELECT document->'address'->>'state', count(*) FROM provider_directory "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
            ).fetchall()

    print("\n" + "=" * 72)
    print(f"Nightly run {run.run_id}: {run.state}  ({seconds:.1f} s for the whole DAG run)")
    for stats in nightly:
        _print_stats(stats)
    print(f"Manual run {manual.run_id}: {manual.state}  ({manual_seconds:.1f} s)")
    for stats in manual_stats:
        _print_stats(stats)
    print(f"\nprovider_directory now holds {total} rows.")
    print(f"\nSample query:\n  {query.replace('%s', repr(next(iter(objects))))}")
    for row in sample:
        print(f"  {row}")
    print("\nTop states:", ", ".join(f"{state}: {count}" for state, count in by_state))
    print("=" * 72)
    ok = str(run.state) == "success" and str(manual.state) == "success"
    return 0 if ok else 1


def _print_stats(stats: dict[str, object] | None) -> None:
    if not stats:
        print("  (no load stats: the load task did not finish)")
        return
    print(
        "  load {source_key}: {rows_copied} rows copied, {rows_rejected} rejected, {lines_read} lines, "
        "{mb:.1f} MB read in {seconds:.2f} s = {rate:,.0f} rows/s (batch {batch_id})".format(
            mb=float(stats["bytes_read"]) / 1e6,  # type: ignore[arg-type]
            rate=float(stats["rows_copied"]) / float(stats["seconds"] or 1),  # type: ignore[arg-type]
            **stats,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
