"""Run one ``load_object`` in a child process (the SIGKILL test kills it mid-COPY).

Usage: ``python load_child.py '<json>'`` with keys ``dsn``, ``application_name``, ``url``,
``bucket``, ``key``, ``table``, ``batch_id``. Prints the load stats as JSON on success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

import psycopg  # noqa: E402

from s3_postgres_copy.loader import LoadOptions, load_object  # noqa: E402
from s3_postgres_copy.source import HttpObjectSource, RetryPolicy  # noqa: E402


def main(spec: dict[str, str]) -> None:
    url = spec["url"]
    options = LoadOptions(spec["bucket"], spec["key"], spec["table"], batch_id=spec["batch_id"])
    source = HttpObjectSource(
        lambda: url,
        name=options.location,
        timeout=(5.0, 120.0),
        retry=RetryPolicy(attempts=2, backoff=0.01),
        chunk_size=256 * 1024,
    )
    with psycopg.connect(spec["dsn"], application_name=spec["application_name"]) as conn:
        stats = load_object(conn, source, options)
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
