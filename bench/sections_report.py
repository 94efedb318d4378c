"""Tables and verdicts of the maintenance sections (merge, snapshot, small records, refusals).

Pure functions of a results dict (no server, no I/O): :func:`targets` adds each section's
targets to the main ones, :func:`tables` its tables; :func:`print_sections` and
:func:`markdown` show them on stdout and in the README's results block.

Verdicts follow the main bench's rule: a ratio target is settled only if every interleaved
pair (or round) lands on the same side of it (PASS all, FAIL none, UNDECIDED otherwise).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.report import fmt_ratio, median, median_confidence, print_table, spread, verdict

TARGET_MERGE_VS_APPEND = 2.0
TARGET_MERGE_VS_PEER = 5.0
TARGET_UNCHANGED_WAL_PER_ROW = 0.1
"""Bytes of WAL per identical record at most: none, give or take a commit record's share."""
TARGET_SMALL_GROWTH_MB = 100.0
TIME_ONLY = ("gzip_one_member",)
"""Small-records runs that are there for their time (a comparison), not for a memory target."""
TARGET_REFUSALS = 150
TARGET_REFUSALS_RATIO = 2.0


def verdict_at_most(ratio: dict[str, float], target: float) -> str:
    """PASS if every pair's ratio is at most ``target``, FAIL if none is, UNDECIDED otherwise."""
    if ratio["max"] <= target:
        return "PASS"
    if ratio["min"] > target:
        return "FAIL"
    return "UNDECIDED"


def _check(name: str, value: float | None, result: str | bool, detail: str) -> dict[str, Any]:
    result = result if isinstance(result, str) else ("PASS" if result else "FAIL")
    return {"target": name, "value": value, "pass": result == "PASS", "verdict": result, "detail": detail}


def _seconds(runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, float]:
    return spread([float(r[key]) for r in runs])


def _fmt_spread(s: dict[str, float], digits: int = 2) -> str:
    if not s.get("n"):
        return "—"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e6:,.1f}"


def _top_wal(records: list[dict[str, Any]] | None, top: int = 2) -> str:
    if not records:
        return ""
    return ", ".join(f"{r['record']} ×{r['count']:,} ({r['bytes'] / 1e6:.1f} MB)" for r in records[:top])


def _confidence(n: int) -> str:
    return f"[min–max] covers the median with {median_confidence(n):.0%} confidence"


# -- merge -------------------------------------------------------------------------------------
def merge_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Merge ≤ 2× append (pairs), ≥ 5× ahead of ``insert_rows(replace=True)``, no WAL for unchanged rows."""
    checks = []
    ratios = spread([p["ratio"] for p in section["pairs"]])
    merge_s, append_s = _seconds(section["runs"]["merge"]), _seconds(section["runs"]["append"])
    if ratios["n"]:
        checks.append(
            _check(
                f"merge of the file <= {TARGET_MERGE_VS_APPEND:g}x its append",
                ratios["median"],
                verdict_at_most(ratios, TARGET_MERGE_VS_APPEND),
                f"merge / append seconds, median of {ratios['n']} pairs {fmt_ratio(ratios)} "
                f"({_confidence(ratios['n'])}); "
                f"merge {merge_s['median']:.2f} s, append {append_s['median']:.2f} s (medians)",
            )
        )
    peer = section.get("peer")
    if peer and merge_s["n"]:
        leads = spread([peer["seconds"] / r["seconds"] for r in section["runs"]["merge"]])
        sizes = " + ".join(f"{p['records']:,}" for p in peer["points"])
        checks.append(
            _check(
                f"merge >= {TARGET_MERGE_VS_PEER:g}x ahead of insert_rows(replace=True)",
                leads["median"],
                verdict(leads, TARGET_MERGE_VS_PEER),
                f"{peer['seconds']:.1f} s extrapolated from {sizes} records ({peer['method']}) vs the "
                f"{merge_s['n']} merge runs {_fmt_spread(merge_s)} s",
            )
        )
    alone = (section.get("sql") or {}).get("unchanged_only") or {}
    if "on_conflict" in alone:
        rows = section["sql"]["identical_rows"]
        run = alone["on_conflict"]
        per_row = run["wal_bytes"] / rows if rows else float("nan")
        others = "; ".join(
            f"{name}: {alone[name]['wal_bytes']:,} bytes" for name in ("merge", "prefiltered") if name in alone
        )
        checks.append(
            _check(
                "unchanged rows write no WAL (the loader's upsert of the identical rows alone)",
                per_row,
                per_row <= TARGET_UNCHANGED_WAL_PER_ROW,
                f"bytes per row: {run['wal_bytes']:,} bytes for {rows:,} identical rows "
                f"({_top_wal(run.get('wal_records'), 1) or 'no records'}); {others}",
            )
        )
    return checks


def merge_tables(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The merge runs beside the append and the peer; the SQL statements side by side."""
    n, mix = section["records"], section["mix"]
    runs = section["runs"]
    ratios = spread([p["ratio"] for p in section["pairs"]])
    rows = []
    for kind, label in (("merge", 'load_object mode="merge"'), ("append", 'load_object mode="append"')):
        if not runs.get(kind):
            continue
        rs = runs[kind]
        upd = [r.get("counters", {}).get("n_tup_upd") for r in rs]
        hot = [r.get("counters", {}).get("n_tup_hot_upd") for r in rs]
        note = ""
        upserts = [r["upsert_seconds"] for r in rs if r.get("upsert_seconds") is not None]
        if upserts:
            note = f"of which the upsert statement {median(upserts):.2f} s; "
        if kind == "merge":
            note += _top_wal(rs[0].get("wal_records"), 3)
        rows.append(
            [
                label,
                f"{n:,}",
                _fmt_spread(_seconds(rs)),
                fmt_ratio(ratios) if kind == "merge" else "1",
                _mb(median([r["wal_bytes"] for r in rs])),
                f"{upd[0]:,} / {hot[0]:,}" if upd[0] is not None else "—",
                f"{median([r['server_cpu'] for r in rs]):.2f}",
                f"{max(r['peak_rss_mb'] for r in rs):.0f} MB",
                note,
            ]
        )
    peer = section.get("peer")
    merge_median = median([r["seconds"] for r in runs.get("merge", [])])
    if peer:
        last = peer["points"][-1]
        rows.append(
            [
                "PostgresHook.insert_rows(replace=True, replace_index=['npi'])",
                f"{n:,}",
                f"{peer['seconds']:.1f} (extrapolated)",
                f"{peer['seconds'] / merge_median:.1f}" if merge_median else "—",
                f"{_mb(peer['wal_bytes'])} (extrapolated)" if peer.get("wal_bytes") is not None else "—",
                f"{last['rows_updated']:,} of {last['records']:,} / {last['rows_hot_updated']:,}",
                "—",
                f"{last['peak_rss_mb']:.0f} MB*",
                f"{peer['fixed']:.2f} s + {peer.get('per_record_us', peer['per_record'] * 1e6):.0f} µs/record; "
                "every conflicting row rewritten",
            ]
        )
    tables = [
        {
            "title": (
                f"Merge (--merge): {n:,} records ({mix['identical']:,} identical, {mix['changed']:,} changed, "
                f"{mix['new']:,} new) into {n:,} stored rows"
            ),
            "headers": [
                "load",
                "records",
                "seconds",
                "vs append",
                "WAL MB",
                "rows rewritten (upd / HOT)",
                "server CPU",
                "peak RSS",
                "WAL by record / note",
            ],
            "rows": rows,
            "notes": [
                "vs append = seconds / the append's seconds, per counterbalanced pair (median [min–max]); for the "
                "peer, vs the merge's median.",
                "append: the same file into a table of the same stored rows without the merge key's unique index "
                "(the duplicates would violate it).",
                "peer: its table has an `npi text` column with a unique index (replace_index takes column names); "
                "* the Airflow process's peak.",
            ],
        }
    ]
    sql_section = section.get("sql")
    if sql_section:
        variants = sql_section["variants"]
        base = {i: r["seconds"] for i, r in enumerate(variants.get("on_conflict", []))}
        alone = sql_section.get("unchanged_only", {})
        rows = []
        for name, label in sql_section["labels"].items():
            rs = variants.get(name) or []
            if not rs:
                continue
            vs = spread([r["seconds"] / base[i] for i, r in enumerate(rs) if i in base])
            one = alone.get(name)
            rows.append(
                [
                    name,
                    _fmt_spread(_seconds(rs)),
                    fmt_ratio(vs),
                    f"{median([r['server_cpu'] for r in rs]):.2f}",
                    _mb(median([r["wal_bytes"] for r in rs])),
                    _top_wal(rs[0].get("wal_records"), 2),
                    f"{one['seconds']:.2f} s, {one['wal_bytes']:,} B" if one else "—",
                    _top_wal(one.get("wal_records"), 1) if one else "",
                    label,
                ]
            )
        tables.append(
            {
                "title": (
                    f"Merge SQL only: the same {n:,} staged rows, {sql_section['rounds']} interleaved rounds, "
                    "each statement in its own transaction, rolled back"
                ),
                "headers": [
                    "statement",
                    "seconds",
                    "vs ON CONFLICT",
                    "server CPU",
                    "WAL MB",
                    "WAL by record",
                    f"the {sql_section['identical_rows']:,} identical rows alone",
                    "their WAL by record",
                    "what",
                ],
                "rows": rows,
                "notes": [
                    "From a temporary staging table made by the loader's own create_staging, filled from one shared "
                    "copy of the staged rows (not timed); the target vacuumed (FREEZE) and checkpointed after each.",
                    *(
                        [f"EXPLAIN ANALYZE of the loader's statement: {sql_section['explain_on_conflict']['summary']}."]
                        if sql_section.get("explain_on_conflict")
                        else []
                    ),
                ],
            }
        )
    return tables


# -- snapshot ------------------------------------------------------------------------------------
def snapshot_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The concurrent reader saw only the old or the new content."""
    reader = section.get("reader")
    if not reader:
        return []
    contrast = section.get("truncate_reader") or {}
    detail = (
        f"{reader['queries_during']} queries during a {reader['load_seconds']:.1f} s snapshot load: longest "
        f"{reader['max_seconds']:.3f} s, median {reader['median_seconds']:.3f} s "
        f"(idle {reader['idle_median_seconds']:.3f} s); "
        f"saw {len(reader['seen'])} contents"
    )
    if contrast:
        detail += f"; a TRUNCATE + COPY reload made the same reader wait up to {contrast['max_seconds']:.1f} s"
    return [
        _check(
            "a reader during a snapshot sees only the old or the new content",
            reader["max_seconds"],
            bool(reader["only_old_or_new"]),
            detail,
        )
    ]


def snapshot_tables(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Snapshot vs replace, the reader, and the first loads on a ``wal_level=minimal`` server."""
    n = section["records"]
    runs = section["runs"]
    ratios = spread([p["ratio"] for p in section["pairs"]])
    rows = []
    for mode in ("snapshot", "replace"):
        rs = runs.get(mode) or []
        if not rs:
            continue
        rows.append(
            [
                f'load_object mode="{mode}" (replica)',
                f"{n:,}",
                _fmt_spread(_seconds(rs)),
                fmt_ratio(ratios) if mode == "snapshot" else "1",
                _mb(median([r["wal_bytes"] for r in rs])),
                f"{median([r['server_cpu'] for r in rs]):.2f}",
                _top_wal(rs[0].get("wal_records"), 3),
            ]
        )
    minimal = (section.get("minimal") or {}).get("runs") or {}
    for mode, run in minimal.items():
        rows.append(
            [
                f'first load, mode="{mode}" (wal_level=minimal)',
                f"{n:,}",
                f"{run['seconds']:.2f}",
                "—",
                _mb(run["wal_bytes"]),
                f"{run['server_cpu']:.2f}",
                f"table created by the load, COPY FREEZE: {run['all_frozen']:,} of {run['pages']:,} pages all-frozen; "
                + _top_wal(run.get("wal_records"), 1),
            ]
        )
    notes = [
        "vs replace = seconds / the replace's seconds, per counterbalanced pair; both delete the N stored rows "
        "(same key) and COPY N rows in one transaction."
    ]
    for key, what in (("reader", "snapshot load"), ("truncate_reader", "TRUNCATE + COPY reload (psql, contrast)")):
        reader = section.get(key)
        if reader:
            notes.append(
                f"reader during a {what} of {reader['load_seconds']:.1f} s: {reader['queries_during']} queries of "
                f"SELECT count(*), min(batch_id), max(batch_id); longest {reader['max_seconds']:.3f} s, median "
                f"{reader['median_seconds']:.3f} s (idle median {reader['idle_median_seconds']:.3f} s); saw "
                + "; ".join(f"{row[0]:,} rows of batch {row[1]}" for row in reader["seen"])
            )
    return [
        {
            "title": f"Snapshot vs replace (--snapshot): {n:,} records into {n:,} stored rows",
            "headers": ["load", "records", "seconds", "vs replace", "WAL MB", "server CPU", "WAL by record / note"],
            "rows": rows,
            "notes": notes,
        }
    ]


# -- small records ---------------------------------------------------------------------------------
def small_records_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Each shape's peak within 100 MB of its tiny load's."""
    checks = []
    for name, run in section["runs"].items():
        if "big" not in run or "tiny" not in run or name in TIME_ONLY:
            continue
        growth = run["big"]["peak_rss_mb"] - run["tiny"]["peak_rss_mb"]
        checks.append(
            _check(
                f"small records, {name}: {run['lines']:,} lines within {TARGET_SMALL_GROWTH_MB:.0f} MB of a tiny load",
                growth,
                growth <= TARGET_SMALL_GROWTH_MB,
                f"peak {run['tiny']['peak_rss_mb']:.1f} MB → {run['big']['peak_rss_mb']:.1f} MB (worker VmHWM); "
                f"{run['label']}",
            )
        )
    return checks


def small_records_tables(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS by shape."""
    rows = []
    for name, run in section["runs"].items():
        big, tiny = run.get("big"), run.get("tiny")
        if not big or not tiny:
            continue
        rows.append(
            [
                name,
                f"{run['lines']:,}",
                f"{big['object_bytes'] / 1e6:.1f}",
                f"{tiny['peak_rss_mb']:.0f} MB",
                f"{big['peak_rss_mb']:.0f} MB",
                f"{big['peak_rss_mb'] - tiny['peak_rss_mb']:+.1f} MB",
                f"{big['seconds']:.2f}",
                f"{big['lines'] / big['seconds']:,.0f}",
                run["label"],
            ]
        )
    return [
        {
            "title": (
                f"Memory for small records (--small-records): a {section['key_length']:,}-character key, "
                f"beside a {section['tiny_lines']:,}-line load of the same shape"
            ),
            "headers": ["shape", "lines", "object MB", "tiny peak", "peak", "growth", "seconds", "rows/s", "what"],
            "rows": rows,
            "notes": [
                "Peak = the worker's VmHWM, as the main memory runs. `{}` lines for binary/text/tolerant; "
                "gzip_members: the main data's records, one gzip member each; gzip_one_member: the same records "
                "as one member (no memory target: for the seconds)."
            ],
        }
    ]


# -- refusals ------------------------------------------------------------------------------------
def _refusal_ratios(section: dict[str, Any]) -> dict[int, dict[str, float]]:
    out = {}
    for k in section["duplicates"]:
        values = [r["seconds"][str(k)] / r["seconds"]["0"] for r in section["per_round"] if "0" in r["seconds"]]
        out[k] = spread(values)
    return out


def refusals_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """150 refusals cost at most 2× the clean load (per round)."""
    if TARGET_REFUSALS not in section["duplicates"] or 0 not in section["duplicates"]:
        return []
    ratio = _refusal_ratios(section)[TARGET_REFUSALS]
    clean = _seconds(section["runs"]["0"])
    dirty = _seconds(section["runs"][str(TARGET_REFUSALS)])
    return [
        _check(
            f"tolerant: {TARGET_REFUSALS} refusals <= {TARGET_REFUSALS_RATIO:g}x the clean load",
            ratio["median"],
            verdict_at_most(ratio, TARGET_REFUSALS_RATIO),
            f"seconds(k={TARGET_REFUSALS}) / seconds(k=0) per round, median of {ratio['n']} {fmt_ratio(ratio)}; "
            f"{dirty['median']:.2f} s vs {clean['median']:.2f} s for {section['lines']:,} rows",
        )
    ]


def refusals_tables(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Seconds, COPY statements and cost per refusal by k."""
    ratios = _refusal_ratios(section)
    clean = median([r["seconds"] for r in section["runs"]["0"]]) if "0" in section["runs"] else float("nan")
    rows = []
    for k in section["duplicates"]:
        rs = section["runs"][str(k)]
        seconds = median([r["seconds"] for r in rs])
        per = (seconds - clean) / k * 1000 if k and not math.isnan(clean) else None
        rows.append(
            [
                str(k),
                _fmt_spread(_seconds(rs)),
                fmt_ratio(ratios[k]) if k else "1",
                f"{statistics.median(r['copy_statements'] for r in rs):.0f}",
                f"{statistics.median(r['copy_refused'] for r in rs):.0f}",
                f"{statistics.median(r['tolerant_statements'] or 0 for r in rs):.0f}",
                "—" if per is None else f"{per:.1f}",
                f"{median([r['server_cpu'] for r in rs]):.2f}",
                f"{max(r['peak_rss_mb'] for r in rs):.0f} MB",
            ]
        )
    return [
        {
            "title": (
                f"Tolerant mode with server-side refusals (--refusals): {section['lines']:,} rows, a unique index on "
                f"(document->>'npi'), k duplicates, max_bad_rows={section['max_bad_rows']}"
            ),
            "headers": [
                "k",
                "seconds",
                "vs k=0",
                "COPY statements",
                "refused",
                "sent to recover",
                "ms per refusal",
                "server CPU",
                "peak RSS",
            ],
            "rows": rows,
            "notes": [
                "vs k=0 per round (median [min–max]); COPY statements counted in the worker around PostgresSink.copy "
                "('sent to recover' = TolerantCopy.statements, which the loader does not report); rows and rejects "
                "checked exactly in every run.",
            ],
        }
    ]


SECTIONS = (
    ("merge", merge_targets, merge_tables),
    ("snapshot", snapshot_targets, snapshot_tables),
    ("small_records", small_records_targets, small_records_tables),
    ("refusals", refusals_targets, refusals_tables),
)


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Every maintenance section's targets, checked."""
    return [check for key, make, _ in SECTIONS if out.get(key) for check in make(out[key])]


def tables(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Every maintenance section's tables."""
    return [table for key, _, make in SECTIONS if out.get(key) for table in make(out[key])]


def print_sections(out: dict[str, Any]) -> None:
    """Print the sections' tables."""
    for table in out.get("section_tables") or []:
        print(f"\n-- {table['title']} --")
        print_table(table["headers"], table["rows"], right=set(range(1, len(table["headers"]) - 1)))
        for note in table.get("notes", []):
            print(f"  {note}")


def markdown(out: dict[str, Any]) -> list[str]:
    """The sections' tables as markdown (for the README's results block)."""
    lines: list[str] = []
    for table in out.get("section_tables") or []:
        headers = table["headers"]
        lines += [
            "",
            f"{table['title']}:",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(headers) - 2) + ["---"]) + "|",
        ]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in table["rows"]]
        if table.get("notes"):
            lines += ["", *(f"* {note}" for note in table["notes"])]
    return lines
