"""The providers' own upsert, in a process with Airflow configured: ``python -m bench.upsert_peer <spec.json>``.

``PostgresHook.insert_rows(table, rows, target_fields=..., replace=True, replace_index=["npi"],
commit_every=1000)`` (postgres provider, common-sql ``DbApiHook.insert_rows``): with psycopg 3
a pipelined ``executemany`` of ``INSERT ... ON CONFLICT (npi) DO UPDATE SET <every other
column> = excluded.<column>`` per chunk of ``commit_every`` rows, a commit after each chunk.
``replace_index`` takes column names (the dialect quotes each one), not expressions, so the
peer's table has an ``npi text`` column with a unique index beside the ``jsonb`` document. The
rows are the other peers' (``bench.peers.parse_lines``: ``json.loads`` each line for
validation, the line's own text as the document) plus the record's ``npi``. Timed around
``insert_rows`` only (imports and the file read excluded).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procstat import memory_mb


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rows(lines: list[bytes], constants: list[str]) -> Iterator[tuple[Any, ...]]:
    """``bench.peers.parse_lines``' rows (document text, metadata, line number) plus the record's ``npi``.

    One ``json.loads`` per line, as the other peers pay.
    """
    key, etag, batch_id, loaded_at = constants
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError(f"line {number}: not a JSON object")
        yield (line.rstrip(b"\r\n").decode("utf-8"), key, etag, batch_id, loaded_at, number, record["npi"])


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``insert_rows(replace=True)`` of the file's first ``records`` lines."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    with open(spec["path"], "rb") as f:
        lines = list(itertools.islice(f, int(spec["records"])))
    hook = PostgresHook(postgres_conn_id="postgres_default")
    cpu0 = _cpu()
    started = time.monotonic()
    hook.insert_rows(
        spec["table"],
        rows(lines, spec["constants"]),
        target_fields=spec["columns"],
        commit_every=int(spec.get("commit_every", 1000)),
        replace=True,
        replace_index=[spec["conflict"]],
    )
    seconds = time.monotonic() - started
    return {"seconds": seconds, "client_cpu": _cpu() - cpu0, "peak_rss_mb": memory_mb()["VmHWM"]}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["result"]).write_text(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
