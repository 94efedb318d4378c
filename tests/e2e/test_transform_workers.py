"""``transform_workers`` inside real Airflow tasks: ``airflow standalone`` (LocalExecutor, forked task processes).

A small DAG written to a temporary dags folder loads one object three times: with a transform
defined in the DAG file (a callable: it works only when the workers are forked from the task
process) at ``transform_workers=2`` and at ``0`` (in-process, the reference), and with the
shipped transform as a dotted path at ``transform_workers=2``. The task processes of the
LocalExecutor run one thread, so the workers are forked; the tables, the rejects and the XComs
are compared, and the teardown fails if any process of the standalone (workers included) is
still alive after it stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplejson

from demo.standalone import (
    StandaloneError,
    alive,
    standalone_env,
    standalone_processes,
    start_standalone,
    stop_standalone,
    wait_for_api,
    wait_for_dag,
)
from harness.airflow_env import airflow_connection_env, prepare_airflow_home
from harness.loads import exact
from harness.postgres import ThrowawayPostgres, find_free_port
from harness.s3 import LocalS3
from harness.sample import gzip_bytes, jsonl_lines
from provider_directory.documents import build_provider_document

from .support import ApiClient

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "transform_workers_e2e"
BUCKET = "imports"
KEY = "e2e/providers.jsonl.gz"
RECORDS = 9000  # ~3 MB: more than the 2 MiB a load encodes in its own process before its workers start
RUN_TIMEOUT = 300.0
TASKS = ("callable_workers", "callable_in_process", "dotted_workers")
DAG_FILE = textwrap.dedent(
    '''
    """Test DAG: one object loaded three ways (tests/e2e/test_transform_workers.py)."""

    from __future__ import annotations

    import pendulum
    from airflow.sdk import DAG, Param

    from provider_directory.documents import build_provider_document
    from s3_postgres_copy import S3ToPostgresCopyOperator


    def picky(record):
        """The API transform, refusing NPIs that end in 7 (defined here: it lives in the DAG file's module)."""
        if str(record.get("npi", "")).endswith("7"):
            raise LookupError("no such provider in the registry")
        return build_provider_document(record)


    with DAG(
        dag_id="transform_workers_e2e",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"bucket": Param("imports", type="string"), "key": Param("k", type="string")},
    ):
        common = {
            "s3_bucket": "{{ params.bucket }}",
            "s3_key": "{{ params.key }}",
            "max_bad_rows": 100000,
            "retries": 0,
        }
        S3ToPostgresCopyOperator(
            task_id="callable_workers", table="tw_callable_workers", transform=picky, transform_workers=2, **common
        )
        S3ToPostgresCopyOperator(
            task_id="callable_in_process", table="tw_callable_in_process", transform=picky, transform_workers=0,
            **common,
        )
        S3ToPostgresCopyOperator(
            task_id="dotted_workers",
            table="tw_dotted_workers",
            transform="provider_directory.documents:build_provider_document",
            transform_workers=2,
            **common,
        )
    '''
)


@dataclass
class Stack:
    pg: ThrowawayPostgres
    api: ApiClient
    log_path: Path
    lines: list[bytes]

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.pg.connect() as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, local S3 with the object, and ``airflow standalone`` over a dags folder holding the test DAG."""
    home = tmp_path_factory.mktemp("tw-home")
    dags = tmp_path_factory.mktemp("tw-dags")
    (dags / "transform_workers_e2e.py").write_text(DAG_FILE)
    lines = list(jsonl_lines(RECORDS, seed=41))
    with ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres())
        s3 = stack.enter_context(LocalS3())
        s3.create_bucket(BUCKET)
        s3.put_object(BUCKET, KEY, gzip_bytes(b"".join(lines)))
        port = find_free_port()
        base = dict(os.environ)
        base.update(prepare_airflow_home(home, dags_folder=dags))
        base.update(airflow_connection_env(s3, pg))
        log_path = home / "standalone.log"
        log_file = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115 - closed by the ExitStack
        proc = start_standalone(standalone_env(port, base=base), output=log_file)
        stack.callback(_stop_and_check, proc)
        state = Stack(pg, ApiClient(f"http://127.0.0.1:{port}"), log_path, lines)
        try:
            wait_for_api(state.api.base_url, timeout=240, proc=proc)
            wait_for_dag(state.api.base_url, DAG_ID, timeout=180, proc=proc)
        except (StandaloneError, TimeoutError) as err:
            pytest.fail(f"airflow standalone did not start: {err}\n--- log tail ---\n{state.log_tail()}")
        yield state


def _stop_and_check(proc: Any) -> None:
    started = standalone_processes(proc)
    stop_standalone(proc)
    left = alive({**started, **standalone_processes(proc)})
    assert not left, f"processes of airflow standalone (or transform workers) still alive after stop: {left}"


def _xcom(stack: Stack, run_id: str, task_id: str) -> dict[str, Any]:
    body = stack.api.get(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        params={"deserialize": True},
    )
    value: dict[str, Any] = body["value"]
    return value


def test_loads_in_forked_task_processes(stack: Stack) -> None:
    dag = stack.api.get(f"/dags/{DAG_ID}")
    if dag["is_paused"]:
        stack.api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
    t0 = time.monotonic()
    now = dt.datetime.now(dt.UTC).isoformat()
    created = stack.api.post(f"/dags/{DAG_ID}/dagRuns", {"logical_date": now, "conf": {"key": KEY}})
    run_id = created["dag_run_id"]
    run = stack.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", f"{stack.api.describe(DAG_ID, run_id)}\n{stack.log_tail()}"
    print(f"\n[e2e timing] transform_workers DAG run: {time.monotonic() - t0:.1f} s")

    stats = {task: _xcom(stack, run_id, task) for task in TASKS}
    assert (stats["callable_workers"]["transform_workers"], stats["callable_workers"]["workers_start_method"]) == (
        2,
        "fork",
    )
    assert (stats["dotted_workers"]["transform_workers"], stats["dotted_workers"]["workers_start_method"]) == (
        2,
        "fork",
    )
    assert stats["callable_in_process"]["transform_workers"] == 0
    picky = {n for n, raw in enumerate(stack.lines, 1) if str(exact(raw)["npi"]).endswith("7")}
    for task, stat in stats.items():
        rejected = len(picky) if task.startswith("callable") else 0
        assert (stat["rows_copied"], stat["rows_rejected"], stat["lines_read"]) == (
            RECORDS - rejected,
            rejected,
            RECORDS,
        ), task

    # The callable in workers and in-process: the same rows and the same rejects.
    def rows(table: str) -> list[tuple[Any, ...]]:
        return stack.query(f"SELECT source_line, document::text FROM {table} ORDER BY source_line")  # noqa: S608

    def rejects(table: str) -> list[tuple[Any, ...]]:
        return stack.query(f"SELECT source_line, raw, error FROM {table}_rejects ORDER BY source_line")  # noqa: S608

    assert rows("tw_callable_workers") == rows("tw_callable_in_process")
    assert rejects("tw_callable_workers") == rejects("tw_callable_in_process")
    assert {line for line, _, _ in rejects("tw_callable_workers")} == picky
    assert {error for _, _, error in rejects("tw_callable_workers")} == {
        "transform failed: LookupError: no such provider in the registry"
    }
    # The dotted path in workers: every document is the shipped transform's, exactly.
    documents = dict(rows("tw_dotted_workers"))
    assert len(documents) == RECORDS
    for line in range(1, RECORDS + 1, 37):
        expected = simplejson.dumps(build_provider_document(exact(stack.lines[line - 1])), use_decimal=True)
        assert exact(documents[line]) == exact(expected), line
    assert any(isinstance(exact(doc)["rating"], Decimal) for doc in list(documents.values())[:50])
