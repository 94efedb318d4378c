"""``--profile``: py-spy of the worker (plain and gzip) and the client's per-stage CPU.

* ``bench/results/profile-<plain|gzip>.speedscope.json``: open in https://www.speedscope.app.
  py-spy samples the worker's Python stacks while they are on CPU (idle waits are left out), so
  the shares below are shares of the client's CPU time; C calls (``bytes.decode``, ``split``,
  ``zlib``) are charged to the Python function that makes them.
* The stage breakdown (``python -m bench.worker`` in ``stages`` mode) times each operation alone
  on the same data, best of 3, and relates it to the server backend's CPU for the same COPY.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import RESULTS, contenders
from bench.data import constants
from bench.server import role_types

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.contenders import Context

RATE = 200
# (label, frame name that marks it, counted inclusive); checked in order, first match wins per sample.
CATEGORIES = (
    ("imports and start-up", "_find_and_load"),
    ("gunzip (zlib)", "gunzip"),
    ("HTTP read (requests/urllib3)", "HTTPResponse.read"),
    ("row formatting (RowFormat.rows: per-row % + join)", "RowFormat.rows"),
    ("line-start check (_all_lines_open_objects)", "_all_lines_open_objects"),
    ("escaping (copy_format.escape)", "escape"),
    ("encode_block itself (UTF-8 decode, split, CR check)", "JsonLinesEncoder.encode_block"),
    ("line cutting (records.line_blocks)", "line_blocks"),
    ("COPY send (psycopg/psycopg2 write)", "Copy.write"),
    ("COPY send (psycopg/psycopg2 write)", "ChunkStream.readinto"),
)


def _py_spy() -> str | None:
    import sys

    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def _summarize_speedscope(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    names = [f["name"] for f in frames]
    categories: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    total = 0.0
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            total += weight
            stack_names = [names[i] for i in stack]
            if stack_names:
                selfs[stack_names[-1]] += weight
            label = "other"
            for cat, marker in CATEGORIES:
                if any(n == marker or n.endswith("." + marker) or n.startswith(marker + " ") for n in stack_names):
                    label = cat
                    break
            categories[label] += weight
    return {
        "samples": sum(len(prof["samples"]) for prof in doc["profiles"]),
        "cpu_seconds": total,  # py-spy's speedscope weights are seconds (1 / rate per sample)
        "categories": {k: v / total for k, v in categories.most_common()} if total else {},
        "top_self": {k: v / total for k, v in selfs.most_common(12)} if total else {},
    }


def profile(ctx: Context, out: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Profile the worker and measure the stages; return the section (with printable lines)."""
    result: dict[str, Any] = {"rate_hz": RATE, "runs": {}}
    lines: list[str] = []
    spy = _py_spy()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if spy is None:
        lines.append("py-spy not found: no flame graphs")
    else:
        for compression in ("plain", "gzip"):
            path = RESULTS / f"profile-{compression}.speedscope.json"
            log(f"profile: py-spy record of load_object ({compression}) → {path.relative_to(RESULTS.parent.parent)}")
            prefix = [spy, "record", "--format", "speedscope", "--rate", str(RATE), "--output", str(path), "--"]
            run = contenders.operator(ctx, ctx.main, compression, prefix=prefix)
            summary = _summarize_speedscope(path)
            summary.update(
                {"seconds": run["seconds"], "client_cpu": run["client_cpu"], "server_cpu": run["server_cpu"]}
            )
            result["runs"][compression] = summary
            lines.append(
                f"py-spy, {compression}: {summary['cpu_seconds']:.2f} s of client CPU sampled "
                f"(run {run['seconds']:.2f} s; server backend {run['server_cpu']:.2f} s CPU)"
            )
            for label, share in summary["categories"].items():
                lines.append(f"    {share:6.1%}  {label}")
    log("profile: per-stage CPU of the client (worker, stages mode)")
    main = ctx.main
    spec = {
        "mode": "stages",
        "plain": str(main.plain_path),
        "gz": str(main.gz_path),
        "url": ctx.presign(main.key("plain")),
        "dsn": ctx.pg.dsn,
        "constants": constants(main.key("plain"), main.etags["plain"]),
        "types": role_types(ctx.pg),
        "reps": 3,
    }
    stages = contenders.child(ctx, "bench.worker", spec)
    limit_runs = out.get("runs", {}).get("limit") or []
    server = statistics.median(r["server_cpu"] for r in limit_runs) if limit_runs else None
    if server is None:
        server = contenders.limit(ctx)["server_cpu"]
    stages["server_cpu_for_copy"] = server
    result["stages"] = stages
    per_million = 1e6 / stages["records"]
    lines.append(
        f"Per-stage client CPU, each stage alone, best of 3 ({stages['records']:,} records, "
        f"{stages['blocks']} blocks); server backend CPU for the same COPY: {server:.2f} s"
    )
    lines.append(f"    {'stage':58s} {'kind':10s} {'s / 1M rec':>10s} {'% of server':>11s}")
    for stage in stages["stages"].values():
        cost = stage["cpu_seconds"]
        lines.append(f"    {stage['label']:58s} {stage['kind']:10s} {cost * per_million:10.3f} {cost / server:11.1%}")
    result["summary_lines"] = lines
    return result
