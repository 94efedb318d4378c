"""Summaries, the printed table, the targets and ``bench/results/latest.json``."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.95
TARGET_PEAK_MB = 100.0
TARGET_GROWTH_MB = 20.0
TARGET_VS_S3TOSQL = 15.0
TARGET_VS_EXECUTE_VALUES = 3.0
TARGET_RECORD_PATH = {1: 1.0, 2: 1.3}
"""``(limit + transform alone) / operator`` at these ``transform_workers`` (#14)."""
TARGET_RECORD_SPEEDUP = 2.0
"""The API transform's load at the default ``transform_workers`` against the record path before #14, rows/s."""
BEFORE_DAG_ROWS_PER_S = 22_010
"""The DAG load task's rows/s before #14: ``make bench`` of 2026-11-28 21:16 (200k gzip records, the API transform)."""


def median(values: list[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def median_confidence(n: int) -> float:
    """Confidence that ``[min, max]`` of ``n`` independent values covers their distribution's median.

    Each value falls below the median with probability 1/2, so the interval misses it only when
    all ``n`` fall on the same side: ``1 - 2 * 0.5**n`` (0.5 for 2, 0.75 for 3, 0.94 for 5).
    """
    return 1 - 2 * 0.5**n if n > 0 else 0.0


def verdict(ratio: dict[str, float], target: float) -> str:
    """PASS if every pair's ratio reaches ``target``, FAIL if none does, UNDECIDED otherwise.

    The pairs' ``[min, max]`` is a distribution-free confidence interval for the median ratio
    (:func:`median_confidence`), so a target inside it is not settled by the run, whatever side
    the median falls on: on a noisy machine a single median would flip between runs.
    """
    if ratio["min"] >= target:
        return "PASS"
    if ratio["max"] < target:
        return "FAIL"
    return "UNDECIDED"


def fit(points: list[dict[str, Any]]) -> dict[str, Any]:
    """``seconds = fixed + per_record * records``: a tiny run gives the fixed cost, the sample the rest.

    Falls back to scaling the sample proportionally if noise makes the per-record cost non-positive.
    """
    if len(points) == 1:
        return {"per_record": points[0]["seconds"] / points[0]["records"], "fixed": 0.0, "method": "proportional"}
    (n1, s1), (n2, s2) = sorted((p["records"], p["seconds"]) for p in points)
    per_record = (s2 - s1) / (n2 - n1) if n2 != n1 else 0.0
    if per_record <= 0:
        return {"per_record": s2 / n2, "fixed": 0.0, "method": "proportional"}
    return {"per_record": per_record, "fixed": max(0.0, s1 - per_record * n1), "method": "fixed + per-record"}


def extrapolate(peer: dict[str, Any], records: int) -> float:
    """A peer's seconds for ``records``."""
    return float(peer["fixed"] + peer["per_record"] * records)


def fmt_ratio(ratio: dict[str, float] | None) -> str:
    """``median [min–max]``."""
    if not ratio or math.isnan(ratio["median"]):
        return "—"
    if ratio.get("n", 0) <= 1 or ratio["min"] == ratio["max"]:
        return f"{ratio['median']:.3f}"
    return f"{ratio['median']:.3f} [{ratio['min']:.3f}–{ratio['max']:.3f}]"


def _k(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def print_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> None:
    """A plain-text table."""
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def _entry(
    name: str,
    records: int,
    seconds: float,
    bytes_per_record: float,
    *,
    ratio: dict[str, float] | None = None,
    peak_rss_mb: float | None = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "contender": name,
        "records": records,
        "seconds": seconds,
        "rows_per_s": records / seconds if seconds else None,
        "mb_per_s": records * bytes_per_record / 1e6 / seconds if seconds else None,
        "ratio_to_limit": ratio,
        "peak_rss_mb": peak_rss_mb,
        "note": note,
        **extra,
    }


def summarize(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows: the main comparison, the DAG, the peers, the seed baseline, the memory runs."""
    if "runs" not in out:
        return []
    n = out["data"]["records"]
    bpr = out["data"]["jsonl_bytes"] / n
    runs, pairs = out["runs"], out["pairs"]
    limit_seconds = [r["seconds"] for r in runs["limit"]]
    limit_median = median(limit_seconds)
    rows = [
        _entry(
            "limit: psql \\copy of the final rows",
            n,
            limit_median,
            bpr,
            ratio={"median": 1.0, "min": 1.0, "max": 1.0, "n": 1},
            note=(
                f"{out['data']['copy_rows_bytes'] / 1e6:.0f} MB of {out['data'].get('copy_format', 'text')} COPY rows "
                "from a local file; "
                f"{len(limit_seconds)} runs {min(limit_seconds):.2f}–{max(limit_seconds):.2f} s"
            ),
            key="limit",
            seconds_spread=spread(limit_seconds),
        )
    ]
    text_limits = [r["seconds"] for r in runs.get("limit_text") or []]
    if text_limits:
        rows.append(
            _entry(
                "limit with text rows: psql \\copy",
                n,
                median(text_limits),
                bpr,
                note=(
                    f"{out['data']['text_rows_bytes'] / 1e6:.0f} MB of text COPY rows; {len(text_limits)} runs "
                    f"{min(text_limits):.2f}–{max(text_limits):.2f} s; text/binary seconds "
                    f"{median(text_limits) / limit_median:.2f} (medians of runs in different pairs)"
                ),
                key="limit_text",
                seconds_spread=spread(text_limits),
            )
        )
    labels = {
        "plain": ("this project: load_object, plain (psycopg 3)", "S3 pre-signed URL"),
        "gzip": ("this project: load_object, gzip -1 (psycopg 3)", "S3 pre-signed URL, gunzip"),
        "psycopg2": ("this project: load_object, plain (psycopg2)", "S3 pre-signed URL, copy_expert"),
        "text": (
            "this project: load_object, plain, text rows (psycopg 3)",
            "copy_format='text'; ratio to the text-rows limit",
        ),
    }
    for variant, (label, what) in labels.items():
        if not runs.get(variant):
            continue
        seconds = [r["seconds"] for r in runs[variant]]
        rows.append(
            _entry(
                label,
                n,
                median(seconds),
                bpr,
                ratio=spread([p["ratio"] for p in pairs[variant]]),
                peak_rss_mb=max(r["peak_rss_mb"] for r in runs[variant]),
                note=f"{what}; {len(seconds)} runs {min(seconds):.2f}–{max(seconds):.2f} s",
                key=variant,
                seconds_spread=spread(seconds),
            )
        )
    dag = out.get("dag")
    if dag and dag.get("load"):
        load = dag["load"]
        rows.append(
            _entry(
                "DAG load task (with API transform)",
                dag["records"],
                float(load["seconds"]),
                bpr,
                peak_rss_mb=dag.get("peak_rss_mb"),
                note=(
                    f"smaller size, gzip; transform per record; XCom seconds; DAG run {dag['dag_run_seconds']:.1f} s; "
                    "RSS: the Airflow process"
                ),
                key="dag",
            )
        )
    peers = out.get("peers", {})
    peer_labels = {
        "s3_to_sql": "peer: S3ToSqlOperator (insert_rows, 1000/commit)",
        "execute_values": "peer: psycopg2 execute_values page_size=1000",
        "seed": "seed baseline: INSERT + COMMIT per record",
    }
    for key, label in peer_labels.items():
        if key not in peers:
            continue
        peer = peers[key]
        extrapolated = extrapolate(peer, n)
        measured = " / ".join(f"{p['seconds']:.2f}" for p in peer["points"])
        sizes = " + ".join(_k(p["records"]) for p in peer["points"])
        per_record = f"{peer['fixed']:.2f} s + {peer['per_record'] * 1e6:.0f} µs/record"
        note = f"extrapolated from {sizes} ({measured} s): {per_record}"
        if peer["method"] == "proportional":
            note += " (proportional)"
        extra: dict[str, Any] = {"key": key, "sample": peer["sample"], "points": peer["points"]}
        if key == "seed":
            scale = out.get("seed_scale", 10_000_000)
            at_scale = extrapolate(peer, scale)
            note += f"; {_k(scale)} records → {at_scale / 3600:.1f} h"
            extra.update({"seconds_at_scale": at_scale, "scale_records": scale})
        rows.append(
            _entry(
                label,
                n,
                extrapolated,
                bpr,
                ratio={
                    "median": limit_median / extrapolated,
                    "min": limit_median / extrapolated,
                    "max": limit_median / extrapolated,
                    "n": 1,
                },
                peak_rss_mb=max((p.get("peak_rss_mb") or 0 for p in peer["points"]), default=0) or None,
                note=note,
                **extra,
            )
        )
    for run in out.get("memory", []):
        rows.append(
            _entry(
                f"memory: load_object {run['compression']} ({'psycopg 3'})",
                run["records"],
                run["seconds"],
                bpr,
                peak_rss_mb=run["peak_rss_mb"],
                note=f"worker VmHWM; baseline after imports {run['baseline_rss_mb']:.0f} MB",
                key=f"memory-{run['compression']}-{run['records']}",
            )
        )
    return rows


def cpu_breakdown(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the CPU went, per contender (medians): client, server backend, S3 server, everything else."""
    rows = []
    for key, label in (
        ("limit", "limit (psql)"),
        ("plain", "plain"),
        ("gzip", "gzip"),
        ("psycopg2", "psycopg2"),
        ("limit_text", "limit, text rows"),
        ("text", "plain, text rows"),
    ):
        runs = out.get("runs", {}).get(key) or []
        if not runs:
            continue

        def med(name: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([float(r[name]) for r in runs if r.get(name) is not None])

        wall, client, server, s3 = med("seconds"), med("client_cpu"), med("server_cpu"), med("s3_cpu")
        busy = med("machine_busy")
        rows.append(
            {
                "contender": label,
                "wall": wall,
                "client_cpu": client,
                "server_cpu": server,
                "s3_cpu": s3,
                "other_cpu": busy - client - server - s3,
                "steal": med("machine_steal"),
                "client_vs_server": client / server if server else float("nan"),
                "server_busy": server / wall if wall else float("nan"),
                # The S3 server's time to the response headers (moto reads the whole object first).
                "first_byte": med("first_byte_seconds") if any("first_byte_seconds" in r for r in runs) else None,
            }
        )
    return rows


def targets(out: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets, checked (PASS/FAIL is reported; the process does not fail)."""
    by_key = {row.get("key"): row for row in rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, ok: bool | str, detail: str) -> None:
        result = ok if isinstance(ok, str) else ("PASS" if ok else "FAIL")
        checks.append({"target": name, "value": value, "pass": result == "PASS", "verdict": result, "detail": detail})

    busy = {row["contender"]: row["server_busy"] for row in cpu_breakdown(out)}
    for variant in ("plain", "gzip"):
        row = by_key.get(variant)
        if row:
            ratio = row["ratio_to_limit"]
            detail = (
                f"median of {ratio['n']} per-pair ratios {fmt_ratio(ratio)}; [min–max] covers the median ratio "
                f"with {median_confidence(ratio['n']):.0%} confidence"
            )
            if busy.get(variant) and busy.get("limit (psql)"):
                detail += (
                    f"; server backend busy {busy[variant]:.0%} of the operator's wall time vs "
                    f"{busy['limit (psql)']:.0%} of the limit's"
                )
            check(f"operator {variant} >= {TARGET_RATIO}x limit", ratio["median"], verdict(ratio, TARGET_RATIO), detail)
    memory = out.get("memory", [])
    if memory:
        operator_runs = [r for key in ("plain", "gzip", "psycopg2", "text") for r in out["runs"].get(key, [])]
        peaks = [r["peak_rss_mb"] for r in memory + operator_runs]
        check(
            f"peak RSS < {TARGET_PEAK_MB:.0f} MB",
            max(peaks),
            max(peaks) < TARGET_PEAK_MB,
            f"max over {len(peaks)} load_object runs (memory runs and the main ones)",
        )
        sizes = sorted({r["records"] for r in memory})
        for compression in ("plain", "gzip"):
            small = [r["peak_rss_mb"] for r in memory if r["records"] == sizes[0] and r["compression"] == compression]
            large = [r["peak_rss_mb"] for r in memory if r["records"] == sizes[-1] and r["compression"] == compression]
            if small and large:
                growth = max(large) - max(small)
                check(
                    f"{compression}: {_k(sizes[-1])} run within {TARGET_GROWTH_MB:.0f} MB of the {_k(sizes[0])} run",
                    growth,
                    growth <= TARGET_GROWTH_MB,
                    f"{max(small):.1f} MB → {max(large):.1f} MB",
                )
    plain = by_key.get("plain")
    for key, factor in (("s3_to_sql", TARGET_VS_S3TOSQL), ("execute_values", TARGET_VS_EXECUTE_VALUES)):
        peer = by_key.get(key)
        if plain and peer:
            speedup = peer["seconds"] / plain["seconds"]
            check(
                f"ahead of {key} by >= {factor:g}x",
                speedup,
                speedup >= factor,
                f"{peer['seconds']:.1f} s (extrapolated) vs {plain['seconds']:.2f} s (plain, median)",
            )
    return checks


def _run_cpu(run: dict[str, Any]) -> float:
    """A load's client CPU seconds: its process and its transform workers."""
    return float(run.get("client_cpu") or 0.0) + float(run.get("workers_cpu") or 0.0)


def record_path_summary(section: dict[str, Any]) -> dict[str, Any]:
    """The ``--record-path`` rows, stage costs and targets from its measurements (``bench/record_path.py``)."""
    n = section["records"]
    default = section["default_workers"]
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    stages: dict[str, dict[str, float]] = {}

    def row(
        name: str, key: str, runs: list[dict[str, Any]], note: str, records: int = n, **extra: Any
    ) -> dict[str, Any]:
        seconds = [r["seconds"] for r in runs]
        peaks = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")]
        workers = [r["workers_peak_rss_mb"] for r in runs if r.get("workers_peak_rss_mb")]
        if len(runs) > 1:
            note += f"; {len(runs)} runs {min(seconds):.2f}–{max(seconds):.2f} s"
        entry = {
            "contender": name,
            "key": key,
            "records": records,
            "seconds": median(seconds),
            "rows_per_s": records / median(seconds) if seconds else None,
            "cpu_us_per_record": median([_run_cpu(r) for r in runs]) / records * 1e6 if runs else None,
            "peak_rss_mb": max(peaks) if peaks else None,
            "workers_peak_rss_mb": max(workers) if workers else None,
            "note": note,
            **extra,
        }
        rows.append(entry)
        return entry

    def check(name: str, ratio: dict[str, float], target: float, detail: str) -> None:
        result = verdict(ratio, target) if ratio["n"] else "UNDECIDED"
        checks.append(
            {"target": name, "value": ratio["median"], "pass": result == "PASS", "verdict": result, "detail": detail}
        )

    for name, entry in section["transforms"].items():
        alone_runs = entry["alone"]
        alone = median([r["seconds"] for r in alone_runs])
        stages[name] = {
            stage: median([r["stages_us"][stage] for r in alone_runs]) for stage in alone_runs[0]["stages_us"]
        }
        limit = row(
            f"limit ({name}): psql \\copy of the final rows",
            f"{name}-limit",
            entry["limit"],
            f"{entry['rows_bytes'] / 1e6:.0f} MB of binary COPY rows ({entry['label']})",
        )
        limit["cpu_us_per_record"] = None  # psql's CPU: not the record path's
        row(
            f"transform alone ({name}): stdlib parse + function, one process",
            f"{name}-alone",
            alone_runs,
            "json.loads(parse_float=Decimal) + the function over every line, no I/O",
        )
        for workers, pairs in entry["pairs"].items():
            ratios = [(p["limit"] + alone) / p["operator"] for p in pairs]
            ratio = spread(ratios)
            runs = entry["operator"][workers]
            method = sorted({str(r.get("workers_start_method")) for r in runs if r.get("workers_start_method")})
            row(
                f"operator ({name}), transform_workers={workers}",
                f"{name}-operator-{workers}",
                runs,
                f"gzip, S3; (limit + alone) / operator {fmt_ratio(ratio)}"
                + (f"; workers started by {', '.join(method)}" if method else "; in-process"),
                ratio=ratio,
            )
            target = TARGET_RECORD_PATH.get(int(workers))
            if target is not None:
                check(
                    f"record path ({name}), transform_workers={workers}: (limit + transform alone) / operator "
                    f">= {target}",
                    ratio,
                    target,
                    f"median of {ratio['n']} per-pair ratios {fmt_ratio(ratio)}; transform alone {alone:.2f} s "
                    f"(median of {len(alone_runs)}); [min–max] covers the median with "
                    f"{median_confidence(ratio['n']):.0%} confidence",
                )
        if entry.get("before"):
            before, after = entry["before"], entry["after"]
            speedup = spread([b["seconds"] / a["seconds"] for b, a in zip(before, after, strict=True)])
            row(
                f"before #14 ({name}): in-process, stdlib json + simplejson",
                f"{name}-before",
                before,
                "transform_workers=0 with the record path's JSON as before #14",
            )
            row(
                f"after ({name}): transform_workers={default} (the default here)",
                f"{name}-after",
                after,
                f"beside each before-#14 run; rows/s ratio {fmt_ratio(speedup)}",
                ratio=speedup,
            )
            check(
                f"{name} transform load (gzip, transform_workers={default}) >= {TARGET_RECORD_SPEEDUP:g}x the rows/s "
                "before #14",
                speedup,
                TARGET_RECORD_SPEEDUP,
                f"per-round ratios {fmt_ratio(speedup)} (before #14 {median([b['seconds'] for b in before]):.2f} s, "
                f"after {median([a['seconds'] for a in after]):.2f} s, medians)",
            )
    dag = section.get("dag")
    load = (dag or {}).get("load") or {}
    if load.get("seconds"):
        rows_per_s = dag["records"] / float(load["seconds"])
        rows.append(
            {
                "contender": "the shipped DAG's load task (API transform)",
                "key": "dag",
                "records": dag["records"],
                "seconds": float(load["seconds"]),
                "rows_per_s": rows_per_s,
                "cpu_us_per_record": None,
                "peak_rss_mb": dag.get("peak_rss_mb"),
                "workers_peak_rss_mb": None,
                "note": f"dag.test(); XCom seconds; transform_workers={load.get('transform_workers')} "
                f"({load.get('workers_start_method')}); whole DAG run {dag['dag_run_seconds']:.1f} s; RSS: the Airflow "
                "process",
            }
        )
        factor = rows_per_s / BEFORE_DAG_ROWS_PER_S
        checks.append(
            {
                "target": f"the shipped DAG's load >= {TARGET_RECORD_SPEEDUP:g}x the rows/s before #14 (DAG load task)",
                "value": factor,
                "pass": factor >= TARGET_RECORD_SPEEDUP,
                "verdict": "PASS" if factor >= TARGET_RECORD_SPEEDUP else "FAIL",
                "detail": f"{rows_per_s:,.0f} rows/s ({_k(dag['records'])} records) vs {BEFORE_DAG_ROWS_PER_S:,} "
                "rows/s in the run of 2026-11-28 21:16 (200k records; another day's machine: one run each)",
            }
        )
    memory = section.get("memory")
    api = section["transforms"].get("api")
    if memory and api:
        small = memory["run"]
        row(
            f"memory (api): transform_workers={memory['workers']}",
            "api-memory",
            [small],
            "peak RSS of the load's process and of its largest worker (pages shared at fork included)",
            records=memory["records"],
        )
        large = api["operator"].get(str(memory["workers"])) or api.get("after") or []
        if large:
            for what, key in (("load process", "peak_rss_mb"), ("largest worker", "workers_peak_rss_mb")):
                small_mb, large_mb = small.get(key), max((r.get(key) or 0.0) for r in large)
                if not small_mb or not large_mb:
                    continue
                growth = large_mb - small_mb
                checks.append(
                    {
                        "target": f"record path, {what}: peak RSS at {_k(n)} within {TARGET_GROWTH_MB:.0f} MB of "
                        f"{_k(memory['records'])} (transform_workers={memory['workers']})",
                        "value": growth,
                        "pass": growth <= TARGET_GROWTH_MB,
                        "verdict": "PASS" if growth <= TARGET_GROWTH_MB else "FAIL",
                        "detail": f"{small_mb:.1f} MB → {large_mb:.1f} MB",
                    }
                )
    return {"rows": rows, "targets": checks, "stages_us": stages}


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def print_report(out: dict[str, Any]) -> None:
    """Print everything that was measured."""
    rows = out.get("results", [])
    if rows:
        print()
        print(f"== S3 → PostgreSQL COPY benchmark ({out['mode']}, {out['date']}) ==")
        print_table(
            ["contender", "records", "seconds", "rows/s", "MB/s", "ratio to limit", "peak RSS", "note"],
            [
                [
                    r["contender"],
                    _k(r["records"]),
                    _num(r["seconds"]),
                    _num(r["rows_per_s"], 0),
                    _num(r["mb_per_s"], 1),
                    fmt_ratio(r["ratio_to_limit"]),
                    f"{r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else "—",
                    r["note"],
                ]
                for r in rows
            ],
            right={1, 2, 3, 4, 5, 6},
        )
        print(
            "MB/s = uncompressed JSON-lines bytes per second. Ratio = limit seconds / contender seconds: median "
            "[min–max] of\nthe per-pair ratios of interleaved runs (limit, operator, limit, operator, ...); for the "
            "peers, vs the median limit."
        )
    cpu = out.get("cpu_breakdown", [])
    if cpu:
        print("\n-- CPU seconds per run (medians): where the time goes --")
        print_table(
            [
                "contender",
                "wall",
                "client",
                "server backend",
                "S3 server",
                "other",
                "steal",
                "client/server",
                "server busy",
                "S3 first byte",
            ],
            [
                [
                    c["contender"],
                    _num(c["wall"]),
                    _num(c["client_cpu"]),
                    _num(c["server_cpu"]),
                    _num(c["s3_cpu"]),
                    _num(c["other_cpu"]),
                    _num(c["steal"]),
                    f"{c['client_vs_server']:.0%}",
                    f"{c['server_busy']:.0%}",
                    _num(c.get("first_byte")),
                ]
                for c in cpu
            ],
        )
        print("other = all CPUs busy during the run minus the three (PG background writers, kernel, other processes).")
        print(
            "S3 first byte = wall seconds from the GET to its response headers, inside the operator's time: the local\n"
            "S3 server (moto) reads the whole object before it answers, the server backend waits meanwhile."
        )
    sections = (
        ("Server settings for big loads (--settings)", "settings_experiments"),
        ("segment_bytes (--segments)", "segment_experiment"),
    )
    for title, key in sections:
        section = out.get(key)
        if section:
            print(f"\n-- {title} --")
            print_table(section["headers"], section["rows"], right=set(range(1, len(section["headers"]))))
            for note in section.get("notes", []):
                print(f"  {note}")
    profile = out.get("profile")
    if profile:
        print("\n-- Client profile (--profile) --")
        for line in profile.get("summary_lines", []):
            print(line)
    record = out.get("record_path_results")
    if record:
        section = out["record_path"]
        workers = ", ".join(map(str, section["workers"]))
        print(
            f"\n-- Record path (--record-path): {_k(section['records'])} records, {section['compression']}, "
            f"transform_workers {workers} (default here {section['default_workers']}) --"
        )
        print_table(
            ["contender", "seconds", "rows/s", "CPU µs/record", "peak RSS", "largest worker", "note"],
            [
                [
                    r["contender"],
                    _num(r["seconds"]),
                    _num(r["rows_per_s"], 0),
                    _num(r["cpu_us_per_record"], 1),
                    f"{r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else "—",
                    f"{r['workers_peak_rss_mb']:.0f} MB" if r.get("workers_peak_rss_mb") else "—",
                    r["note"],
                ]
                for r in record["rows"]
            ],
            right={1, 2, 3, 4, 5},
        )
        print(
            "CPU µs/record = the client's CPU (the load's process + its transform workers) per record. Ratio = "
            "(limit seconds + the transform alone's median) / operator seconds, per pair."
        )
        names = list(record["stages_us"])
        stage_names = list(record["stages_us"][names[0]]) if names else []
        print("\nRecord path stages, µs per record (best of 3 on a sample, one process):")
        print_table(
            ["stage", *names],
            [[stage, *(_num(record["stages_us"][n][stage]) for n in names)] for stage in stage_names],
        )
    from bench.sections_report import print_sections

    print_sections(out)
    checks = out.get("targets", [])
    if checks:
        print("\n-- Targets --")
        for c in checks:
            result = c.get("verdict") or ("PASS" if c["pass"] else "FAIL")
            print(f"  {result:9}  {c['target']}: {_num(c['value'])} ({c['detail']})")
    machine = out["machine"]
    print(
        f"\nMachine: {machine['cpu_model']}, {machine['cores']} cores, {machine['mem_total_mb']:,} MB; load average "
        f"{machine['loadavg_start'][0]:.2f} at start, {machine.get('loadavg_end', [float('nan')])[0]:.2f} at end"
    )
    pg = out.get("postgres", {})
    if pg:
        settings = pg["effective_settings"]
        print(
            f"PostgreSQL: {pg['version'].split(' on ')[0]}; fsync={settings['fsync']} (bench only), "
            f"synchronous_commit={settings['synchronous_commit']}, full_page_writes={settings['full_page_writes']}, "
            f"wal_level={settings['wal_level']}, shared_buffers={settings['shared_buffers']}, "
            f"max_wal_size={settings['max_wal_size']}, autovacuum={settings['autovacuum']}"
        )


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def finish(out: dict[str, Any], path: Path) -> None:
    """Summarise, check the targets, print, and write the JSON."""
    out["results"] = summarize(out)
    out["cpu_breakdown"] = cpu_breakdown(out)
    out["targets"] = targets(out, out["results"])
    if out.get("record_path"):
        out["record_path_results"] = record_path_summary(out["record_path"])
        out["targets"].extend(out["record_path_results"]["targets"])
    from bench import sections_report

    out["targets"] += sections_report.targets(out)
    out["section_tables"] = sections_report.tables(out)
    out.setdefault("notes", []).extend(
        [
            "fsync=off, full_page_writes=off, synchronous_commit=off on the bench server (harness defaults): "
            "durability costs are not measured except in --settings.",
            "Every run starts after TRUNCATE, CHECKPOINT and sync; autovacuum is off; max_wal_size=8GB so no "
            "checkpoint falls inside a run.",
            "Operator runs: a worker process per run (python -m bench.worker), timed from connect to commit; the "
            "S3 server (moto) is a thread of the bench process. Limit: the psql process's wall time.",
            "Peak RSS is VmHWM from /proc/self/status (ru_maxrss would include the bench parent's high-water mark "
            "inherited across fork+exec).",
        ]
    )
    print_report(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(out), indent=2, ensure_ascii=False) + "\n")
    if out["mode"] == "full" and out.get("results") and path.name == "latest.json":
        from bench.readme import update

        if update(_clean(out)):
            print("README.md: performance table updated")
