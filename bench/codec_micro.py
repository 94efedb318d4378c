"""Microbenchmark of the record path's JSON: µs per record, stdlib/simplejson vs ``jsoncodec``.

The stdlib/simplejson column is ``jsoncodec``'s reference path (what the record path used
before #14, and what the codec falls back to per record); ``documents`` uses the codec.

``python -m bench.codec_micro [records] [repeats]`` — provider records from ``harness.sample``
(the same lines ``make bench`` loads): parse each line, serialise the raw record, serialise
the shipped transform's document, and the transform itself. Best of ``repeats`` runs, each
over every record; one process, no I/O. Not a test: numbers vary with the machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import add_paths

add_paths()

from harness.sample import jsonl_lines  # noqa: E402 - needs add_paths()
from provider_directory.documents import build_provider_document  # noqa: E402
from s3_postgres_copy import jsoncodec  # noqa: E402


def best_us(func: Callable[[Any], Any], items: Sequence[Any], repeats: int) -> float:
    """Best per-item time over ``repeats`` passes, in µs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 20_000
    repeats = int(argv[1]) if len(argv) > 1 else 5
    lines = [line.rstrip(b"\n") for line in jsonl_lines(n, seed=1)]
    records = [jsoncodec.loads_record(line) for line in lines]
    docs = [build_provider_document(r) for r in records]
    size = sum(map(len, lines)) / n
    print(f"{n} provider records, {size:.0f} bytes a line on average; best of {repeats}, µs per record")
    rows = [
        ("parse line", jsoncodec._reference_loads, jsoncodec.loads_record, lines),
        ("serialise record", jsoncodec._reference_dumps, jsoncodec.dumps_document, records),
        ("serialise document", jsoncodec._reference_dumps, jsoncodec.dumps_document, docs),
    ]
    print(f"{'':22}{'stdlib/simplejson':>18}{'jsoncodec':>11}{'speed-up':>10}")
    total_ref = total_new = 0.0
    for name, ref, new, items in rows:
        t_ref, t_new = best_us(ref, items, repeats), best_us(new, items, repeats)
        if name != "serialise record":
            total_ref, total_new = total_ref + t_ref, total_new + t_new
        print(f"{name:22}{t_ref:18.2f}{t_new:11.2f}{t_ref / t_new:9.1f}x")
    transform = best_us(build_provider_document, records, repeats)
    print(f"{'transform':22}{transform:18.2f}{transform:11.2f}")
    total_ref += transform
    total_new += transform
    print(f"{'parse+transform+dump':22}{total_ref:18.2f}{total_new:11.2f}{total_ref / total_new:9.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
