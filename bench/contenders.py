"""One measured run of each contender; every run starts from the same reset (TRUNCATE, CHECKPOINT, sync).

Each function returns a dict of measurements: ``seconds`` (wall), and where known ``client_cpu``,
``server_cpu`` (the server backend's CPU, read from ``/proc/self/stat`` through ``pg_read_file``),
``s3_cpu`` (this process's CPU while a worker ran: the in-process S3 server), ``machine_busy``
(all CPUs, ``/proc/stat``) and ``peak_rss_mb``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import REPO, child_env_pythonpath
from bench.data import BATCH_ID, BUCKET, SizedData, constants, first_lines
from bench.peers import execute_values_load, seed_load
from bench.server import COPY_COLUMNS, TABLE, Admin, CpuWindow, copy_command, run_psql

if TYPE_CHECKING:
    from collections.abc import Callable

    from harness.postgres import ThrowawayPostgres
    from harness.s3 import LocalS3

DAG_ID = "s3_to_postgres_import"
DAG_TABLE = "bench_dag"
DAG_LOGICAL_DATE = "2026-01-02T02:00:00+00:00"


@dataclass
class Context:
    """What every run needs: the servers, the data and where to write temporary files."""

    pg: ThrowawayPostgres
    s3: LocalS3
    admin: Admin
    tmp: Path
    data: dict[int, SizedData]
    records: int
    rows_path: Path
    """Text COPY rows of the main data set (the ``--settings`` experiments)."""
    binary_rows_path: Path
    """The exact rows the operator sends (binary, as the loader picks for the bench table): the limit's."""
    airflow_env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print

    @property
    def main(self) -> SizedData:
        """The data set of the main comparison."""
        return self.data[self.records]

    def presign(self, key: str) -> str:
        """A pre-signed GET URL for ``key`` (valid for an hour)."""
        client = self.s3.client()
        return str(client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600))


def child(
    ctx: Context,
    module: str,
    spec: dict[str, Any],
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``python -m <module> <spec.json>`` from the repo root; return the JSON result it wrote.

    ``prefix`` goes before the interpreter (e.g. ``py-spy record ... --``).
    """
    handle, spec_path = tempfile.mkstemp(suffix=".json", dir=ctx.tmp)
    os.close(handle)
    result_path = spec_path.replace(".json", ".result.json")
    Path(spec_path).write_text(json.dumps({**spec, "result": result_path}))
    run_env = dict(env or os.environ)
    run_env["PYTHONPATH"] = child_env_pythonpath(os.environ.get("PYTHONPATH"))
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", module, spec_path],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not Path(result_path).exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(Path(result_path).read_text())
    for path in (spec_path, result_path):
        os.unlink(path)
    return result


def _check_rows(ctx: Context, expected: int, table: str = TABLE) -> int:
    rows = ctx.admin.count(table)
    if rows != expected:
        raise RuntimeError(f"{table} holds {rows} rows after the run, expected {expected}")
    return rows


def limit(
    ctx: Context,
    *,
    table: str = TABLE,
    commands: list[str] | None = None,
    options: str | None = None,
    rows: Path | None = None,
) -> dict[str, Any]:
    """psql ``\\copy`` of the final COPY rows from a local file (the server-bound limit).

    ``rows``: another rows file (default: the binary rows the loader sends).
    """
    reset = ctx.admin.reset(table)
    result = run_psql(ctx.pg, commands or [copy_command(rows or ctx.binary_rows_path, table)], options=options)
    _check_rows(ctx, ctx.records, table)
    return {
        "seconds": result.seconds,
        "server_cpu": result.server_cpu,
        "client_cpu": result.cpu["children"],
        "s3_cpu": 0.0,
        "machine_busy": result.cpu["machine_busy"],
        "machine_steal": result.cpu["machine_steal"],
        "reset_seconds": reset,
    }


def operator(
    ctx: Context,
    data: SizedData,
    compression: str,
    *,
    driver: str = "psycopg",
    segment_bytes: int | None = None,
    copy_format: str = "auto",
    table: str = TABLE,
    reset: bool = True,
    prefix: list[str] | None = None,
    transform: str | None = None,
    transform_workers: int | None = None,
    reference_codec: bool = False,
) -> dict[str, Any]:
    """``load_object`` in a worker process, streaming the object from S3 through a pre-signed URL.

    ``transform`` (a dotted path), ``transform_workers`` and ``reference_codec`` (the record path's JSON
    as before #14) are for the record path (``--record-path``).
    """
    reset_seconds = ctx.admin.reset(table) if reset else 0.0
    key = data.key(compression)
    spec = {
        "mode": "load",
        "dsn": ctx.pg.dsn,
        "driver": driver,
        "url": ctx.presign(key),
        "bucket": BUCKET,
        "key": key,
        "table": table,
        "batch_id": BATCH_ID,
        "segment_bytes": segment_bytes,
        "copy_format": copy_format,
        "transform": transform,
        "transform_workers": transform_workers,
        "reference_codec": reference_codec,
    }
    window = CpuWindow()
    result = child(ctx, "bench.worker", spec, prefix=prefix)
    cpu = window.close()
    if result["rows"] != data.records:
        raise RuntimeError(f"the load copied {result['rows']} rows, expected {data.records}")
    _check_rows(ctx, data.records, table)
    result["s3_cpu"] = cpu["bench_process"]
    result["reset_seconds"] = reset_seconds
    result.pop("stats", None)
    return result


def s3_to_sql(ctx: Context, data: SizedData) -> dict[str, Any]:
    """Airflow's ``S3ToSqlOperator`` (download to disk, parse, ``insert_rows`` in chunks of 1000)."""
    reset = ctx.admin.reset()
    spec = {
        "mode": "s3tosql",
        "bucket": BUCKET,
        "key": data.key("plain"),
        "table": TABLE,
        "columns": COPY_COLUMNS.split(", "),
        "constants": constants(data.key("plain"), data.etags["plain"]),
        "commit_every": 1000,
    }
    result = child(ctx, "bench.airflow_child", spec, ctx.airflow_env)
    _check_rows(ctx, data.records)
    result["reset_seconds"] = reset
    return result


def execute_values(ctx: Context, n: int) -> dict[str, Any]:
    """``psycopg2.extras.execute_values`` (page_size 1000) of ``n`` parsed records, one transaction."""
    lines = first_lines(ctx.main, n)
    reset = ctx.admin.reset()
    consts = constants(ctx.main.key("plain"), ctx.main.etags["plain"])
    window = CpuWindow()
    seconds = execute_values_load(ctx.pg.dsn, lines, consts)
    cpu = window.close()
    _check_rows(ctx, n)
    return {"seconds": seconds, "client_cpu": cpu["bench_process"], "reset_seconds": reset}


def seed(ctx: Context, n: int, options: str | None = None) -> dict[str, Any]:
    """One INSERT + one COMMIT per record (psycopg 3) for ``n`` records (``options``: libpq options)."""
    lines = first_lines(ctx.main, n)
    reset = ctx.admin.reset()
    consts = constants(ctx.main.key("plain"), ctx.main.etags["plain"])
    window = CpuWindow()
    seconds = seed_load(ctx.pg.dsn, lines, consts, options)
    cpu = window.close()
    _check_rows(ctx, n)
    return {"seconds": seconds, "client_cpu": cpu["bench_process"], "reset_seconds": reset}


def dag_run(ctx: Context, data: SizedData) -> dict[str, Any]:
    """The whole ``s3_to_postgres_import`` DAG (validate → load → check_row_count) with conf."""
    ctx.admin.execute(f"DROP TABLE IF EXISTS {DAG_TABLE}")
    ctx.admin.execute("CHECKPOINT")
    os.sync()
    spec = {
        "mode": "dag",
        "dag_id": DAG_ID,
        "logical_date": DAG_LOGICAL_DATE,
        "conf": {"bucket": BUCKET, "key": data.key("gzip"), "table": DAG_TABLE},
    }
    result = child(ctx, "bench.airflow_child", spec, ctx.airflow_env)
    if result["state"] != "success":
        raise RuntimeError(f"DAG run ended {result['state']}: {result['task_states']}")
    _check_rows(ctx, data.records, DAG_TABLE)
    ctx.admin.execute(f"DROP TABLE {DAG_TABLE}")
    return result
