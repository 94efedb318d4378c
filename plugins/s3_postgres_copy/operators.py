"""``S3ToPostgresCopyOperator``: hooks and task context around :func:`loader.load_object`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

from airflow.sdk import BaseOperator

# The pipeline (requests, psycopg, simplejson) is imported when a task runs, not when a DAG is parsed.
if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Context

    from s3_postgres_copy.documents import Transform
    from s3_postgres_copy.loader import LoadOptions, LoadStats


class S3ToPostgresCopyOperator(BaseOperator):
    """Stream an S3 object into a PostgreSQL table with ``COPY ... FROM STDIN`` in one transaction.

    The object is read through a pre-signed URL (never written to disk), each record becomes
    the JSON document the application's API would build (``transform``), and rows carry
    metadata columns (source key, ETag, line number, batch id, load time).

    :param s3_bucket: the bucket (templated).
    :param s3_key: the object key (templated); or give ``s3_prefix``.
    :param s3_prefix: load every object under this prefix, each in its own transaction (templated).
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
    :param batch_id: defaults to the run id (plus ``#<map index>`` for mapped tasks) (templated).
    :param url_expires_in: lifetime of each pre-signed URL in seconds (it is re-signed on expiry).
    :param verify: TLS verification for the download; defaults to the AWS connection's, else True.
    :param max_attempts: requests allowed per object when the stream breaks.
    :param read_timeout: seconds without data before the stream counts as broken.
    :param progress_interval: seconds between progress log lines.
    :param copy_format: ``"auto"`` sends binary COPY rows (faster for the server) in strict mode when the
        columns' types allow, text rows otherwise; ``"text"``; ``"binary"`` (fails if it cannot).
    """

    template_fields: Sequence[str] = ("s3_bucket", "s3_key", "s3_prefix", "table", "batch_id")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        s3_bucket: str,
        table: str,
        s3_key: str | None = None,
        s3_prefix: str | None = None,
        aws_conn_id: str | None = "aws_default",
        postgres_conn_id: str = "postgres_default",
        format: str = "auto",
        compression: str = "auto",
        mode: str = "replace",
        max_bad_rows: int = 0,
        max_bad_ratio: float | None = None,
        transform: str | Transform | None = None,
        schema: Mapping[str, Any] | None = None,
        columns: Mapping[str, str | None] | None = None,
        create_table: bool = True,
        batch_id: str | None = None,
        url_expires_in: int = 3600,
        verify: bool | str | None = None,
        max_attempts: int = 6,
        read_timeout: float = 60.0,
        chunk_size: int = 1 << 20,
        progress_interval: float = 10.0,
        copy_format: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.s3_prefix = s3_prefix
        self.table = table
        self.aws_conn_id = aws_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.format = format
        self.compression = compression
        self.mode = mode
        self.max_bad_rows = max_bad_rows
        self.max_bad_ratio = max_bad_ratio
        self.transform = transform
        self.schema = schema
        self.columns = columns
        self.create_table = create_table
        self.batch_id = batch_id
        self.url_expires_in = url_expires_in
        self.verify = verify
        self.max_attempts = max_attempts
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self.progress_interval = progress_interval
        self.copy_format = copy_format
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

    def _url_factory(self, bucket: str, key: str) -> Any:
        from airflow.sdk.log import mask_secret

        def presign() -> str:
            url = self.s3_hook.generate_presigned_url(
                client_method="get_object",
                params={"Bucket": bucket, "Key": key},
                expires_in=self.url_expires_in,
            )
            if url:
                # A pre-signed URL is a credential: keep it (and its signature) out of every log.
                mask_secret(url)
                for secret in parse_qs(urlsplit(url).query).get("X-Amz-Signature", []):
                    mask_secret(secret)
            return url or ""

        return presign

    # -- execution -----------------------------------------------------------------------
    def _options(self, key: str, batch_id: str) -> LoadOptions:
        from s3_postgres_copy.loader import LoadOptions
        from s3_postgres_copy.sink import Columns

        columns = Columns(**cast("dict[str, Any]", dict(self.columns))) if self.columns else Columns()
        options = LoadOptions(
            bucket=self.s3_bucket,
            key=key,
            table=self.table,
            format=self.format,  # type: ignore[arg-type]
            compression=self.compression,  # type: ignore[arg-type]
            mode=self.mode,  # type: ignore[arg-type]
            max_bad_rows=self.max_bad_rows,
            max_bad_ratio=self.max_bad_ratio,
            transform=self.transform,
            schema=self.schema,
            columns=columns,
            create_table=self.create_table,
            batch_id=batch_id,
            copy_format=self.copy_format,  # type: ignore[arg-type]
        )
        options.check()
        return options

    def _check_arguments(self) -> None:
        if bool(self.s3_key) == bool(self.s3_prefix):
            raise ValueError("give exactly one of s3_key and s3_prefix")
        self._options(self.s3_key or self.s3_prefix or "", "check")  # names and choices, before any I/O

    def _batch_id(self, context: Context) -> str:
        if self.batch_id:
            return self.batch_id
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        run_id = str(context["run_id"])
        return f"{run_id}#{map_index}" if map_index is not None and map_index >= 0 else run_id

    def execute(self, context: Context) -> dict[str, Any]:
        """Load the object (or every object under the prefix); return the load stats."""
        self._check_arguments()
        batch_id = self._batch_id(context)
        self._loaded = []
        if self.s3_key:
            return self.load_one(self.s3_key, batch_id).as_dict()
        keys = self.s3_hook.list_keys(bucket_name=self.s3_bucket, prefix=self.s3_prefix) or []
        keys = [key for key in keys if not key.endswith("/")]
        self.log.info("Loading %d objects under s3://%s/%s", len(keys), self.s3_bucket, self.s3_prefix)
        results = [self.load_one(key, batch_id).as_dict() for key in keys]
        total: dict[str, Any] = {
            "source_bucket": self.s3_bucket,
            "source_key": self.s3_prefix,
            "source_etag": None,
            "batch_id": batch_id,
            "table": self.table,
            "objects": results,
        }
        for name in (
            "rows_copied",
            "rows_rejected",
            "lines_read",
            "blank_lines",
            "header_lines",
            "continuation_lines",
            "bytes_read",
        ):
            total[name] = sum(result[name] for result in results)
        total["seconds"] = round(sum(result["seconds"] for result in results), 3)
        return total

    def load_one(self, key: str, batch_id: str) -> LoadStats:
        """Load one object in its own transaction."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.sdk.exceptions import AirflowFailException

        from s3_postgres_copy.exceptions import BadRecordError, TooManyBadRecordsError
        from s3_postgres_copy.loader import load_object
        from s3_postgres_copy.source import HttpObjectSource, RetryPolicy

        options = self._options(key, batch_id)
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
            self.table,
            self.format,
            self.compression,
            self.mode,
            self.max_bad_rows,
            batch_id,
        )
        conn = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn()
        try:
            stats = load_object(conn, source, options, progress=self._progress_logger())
        except (BadRecordError, TooManyBadRecordsError, ValueError) as err:
            # The same data gives the same result: retrying would only repeat the failure.
            raise AirflowFailException(str(err)) from err
        finally:
            conn.close()
        self._loaded.append(stats)
        self.log.info(
            "Loaded %s into %s: %d rows copied, %d rejected, %d lines (%d blank), %.1f MB read, "
            "%.2f s, %.0f rows/s, %d resumes, batch %s",
            options.location,
            self.table,
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

    def _progress_logger(self) -> Any:
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
                    "Progress: %d rows, %.1f MB, %.0f rows/s", stats.rows_copied, stats.bytes_read / 1e6, rate
                )

        return report
