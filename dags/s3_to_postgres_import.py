"""Nightly bulk import of provider-directory files from S3 into PostgreSQL.

``wait_for_objects`` → ``validate`` → ``load`` (mapped ``S3ToPostgresCopyOperator``, objects in
groups) → ``publish`` (a prefix snapshot) → ``check_row_count``; ``discard_stage`` cleans up a
prefix snapshot whose loads failed. The task bodies call ``s3_postgres_copy.nightly``; nothing
heavy happens at parse time: hooks, I/O and template rendering run inside tasks.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param, task
from airflow.sdk.definitions.param import ParamsDict  # noqa: TC002 - the params' type at parse time

from s3_postgres_copy import S3ToPostgresCopyOperator
from s3_postgres_copy.formats import format_names
from s3_postgres_copy.modes import MODES
from s3_postgres_copy.sensors import DEFAULT_WAIT_INTERVAL, DEFAULT_WAIT_TIMEOUT, RunObjectsSensor

log = logging.getLogger(__name__)

DAG_ID = "s3_to_postgres_import"
AWS_CONN_ID = "aws_default"
POSTGRES_CONN_ID = "postgres_default"
DEFAULT_BUCKET = "imports"
DEFAULT_TABLE = "provider_directory"
DEFAULT_KEY_TEMPLATE = "imports/{{ ds }}/providers.jsonl.gz"
# The API document builder: replace it with your application's own (a "package.module:function" path).
TRANSFORM = "provider_directory.documents:build_provider_document"
# Checks evaluated in each load's transaction before commit (common-sql SQLTableCheckOperator form).
CHECKS = {"every_record_has_an_npi": {"check_statement": "COUNT(*) FILTER (WHERE document->>'npi' IS NULL) = 0"}}
# Downstream DAGs can be scheduled on this (data-aware scheduling): it is updated by every successful load.
TABLE_ASSET = Asset("provider_directory_table")
NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
NOT_BOOLEAN: dict[str, Any] = {"not": {"type": "boolean"}}  # JSON Schema's "not" is a Python keyword

DOC = """
### S3 → PostgreSQL bulk import

Loads the provider-directory file for the run's **logical date** from S3 with `COPY FROM STDIN`
(streamed through a pre-signed URL, never written to disk), one transaction per object.

* **Nightly**: the key defaults to `imports/{{ ds }}/providers.jsonl.gz` for the logical date; a file
  that is late is waited for (`wait_timeout`, checked every `wait_interval` seconds, without
  holding a worker slot). An object unchanged since its last load (same ETag) is skipped; set
  `force` to reload it.
* **By hand**: *Trigger* shows a form: bucket, key (leave it empty for the logical date's default
  key), or a prefix (every object under it, in up to 16 mapped loads), table, format, mode,
  merge_key, max_bad_rows. Unknown conf keys are refused.
* **Backfill** any date, before or after the first nightly run: `airflow backfill create --dag-id
  s3_to_postgres_import --from-date 2024-03-01 --to-date 2024-03-04` loads each date's file once;
  re-running a date never duplicates rows.

Tasks: `wait_for_objects` (conf checked, the key or prefix found) → `validate` (object, format,
table, connections) → `load` → `publish` (a snapshot of a prefix becomes the table's content) →
`check_row_count` (the table holds what each load's ledger row says).
"""

PARAMS = {
    "bucket": Param(
        DEFAULT_BUCKET,
        type="string",
        minLength=3,
        maxLength=63,
        pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$",
        title="S3 bucket",
        description="The bucket holding the import files: 3-63 lower-case letters, digits, dots and hyphens.",
    ),
    "key": Param(
        DEFAULT_KEY_TEMPLATE,
        type=["null", "string"],
        title="Object key",
        description="A Jinja template on the logical date; empty means imports/{{ ds }}/providers.jsonl.gz. "
        "Ignored when a prefix is given.",
    ),
    "prefix": Param(
        None,
        type=["null", "string"],
        title="Prefix (optional)",
        description="Load every object under this prefix instead of one key (each object in its own "
        "transaction, in up to 16 mapped loads).",
    ),
    "table": Param(
        DEFAULT_TABLE,
        type="string",
        pattern=rf"^{NAME}(\.{NAME})?$",
        title="Target table",
        description="table or schema.table: letters, digits and _ (not starting with a digit, at most "
        "63 each); created if it does not exist.",
    ),
    "format": Param(
        "auto",
        type="string",
        enum=list(format_names()),
        title="Format",
        description="auto: from the key's suffix, else the first bytes.",
    ),
    "mode": Param(
        "replace",
        type="string",
        enum=list(MODES),
        title="Mode",
        description=" ".join(f"{name}: {mode.description}" for name, mode in MODES.items()),
    ),
    "merge_key": Param(
        ["npi"],
        type="array",
        items={"type": "string", "minLength": 1},
        minItems=1,
        title="Merge key",
        description="mode merge: the top-level document fields that identify a row (one per line).",
    ),
    "max_bad_rows": Param(
        0,
        # Airflow 3.3's form checks neither "integer" nor multipleOf in its number field (2.5 gets to the
        # server, which refuses the run); a union type makes it a checked JSON field that refuses 2.5 itself.
        type=["integer", "boolean"],
        **NOT_BOOLEAN,
        minimum=0,
        title="Max bad rows",
        description="0: the first bad record fails the load. N: up to N bad records go to <table>_rejects.",
    ),
    "skip_unchanged": Param(
        True,
        type="boolean",
        title="Skip unchanged objects",
        description="Skip an object whose ETag equals that of its last committed load into the table.",
    ),
    "force": Param(
        False,
        type="boolean",
        title="Force",
        description="Reload even an unchanged object.",
    ),
    "wait_timeout": Param(
        DEFAULT_WAIT_TIMEOUT,
        type="number",
        minimum=0,
        title="Wait timeout (s)",
        description="Seconds to wait for a missing object before failing (default 6 h).",
    ),
    "wait_interval": Param(
        DEFAULT_WAIT_INTERVAL,
        type="number",
        exclusiveMinimum=0,
        title="Wait interval (s)",
        description="Seconds between checks while waiting for the object.",
    ),
    "transform_workers": Param(
        None,
        type=["null", "integer"],
        minimum=0,
        title="Transform workers",
        description="Processes that run the API transform for blocks of records, in order. 0 or 1: in the task's "
        "process; empty: the CPUs the task may use, at most 8.",
    ),
    "lock_timeout": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        title="Lock timeout (s)",
        description="Seconds a load waits for a lock on the table before failing; empty: wait, logging who holds it.",
    ),
}


def _params(context: Any) -> ParamsDict:
    return context["params"]  # type: ignore[no-any-return]


with DAG(
    dag_id=DAG_ID,
    description="Bulk-load provider-directory files from S3 into PostgreSQL with COPY",
    # No start_date: a run for any logical date a user picks (a manual run, a backfill of 2024)
    # gets its tasks. With catchup=False the scheduler creates only the latest nightly run, at
    # once when the DAG first appears (run_immediately: without a start_date it would wait a day).
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC", run_immediately=True),
    catchup=False,
    max_active_runs=1,  # nightly runs in date order; concurrent loads (backfills) are safe too: see sink locks
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
    },
    params=PARAMS,
    doc_md=DOC,
    tags=["s3", "postgres", "bulk-load"],
) as dag:
    wait_for_objects = RunObjectsSensor(
        task_id="wait_for_objects",
        aws_conn_id=AWS_CONN_ID,
        default_key=DEFAULT_KEY_TEMPLATE,
        param_names=list(PARAMS),
        retries=0,
        doc_md="Refuse unknown conf keys, render the key for the logical date, wait for the object(s).",
    )

    @task(retries=0, doc_md="Check the object(s), their format, the table and the connections; plan the loads.")
    def validate(target: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
        """Fail with the exact reason unless everything the load needs is in place; return the mapped loads."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.nightly import check_connections, plan_loads
        from s3_postgres_copy.preflight import check_table

        params = _params(context)
        check_connections((AWS_CONN_ID, POSTGRES_CONN_ID), PostgresHook.get_connection)
        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            log.info("Table %s %s", params["table"], check_table(conn, params["table"]))
        finally:
            conn.close()
        client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
        return plan_loads(client, target, dict(params), str(context["run_id"]))

    load = S3ToPostgresCopyOperator.partial(
        task_id="load",
        aws_conn_id=AWS_CONN_ID,
        postgres_conn_id=POSTGRES_CONN_ID,
        transform=TRANSFORM,
        checks=CHECKS,
        outlets=[TABLE_ASSET],
        doc_md="Stream each object into the table with COPY FROM STDIN, one transaction each; returns load stats.",
    ).expand_kwargs(validate(cast("dict[str, Any]", wait_for_objects.output)))

    @task(retries=0, doc_md="A snapshot of a prefix: make the staged objects the table's content, in one transaction.")
    def publish(**context: Any) -> dict[str, Any]:
        """Publish a prefix snapshot (nothing to do for other runs)."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.nightly import publish_run

        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            return publish_run(conn, context["ti"].xcom_pull(task_ids="validate"), checks=CHECKS)
        finally:
            conn.close()

    @task(trigger_rule="one_failed", retries=0, doc_md="A failed prefix snapshot: drop its staging table.")
    def discard_stage(**context: Any) -> None:
        """Leave the table as it was and nothing behind."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.nightly import discard_run

        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            discard_run(conn, context["ti"].xcom_pull(task_ids="validate"))
        finally:
            conn.close()

    # Not SQLValueCheckOperator: the expected counts are each object's ledger row, and the check also
    # reconciles every line read; one task reading all of them says what is off, where.
    @task(retries=0, doc_md="After commit: the table holds what each object's load recorded in the ledger.")
    def check_row_count(**context: Any) -> dict[str, Any]:
        """Fail unless the table holds exactly the rows each load reported, and every line is accounted for."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.nightly import check_run

        ti = context["ti"]
        planned = ti.xcom_pull(task_ids="validate")
        results = [ti.xcom_pull(task_ids="load", map_indexes=i) for i in range(len(planned))]
        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            return check_run(conn, planned, results)
        finally:
            conn.close()

    load >> publish() >> check_row_count()
    load >> discard_stage()
