"""Side-by-side benchmark of the S3 → PostgreSQL COPY loader: ``python -m bench`` (``make bench``).

Modules:

* :mod:`bench.main` — command line and orchestration (one run, same data for every contender).
* :mod:`bench.server` — the throwaway PostgreSQL server with bench settings, resets, CPU accounting, psql.
* :mod:`bench.data` — generated provider-directory data (plain and gzip), S3 objects, the limit's COPY rows.
* :mod:`bench.contenders` — the limit (psql ``\\copy``), this project (``load_object`` in a worker
  process), the peers (``S3ToSqlOperator``, ``execute_values``) and the seed baseline.
* :mod:`bench.worker` — the worker process that runs one ``load_object`` (and the stage breakdown).
* :mod:`bench.airflow_child` — a process with Airflow configured: ``S3ToSqlOperator`` and the DAG run.
* :mod:`bench.experiments` — optional server-settings and ``segment_bytes`` experiments.
* :mod:`bench.profiling` — optional py-spy profile of the worker.
* :mod:`bench.report` — the printed table, the targets and ``bench/results/latest.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PATHS = (REPO / "plugins", REPO)


def add_paths() -> None:
    """Make ``s3_postgres_copy``, ``provider_directory`` and ``harness`` importable."""
    for path in reversed(PATHS):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def child_env_pythonpath(existing: str | None) -> str:
    """``PYTHONPATH`` for child processes (the repo, its plugins, and what was there)."""
    parts = [str(p) for p in PATHS]
    if existing:
        parts.append(existing)
    return ":".join(parts)
