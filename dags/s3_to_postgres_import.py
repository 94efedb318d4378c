"""Nightly bulk import of provider-directory files from S3 into PostgreSQL.

``validate`` → ``load`` (one mapped ``S3ToPostgresCopyOperator`` per object) → ``check_row_count``.
Nothing heavy happens at parse time: hooks, I/O and template rendering run inside tasks.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from s3_postgres_copy import S3ToPostgresCopyOperator
from s3_postgres_copy.formats import format_names
from s3_postgres_copy.modes import MODES

log = logging.getLogger(__name__)

DAG_ID = "s3_to_postgres_import"
AWS_CONN_ID = "aws_default"
POSTGRES_CONN_ID = "postgres_default"
DEFAULT_BUCKET = "imports"
DEFAULT_TABLE = "provider_directory"
DEFAULT_KEY_TEMPLATE = "imports/{{ ds }}/providers.jsonl.gz"
# The API document builder: replace it with your application's own (a "package.module:function" path).
TRANSFORM = "provider_directory.documents:build_provider_document"
# Downstream DAGs can be scheduled on this (data-aware scheduling): it is updated by every successful load.
TABLE_ASSET = Asset("provider_directory_table")

DOC = """
### S3 → PostgreSQL bulk import

Loads the provider-directory file for the run's **logical date** from S3 with `COPY FROM STDIN`
(streamed through a pre-signed URL, never written to disk), one transaction per object.

* **Nightly**: the key defaults to `imports/{{ ds }}/providers.jsonl.gz` for the logical date.
* **By hand**: *Trigger DAG w/ config* shows a form: bucket, key (empty = from the date), or a
  prefix (every object under it, one mapped load each), table, format, mode, max_bad_rows.
* **Backfill**: `airflow backfill create --dag-id s3_to_postgres_import --from-date 2026-11-01
  --to-date 2026-11-03` loads each date's file once; re-running a date *replaces* that file's rows.

Tasks: `validate` (object exists and is not empty, format recognised, table usable, connections
resolve) → `load` → `check_row_count` (rows in the table for each object == rows the load reported).
"""

PARAMS = {
    "bucket": Param(
        DEFAULT_BUCKET,
        type="string",
        minLength=3,
        maxLength=63,
        pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$",
        title="S3 bucket",
        description="The bucket holding the import files.",
    ),
    "key": Param(
        DEFAULT_KEY_TEMPLATE,
        type="string",
        title="Object key",
        description="A Jinja template on the logical date; ignored when a prefix is given. "
        "Default: imports/{{ ds }}/providers.jsonl.gz",
    ),
    "prefix": Param(
        None,
        type=["null", "string"],
        title="Prefix (optional)",
        description="Load every object under this prefix instead of one key, each as its own mapped load.",
    ),
    "table": Param(
        DEFAULT_TABLE,
        type="string",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$",
        title="Target table",
        description="table or schema.table; created if it does not exist.",
    ),
    "format": Param(
        "auto",
        type="string",
        enum=list(format_names()),
        title="Format",
        description="auto: from the key's suffix and the first bytes.",
    ),
    "mode": Param(
        "replace",
        type="string",
        enum=list(MODES),
        title="Mode",
        description=" ".join(f"{name}: {mode.description}" for name, mode in MODES.items()),
    ),
    "max_bad_rows": Param(
        0,
        type="integer",
        minimum=0,
        title="Max bad rows",
        description="0: the first bad record fails the load. N: up to N bad records go to <table>_rejects.",
    ),
}


def _render(template: str, context: Any) -> str:
    """Render a Jinja template (the key param) against the task context."""
    return str(context["task"].render_template(template, context))


def _resolve_objects(params: dict[str, Any], context: Any) -> list[str]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    bucket = params["bucket"]
    prefix = _render(params["prefix"], context).strip() if params.get("prefix") else ""
    if prefix:
        keys = S3Hook(aws_conn_id=AWS_CONN_ID).list_keys(bucket_name=bucket, prefix=prefix) or []
        keys = [key for key in keys if not key.endswith("/")]
        if not keys:
            raise ValueError(f"no objects under s3://{bucket}/{prefix}")
        return sorted(keys)
    key = _render(params["key"] or DEFAULT_KEY_TEMPLATE, context).strip()
    if not key:
        raise ValueError("the key param rendered to an empty string")
    return [key]


with DAG(
    dag_id=DAG_ID,
    description="Bulk-load provider-directory files from S3 into PostgreSQL with COPY",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
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

    @task(retries=0, doc_md="Check the object(s), their format, the table and the connections before loading.")
    def validate(**context: Any) -> list[dict[str, Any]]:
        """Fail with the exact reason unless everything the load needs is in place."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from s3_postgres_copy.preflight import check_object, check_table

        params = context["params"]
        for conn_id in (AWS_CONN_ID, POSTGRES_CONN_ID):
            try:
                PostgresHook.get_connection(conn_id)
            except AirflowNotFoundException:
                raise ValueError(f"connection {conn_id!r} is not defined") from None
        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            log.info("Table %s %s", params["table"], check_table(conn, params["table"]))
        finally:
            conn.close()
        client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
        keys = _resolve_objects(params, context)
        loads = []
        for key in keys:
            info = check_object(client, params["bucket"], key, format=params["format"])
            log.info("s3://%s/%s: %d bytes, %s, %s", params["bucket"], key, info.size, info.format, info.compression)
            loads.append(
                {
                    "s3_bucket": params["bucket"],
                    "s3_key": key,
                    "table": params["table"],
                    "format": info.format,
                    "mode": params["mode"],
                    "max_bad_rows": int(params["max_bad_rows"]),
                    "batch_id": context["run_id"] if len(keys) == 1 else f"{context['run_id']}:{key}",
                }
            )
        return loads

    load = S3ToPostgresCopyOperator.partial(
        task_id="load",
        aws_conn_id=AWS_CONN_ID,
        postgres_conn_id=POSTGRES_CONN_ID,
        transform=TRANSFORM,
        outlets=[TABLE_ASSET],
        doc_md="Stream the object into the table with COPY FROM STDIN in one transaction; returns load stats.",
    ).expand_kwargs(validate())

    # Not SQLValueCheckOperator: the expected count is each mapped load's XCom (one per object), and
    # the check also reconciles every line read; one task reading all of them says what is off, where.
    @task(retries=0, doc_md="Rows in the table for each object must equal what the load reported.")
    def check_row_count(results: list[dict[str, Any]], **context: Any) -> dict[str, int]:
        """Fail unless the table holds exactly the rows each load reported, and every line is accounted for."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.reconcile import check_loads

        conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
        try:
            return check_loads(conn, context["params"]["table"], results)
        finally:
            conn.close()

    check_row_count(cast("list[dict[str, Any]]", load.output))
