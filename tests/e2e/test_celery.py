"""The DAG on the real ``CeleryExecutor`` with two ``airflow celery worker`` processes on this machine.

Everything is started by the test itself: one throwaway PostgreSQL holds Airflow's metadata DB
(``airflow``), Celery's broker and result backend (``celery``: Celery's SQLAlchemy transport,
``sqla+postgresql://``, and its database result backend, ``db+postgresql://``) and the load
target (``warehouse``); a local S3; then ``airflow api-server`` (tasks talk to its execution
API), ``airflow scheduler``, ``airflow dag-processor`` and two workers, each in its own process
group, each named by ``--celery-hostname`` and by the ``hostname`` it reports for its task
instances (``tests/e2e/celery_worker_name.py``). A run with a prefix maps one ``load`` per
object; with one task at a time per worker, the loads spread over both workers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from demo.standalone import (
    DAG_ID,
    StandaloneError,
    airflow_command,
    alive,
    standalone_env,
    standalone_processes,
    stop_standalone,
    wait_for_api,
    wait_for_dag,
)
from harness.airflow_env import airflow_connection_env, prepare_airflow_home
from harness.postgres import ThrowawayPostgres, find_free_port
from harness.s3 import LocalS3
from harness.sample import gzip_bytes, jsonl_bytes

from .celery_worker_name import ENV_VAR as WORKER_NAME_VAR
from .conftest import BUCKET, NIGHTLY_DATES, _timing, object_key
from .support import ApiClient

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("celery-worker-1", "celery-worker-2")
PREFIX = "celery/2026-11-20/"
PARTS = 4
RECORDS = 8000  # per object (~2.7 MB): a load takes seconds, so a free worker takes the next one; more than
# the 2 MiB a load encodes in its own process, so transform_workers=2 forks its workers
TABLE = "celery_load"
CELERY_QUEUE = "default"  # Airflow's [operators] default_queue, the queue both workers consume
RUN_TIMEOUT = 300.0
COMPONENTS = ("metadatabase", "scheduler", "dag_processor")  # no triggerer in this deployment


@dataclass
class CeleryStack:
    """What the ``celery_stack`` fixture started."""

    pg: ThrowawayPostgres
    s3: LocalS3
    home: Path
    api: ApiClient
    procs: dict[str, subprocess.Popen[bytes]]
    uploaded: dict[str, int]  # key -> records
    started: dict[int, int] = field(default_factory=dict)  # pid -> start time, of every process seen

    def log(self, name: str, lines: int = 60) -> str:
        path = self.home / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "<no log>"
        return f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(self.log(name) for name in self.procs)


def _celery_env(pg: ThrowawayPostgres, s3: LocalS3, home: Path, port: int) -> dict[str, str]:
    base = dict(os.environ)
    base.update(prepare_airflow_home(home))
    base.update(airflow_connection_env(s3, pg, dbname="warehouse"))
    env = standalone_env(port, base=base)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/airflow",
            "AIRFLOW__CELERY__BROKER_URL": f"sqla+postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/celery",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/celery",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API__WORKERS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
    )
    return env


def _create_celery_tables(env: dict[str, str]) -> None:
    """Create the broker's and the result backend's tables before any worker starts.

    Both create them on first use, and two workers starting at once race on ``CREATE SEQUENCE``
    (one dies with a unique violation on ``pg_class``), then on the queue's row in ``kombu_queue``.
    """
    from celery.backends.database.session import SessionManager
    from kombu import Connection

    with Connection(env["AIRFLOW__CELERY__BROKER_URL"]) as broker:
        # Opening the session creates kombu_queue and kombu_message; declaring the workers' queue
        # adds its row, which two workers declaring it at once would both insert (a unique violation).
        broker.default_channel.queue_declare(queue=CELERY_QUEUE)
    backend_url = env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+")
    SessionManager().session_factory(backend_url).close()  # creates celery_taskmeta and celery_tasksetmeta


def _start(name: str, args: list[str], env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "wb") as out:
        return subprocess.Popen(
            [*airflow_command(), *args],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )


def _check_running(stack: CeleryStack) -> None:
    for name, proc in stack.procs.items():
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}\n{stack.log(name)}")


def _wait_healthy(stack: CeleryStack, base_url: str, timeout: float) -> None:
    """Until the api-server reports the metadata DB, scheduler and dag-processor healthy; fail at once if one exits."""
    deadline = time.monotonic() + timeout
    while True:
        _check_running(stack)
        try:
            wait_for_api(base_url, timeout=5, components=COMPONENTS)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _wait_for_workers(stack: CeleryStack, timeout: float = 180.0) -> None:
    """Until each worker's log says it is ready (so neither gets every task for starting first)."""
    deadline = time.monotonic() + timeout
    waiting = list(WORKERS)
    while waiting and time.monotonic() < deadline:
        _check_running(stack)
        for name in list(waiting):
            text = (stack.home / "logs" / f"{name}.log").read_text(errors="replace")
            if f"{name}@" in text and " ready." in text:
                waiting.remove(name)
        time.sleep(1)
    if waiting:
        pytest.fail(f"celery workers not ready after {timeout:.0f}s: {waiting}\n{stack.logs()}")


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryStack]:
    home = tmp_path_factory.mktemp("celery-home")
    with ExitStack() as stack:
        t0 = time.monotonic()
        # Five Airflow processes' pools, the broker's and the result backend's connections, the loads.
        pg = stack.enter_context(ThrowawayPostgres(settings={"max_connections": "200"}))
        for database in ("airflow", "celery", "warehouse"):
            pg.create_database(database)
        s3 = stack.enter_context(LocalS3())
        s3.create_bucket(BUCKET)
        uploaded: dict[str, int] = {}
        for part in range(PARTS):
            key = f"{PREFIX}part-{part}.jsonl.gz"
            s3.put_object(BUCKET, key, gzip_bytes(jsonl_bytes(RECORDS + part, seed=100 + part)))
            uploaded[key] = RECORDS + part
        # The scheduler creates the latest nightly run by itself (catchup=False): give it its file.
        for seed, day in enumerate(NIGHTLY_DATES, start=1):
            s3.put_object(BUCKET, object_key(day), gzip_bytes(jsonl_bytes(10, seed=seed)))

        port = find_free_port()
        env = _celery_env(pg, s3, home, port)
        migrate = subprocess.run(
            [*airflow_command(), "db", "migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=600
        )
        assert migrate.returncode == 0, (
            f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}"
        )
        _create_celery_tables(env)
        _timing("celery: services + metadata DB", time.monotonic() - t0)

        base_url = f"http://127.0.0.1:{port}"
        state = CeleryStack(pg, s3, home, ApiClient(base_url), {}, uploaded)
        stack.callback(_stop_and_check, state)
        t1 = time.monotonic()
        state.procs["api-server"] = _start("api-server", ["api-server", "--port", str(port)], env, home)
        state.procs["scheduler"] = _start("scheduler", ["scheduler", "--skip-serve-logs"], env, home)
        state.procs["dag-processor"] = _start("dag-processor", ["dag-processor"], env, home)
        for name in WORKERS:
            worker_env = {**env, WORKER_NAME_VAR: name}
            worker_env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.e2e.celery_worker_name.hostname"
            args = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1"]
            # The SQLAlchemy transport has no broadcast: no gossip, no mingle; task logs are read from disk.
            args += ["--without-gossip", "--without-mingle", "--skip-serve-logs"]
            state.procs[name] = _start(name, args, worker_env, home)
        try:
            _wait_healthy(state, base_url, timeout=300)
            wait_for_dag(base_url, DAG_ID, timeout=240, proc=state.procs["api-server"])
            _wait_for_workers(state)
        except (StandaloneError, TimeoutError) as err:
            pytest.fail(f"the Celery deployment did not start: {err}\n{state.logs()}")
        _timing("celery: api-server, scheduler, dag-processor, 2 workers ready", time.monotonic() - t1)
        yield state


def _stop_and_check(state: CeleryStack) -> None:
    t0 = time.monotonic()
    # The scheduler first (nothing new is queued), then the workers, then the rest.
    order = ["scheduler", *WORKERS, "dag-processor", "api-server"]
    for name in order:
        proc = state.procs.get(name)
        if proc is None:
            continue
        state.started.update(standalone_processes(proc))
        stop_standalone(proc)
    _timing(f"celery: stop ({len(state.started)} processes)", time.monotonic() - t0)
    left = alive(state.started)
    assert not left, f"processes of the Celery deployment still alive after stop: {left}"


def test_mapped_loads_run_on_both_celery_workers(celery_stack: CeleryStack) -> None:
    stack = celery_stack
    api = stack.api
    if api.get(f"/dags/{DAG_ID}")["is_paused"]:
        api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
    t0 = time.monotonic()
    created = api.post(
        f"/dags/{DAG_ID}/dagRuns",
        # The API transform in two forked worker processes per load task, inside Celery's prefork pool.
        {"logical_date": "2026-11-20T12:00:00Z", "conf": {"prefix": PREFIX, "table": TABLE, "transform_workers": 2}},
    )
    run_id = created["dag_run_id"]
    try:
        run = api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    except TimeoutError as err:
        pytest.fail(f"{err}\n{stack.logs()}")
    _timing(f"celery: run with {PARTS} mapped loads (queued -> {run['state']})", time.monotonic() - t0)
    assert run["state"] == "success", f"{api.describe(DAG_ID, run_id)}\n{stack.logs()}"

    tis = api.task_instances(DAG_ID, run_id)
    loads = [ti for ti in tis if ti["task_id"] == "load"]
    assert [ti["map_index"] for ti in loads] == list(range(PARTS))
    ran = [ti for ti in tis if ti["task_id"] != "discard_stage"]  # it runs only when a load fails
    assert {ti["state"] for ti in ran} == {"success"}
    assert [ti["state"] for ti in tis if ti["task_id"] == "discard_stage"] == ["skipped"]
    # Every task ran on a Celery worker (the hostname each worker reports), and the loads on both.
    assert {ti["hostname"] for ti in ran} <= set(WORKERS), [(ti["task_id"], ti["hostname"]) for ti in ran]
    assert {ti["hostname"] for ti in loads} == set(WORKERS), [(ti["map_index"], ti["hostname"]) for ti in loads]
    assert not api.retried(DAG_ID, run_id), "a task needed a retry"
    reports = [o for i in range(PARTS) for o in api.xcom(DAG_ID, run_id, "load", i)["objects"]]
    assert {(o["transform_workers"], o["workers_start_method"]) for o in reports} == {(2, "fork")}

    # The rows landed exactly: every object's records once, each object its own batch.
    with stack.pg.connect("warehouse") as conn:
        rows = conn.execute(
            f"SELECT source_key, count(*), count(DISTINCT source_line), min(source_line), max(source_line), "  # noqa: S608
            f"count(DISTINCT batch_id), min(batch_id) FROM {TABLE} GROUP BY source_key ORDER BY source_key"
        ).fetchall()
    expected = [(key, n, n, 1, n, 1, f"{run_id}:{key}") for key, n in sorted(stack.uploaded.items())]
    assert rows == expected


def test_celery_workers_logged_their_tasks(celery_stack: CeleryStack) -> None:
    """Each worker's own log shows it received and ran tasks of the DAG (what an operator would look at)."""
    for name in WORKERS:
        text = (celery_stack.home / "logs" / f"{name}.log").read_text(errors="replace")
        assert "execute_workload" in text, celery_stack.log(name)
        assert "succeeded" in text, celery_stack.log(name)
