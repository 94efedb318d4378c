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

from harness.dag_runs import load_dag, run_dag, task_states, xcom_values
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
    assert task_states(run) == {"validate": ["success"], "load": ["success"], "check_row_count": ["success"]}
    # validate's table check and the operator's load both ran on the hook's (patched) driver
    assert used == [(driver, driver)] * 2
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
    assert xcom_values(run, "check_row_count") == [{"objects": 1, "rows": RECORDS}]

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
