"""Worker process that counts COPY statements: ``python -m bench.load_worker <spec.json>``.

The same load as :mod:`bench.worker` (its ``run_load``, options from ``spec["options"]``), with
what the loader does not report: every ``COPY`` statement the sink runs (and how many the
server refused), wrapped around ``PostgresSink.copy``; ``TolerantCopy.statements`` (the COPY
statements tolerant mode sent to recover refused segments), read from the instance the loader
made; and the seconds of a merge's upsert statement (``merge.upsert``, which ``mode="merge"``
imports when it runs). ``LoadStats`` has no field for any of them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def install_counters() -> tuple[dict[str, Any], list[Any]]:
    """Wrap ``PostgresSink.copy``, ``merge.upsert`` and ``loader.TolerantCopy``; return the counts, the instances."""
    from s3_postgres_copy import loader, merge, sink

    counts: dict[str, Any] = {"copy_statements": 0, "copy_refused": 0, "upsert_seconds": None}
    original = sink.PostgresSink.copy

    def copy(self: Any, payloads: Any, layout: Any, *, freeze: bool = False) -> int:
        counts["copy_statements"] += 1
        try:
            return original(self, payloads, layout, freeze=freeze)
        except BaseException:
            counts["copy_refused"] += 1
            raise

    upsert = merge.upsert

    def timed_upsert(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return upsert(*args, **kwargs)
        finally:
            counts["upsert_seconds"] = time.monotonic() - started

    instances: list[Any] = []

    class CountedTolerantCopy(loader.TolerantCopy):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instances.append(self)

    sink.PostgresSink.copy = copy  # type: ignore[method-assign]
    merge.upsert = timed_upsert
    loader.TolerantCopy = CountedTolerantCopy  # type: ignore[misc]
    return counts, instances


def main() -> int:
    from bench.worker import run_load

    spec = json.loads(Path(sys.argv[1]).read_text())
    counts, instances = install_counters()
    result = run_load(spec)
    result.update(counts)
    result["tolerant_statements"] = sum(t.statements for t in instances) if instances else None
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
