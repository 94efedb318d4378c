"""``--record-path``: the loader with a user's transform, against the server's limit plus the transform alone.

For each transform (the shipped API transform ``provider_directory.documents:build_provider_document``
and a cheaper one, ``harness.transforms:rename_fields``: two fields renamed, a constant added),
on the same gzip object (the DAG's case):

* **limit**: psql ``\\copy`` of the operator's own final rows for that transform (binary rows,
  encoded once by the plugin from the same lines, with the gzip object's key and ETag);
* **transform alone**: stdlib ``json.loads(..., parse_float=Decimal)`` and the function over every
  line of the local file, in one process (``python -m bench.worker``, ``alone`` mode), plus the
  record path's stages one by one on a sample (µs per record, before and after ``jsoncodec``);
* **operator**: ``load_object`` with the transform and ``transform_workers`` = 1 (in-process),
  2 (and 4 where the machine has 4 cores), each run paired with a limit run, counterbalanced;
  ``(limit + transform alone) / operator`` per pair;
* **before #14**: the operator with ``transform_workers=0`` and the record path's JSON as before
  (stdlib ``json`` and ``simplejson``), next to the operator at the default ``transform_workers``
  in the same round: the rows/s ratio;
* **memory**: the API transform at the default ``transform_workers`` on a smaller object, against
  the main runs (the load's process and its largest worker);
* **the shipped DAG** (``dag=True``): one run of ``s3_to_postgres_import`` on the same gzip object
  (its ``load`` task: the API transform, the default ``transform_workers``), rows/s from the XCom.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import contenders
from bench.data import write_copy_rows
from bench.server import TABLE, copy_command, role_types, run_psql

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.contenders import Context
    from bench.data import SizedData

TRANSFORMS = {
    "api": ("provider_directory.documents:build_provider_document", "the shipped API transform"),
    "cheap": ("harness.transforms:rename_fields", "a cheaper transform (two fields renamed, a constant added)"),
}
COMPRESSION = "gzip"


def worker_counts(cores: int) -> list[int]:
    """``transform_workers`` values to compare: 1, 2, and 4 (8) where the machine has that many cores."""
    return [n for n in (1, 2, 4, 8) if n <= max(2, cores)]


def limit(ctx: Context, rows: Path, records: int) -> dict[str, Any]:
    """psql ``\\copy`` of a transform's final rows (the server-bound limit of the record path)."""
    reset = ctx.admin.reset(TABLE)
    result = run_psql(ctx.pg, [copy_command(rows, TABLE)])
    count = ctx.admin.count(TABLE)
    if count != records:
        raise RuntimeError(f"{TABLE} holds {count} rows after the limit run, expected {records}")
    return {
        "seconds": result.seconds,
        "server_cpu": result.server_cpu,
        "client_cpu": result.cpu["children"],
        "machine_busy": result.cpu["machine_busy"],
        "reset_seconds": reset,
    }


def alone(ctx: Context, data: SizedData, transform: str) -> dict[str, Any]:
    """The transform alone in one process (stdlib parse + the function), and the record path's stages."""
    spec = {"mode": "alone", "plain": str(data.plain_path), "transform": transform, "sample": 100_000, "reps": 3}
    return contenders.child(ctx, "bench.worker", spec)


def record_path(
    ctx: Context,
    data: SizedData,
    small: SizedData | None,
    *,
    reps: int,
    cores: int,
    default_workers: int,
    log: Callable[[str], None],
    dag: bool = False,
) -> dict[str, Any]:
    """Run the section; return its measurements (``bench.report.record_path_summary`` reads them)."""
    counts = worker_counts(cores)
    section: dict[str, Any] = {
        "records": data.records,
        "compression": COMPRESSION,
        "workers": counts,
        "default_workers": default_workers,
        "reps": reps,
        "transforms": {},
    }
    types = role_types(ctx.pg)
    for name, (spec, label) in TRANSFORMS.items():
        rows_path = ctx.tmp / f"rows-{name}.pgcopy"
        rows_bytes = write_copy_rows(data, rows_path, types, transform=spec, compression=COMPRESSION)
        log(f"record path, {label}: {rows_bytes / 1e6:.0f} MB of final rows ({rows_bytes / data.records:.0f} B/row)")
        entry: dict[str, Any] = {
            "spec": spec,
            "label": label,
            "rows_bytes": rows_bytes,
            "limit": [],
            "alone": [],
            "operator": {str(n): [] for n in counts},
            "pairs": {str(n): [] for n in counts},
            "before": [],
            "after": [],
        }
        section["transforms"][name] = entry

        def operator(
            workers: int, *, reference_codec: bool = False, sized: SizedData = data, transform: str = spec
        ) -> dict[str, Any]:
            return contenders.operator(
                ctx,
                sized,
                COMPRESSION,
                transform=transform,
                transform_workers=workers,
                reference_codec=reference_codec,
            )

        for rep in range(reps):
            run = alone(ctx, data, spec)
            entry["alone"].append(run)
            log(
                f"  [{name} {rep + 1}/{reps}] transform alone {run['seconds']:.2f} s "
                f"({run['client_cpu'] / data.records * 1e6:.1f} µs/record CPU)"
            )
            for i, workers in enumerate(counts):
                operator_first = (rep + i) % 2 == 1
                first, second = ("operator", "limit") if operator_first else ("limit", "operator")
                runs: dict[str, dict[str, Any]] = {}
                for which in (first, second):
                    runs[which] = limit(ctx, rows_path, data.records) if which == "limit" else operator(workers)
                lim, op = runs["limit"], runs["operator"]
                entry["limit"].append(lim)
                entry["operator"][str(workers)].append(op)
                entry["pairs"][str(workers)].append(
                    {"limit": lim["seconds"], "operator": op["seconds"], "operator_first": operator_first}
                )
                log(
                    f"  [{name} {rep + 1}/{reps}] transform_workers={workers}: operator {op['seconds']:.2f} s "
                    f"(client {op['client_cpu']:.2f} + workers {op['workers_cpu']:.2f} s CPU, "
                    f"{op['workers_start_method']}), limit {lim['seconds']:.2f} s"
                )
            if name == "api":
                # Today's code (in-process, stdlib/simplejson) beside the default, in the same round.
                pair = [operator(0, reference_codec=True), operator(default_workers)]
                if rep % 2:
                    pair.reverse()
                before, after = sorted(pair, key=lambda r: not r["reference_codec"])
                entry["before"].append(before)
                entry["after"].append(after)
                log(
                    f"  [{name} {rep + 1}/{reps}] before #14 {before['seconds']:.2f} s, "
                    f"transform_workers={default_workers} {after['seconds']:.2f} s"
                )
        if name == "api" and small is not None:
            run = operator(default_workers, sized=small)
            section["memory"] = {"records": small.records, "workers": default_workers, "run": run}
            log(
                f"  memory: {small.records:,} records, transform_workers={default_workers}: peak "
                f"{run['peak_rss_mb']:.0f} MB (largest worker {run['workers_peak_rss_mb'] or 0:.0f} MB)"
            )
    if dag:
        log(f"record path: DAG run of {contenders.DAG_ID} on {data.records:,} gzip records (API transform)")
        run = contenders.dag_run(ctx, data)
        load = run.get("load") or {}
        section["dag"] = {"records": data.records, **run}
        log(
            f"  load task {load.get('seconds', float('nan')):.2f} s, transform_workers={load.get('transform_workers')} "
            f"({load.get('workers_start_method')}); whole DAG run {run['dag_run_seconds']:.1f} s"
        )
    section["machine_cores"] = cores
    section["alone_median_seconds"] = {
        name: statistics.median(r["seconds"] for r in entry["alone"]) for name, entry in section["transforms"].items()
    }
    return section
