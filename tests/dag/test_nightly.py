"""The nightly DAG as a user runs it: any date, late files, many objects, every mode, a misspelt conf key."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.dag_runs import SUCCESS_STATES, load_dag, run_dag, task_states, task_tries, xcom_values

DAG_ID = "s3_to_postgres_import"

pytestmark = pytest.mark.e2e


def records(n: int, start: int = 0, version: int = 1) -> bytes:
    rows = [
        {
            "npi": f"{1000000000 + start + i}",
            "first_name": "ana",
            "last_name": f"Nguyễn {start + i}",
            "specialties": "cardiology",
            "credential": f"v{version}",
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def dag(airflow_env: Any) -> Any:
    return load_dag(DAG_ID)


@pytest.fixture
def table(postgres: Any) -> Any:
    name = f"n_{uuid.uuid4().hex[:10]}"
    yield name
    with postgres.connect(autocommit=True) as conn:
        for suffix in ("", "_rejects", "_loads"):
            conn.execute(f'DROP TABLE IF EXISTS "{name}{suffix}" CASCADE')


def _output(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return out + err


def _count(pg_conn: Any, table: str) -> int:
    return int(pg_conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


class TestAnyDate:
    def test_a_date_before_any_schedule_loads_its_file(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        s3.put_object(bucket, "imports/2024-03-05/providers.jsonl.gz", gzip.compress(records(40)))
        run = run_dag(dag, "2024-03-05", {"bucket": bucket, "table": table})
        assert str(run.state) == "success", task_states(run)
        assert task_states(run) == SUCCESS_STATES
        assert _count(pg_conn, table) == 40

    def test_a_run_without_a_logical_date_needs_an_explicit_key(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        run = run_dag(dag, None, {"bucket": bucket, "table": table})
        assert str(run.state) == "failed"
        assert task_states(run)["wait_for_objects"] == ["failed"]
        assert "is a template on the run's logical date, but this run has none" in _output(capfd)
        s3.put_object(bucket, "explicit.jsonl", records(3))
        run = run_dag(dag, None, {"bucket": bucket, "table": table, "key": "explicit.jsonl"})
        assert str(run.state) == "success", task_states(run)
        assert _count(pg_conn, table) == 3

    def test_an_empty_key_means_the_dates_default_key(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        s3.put_object(bucket, "imports/2026-06-01/providers.jsonl.gz", gzip.compress(records(4)))
        run = run_dag(dag, "2026-06-01", {"bucket": bucket, "table": table, "key": None})
        assert str(run.state) == "success", task_states(run)
        assert _count(pg_conn, table) == 4


class TestConf:
    def test_unknown_conf_keys_are_refused_before_any_load(
        self, dag: Any, bucket: str, pg_conn: Any, capfd: pytest.CaptureFixture[str]
    ) -> None:
        run = run_dag(dag, "2026-06-02", {"prefx": "bulk/", "tabel": "typo", "bucket": bucket})
        assert str(run.state) == "failed"
        assert task_states(run)["wait_for_objects"] == ["failed"]
        assert "load" not in task_states(run) or "success" not in task_states(run)["load"]
        out = _output(capfd)
        assert "unknown conf key(s): 'prefx' (did you mean 'prefix'?), 'tabel' (did you mean 'table'?)" in out
        assert pg_conn.execute("SELECT to_regclass('typo')").fetchone() == (None,)

    def test_a_successful_run_logs_no_error(
        self, dag: Any, bucket: str, s3: Any, table: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        s3.put_object(bucket, "quiet.jsonl", records(5))
        capfd.readouterr()
        run = run_dag(dag, "2026-06-03", {"bucket": bucket, "key": "quiet.jsonl", "table": table})
        assert str(run.state) == "success"
        errors = [line for line in _output(capfd).splitlines() if "[error" in line or " ERROR " in line]
        assert errors == []


class TestWaitingForFiles:
    @pytest.mark.slow
    def test_a_file_that_lands_late_is_waited_for(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        key = "late/providers.jsonl"
        timer = threading.Timer(20.0, lambda: s3.put_object(bucket, key, records(12)))
        timer.start()
        t0 = time.monotonic()
        try:
            run = run_dag(dag, "2026-06-04", {"bucket": bucket, "key": key, "table": table, "wait_interval": 5})
        finally:
            timer.cancel()
        assert str(run.state) == "success", task_states(run)
        assert time.monotonic() - t0 >= 20
        assert _count(pg_conn, table) == 12
        assert task_tries(run, "wait_for_objects")[0] >= 1

    def test_a_file_that_never_lands_fails_naming_it_and_the_wait(
        self, dag: Any, bucket: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        conf = {"bucket": bucket, "key": "never/here.jsonl", "wait_timeout": 3, "wait_interval": 1}
        run = run_dag(dag, "2026-06-05", conf)
        assert str(run.state) == "failed"
        assert task_states(run)["wait_for_objects"] == ["failed"]
        assert f"s3://{bucket}/never/here.jsonl did not appear within 3 s (checked every 1 s)" in _output(capfd)


class TestManyObjects:
    @pytest.mark.slow
    def test_5000_objects_under_a_prefix(self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str) -> None:
        keys = [f"history/2025/part-{i:05d}.jsonl" for i in range(5000)]
        client = s3.client()

        def put(i: int) -> None:
            client.put_object(Bucket=bucket, Key=keys[i], Body=records(1, start=i))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(len(keys))))
        run = run_dag(dag, "2026-06-06", {"bucket": bucket, "prefix": "history/2025/", "table": table})
        assert str(run.state) == "success", task_states(run)
        states = task_states(run)
        assert states["load"] == ["success"] * 16
        (planned,) = xcom_values(run, "validate")
        assert sum(len(group["s3_keys"]) for group in planned) == 5000
        assert len(json.dumps(planned)) < 250_000
        assert pg_conn.execute(
            f'SELECT count(*), count(DISTINCT source_key), count(DISTINCT batch_id) FROM "{table}"'
        ).fetchone() == (
            5000,
            5000,
            5000,
        )
        assert pg_conn.execute(f'SELECT count(*) FROM "{table}_loads"').fetchone() == (5000,)
        assert xcom_values(run, "check_row_count") == [{"objects": 5000, "skipped": 0, "rows": 5000}]


class TestModes:
    def test_append_twice_onto_the_same_key(self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str) -> None:
        s3.put_object(bucket, "events.jsonl", records(7))
        conf = {"bucket": bucket, "key": "events.jsonl", "table": table, "mode": "append", "force": True}
        first = run_dag(dag, "2026-06-07", conf)
        second = run_dag(dag, "2026-06-08", conf)
        assert str(first.state) == str(second.state) == "success", task_states(second)
        rows = pg_conn.execute(f'SELECT batch_id, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1').fetchall()
        assert rows == sorted([(first.run_id, 7), (second.run_id, 7)])

    def test_a_rerun_of_the_same_append_replaces_its_own_rows(
        self, airflow_env: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        from types import SimpleNamespace

        from s3_postgres_copy import S3ToPostgresCopyOperator

        s3.put_object(bucket, "events.jsonl", records(7))
        op = S3ToPostgresCopyOperator(
            task_id="load", s3_bucket=bucket, s3_key="events.jsonl", table=table, mode="append"
        )
        context = {"ti": SimpleNamespace(map_index=-1), "run_id": "scheduled__2026-06-09"}
        op.execute(context)  # type: ignore[arg-type]
        op.execute(context)  # type: ignore[arg-type]  # the task cleared and run again
        assert pg_conn.execute(f'SELECT batch_id, count(*) FROM "{table}" GROUP BY 1').fetchall() == [
            ("scheduled__2026-06-09", 7)
        ]

    def test_merge_by_npi_in_the_dag(self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str) -> None:
        conf = {"bucket": bucket, "table": table, "mode": "merge"}
        s3.put_object(bucket, "imports/2026-06-10/providers.jsonl.gz", gzip.compress(records(30)))
        s3.put_object(
            bucket,
            "imports/2026-06-11/providers.jsonl.gz",
            gzip.compress(records(10) + records(10, start=10, version=2) + records(5, start=30)),
        )
        assert str(run_dag(dag, "2026-06-10", conf).state) == "success"
        run = run_dag(dag, "2026-06-11", conf)
        assert str(run.state) == "success", task_states(run)
        (stats,) = xcom_values(run, "load")
        assert (stats["rows_inserted"], stats["rows_updated"], stats["rows_unchanged"], stats["rows_deduplicated"]) == (
            5,
            10,
            10,
            0,
        )
        assert _count(pg_conn, table) == 35

    def test_a_prefix_snapshot_publishes_all_objects_together(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        s3.put_object(bucket, "old.jsonl", records(50, start=900))
        assert (
            str(run_dag(dag, "2026-06-12", {"bucket": bucket, "key": "old.jsonl", "table": table}).state) == "success"
        )
        for i in range(3):
            s3.put_object(bucket, f"snap/part-{i}.jsonl", records(10, start=100 * i))
        conf = {"bucket": bucket, "prefix": "snap/", "table": table, "mode": "snapshot"}
        run = run_dag(dag, "2026-06-13", conf)
        assert str(run.state) == "success", task_states(run)
        assert task_states(run)["publish"] == ["success"]
        assert pg_conn.execute(f'SELECT count(*), count(DISTINCT source_key) FROM "{table}"').fetchone() == (30, 3)
        states = pg_conn.execute(f'SELECT state, count(*) FROM "{table}_loads" GROUP BY 1 ORDER BY 1').fetchall()
        assert states == [("committed", 1), ("published", 3)]
        stages = pg_conn.execute(f"SELECT count(*) FROM pg_class WHERE relname LIKE '{table}_stage_%'").fetchone()
        assert stages == (0,)

    def test_a_failing_prefix_snapshot_leaves_the_table_as_it_was(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        s3.put_object(bucket, "old.jsonl", records(50, start=900))
        assert (
            str(run_dag(dag, "2026-06-14", {"bucket": bucket, "key": "old.jsonl", "table": table}).state) == "success"
        )
        before = pg_conn.execute(f'SELECT source_key, count(*) FROM "{table}" GROUP BY 1').fetchall()
        s3.put_object(bucket, "snap2/part-0.jsonl", records(10))
        s3.put_object(bucket, "snap2/part-1.jsonl", records(10, start=100) + b"not json\n")
        run = run_dag(dag, "2026-06-15", {"bucket": bucket, "prefix": "snap2/", "table": table, "mode": "snapshot"})
        assert str(run.state) == "failed"
        states = task_states(run)
        assert sorted(states["load"]) == ["failed", "success"]  # two objects: two mapped loads
        assert states["discard_stage"] == ["success"]
        assert pg_conn.execute(f'SELECT source_key, count(*) FROM "{table}" GROUP BY 1').fetchall() == before
        stages = pg_conn.execute(f"SELECT count(*) FROM pg_class WHERE relname LIKE '{table}_stage_%'").fetchone()
        assert stages == (0,)
        assert pg_conn.execute(f"SELECT count(*) FROM \"{table}_loads\" WHERE state = 'staged'").fetchone() == (0,)
