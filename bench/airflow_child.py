"""A process with Airflow configured before its first import: ``python -m bench.airflow_child <spec.json>``.

The parent passes the environment (``harness.airflow_env.prepare_airflow_home`` + the
``AIRFLOW_CONN_*`` connections); this process only imports Airflow.

``mode == "s3tosql"``: the amazon provider's ``S3ToSqlOperator`` with a JSON-lines parser,
``.execute(context)`` called directly with a minimal context (it downloads the object to a
temporary file, then ``PostgresHook.insert_rows`` in chunks of ``commit_every`` rows).

``mode == "dag"``: ``migrate_airflow_db()``, then one run of ``s3_to_postgres_import`` with
``conf`` (``dag.test()`` in this process), returning the ``load`` task's XCom.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.procstat import memory_mb


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_s3_to_sql(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``S3ToSqlOperator.execute``; seconds around ``execute`` only (imports excluded)."""
    from airflow.providers.amazon.aws.transfers.s3_to_sql import S3ToSqlOperator

    from bench.peers import parse_file

    operator = S3ToSqlOperator(
        task_id="s3_to_sql",
        s3_bucket=spec["bucket"],
        s3_key=spec["key"],
        table=spec["table"],
        parser=functools.partial(parse_file, constants=spec["constants"]),
        column_list=spec["columns"],
        sql_conn_id="postgres_default",
        aws_conn_id="aws_default",
        commit_every=int(spec.get("commit_every", 1000)),
    )
    cpu0 = _cpu()
    started = time.monotonic()
    operator.execute({})  # type: ignore[arg-type]
    seconds = time.monotonic() - started
    return {"seconds": seconds, "client_cpu": _cpu() - cpu0, "peak_rss_mb": memory_mb()["VmHWM"]}


def run_dag(spec: dict[str, Any]) -> dict[str, Any]:
    """Migrate the metadata DB and run the import DAG once with ``conf``."""
    from harness.airflow_env import migrate_airflow_db
    from harness.dag_runs import load_dag, run_dag, task_states, xcom_values

    migrate_seconds = migrate_airflow_db()
    dag = load_dag(spec["dag_id"])
    logical_date = dt.datetime.fromisoformat(spec["logical_date"])
    started = time.monotonic()
    run = run_dag(dag, logical_date, spec["conf"])
    seconds = time.monotonic() - started
    stats = xcom_values(run, "load")
    return {
        "state": str(run.state),
        "task_states": task_states(run),
        "dag_run_seconds": seconds,
        "migrate_seconds": migrate_seconds,
        "load": stats[0] if stats else None,
        "peak_rss_mb": memory_mb()["VmHWM"],
    }


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = run_s3_to_sql(spec) if spec["mode"] == "s3tosql" else run_dag(spec)
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
