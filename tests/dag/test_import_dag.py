"""The import DAG: structure, and real runs against the throwaway PostgreSQL and local S3."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest

from harness.dag_runs import SUCCESS_STATES, load_dag, run_dag, task_states, xcom_values

DAG_ID = "s3_to_postgres_import"
BUCKET = "imports"


def _records(n: int, start: int = 0) -> bytes:
    lines = [
        {
            "npi": f"{1000000000 + start + i}",
            "first_name": "ana",
            "last_name": f"Nguyễn {i}",
            "specialties": "cardiology; Internal medicine",
            "address": {"line1": "1 Main St", "city": "Springfield", "state": "il", "zip": "62701"},
            "phone": "(555) 123-4567",
            "accepting_new_patients": "Y",
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in lines)


@pytest.fixture(scope="module")
def dag(airflow_env: Any) -> Any:
    return load_dag(DAG_ID)


@pytest.fixture(scope="module")
def imports(s3: Any) -> str:
    if BUCKET not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}:
        s3.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture
def table() -> str:
    return f"dag_{uuid.uuid4().hex[:10]}"


def _count(pg_conn: Any, table: str, key: str | None = None) -> int:
    if key is None:
        return pg_conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return pg_conn.execute(f"SELECT count(*) FROM {table} WHERE source_key = %s", [key]).fetchone()[0]


class TestStructure:
    def test_dagbag_has_no_import_errors(self, airflow_env: Any) -> None:
        from airflow.dag_processing.dagbag import DagBag

        from harness.dag_runs import REPO_ROOT

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
        assert bag.import_errors == {}
        assert DAG_ID in bag.dag_ids

    def test_tasks_and_order(self, dag: Any) -> None:
        assert set(dag.task_ids) == {
            "wait_for_objects",
            "validate",
            "load",
            "publish",
            "check_row_count",
            "discard_stage",
        }
        assert dag.get_task("wait_for_objects").downstream_task_ids == {"validate"}
        assert dag.get_task("validate").downstream_task_ids == {"load"}
        assert dag.get_task("load").downstream_task_ids == {"publish", "discard_stage"}
        assert dag.get_task("publish").downstream_task_ids == {"check_row_count"}
        assert dag.get_task("check_row_count").downstream_task_ids == set()
        assert dag.get_task("discard_stage").trigger_rule == "one_failed"
        assert dag.get_task("wait_for_objects").mode == "reschedule"

    def test_schedule_params_and_defaults(self, dag: Any) -> None:
        assert dag.max_active_runs == 1
        assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 2 * * *", "UTC")
        assert dag.start_date is None  # any logical date gets its tasks
        assert dag.timetable.run_immediately is True
        params = dag.params
        assert params["key"] == "imports/{{ ds }}/providers.jsonl.gz"
        assert params["bucket"] == "imports"
        assert params["table"] == "provider_directory"
        assert set(params.keys()) >= {"bucket", "key", "table", "format", "mode", "max_bad_rows", "prefix"}
        assert dag.default_args["retries"] >= 1
        assert dag.doc_md

    def test_parses_quickly_without_io(self) -> None:
        code = (
            "import time, sys; t = time.perf_counter(); sys.path[:0] = ['plugins', 'dags'];"
            "import s3_to_postgres_import as m; print(time.perf_counter() - t);"
            "print(sorted(k for k in sys.modules if k.startswith(('psycopg', 'boto', 'requests', 'simplejson'))))"
        )
        from harness.dag_runs import REPO_ROOT

        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
        assert "boto3" not in out[1]

    @pytest.mark.parametrize(
        ("conf", "message"),
        [
            ({"mode": "upsert"}, "upsert"),
            ({"max_bad_rows": -1}, "-1"),
            ({"table": "x; DROP TABLE y"}, "does not match"),
            ({"format": "xml"}, "xml"),
        ],
        ids=["mode", "max_bad_rows", "hostile-table", "format"],
    )
    def test_invalid_params_are_refused_before_the_run(self, dag: Any, conf: dict[str, Any], message: str) -> None:
        import copy

        from airflow.sdk.exceptions import ParamValidationError

        params = copy.deepcopy(dag.params)
        ((key, value),) = conf.items()
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {key}: .*{message}"):
            params[key] = value


@pytest.mark.e2e
class TestRuns:
    def test_scheduled_run_loads_that_dates_file(self, dag: Any, imports: str, s3: Any, pg_conn: Any) -> None:
        key = "imports/2026-03-01/providers.jsonl.gz"
        s3.put_object(imports, key, gzip.compress(_records(500)))
        run = run_dag(dag, "2026-03-01")
        assert str(run.state) == "success", task_states(run)
        assert task_states(run) == SUCCESS_STATES
        (stats,) = xcom_values(run, "load")
        assert stats["source_key"] == key
        assert stats["rows_copied"] == 500
        assert stats["batch_id"] == run.run_id
        assert _count(pg_conn, "provider_directory", key) == 500
        doc = pg_conn.execute(
            "SELECT document FROM provider_directory WHERE source_key = %s AND source_line = 3", [key]
        ).fetchone()[0]
        # The DAG's transform built the API document.
        assert doc["npi"] == "1000000002"
        assert doc["specialties"] == ["Cardiology", "Internal Medicine"]
        assert doc["status"] == "active"
        assert xcom_values(run, "check_row_count") == [{"objects": 1, "skipped": 0, "rows": 500}]

    def test_same_date_twice_with_force_replaces(self, dag: Any, imports: str, s3: Any, pg_conn: Any) -> None:
        key = "imports/2026-03-02/providers.jsonl.gz"
        s3.put_object(imports, key, gzip.compress(_records(300)))
        first = run_dag(dag, "2026-03-02")
        before = pg_conn.execute(
            "SELECT source_line, document FROM provider_directory WHERE source_key = %s ORDER BY 1", [key]
        ).fetchall()
        second = run_dag(dag, dag_date := "2026-03-02", {"force": True})
        assert str(first.state) == str(second.state) == "success", dag_date
        after = pg_conn.execute(
            "SELECT source_line, document FROM provider_directory WHERE source_key = %s ORDER BY 1", [key]
        ).fetchall()
        assert len(after) == 300
        assert after == before
        batches = pg_conn.execute(
            "SELECT DISTINCT batch_id FROM provider_directory WHERE source_key = %s", [key]
        ).fetchall()
        assert batches == [(second.run_id,)]

    def test_same_date_twice_skips_the_unchanged_object(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        key = "imports/2026-03-08/providers.jsonl.gz"
        s3.put_object(bucket, key, gzip.compress(_records(30)))
        conf = {"bucket": bucket, "table": table}
        first = run_dag(dag, "2026-03-08", conf)
        versions = pg_conn.execute(f"SELECT ctid, xmin::text FROM {table} ORDER BY 1").fetchall()
        second = run_dag(dag, "2026-03-08", conf)
        assert str(first.state) == str(second.state) == "success", task_states(second)
        (stats,) = xcom_values(second, "load")
        assert stats["skipped"] is True
        assert stats["rows_copied"] == 0
        assert f"was loaded by batch {first.run_id}" in stats["skip_reason"]
        assert pg_conn.execute(f"SELECT ctid, xmin::text FROM {table} ORDER BY 1").fetchall() == versions
        assert xcom_values(second, "check_row_count") == [{"objects": 1, "skipped": 1, "rows": 0}]
        ledger = pg_conn.execute(f"SELECT batch_id, state, rows_copied FROM {table}_loads").fetchall()
        assert ledger == [(first.run_id, "committed", 30)]
        # A changed object (a new ETag) is loaded again.
        s3.put_object(bucket, key, gzip.compress(_records(31)))
        third = run_dag(dag, "2026-03-08", conf)
        assert str(third.state) == "success"
        assert _count(pg_conn, table) == 31
        assert pg_conn.execute(f"SELECT DISTINCT batch_id FROM {table}").fetchall() == [(third.run_id,)]

    def test_manual_run_with_conf(self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str) -> None:
        key = "manual/some file.jsonl"
        s3.put_object(bucket, key, _records(42))
        run = run_dag(dag, "2026-03-03", {"bucket": bucket, "key": key, "table": table})
        assert str(run.state) == "success", task_states(run)
        assert _count(pg_conn, table) == 42
        assert _count(pg_conn, table, key) == 42

    def test_backfill_three_dates(self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str) -> None:
        dates = ["2026-02-01", "2026-02-02", "2026-02-03"]
        for n, day in enumerate(dates, 1):
            s3.put_object(bucket, f"imports/{day}/providers.jsonl.gz", gzip.compress(_records(10 * n, start=100 * n)))
        for day in dates:
            run = run_dag(dag, day, {"bucket": bucket, "table": table})
            assert str(run.state) == "success", task_states(run)
        # A second pass over the same dates (a re-run backfill) must not duplicate anything.
        run = run_dag(dag, dates[1], {"bucket": bucket, "table": table})
        assert str(run.state) == "success"
        rows = pg_conn.execute(f"SELECT source_key, count(*) FROM {table} GROUP BY 1 ORDER BY 1").fetchall()
        assert rows == [(f"imports/{day}/providers.jsonl.gz", 10 * n) for n, day in enumerate(dates, 1)]

    def test_backfill_cli_plans_one_run_per_date(self, airflow_env: Any) -> None:
        from demo.standalone import airflow_command

        out = subprocess.run(
            [
                *airflow_command(),  # this interpreter's environment's CLI (the repo's .venv or another one)
                "backfill",
                "create",
                "--dag-id",
                DAG_ID,
                "--from-date",
                "2026-01-10",
                "--to-date",
                "2026-01-13",
                "--dry-run",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        planned = re.findall(r"(2026-01-\d\d) 02:00:00\+00:00", out.stdout)
        assert planned == ["2026-01-10", "2026-01-11", "2026-01-12"]

    def test_prefix_loads_every_object_as_its_own_batch(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str
    ) -> None:
        keys = [f"history/part-{i:03d}.jsonl.gz" for i in range(4)]
        for i, key in enumerate(keys):
            s3.put_object(bucket, key, gzip.compress(_records(25 + i, start=1000 * i)))
        run = run_dag(dag, "2026-03-04", {"bucket": bucket, "prefix": "history/", "table": table})
        assert str(run.state) == "success", task_states(run)
        assert task_states(run)["load"] == ["success"] * 4
        rows = pg_conn.execute(
            f"SELECT source_key, count(*), count(DISTINCT batch_id), min(batch_id) FROM {table} GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [(r[0], r[1], r[2]) for r in rows] == [(key, 25 + i, 1) for i, key in enumerate(keys)]
        assert len({r[3] for r in rows}) == 4

    @pytest.mark.parametrize(
        ("setup", "conf", "reason"),
        [
            (("empty.jsonl", b""), {"key": "empty.jsonl"}, "is empty"),
            (("blob.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), {"key": "blob.bin"}, "unknown format"),
            (("ok.jsonl", b'{"a": 1}\n'), {"key": "ok.jsonl", "table": "nosuchschema.t"}, "schema 'nosuchschema'"),
            (("ok.csv", b'{"a": 1}\n'), {"key": "ok.csv"}, "named like csv but its content looks like jsonl"),
        ],
        ids=["empty", "unknown-format", "bad-schema", "format-mismatch"],
    )
    def test_validate_fails_with_reason(
        self,
        dag: Any,
        bucket: str,
        s3: Any,
        pg_conn: Any,
        table: str,
        setup: tuple[str, bytes],
        conf: dict[str, Any],
        reason: str,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        s3.put_object(bucket, *setup)
        run = run_dag(dag, "2026-03-05", {"bucket": bucket, "table": table, **conf})
        assert str(run.state) == "failed"
        states = task_states(run)
        assert states["validate"] == ["failed"]
        assert "success" not in states.get("load", [])
        target = conf.get("table", table)
        exists = pg_conn.execute("SELECT to_regclass(%s)", [target]).fetchone()[0]
        assert exists is None  # nothing was created or written
        assert reason in _task_output(capfd)

    def test_row_count_mismatch_fails_the_check(
        self,
        dag: Any,
        bucket: str,
        s3: Any,
        pg_conn: Any,
        table: str,
        monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        key = "mismatch.jsonl"
        s3.put_object(bucket, key, _records(20))
        # Rows inserted out of band for the same source, between the load and the check.
        import s3_postgres_copy.operators as operators

        original = operators.S3ToPostgresCopyOperator.load_one

        def load_then_tamper(self: Any, key: str, batch_id: str, *rest: Any) -> Any:
            stats = original(self, key, batch_id, *rest)
            pg_conn.execute(
                f"INSERT INTO {table} (document, source_key, batch_id) VALUES ('{{}}', %s, %s)", [key, batch_id]
            )
            return stats

        monkeypatch.setattr(operators.S3ToPostgresCopyOperator, "load_one", load_then_tamper)
        run = run_dag(dag, "2026-03-06", {"bucket": bucket, "key": key, "table": table})
        assert str(run.state) == "failed"
        assert task_states(run)["check_row_count"] == ["failed"]
        assert "the table holds 21 rows" in _task_output(capfd)


def _task_output(capfd: pytest.CaptureFixture[str]) -> str:
    """What the in-process tasks of ``dag.test()`` logged (they log to the process's stdout)."""
    out, err = capfd.readouterr()
    return out + err


@pytest.mark.e2e
class TestOperatorObservability:
    def test_openlineage_facets(self, airflow_env: Any, bucket: str, s3: Any, postgres: Any, table: str) -> None:
        from s3_postgres_copy import S3ToPostgresCopyOperator

        key = "lineage/part.jsonl"
        s3.put_object(bucket, key, _records(7))
        op = S3ToPostgresCopyOperator(task_id="load", s3_bucket=bucket, s3_key=key, table=table)
        stats = op.load_one(key, "batch-1")
        op._loaded = [stats]
        lineage = op.get_openlineage_facets_on_complete(None)
        (source,) = lineage.inputs
        assert (source.namespace, source.name) == (f"s3://{bucket}", key)
        (target,) = lineage.outputs
        assert target.namespace == f"postgres://127.0.0.1:{postgres.port}"
        assert target.name == f"postgres.public.{table}"
        assert target.outputFacets["outputStatistics"].rowCount == 7

    def test_task_output_never_shows_the_presigned_url(
        self, dag: Any, bucket: str, s3: Any, pg_conn: Any, table: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        key = "secret/check.jsonl"
        s3.put_object(bucket, key, _records(5) + b"not json\n")
        run = run_dag(dag, "2026-03-07", {"bucket": bucket, "key": key, "table": table, "max_bad_rows": 0})
        assert str(run.state) == "failed"
        output = _task_output(capfd)
        assert "Bad record in s3://" in output
        assert "line 6" in output
        assert "X-Amz-Signature" not in output
        assert "X-Amz-Credential" not in output
        stats_xcom = xcom_values(run, "load")
        assert stats_xcom in ([], [None])  # a failed load pushes nothing, credentials included
