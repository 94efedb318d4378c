"""Write a benchmark run's table into the top-level README (between the ``bench:results`` markers).

``make bench`` does it after a full run; ``python -m bench.readme [results.json]`` redoes it from
a saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
START, END = "<!-- bench:results -->", "<!-- /bench:results -->"


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(out: dict[str, Any]) -> str:
    """The markdown for one run: results, targets, machine."""
    lines = [
        f"Run of {out['date']} ({out['mode']} mode, `make bench`), from `bench/results/latest.json`:",
        "",
        "| contender | records | seconds | rows/s | MB/s | ratio to limit, median [min–max] | peak RSS | note |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in out.get("results", []):
        ratio = row.get("ratio_to_limit")
        if isinstance(ratio, dict) and ratio.get("median") is not None:
            text = f"{ratio['median']:.3f}"
            if ratio.get("min") is not None and ratio.get("max") is not None and ratio["min"] != ratio["max"]:
                text += f" [{ratio['min']:.3f}–{ratio['max']:.3f}]"
        else:
            text = "—"
        rss = f"{row['peak_rss_mb']:.0f} MB" if row.get("peak_rss_mb") else "—"
        lines.append(
            f"| {row['contender']} | {_cell(row['records'])} | {_cell(row['seconds'])} | "
            f"{_cell(row['rows_per_s'], 0)} | {_cell(row['mb_per_s'], 1)} | {text} | {rss} | {row.get('note', '')} |"
        )
    record = out.get("record_path_results")
    if record:
        section = out.get("record_path", {})
        lines += [
            "",
            f"Record path (`--record-path`): {_cell(section.get('records'))} records, {section.get('compression')}, "
            f"transform_workers {', '.join(map(str, section.get('workers', [])))} (default here "
            f"{section.get('default_workers')}); CPU = the load's process + its transform workers:",
            "",
            "| contender | records | seconds | rows/s | client CPU µs/record | peak RSS (process / worker) | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in record["rows"]:
            rss = f"{row['peak_rss_mb']:.0f} MB" if row.get("peak_rss_mb") else "—"
            if row.get("workers_peak_rss_mb"):
                rss += f" / {row['workers_peak_rss_mb']:.0f} MB"
            cpu = _cell(row["cpu_us_per_record"], 1)
            lines.append(
                f"| {row['contender']} | {_cell(row['records'])} | {_cell(row['seconds'])} | "
                f"{_cell(row['rows_per_s'], 0)} | {cpu} | {rss} | {row.get('note', '')} |"
            )
    from bench.sections_report import markdown

    lines += markdown(out)
    lines += ["", "| target | value | |", "|---|---|---|"]
    for check in out.get("targets", []):
        result = check.get("verdict") or ("PASS" if check["pass"] else "FAIL")
        verdict = result if result == "PASS" else f"**{result}**"
        lines.append(f"| {check['target']} | {_cell(check['value'], 3)} ({check['detail']}) | {verdict} |")
    machine = out["machine"]
    settings = out.get("postgres", {}).get("effective_settings", {})
    lines += [
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['mem_total_mb']:,} MB, "
        f"load average {machine['loadavg_start'][0]:.2f} at the start. PostgreSQL "
        f"{out.get('postgres', {}).get('version', '?').split(' on ')[0].removeprefix('PostgreSQL ')} on the same "
        f"machine with fsync={settings.get('fsync')}, synchronous_commit={settings.get('synchronous_commit')} "
        "(the benchmark does not measure durability costs; see `bench/README.md` for settings measured with them).",
    ]
    return "\n".join(lines)


def update(out: dict[str, Any], readme: Path = README) -> bool:
    """Replace the text between the markers; return whether the README had them."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render(out)}\n{END}{tail}")
    return True


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench/results/latest.json"
    if not update(json.loads(path.read_text())):
        raise SystemExit(f"{README} has no {START} ... {END} markers")
    print(f"Updated {README} from {path}")
