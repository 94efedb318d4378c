"""``S3ToPostgresCopyOperator``: hooks and task context around :func:`loader.load_object`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow.sdk import BaseOperator

from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.stats import ACCOUNTED

# The pipeline (requests, psycopg, simplejson) is imported when a task runs, not when a DAG is parsed.
if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Context

    from s3_postgres_copy.compression import Compression
    from s3_postgres_copy.documents import Transform
    from s3_postgres_copy.formats import FormatName
    from s3_postgres_copy.modes import ModeName
    from s3_postgres_copy.options import PreparedLoad
    from s3_postgres_copy.rows import CopyFormat
    from s3_postgres_copy.source import UrlFactory
    from s3_postgres_copy.stats import LoadStats, ProgressCallback


class S3ToPostgresCopyOperator(BaseOperator):
    """Stream an S3 object into a PostgreSQL table with ``COPY ... FROM STDIN`` in one transaction.

    The object is read through a pre-signed URL (never written to disk), each record becomes
    the JSON document the application's API would build (``transform``), and rows carry
    metadata columns (source key, ETag, line number, batch id, load time).

    :param s3_bucket: the bucket (templated).
    :param s3_key: the object key (templated); or give ``s3_prefix`` or ``s3_keys``.
    :param s3_prefix: load every object under this prefix, each in its own transaction (templated).
    :param s3_keys: load these objects, each in its own transaction and batch ``<batch_id>:<key>`` (templated).
    :param table: ``table`` or ``schema.table`` (templated); created if missing and ``create_table``.
    :param aws_conn_id: the Amazon connection for the pre-signed URL.
    :param postgres_conn_id: the PostgreSQL connection.
    :param format: ``"auto"`` (from the key's suffix or the first bytes), ``"jsonl"`` or ``"csv"``.
    :param compression: ``"auto"`` (gzip magic bytes), ``"none"`` or ``"gzip"``.
    :param mode: ``"replace"`` deletes this object's earlier rows in the same transaction; ``"append"``.
    :param max_bad_rows: 0 fails on the first bad record; N sends up to N to ``<table>_rejects``.
    :param max_bad_ratio: also tolerate bad records up to this fraction of all records.
    :param transform: record → API document: a callable or ``"package.module:function"``.
    :param schema: a JSON Schema each document must satisfy (bad ones are bad records).
    :param columns: column names: keys ``document``, ``source_key``, ``source_etag``, ``batch_id``,
        ``loaded_at``, ``source_line``; a value of ``None`` leaves that metadata out.
    :param create_table: create the table (and the rejects table) if missing.
    :param csv_delimiter: the CSV field delimiter (one character).
    :param batch_id: defaults to the run id (plus ``#<map index>`` for mapped tasks) (templated).
    :param url_expires_in: lifetime of each pre-signed URL in seconds (it is re-signed on expiry).
    :param verify: TLS verification for the download; defaults to the AWS connection's, else True.
    :param max_attempts: requests allowed per object when the stream breaks.
    :param read_timeout: seconds without data before the stream counts as broken.
    :param progress_interval: seconds between progress log lines.
    :param copy_format: ``"auto"`` sends binary COPY rows (faster for the server) in strict mode when the
        columns' types allow, text rows otherwise; ``"text"``; ``"binary"`` (fails if it cannot).
    :param merge_key: ``mode="merge"``: the top-level document fields rows are matched on, e.g. ``["npi"]``.
    :param skip_unchanged: skip an object whose ETag equals the last committed load of its key (the ledger's).
    :param checks: ``{"name": {"check_statement": "<SQL>"}}`` evaluated over the rows written, before commit.
    :param lock_timeout: seconds to wait for a lock on the table (default: wait, logging who holds it).
    :param stage: ``mode="snapshot"`` of many objects: stage each in this table, to be published together (templated).
    :param transform_workers: processes that run the transform (and schema) for blocks of records, in order;
        ``0`` or ``1`` runs it in the task's process; ``None`` (default): the CPUs the task may use, at most 8.
        Lines loaded without a transform or schema never use them.
    :param load_options: any other :class:`~s3_postgres_copy.options.LoadOptions` field, e.g.
        ``{"segment_bytes": 8 << 20, "raw_limit": 2000, "max_line_bytes": 1 << 20}``.
    """

    template_fields: Sequence[str] = ("s3_bucket", "s3_key", "s3_prefix", "s3_keys", "table", "batch_id", "stage")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        s3_bucket: str,
        table: str,
        s3_key: str | None = None,
        s3_prefix: str | None = None,
        s3_keys: Sequence[str] | None = None,
        aws_conn_id: str | None = "aws_default",
        postgres_conn_id: str = "postgres_default",
        format: FormatName = "auto",
        compression: Compression = "auto",
        mode: ModeName = "replace",
        max_bad_rows: int = 0,
        max_bad_ratio: float | None = None,
        transform: str | Transform | None = None,
        schema: Mapping[str, Any] | None = None,
        columns: Mapping[str, str | None] | None = None,
        create_table: bool = True,
        csv_delimiter: str = ",",
        copy_format: CopyFormat = "auto",
        merge_key: Sequence[str] | None = None,
        skip_unchanged: bool = False,
        checks: Mapping[str, Any] | None = None,
        lock_timeout: float | None = None,
        stage: str | None = None,
        transform_workers: int | None = None,
        load_options: Mapping[str, Any] | None = None,
        batch_id: str | None = None,
        url_expires_in: int = 3600,
        verify: bool | str | None = None,
        max_attempts: int = 6,
        read_timeout: float = 60.0,
        chunk_size: int = 1 << 20,
        progress_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.s3_prefix = s3_prefix
        self.s3_keys = s3_keys
        self.table = table
        self.stage = stage
        self.batch_id = batch_id
        self.aws_conn_id = aws_conn_id
        self.postgres_conn_id = postgres_conn_id
        # How to load: one dict of LoadOptions fields, checked once when the task runs.
        self.load_options: dict[str, Any] = {
            **(load_options or {}),
            "format": format,
            "compression": compression,
            "mode": mode,
            "max_bad_rows": max_bad_rows,
            "max_bad_ratio": max_bad_ratio,
            "transform": transform,
            "schema": schema,
            "columns": columns,
            "create_table": create_table,
            "csv_delimiter": csv_delimiter,
            "copy_format": copy_format,
            "merge_key": merge_key,
            "skip_unchanged": skip_unchanged,
            "checks": checks,
            "lock_timeout": lock_timeout,
            "transform_workers": transform_workers,
        }
        self.url_expires_in = url_expires_in
        self.verify = verify
        self.max_attempts = max_attempts
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self.progress_interval = progress_interval
        self._loaded: list[LoadStats] = []

    # -- hooks ---------------------------------------------------------------------------
    @cached_property
    def s3_hook(self) -> S3Hook:
        """The S3 hook, with SigV4 signatures unless the connection says otherwise."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        config = hook.conn_config.botocore_config
        if config is None or getattr(config, "signature_version", None) is None:
            s3v4 = Config(signature_version="s3v4")
            hook = S3Hook(aws_conn_id=self.aws_conn_id, config=config.merge(s3v4) if config else s3v4)
        return hook

    def _url_factory(self, bucket: str, key: str) -> UrlFactory:
        from airflow.sdk.log import mask_secret

        def presign() -> str:
            url = self.s3_hook.generate_presigned_url(
                client_method="get_object",
                params={"Bucket": bucket, "Key": key},
                expires_in=self.url_expires_in,
            )
            if url and _MASKED[0] < MASKED_URLS:
                # A pre-signed URL is a credential: the loader never logs one or puts it in an error, and,
                # as a second line of defence, Airflow's masker hides it. Not for every object of a process
                # loading thousands: each mask recompiles the masker's regex of all masks (quadratic).
                _MASKED[0] += 1
                mask_secret(url)
                for secret in parse_qs(urlsplit(url).query).get("X-Amz-Signature", []):
                    mask_secret(secret)
            return url or ""

        return presign

    # -- execution -----------------------------------------------------------------------
    def prepare(self, key: str | None = None, batch_id: str | None = None) -> PreparedLoad:
        """The load's options, checked once (templates rendered), for ``key`` (default: ``s3_key`` or the prefix)."""
        from s3_postgres_copy.options import LoadOptions
        from s3_postgres_copy.sink import Columns

        if sum(1 for given in (self.s3_key, self.s3_prefix, self.s3_keys) if given) != 1:
            raise ConfigurationError("give exactly one of s3_key, s3_prefix and s3_keys")
        fields = dict(self.load_options)
        columns = fields.pop("columns", None)
        try:
            options = LoadOptions(
                bucket=self.s3_bucket,
                key=key or self.s3_key or self.s3_prefix or (self.s3_keys or [""])[0],
                table=self.table,
                batch_id=batch_id,
                stage=self.stage or None,
                columns=Columns(**columns) if columns else Columns(),
                **fields,
            )
        except TypeError as err:  # an unknown name in load_options
            raise ConfigurationError(f"load_options: {err}") from None
        return options.prepare()

    def _batch_id(self, context: Context) -> str:
        if self.batch_id:
            return self.batch_id
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        run_id = str(context["run_id"])
        return f"{run_id}#{map_index}" if map_index is not None and map_index >= 0 else run_id

    def execute(self, context: Context) -> dict[str, Any]:
        """Load the object (or every object under the prefix); return the load stats."""
        with _failing_terminal_errors():
            batch_id = self._batch_id(context)
            plan = self.prepare(batch_id=batch_id)  # names and choices, before any I/O
            self._loaded = []
            if self.s3_key:
                return self.load_one(self.s3_key, batch_id, plan).as_dict()
            if self.s3_keys:
                keys = list(self.s3_keys)
                self.log.info("Loading %d objects, each in its own transaction and batch", len(keys))
                # Each object is its own batch (and transaction), so a re-run of this task replaces exactly
                # its objects' rows; they share one connection.
                conn = self._connect()
                try:
                    results = [self.load_one(key, f"{batch_id}:{key}", plan, conn) for key in keys]
                finally:
                    conn.close()
                return _summary(self.s3_bucket, "", self.table, batch_id, [_brief(stats) for stats in results])
            keys = self.s3_hook.list_keys(bucket_name=self.s3_bucket, prefix=self.s3_prefix) or []
            keys = [key for key in keys if not key.endswith("/")]
            self.log.info("Loading %d objects under s3://%s/%s", len(keys), self.s3_bucket, self.s3_prefix)
            objects = [self.load_one(key, batch_id, plan).as_dict() for key in keys]
            return _summary(self.s3_bucket, self.s3_prefix or "", self.table, batch_id, objects)

    def _connect(self) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn()

    def load_one(self, key: str, batch_id: str, plan: PreparedLoad | None = None, conn: Any = None) -> LoadStats:
        """Load one object in its own transaction (on ``conn`` if given, else on a connection of its own)."""
        from s3_postgres_copy.loader import load_object
        from s3_postgres_copy.source import HttpObjectSource, RetryPolicy

        plan = (plan or self.prepare(key, batch_id)).for_object(key, batch_id)
        options = plan.options
        verify = self.verify if self.verify is not None else getattr(self.s3_hook, "verify", None)
        source = HttpObjectSource(
            self._url_factory(self.s3_bucket, key),
            name=options.location,
            chunk_size=self.chunk_size,
            timeout=(10.0, self.read_timeout),
            retry=RetryPolicy(attempts=self.max_attempts),
            verify=True if verify is None else verify,
        )
        self.log.info(
            "Loading %s into %s (format=%s, compression=%s, mode=%s, max_bad_rows=%s, batch %s)",
            options.location,
            options.table,
            options.format,
            options.compression,
            options.mode,
            options.max_bad_rows,
            batch_id,
        )
        own = conn is None
        conn = conn if conn is not None else self._connect()
        try:
            stats = load_object(
                conn, source, plan, progress=self._progress_logger(), progress_interval=self.progress_interval
            )
        finally:
            if own:
                conn.close()
        self._loaded.append(stats)
        self.log.info(
            "Loaded %s into %s: %d rows copied, %d rejected, %d lines (%d blank), %.1f MB read, "
            "%.2f s, %.0f rows/s, %d resumes, batch %s",
            options.location,
            options.table,
            stats.rows_copied,
            stats.rows_rejected,
            stats.lines_read,
            stats.blank_lines,
            stats.bytes_read / 1e6,
            stats.seconds,
            stats.rows_copied / stats.seconds if stats.seconds else 0.0,
            stats.resumes,
            batch_id,
        )
        return stats

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the S3 object(s) in, the PostgreSQL table out, with row counts."""
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from s3_postgres_copy.identifiers import split_table

        loaded: list[LoadStats] = getattr(self, "_loaded", [])
        hook = PostgresHook(postgres_conn_id=self.postgres_conn_id)
        connection = hook.get_connection(self.postgres_conn_id)
        info = hook.get_openlineage_database_info(connection)
        parts = split_table(self.table)
        schema, table = (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])
        database = info.database or connection.schema or "postgres"
        inputs = [Dataset(namespace=f"s3://{stats.source_bucket}", name=stats.source_key) for stats in loaded]
        output = OutputDataset(
            namespace=f"{info.scheme}://{info.authority}",
            name=f"{database}.{schema}.{table}",
            outputFacets={
                "outputStatistics": OutputStatisticsOutputDatasetFacet(
                    rowCount=sum(stats.rows_copied for stats in loaded),
                    size=sum(stats.bytes_decompressed for stats in loaded),
                )
            },
        )
        return OperatorLineage(inputs=inputs, outputs=[output])

    def _progress_logger(self) -> ProgressCallback:
        last = [time.monotonic()]

        def report(stats: LoadStats) -> None:
            now = time.monotonic()
            if now - last[0] < self.progress_interval:
                return
            last[0] = now
            rate = stats.rows_streamed / stats.seconds if stats.seconds else 0.0
            if stats.content_length:
                done = stats.bytes_read / stats.content_length
                eta = stats.seconds * (1 - done) / done if done else float("nan")
                self.log.info(
                    "Progress: %d rows, %.1f MB (%.0f%% of %.1f MB), %.0f rows/s, ETA %.0f s",
                    stats.rows_streamed,
                    stats.bytes_read / 1e6,
                    done * 100,
                    stats.content_length / 1e6,
                    rate,
                    eta,
                )
            else:
                self.log.info(
                    "Progress: %d rows, %.1f MB, %.0f rows/s", stats.rows_streamed, stats.bytes_read / 1e6, rate
                )

        return report


@contextmanager
def _failing_terminal_errors() -> Iterator[None]:
    """Turn errors that no retry can fix into ``AirflowFailException`` (the task fails without retries)."""
    from airflow.sdk.exceptions import AirflowFailException

    from s3_postgres_copy.exceptions import is_terminal

    try:
        yield
    except AirflowFailException:
        raise
    except Exception as err:
        if is_terminal(err):
            raise AirflowFailException(str(err)) from err
        raise


MASKED_URLS = 50
"""Pre-signed URLs of one process that are registered with Airflow's secrets masker (see ``_url_factory``)."""
_MASKED = [0]
BRIEF = (
    "source_key",
    "source_etag",
    "batch_id",
    "rows_copied",
    "rows_rejected",
    "lines_read",
    "skipped",
    "seconds",
    "transform_workers",
    "workers_start_method",
)
"""What the XCom of a load of many objects keeps of each (the ledger has the rest)."""


def _brief(stats: LoadStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in BRIEF}


def _summary(bucket: str, prefix: str, table: str, batch_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The XCom of a prefix load: the totals and each object's stats."""
    total: dict[str, Any] = {
        "source_bucket": bucket,
        "source_key": prefix,
        "source_etag": None,
        "batch_id": batch_id,
        "table": table,
        "objects": results,
    }
    for name in (*ACCOUNTED, "lines_read", "bytes_read"):
        total[name] = sum(result.get(name) or 0 for result in results)
    total["skipped"] = sum(1 for result in results if result.get("skipped"))
    total["seconds"] = round(sum(result["seconds"] for result in results), 3)
    return total
