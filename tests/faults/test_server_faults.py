"""What the database server does to a running load: cancel, terminate, restart, locks, refusals, configuration.

Only errors about a row's data are bad records (with a line); a cancelled statement, a terminated
session or a restarted server is a transient error that Airflow retries, and the retry loads the
exact rows. Configuration errors fail on the first try. Messages and XComs carry no record values.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from harness.airflow_env import conn_env_var, postgres_connection
from harness.dag_runs import load_dag, run_dag, task_states, task_tries
from harness.postgres import ThrowawayPostgres
from harness.sample import jsonl_bytes
from s3_postgres_copy.exceptions import LockTimeoutError, ServerError, is_terminal

from .support import FaultEnv, unique

DAG_ID = "s3_to_postgres_import"
RECORDS = 60_000


@pytest.fixture(scope="module")
def dag(airflow_env: Any) -> Any:
    return load_dag(DAG_ID)


@pytest.fixture
def fast_retry(dag: Any) -> Iterator[None]:
    """The load task retries once, after 5 s (the DAG's default is 2 retries after a minute; a restart takes ~2 s)."""
    load = dag.get_task("load")
    saved = load.retries, load.retry_delay, load.retry_exponential_backoff
    load.retries, load.retry_delay, load.retry_exponential_backoff = 1, dt.timedelta(seconds=5), False
    try:
        yield
    finally:
        load.retries, load.retry_delay, load.retry_exponential_backoff = saved


def _during_copy(dsn: str, action: Callable[[int], object], *, after: int = 3000) -> threading.Thread:
    """Run ``action(pid)`` once a COPY has taken ``after`` rows (watched in ``pg_stat_progress_copy``).

    The thread lives on until ``thread.finish`` is set: a server it restarted dies with it (the
    harness's ``setpriv --pdeathsig`` is tied to the thread that started the server).
    """
    done, finish = threading.Event(), threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT pid, tuples_processed FROM pg_stat_progress_copy WHERE command = 'COPY FROM' "
                    "AND pid <> pg_backend_pid() ORDER BY tuples_processed DESC LIMIT 1"
                ).fetchone()
                if row is not None and row[1] >= after:
                    break
                time.sleep(0.01)
            else:
                return
        action(row[0])
        done.set()
        finish.wait(timeout=600)

    thread = threading.Thread(target=watch, daemon=True)
    thread.done = done  # type: ignore[attr-defined]
    thread.finish = finish  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.fixture
def private_pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server of the test's own (it may be restarted), as the DAG's postgres_default."""
    with ThrowawayPostgres() as pg:
        monkeypatch.setenv(conn_env_var("postgres_default"), json.dumps(postgres_connection(pg)))
        yield pg


def _body() -> bytes:
    return gzip.compress(jsonl_bytes(RECORDS, seed=77), compresslevel=1)


def _admin(pg: ThrowawayPostgres, query: str, pid: int) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(query, [pid])


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("cancel", "the server cancelled the COPY (a cancel request (pg_cancel_backend or a user))"),
        ("terminate", "the connection was closed by the server"),
        ("restart", "the connection was closed by the server"),
    ],
)
def test_an_interrupted_copy_is_retried_and_loads_the_exact_rows(
    dag: Any,
    fast_retry: None,
    private_pg: ThrowawayPostgres,
    s3: Any,
    bucket: str,
    fault: str,
    cause: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = f"faults/{fault}.jsonl.gz"
    s3.put_object(bucket, key, _body())
    table = unique("srv")
    actions: dict[str, Callable[[int], object]] = {
        "cancel": lambda pid: _admin(private_pg, "SELECT pg_cancel_backend(%s)", pid),
        "terminate": lambda pid: _admin(private_pg, "SELECT pg_terminate_backend(%s)", pid),
        "restart": lambda pid: private_pg.restart(),
    }
    watcher = _during_copy(private_pg.dsn, actions[fault])

    try:
        run = run_dag(dag, "2026-05-01", {"bucket": bucket, "key": key, "table": table})
        assert watcher.done.is_set(), "the fault was never injected"  # type: ignore[attr-defined]
        output = capfd.readouterr()
        with private_pg.connect() as conn:
            query = f'SELECT count(*), count(DISTINCT source_line), min(source_line), max(source_line) FROM "{table}"'
            counts = conn.execute(query).fetchone()
    finally:
        watcher.finish.set()  # type: ignore[attr-defined]
        watcher.join(timeout=60)
    text = output.out + output.err
    assert str(run.state) == "success", (task_states(run), [line for line in text.splitlines() if "rror" in line])
    assert task_tries(run, "load") == [2]
    assert cause in text
    assert "will be retried" in text
    assert "Bad record" not in text
    assert counts == (RECORDS, RECORDS, 1, RECORDS)


def test_a_statement_timeout_is_transient_and_says_so(
    env: FaultEnv, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.put("big.jsonl", jsonl_bytes(100_000, seed=5))
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=300")  # the load's connection only (libpq reads it)
    with pytest.raises(ServerError) as caught:
        env.load("big.jsonl", table, source=env.direct_source("big.jsonl"), segment_bytes=1 << 30)
    monkeypatch.delenv("PGOPTIONS")
    assert "the server cancelled the COPY (statement timeout)" in str(caught.value)
    assert "rolled back and will be retried" in str(caught.value)
    assert not is_terminal(caught.value)
    assert env.snapshot(table) is None


class TestConfigurationErrorsFailOnTheFirstTry:
    @pytest.fixture
    def operator(self, airflow_env: Any, env: FaultEnv) -> Callable[..., Any]:
        from types import SimpleNamespace

        from airflow.sdk.exceptions import AirflowFailException

        from s3_postgres_copy import S3ToPostgresCopyOperator

        def run(**arguments: Any) -> str:
            op = S3ToPostgresCopyOperator(task_id="load", s3_bucket=env.bucket, retries=2, **arguments)
            with pytest.raises(AirflowFailException) as caught:
                op.execute({"ti": SimpleNamespace(map_index=-1), "run_id": "r"})  # type: ignore[arg-type]
            return str(caught.value)

        return run

    def test_each_kind(self, operator: Callable[..., str], env: FaultEnv, table: str) -> None:
        env.put("k.jsonl", b'{"a": 1}\n')
        env.put("h.csv", b"a,a\n1,2\n")
        env.execute(f'CREATE TABLE "{table}_cols" (document jsonb)')
        env.execute(
            f'CREATE TABLE "{table}_types" (document bytea, source_key text, source_etag text, '
            "batch_id text, loaded_at timestamptz, source_line bigint)"
        )
        try:
            assert "does not exist and create_table is False" in operator(
                s3_key="k.jsonl", table=table, create_table=False
            )
            assert "has no column(s) source_key" in operator(s3_key="k.jsonl", table=f"{table}_cols")
            assert "copy_format='binary' cannot load" in operator(
                s3_key="k.jsonl", table=f"{table}_types", copy_format="binary"
            )
            assert "the CSV header repeats column(s) 'a'" in operator(s3_key="h.csv", table=table)
            assert "give exactly one of s3_key, s3_prefix and s3_keys" in operator(
                s3_key="k.jsonl", s3_prefix="p/", table=table
            )
            assert 'schema "nosuchschema" does not exist' in operator(s3_key="k.jsonl", table="nosuchschema.t")
        finally:
            env.execute(f'DROP TABLE IF EXISTS "{table}_cols", "{table}_types"')

    @pytest.mark.e2e
    def test_in_a_dag_run_the_task_is_not_retried(
        self, dag: Any, s3: Any, bucket: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        s3.put_object(bucket, "dupes.csv", b"npi,npi\n1,2\n")
        run = run_dag(dag, "2026-05-02", {"bucket": bucket, "key": "dupes.csv", "table": unique("cfg")})
        assert str(run.state) == "failed"
        assert task_states(run)["load"] == ["failed"]
        assert task_tries(run, "load") == [1]  # retries=2, but no retry can fix the file
        assert "the CSV header repeats column(s) 'npi'" in capfd.readouterr().out


def test_one_table_spelled_two_ways_is_loaded_once(env: FaultEnv, table: str) -> None:
    env.put("k.jsonl", jsonl_bytes(20_000, seed=9))
    env.load("k.jsonl", table, source=env.direct_source("k.jsonl"))  # the table exists (its OID is the lock)
    errors: list[BaseException] = []

    def load(name: str) -> None:
        try:
            env.load("k.jsonl", name, source=env.direct_source("k.jsonl"))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=load, args=(name,)) for name in (table, f"public.{table}")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert env.execute(f'SELECT count(*), count(DISTINCT source_line) FROM "{table}"') == [(20_000, 20_000)]


class TestLocks:
    @pytest.fixture
    def holder(self, env: FaultEnv, table: str) -> Iterator[psycopg.Connection[Any]]:
        env.put("k.jsonl", jsonl_bytes(50, seed=1))
        env.load("k.jsonl", table, source=env.direct_source("k.jsonl"))
        conn = psycopg.connect(env.postgres.dsn, application_name="maintenance-window")
        conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        try:
            yield conn
        finally:
            conn.close()

    def test_lock_timeout_fails_within_seconds_naming_the_lock_and_changing_nothing(
        self, env: FaultEnv, table: str, holder: psycopg.Connection[Any]
    ) -> None:
        env.put("k.jsonl", jsonl_bytes(80, seed=2))
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught:
            env.load("k.jsonl", table, source=env.direct_source("k.jsonl"), lock_timeout=3)
        waited = time.monotonic() - t0
        message = str(caught.value)
        assert 3 <= waited < 30
        assert f"gave up waiting for a lock on the table {table}" in message
        assert f"pid {holder.info.backend_pid} (application 'maintenance-window'" in message
        assert "AccessExclusiveLock" in message
        assert "nothing was changed" in message
        assert not is_terminal(caught.value)
        holder.rollback()
        assert env.count(table) == 50

    def test_without_a_timeout_it_waits_says_so_and_loads_once_released(
        self, env: FaultEnv, table: str, holder: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        from s3_postgres_copy.loader import LoadOptions, load_object

        env.put("k.jsonl", jsonl_bytes(80, seed=2))
        release = threading.Timer(3.0, holder.rollback)
        release.start()
        caplog.set_level("WARNING", logger="s3_postgres_copy.locks")
        with env.connect() as conn:
            stats = load_object(
                conn, env.direct_source("k.jsonl"), LoadOptions(env.bucket, "k.jsonl", table), progress_interval=1.0
            )
        release.join()
        assert stats.rows_copied == 80
        assert stats.lock_wait_seconds >= 2
        waiting = [r.getMessage() for r in caplog.records if "Waiting for a lock on the table" in r.getMessage()]
        assert waiting, caplog.text
        assert f"held by pid {holder.info.backend_pid} (application 'maintenance-window'" in waiting[0]
        assert env.count(table) == 80


@pytest.mark.e2e
def test_a_refused_record_is_named_by_its_line_and_its_values_stay_out_of_logs_and_xcom(
    dag: Any, s3: Any, bucket: str, pg_conn: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    table = unique("pii")
    marker = "MARKER-7f3a9c-SECRET"
    pg_conn.execute(
        f"CREATE TABLE \"{table}\" (document jsonb NOT NULL CONSTRAINT short_names CHECK (length(document->>'name') "
        "< 40), source_key text, source_etag text, batch_id text, loaded_at timestamptz, source_line bigint)"
    )
    ok = [{"npi": f"{1000000000 + i}", "first_name": "Ana", "last_name": f"Li {i}"} for i in range(5)]
    body = "\n".join(json.dumps(r) for r in ok) + "\n" + json.dumps({"npi": "1000000099", "name": marker * 3}) + "\n"
    s3.put_object(bucket, "pii.jsonl", body.encode())
    capfd.readouterr()
    # The DAG's transform keeps no "name": load the raw records through the operator with no transform.
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from s3_postgres_copy import S3ToPostgresCopyOperator

    op = S3ToPostgresCopyOperator(task_id="load", s3_bucket=bucket, s3_key="pii.jsonl", table=table)
    with pytest.raises(AirflowFailException) as caught:
        op.execute({"ti": SimpleNamespace(map_index=-1), "run_id": "r"})  # type: ignore[arg-type]
    assert "at line 6" in str(caught.value)
    assert "short_names" in str(caught.value)
    assert marker not in str(caught.value)
    tolerant = S3ToPostgresCopyOperator(
        task_id="load", s3_bucket=bucket, s3_key="pii.jsonl", table=table, max_bad_rows=5
    ).execute({"ti": SimpleNamespace(map_index=-1), "run_id": "r2"})  # type: ignore[arg-type]
    assert (tolerant["rows_copied"], tolerant["rows_rejected"]) == (5, 1)
    assert tolerant["first_rejects"] == [
        {"line": 6, "error": f'new row for relation "{table}" violates check constraint "short_names"'}
    ]
    assert marker not in json.dumps(tolerant)
    output = capfd.readouterr()
    assert marker not in output.out + output.err
    raw, error = pg_conn.execute(f'SELECT raw, error FROM "{table}_rejects"').fetchone()
    assert marker in raw  # the rejects table is where the record's values belong
    assert "Failing row contains" in error


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_tolerant_mode_with_150_unique_refusals_keeps_every_row_and_reject_exact(
    env: FaultEnv, table: str, driver: str
) -> None:
    records = 200_000
    duplicates = set(range(1000, records, records // 150))  # 150 lines repeat the npi of the line before
    lines = []
    for i in range(records):
        npi = i - 1 if i in duplicates else i
        lines.append(json.dumps({"npi": f"{npi:010d}", "i": i}).encode())
    env.put("dup.jsonl", b"\n".join(lines) + b"\n")
    env.execute(
        f'CREATE TABLE "{table}" (document jsonb NOT NULL, source_key text, source_etag text, batch_id text, '
        "loaded_at timestamptz, source_line bigint)"
    )
    env.execute(f'CREATE UNIQUE INDEX "{table}_npi" ON "{table}" ((document->>\'npi\'))')
    env.driver = driver
    stats = env.load("dup.jsonl", table, source=env.direct_source("dup.jsonl"), max_bad_rows=1000)
    assert len(duplicates) == 150
    assert (stats.rows_copied, stats.rows_rejected, stats.lines_read) == (records - 150, 150, records)
    assert env.execute(f"SELECT count(*), count(DISTINCT document->>'npi') FROM \"{table}\"") == [
        (records - 150, records - 150)
    ]
    rejected = env.execute(f'SELECT source_line, error FROM "{table}_rejects" ORDER BY 1')
    assert [line for line, _ in rejected] == sorted(i + 1 for i in duplicates)
    assert all("duplicate key value violates unique constraint" in error for _, error in rejected)
    assert all("0000" not in r["error"] for r in stats.first_rejects)  # no key values in the XCom's reasons
