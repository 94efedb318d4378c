"""Run one ``load_object`` in a fresh, single-threaded process (so the pool's default start method is fork).

Usage: ``python transform_child.py '<json>'`` with keys ``dsn``, ``url``, ``bucket``, ``key``,
``table`` and ``options`` (more ``LoadOptions`` fields). Prints the load stats as JSON on
success; on failure the traceback goes to stderr and the exit code is 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

import psycopg  # noqa: E402

from s3_postgres_copy import pipeline  # noqa: E402
from s3_postgres_copy.loader import LoadOptions, load_object  # noqa: E402
from s3_postgres_copy.source import HttpObjectSource, RetryPolicy  # noqa: E402


def main(spec: dict[str, object]) -> None:
    url = str(spec["url"])
    pipeline.IN_PROCESS_UNITS = 0  # the test's objects are small: workers from the first block
    extra = spec["options"]
    assert isinstance(extra, dict)
    options = LoadOptions(str(spec["bucket"]), str(spec["key"]), str(spec["table"]), batch_id="child", **extra)
    source = HttpObjectSource(
        lambda: url, name=options.location, timeout=(5.0, 120.0), retry=RetryPolicy(attempts=2, backoff=0.01)
    )
    with psycopg.connect(str(spec["dsn"])) as conn:
        stats = load_object(conn, source, options)
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
