"""The operator for real, inside a run of the import DAG (its ``load`` task), on both drivers.

An in-test ``with DAG(...)`` object's ``.test()`` does not work in Airflow 3.3: it re-syncs
the dags-folder bundle, but a DAG that is not in it has no serialized version, and
``dag.test()`` fails with "Cannot create DagRun for DAG ... because the dag is not
serialized". So the DAG from ``dags/`` is run, with conf pointing at this test's object.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from harness.dag_runs import SUCCESS_STATES, load_dag, run_dag, task_states, xcom_values
from harness.sample import gzip_bytes, jsonl_lines
from provider_directory.documents import build_provider_document

from .helpers import IntegrationEnv, exact

pytestmark = pytest.mark.e2e

CONTRACT_KEYS = {
    "rows_copied",
    "rows_rejected",
    "lines_read",
    "bytes_read",
    "seconds",
    "source_bucket",
    "source_key",
    "source_etag",
    "batch_id",
    "blank_lines",
}
RECORDS = 400


@pytest.fixture(scope="module")
def dag(airflow_env: Any) -> Any:
    return load_dag("s3_to_postgres_import")


def _body() -> tuple[bytes, dict[int, bytes]]:
    """Sample provider records with two blank lines; physical line → record."""
    lines = list(jsonl_lines(RECORDS, seed=11))
    lines.insert(100, b"\n")
    lines.insert(250, b"\r\n")
    records = {number: line for number, line in enumerate(lines, 1) if line.strip()}
    return b"".join(lines), records


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_import_dag_runs_the_operator(
    dag: Any,
    env: IntegrationEnv,
    table: str,
    driver: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import airflow.providers.postgres.hooks.postgres as postgres_hook

    import s3_postgres_copy.loader as loader
    import s3_postgres_copy.sink as sink

    if driver == "psycopg2":
        monkeypatch.setattr(postgres_hook, "USE_PSYCOPG3", False)
    used: list[tuple[str, str]] = []
    original = sink.driver_of

    def spy(conn: Any) -> str:
        name = original(conn)
        used.append((name, type(conn).__module__.split(".")[0]))
        return name

    loaded_on: list[str] = []
    load_object = loader.load_object

    def load_spy(conn: Any, *args: Any, **kwargs: Any) -> Any:
        loaded_on.append(type(conn).__module__.split(".")[0])
        return load_object(conn, *args, **kwargs)

    monkeypatch.setattr(sink, "driver_of", spy)
    monkeypatch.setattr(loader, "load_object", load_spy)  # the operator imports it when it runs
    body, records = _body()
    data = gzip_bytes(body)
    key = f"imports/op {driver}/providers é.jsonl.gz"
    etag = env.put(key, data)

    run = run_dag(dag, dt.datetime(2026, 4, 1, 2, tzinfo=dt.UTC), {"bucket": env.bucket, "key": key, "table": table})

    assert str(run.state) == "success", task_states(run)
    assert task_states(run) == SUCCESS_STATES
    # validate's table check, the operator's load and the check after commit all ran on the hook's (patched) driver
    assert used == [(driver, driver)] * 3
    assert loaded_on == [driver]

    (stats,) = xcom_values(run, "load")
    assert CONTRACT_KEYS <= set(stats)
    assert stats["source_bucket"] == env.bucket
    assert stats["source_key"] == key
    assert stats["source_etag"] == etag
    assert stats["batch_id"] == run.run_id
    assert (stats["rows_copied"], stats["rows_rejected"]) == (RECORDS, 0)
    assert (stats["lines_read"], stats["blank_lines"]) == (RECORDS + 2, 2)
    assert stats["bytes_read"] == len(data)
    assert isinstance(stats["seconds"], float)
    assert stats["seconds"] > 0
    assert xcom_values(run, "check_row_count") == [{"objects": 1, "skipped": 0, "rows": RECORDS}]

    (summary,) = env.execute(
        f"SELECT count(*), array_agg(DISTINCT batch_id), array_agg(DISTINCT source_etag), "
        f'array_agg(DISTINCT source_key) FROM "{table}"'
    )
    assert summary == (RECORDS, [stats["batch_id"]], [etag], [key])
    docs = env.documents(table)
    assert set(docs) == set(records)
    assert 101 not in docs
    assert 251 not in docs
    for line in (1, 100, 102, 250, 252, RECORDS + 2):
        expected = build_provider_document(exact(records[line]))
        assert docs[line] == exact(_dumps(expected)), line


def _dumps(document: dict[str, Any]) -> str:
    import simplejson

    return str(simplejson.dumps(document, use_decimal=True))


class TestOperatorDirectly:
    """``execute`` outside a DAG run, with the smallest task context it reads."""

    @staticmethod
    def _context(run_id: str = "manual__op") -> dict[str, Any]:
        from types import SimpleNamespace

        return {"ti": SimpleNamespace(map_index=-1), "run_id": run_id}

    def test_s3_prefix_loads_every_object_in_its_own_transaction(
        self, airflow_env: Any, env: IntegrationEnv, table: str
    ) -> None:
        from s3_postgres_copy import S3ToPostgresCopyOperator

        keys = [f"pre/part-{i}.jsonl" for i in range(3)]
        for i, key in enumerate(keys):
            env.put(key, b"".join(jsonl_lines(5 + i, seed=30 + i)))
        env.put("pre/dir/", b"")  # a "folder" marker is not an object to load
        op = S3ToPostgresCopyOperator(task_id="load", s3_bucket=env.bucket, s3_prefix="pre/", table=table)
        out = op.execute(self._context())  # type: ignore[arg-type]
        assert [o["source_key"] for o in out["objects"]] == keys
        assert [o["rows_copied"] for o in out["objects"]] == [5, 6, 7]
        assert (out["rows_copied"], out["lines_read"], out["source_key"], out["batch_id"]) == (
            18,
            18,
            "pre/",
            "manual__op",
        )
        rows = env.execute(f'SELECT source_key, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1')
        assert rows == [(key, 5 + i) for i, key in enumerate(keys)]

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"s3_key": "k.jsonl", "s3_prefix": "p/"}, "give exactly one of s3_key, s3_prefix and s3_keys"),
            ({}, "give exactly one of s3_key, s3_prefix and s3_keys"),
            ({"s3_key": "k.jsonl", "mode": "upsert"}, "mode must be one of"),
            ({"s3_key": "k.jsonl", "load_options": {"segment_byte": 1}}, "load_options: "),
            ({"s3_key": "k.jsonl", "load_options": {"segment_bytes": 0}}, "segment_bytes must be a positive integer"),
        ],
        ids=["key-and-prefix", "neither", "mode", "unknown-load-option", "bad-load-option"],
    )
    def test_configuration_errors_fail_without_retry(
        self, airflow_env: Any, table: str, arguments: dict[str, Any], message: str
    ) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from s3_postgres_copy import S3ToPostgresCopyOperator

        op = S3ToPostgresCopyOperator(task_id="load", s3_bucket="b", table=table, **arguments)
        with pytest.raises(AirflowFailException, match=message):
            op.execute(self._context())  # type: ignore[arg-type]

    def test_load_options_reach_the_loader(self, airflow_env: Any, env: IntegrationEnv, table: str) -> None:
        from s3_postgres_copy import S3ToPostgresCopyOperator

        env.put("semi.csv", b"a;b\n1;2\n3;4\n")
        op = S3ToPostgresCopyOperator(
            task_id="load",
            s3_bucket=env.bucket,
            s3_key="semi.csv",
            table=table,
            csv_delimiter=";",
            load_options={"segment_bytes": 1, "raw_limit": 5},
        )
        out = op.execute(self._context())  # type: ignore[arg-type]
        assert out["rows_copied"] == 2
        docs = env.execute(f'SELECT document FROM "{table}" ORDER BY source_line')
        assert docs == [({"a": "1", "b": "2"},), ({"a": "3", "b": "4"},)]
