"""``transform_workers``: the record path in worker processes gives the same table and rejects as in-process.

Real PostgreSQL and S3. Each load is compared with the in-process load of the same object
(``transform_workers=0``): every row (line and document), every reject (line, raw text,
error), every count. The transform (``harness.transforms.picky_document``, the shipped API
transform refusing NPIs that end in 7) raises on about a tenth of the records; the objects
also hold blank lines and records that are not JSON objects or not CSV. Small reads and
blocks make many units, so order across workers is exercised.

This pytest process runs threads (the S3 server), so the pool's default start method here is
``spawn``; ``fork`` is forced where a test says so (``tests/integration/transform_child.py``
runs loads in a fresh single-threaded process, where ``fork`` is the default).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import simplejson

from harness.sample import csv_bytes, jsonl_lines
from harness.transforms import picky_document
from provider_directory.documents import build_provider_document
from s3_postgres_copy import pipeline
from s3_postgres_copy.exceptions import BadRecordError, ConfigurationError, LoadError
from s3_postgres_copy.stats import ACCOUNTED

from .helpers import IntegrationEnv, exact

if TYPE_CHECKING:
    from s3_postgres_copy.loader import LoadStats

pytestmark = pytest.mark.timeout(300)

PICKY = "harness.transforms:picky_document"
TRANSFORM_ERROR = "transform failed: LookupError: no such provider in the registry"
CHILD = Path(__file__).with_name("transform_child.py")
TOLERANT = {"max_bad_rows": 100_000}
READ_SIZE = 32 << 10  # 32 KiB reads: ~100 lines a block


@pytest.fixture(autouse=True)
def workers_from_the_first_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """These objects are small: let workers start at the first block (a load keeps the first two in-process)."""
    monkeypatch.setattr(pipeline, "IN_PROCESS_UNITS", 0)


def jsonl_object(n: int = 4000) -> bytes:
    lines = list(jsonl_lines(n, seed=21))
    lines.insert(10, b"\n")
    lines.insert(500, b"   \r\n")
    lines.insert(1200, b"[1, 2]\n")
    lines.insert(2500, b'{"npi": "1234567893", "rating": NaN}\n')
    lines.insert(3000, b"{not json\n")
    return b"".join(lines)


def csv_object(n: int = 3000) -> bytes:
    data = csv_bytes(n, seed=22)
    head, _, rest = data.partition(b"\r\n")
    rows = rest.split(b"\r\n")
    rows.insert(40, b"")  # a blank line
    rows.insert(700, b"1234567893,only,three")  # too few fields
    return head + b"\r\n" + b"\r\n".join(rows)


def load(
    env: IntegrationEnv,
    key: str,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    workers: int | None,
    transform: object = PICKY,
    method: str | None = None,
    **options: Any,
) -> LoadStats:
    """One load of ``key`` into ``table`` (``method`` forces the pool's start method)."""
    if method is not None:
        monkeypatch.setattr(pipeline, "default_start_method", lambda: method)
    try:
        return env.load(
            key,
            table,
            source=env.source(key, chunk_size=READ_SIZE),
            transform=transform,
            transform_workers=workers,
            **options,
        )
    finally:
        monkeypatch.undo()


def outcome(env: IntegrationEnv, table: str, stats: LoadStats) -> dict[str, Any]:
    """Everything a load left: rows, rejects, counts."""
    rejects = [(line, raw, error) for line, raw, error, _, _ in env.rejects(table)] if stats.rows_rejected else []
    return {
        "rows": [(line, doc) for line, doc, _, _ in env.rows(table)],
        "rejects": rejects,
        "counts": {name: getattr(stats, name) for name in (*ACCOUNTED, "lines_read", "rows_streamed")},
    }


def check_accounting(stats: LoadStats) -> None:
    assert stats.unaccounted_lines == 0
    assert sum(getattr(stats, name) for name in ACCOUNTED) == stats.lines_read


# (workers, transform, forced start method): what must give the reference's table and rejects.
VARIANTS = [
    pytest.param(1, PICKY, None, id="1-in-process"),
    pytest.param(2, PICKY, "spawn", id="2-dotted-spawn"),
    pytest.param(2, PICKY, "fork", id="2-dotted-fork"),
    pytest.param(2, picky_document, "spawn", id="2-callable-spawn"),
    pytest.param(3, picky_document, "fork", id="3-callable-fork"),
    pytest.param(2, lambda record: picky_document(record), "fork", id="2-lambda-fork"),
]


class TestSameResultAsInProcess:
    @pytest.mark.parametrize(("workers", "transform", "method"), VARIANTS)
    def test_json_lines(
        self,
        env: IntegrationEnv,
        table: str,
        monkeypatch: pytest.MonkeyPatch,
        workers: int,
        transform: object,
        method: str | None,
    ) -> None:
        key = "tw/providers.jsonl"
        data = jsonl_object()
        env.put(key, data)
        reference_stats = load(env, key, table, monkeypatch, workers=0, **TOLERANT)
        reference = outcome(env, table, reference_stats)
        env.drop(table)

        stats = load(env, key, table, monkeypatch, workers=workers, transform=transform, method=method, **TOLERANT)

        assert outcome(env, table, stats) == reference
        check_accounting(stats)
        assert (stats.transform_workers, stats.workers_start_method) == (
            (workers, method) if workers > 1 else (0, None)
        )
        # The reference itself is right: documents built from the exact records, rejects with their lines.
        lines = data.split(b"\n")
        assert reference_stats.blank_lines == 2
        picky = {n for n, raw in enumerate(lines, 1) if raw.startswith(b'{"npi":') and b'7",' in raw[:20]}
        errors = {line: error for line, _, error in reference["rejects"]}
        assert {line for line, error in errors.items() if error == TRANSFORM_ERROR} == picky - {2501}
        assert errors[1201] == "not a JSON object (got an array)"
        assert errors[2501].startswith("invalid JSON: ")
        assert errors[3001].startswith("invalid JSON: ")
        documents = {line: exact(doc) for line, doc in reference["rows"]}
        for line in list(documents)[::97]:
            built = build_provider_document(exact(lines[line - 1]))
            assert documents[line] == exact(simplejson.dumps(built, use_decimal=True))
        assert len(documents) + len(errors) + 2 == reference_stats.lines_read

    @pytest.mark.parametrize(("workers", "transform", "method"), VARIANTS)
    def test_csv(
        self,
        env: IntegrationEnv,
        table: str,
        monkeypatch: pytest.MonkeyPatch,
        workers: int,
        transform: object,
        method: str | None,
    ) -> None:
        key = "tw/providers.csv"
        env.put(key, csv_object())
        small_batches = {"s3_postgres_copy.encoders.BLOCK_BYTES": 16 << 10}  # parsed in the parent: ~60 batches
        for name, value in small_batches.items():
            monkeypatch.setattr(name, value)
        reference_stats = load(env, key, table, monkeypatch, workers=0, **TOLERANT)
        reference = outcome(env, table, reference_stats)
        env.drop(table)
        for name, value in small_batches.items():
            monkeypatch.setattr(name, value)

        stats = load(env, key, table, monkeypatch, workers=workers, transform=transform, method=method, **TOLERANT)

        assert outcome(env, table, stats) == reference
        check_accounting(stats)
        assert stats.transform_workers == (workers if workers > 1 else 0)
        counts = reference["counts"]
        assert (counts["header_lines"], counts["blank_lines"]) == (1, 1)
        assert counts["continuation_lines"] > 0
        errors = [error for _, _, error in reference["rejects"]]
        assert "expected 11 fields (the header's), got 3" in errors
        assert errors.count(TRANSFORM_ERROR) == len(errors) - 1 > 100

    def test_schema_without_transform(self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A schema alone is the record path too; its validator travels to spawned workers by pickle."""
        key = "tw/schema.jsonl"
        env.put(key, jsonl_object(1500))
        schema = {"type": "object", "required": ["npi"], "properties": {"npi": {"type": "string", "pattern": "[^7]$"}}}
        options = {**TOLERANT, "schema": schema}
        reference = outcome(env, table, load(env, key, table, monkeypatch, workers=0, transform=None, **options))
        env.drop(table)

        stats = load(env, key, table, monkeypatch, workers=2, transform=None, method="spawn", **options)

        assert outcome(env, table, stats) == reference
        assert stats.transform_workers == 2
        assert any(error.startswith("schema violation at npi") for _, _, error in reference["rejects"])


class TestStrictMode:
    @pytest.mark.parametrize(("workers", "method"), [(0, None), (2, "fork"), (2, "spawn")])
    def test_first_bad_record_fails_the_load_with_its_line(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch, workers: int, method: str | None
    ) -> None:
        key = "tw/strict.jsonl"
        data = jsonl_object()
        env.put(key, data)
        first_picky = next(
            n for n, raw in enumerate(data.split(b"\n"), 1) if raw.startswith(b'{"npi":') and b'7",' in raw[:20]
        )

        with pytest.raises(BadRecordError) as info:
            load(env, key, table, monkeypatch, workers=workers, method=method)

        assert info.value.line == first_picky
        assert info.value.reason == TRANSFORM_ERROR
        assert env.snapshot(table) in (None, [])

    def test_binary_rows_same_as_in_process(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = "tw/clean.jsonl"
        env.put(key, b"".join(jsonl_lines(3000, seed=23)))
        reference_stats = load(env, key, table, monkeypatch, workers=0, transform=build_provider_document)
        reference = outcome(env, table, reference_stats)
        env.drop(table)

        stats = load(env, key, table, monkeypatch, workers=2, transform=build_provider_document, method="spawn")

        assert stats.copy_format == reference_stats.copy_format == "binary"
        assert outcome(env, table, stats) == reference


class TestWhereWorkersAreNotUsed:
    def test_lines_without_transform_never_use_workers(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = "tw/fast.jsonl"
        env.put(key, b"".join(jsonl_lines(2000, seed=24)))
        started: list[int] = []
        monkeypatch.setattr(pipeline, "OrderedPool", lambda *args, **kwargs: started.append(1))

        stats = env.load(key, table, transform=None, transform_workers=4)

        assert (stats.rows_copied, stats.transform_workers, started) == (2000, 0, [])

    @pytest.mark.parametrize("workers", [0, 1])
    def test_zero_or_one_runs_in_process(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch, workers: int
    ) -> None:
        key = "tw/one.jsonl"
        env.put(key, b"".join(jsonl_lines(500, seed=25)))
        monkeypatch.setattr(pipeline, "OrderedPool", None)  # would fail if called

        stats = env.load(key, table, transform=PICKY, transform_workers=workers, **TOLERANT)

        assert stats.transform_workers == 0
        assert stats.rows_copied + stats.rows_rejected == 500

    def test_default_is_the_cpus_at_most_eight(self, env: IntegrationEnv, table: str) -> None:
        key = "tw/default.jsonl"
        env.put(key, b"".join(jsonl_lines(500, seed=26)))

        stats = env.load(key, table, transform=PICKY, **TOLERANT)

        expected = min(len(os.sched_getaffinity(0)), 8)
        assert stats.transform_workers == (expected if expected > 1 else 0)


def test_a_small_object_starts_no_worker(env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "IN_PROCESS_UNITS", 2)
    monkeypatch.setattr(pipeline, "OrderedPool", None)  # would fail if called
    env.put("tw/small.jsonl", b"".join(jsonl_lines(500, seed=27)))
    stats = env.load("tw/small.jsonl", table, transform=PICKY, transform_workers=2, **TOLERANT)
    assert (stats.transform_workers, stats.workers_start_method) == (1, "in-process (small object)")
    assert stats.rows_copied + stats.rows_rejected == 500


class TestSpawnNeedsAnImportableTransform:
    def test_lambda_refused_before_any_worker_starts(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = "tw/lambda.jsonl"
        env.put(key, b"".join(jsonl_lines(100, seed=27)))

        with pytest.raises(ConfigurationError) as info:
            load(env, key, table, monkeypatch, workers=2, transform=lambda r: r, method="spawn")

        message = str(info.value)
        for part in ("spawn", "cannot be pickled", "'package.module:function'", "transform_workers=1"):
            assert part in message
        assert env.snapshot(table) in (None, [])

    def test_function_of_a_dag_file_refused(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = "tw/dagfile.jsonl"
        env.put(key, b"".join(jsonl_lines(100, seed=28)))

        def in_a_dag_file(record: dict[str, Any]) -> dict[str, Any]:
            return record

        in_a_dag_file.__module__ = "unusual_prefix_0123456789abcdef_my_dag"  # how Airflow names a DAG file's module

        with pytest.raises(ConfigurationError, match="is defined in a DAG file"):
            load(env, key, table, monkeypatch, workers=2, transform=in_a_dag_file, method="spawn")


class TestServerRefusesARow:
    def test_bad_record_with_its_line_and_no_worker_left_once_released(
        self, env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The server's data error (numeric overflow) names the line; the pool is closed with the failed load."""
        key = "tw/overflow.jsonl"
        env.put(key, b"".join(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * 200) for n in range(1, 20_001)))
        before = children_of(os.getpid())

        with pytest.raises(BadRecordError) as info:
            load(env, key, table, monkeypatch, workers=2, transform="harness.transforms:overflowing_document")

        assert info.value.line == 1500
        assert "numeric" in info.value.reason
        assert env.snapshot(table) in (None, [])
        del info
        gc.collect()  # the traceback held the load's frames, and with them its block iterator and pool
        wait_for("the workers to be reaped", lambda: not alive(children_of(os.getpid()) - before), timeout=30)


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return out


def test_spawned_worker_that_cannot_import_the_transform(
    env: IntegrationEnv, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that exists only in this process (made at run time): the spawned worker says so, no retry."""
    key = "tw/nowhere.jsonl"
    env.put(key, b"".join(jsonl_lines(100, seed=32)))
    module = types.ModuleType("made_at_run_time")
    exec("def transform(record):\n    return record\n", module.__dict__)  # noqa: S102 - a test's module
    monkeypatch.setitem(sys.modules, "made_at_run_time", module)
    transform = module.transform

    with pytest.raises(ConfigurationError) as info:
        load(env, key, table, monkeypatch, workers=2, transform=transform, method="spawn")

    assert "could not load the transform" in str(info.value)
    assert "No module named 'made_at_run_time'" in str(info.value)
    assert env.snapshot(table) in (None, [])


# -- a load in a fresh process (fork by default): killed workers, a killed load -------------------------------


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                kids = {int(p) for p in (task / "children").read_text().split()}
            except (FileNotFoundError, ProcessLookupError):
                continue
            todo.extend(kids - out)
            out |= kids
    return out


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("Z", "X"):
            left.add(pid)
    return left


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_child(env: IntegrationEnv, key: str, table: str, **options: Any) -> subprocess.Popen[str]:
    url = env.factory(key, direct=True)()
    spec = {"dsn": env.postgres.dsn, "url": url, "bucket": env.bucket, "key": key, "table": table, "options": options}
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def copying(env: IntegrationEnv, table: str) -> bool:
    rows = env.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s", [f'COPY "{table}"%'])
    return bool(rows[0][0])


class TestFreshProcess:
    def test_default_start_method_is_fork_and_the_rows_are_the_same(self, env: IntegrationEnv, table: str) -> None:
        key = "tw/child.jsonl"
        env.put(key, jsonl_object(2000))
        reference = env.load(key, table, transform=PICKY, transform_workers=0, **TOLERANT)
        rows, rejects = env.rows(table), env.rejects(table)
        env.drop(table)

        child = start_child(env, key, table, transform=PICKY, transform_workers=2, **TOLERANT)
        out, err = child.communicate(timeout=120)

        assert child.returncode == 0, err
        stats = json.loads(out)
        assert (stats["transform_workers"], stats["workers_start_method"]) == (2, "fork")
        assert stats["rows_copied"] == reference.rows_copied
        assert env.rows(table) == rows
        assert [r[:3] for r in env.rejects(table)] == [r[:3] for r in rejects]

    def test_a_killed_worker_fails_the_load_with_nothing_committed(self, env: IntegrationEnv, table: str) -> None:
        key = "tw/kill-worker.jsonl"
        env.put(key, b"".join(jsonl_lines(200, seed=29)))
        env.load(key, table, transform=PICKY, **TOLERANT)  # an earlier, committed load of the object
        before = env.snapshot(table)
        env.put(key, b"".join(jsonl_lines(20_000, seed=30)))

        child = start_child(env, key, table, transform="harness.transforms:slow_document", transform_workers=2)
        try:
            wait_for("two workers", lambda: len(descendants(child.pid)) == 2)
            wait_for("the COPY", lambda: copying(env, table))
            workers = descendants(child.pid)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            out, err = child.communicate(timeout=120)
        finally:
            child.kill()

        assert child.returncode != 0
        assert "TransformWorkerError" in err
        assert f"transform worker process {victim} was killed by SIGKILL" in err
        assert "nothing was committed" in err
        assert env.snapshot(table) == before
        assert not alive(workers)

    def test_a_killed_load_leaves_no_worker_and_no_rows(self, env: IntegrationEnv, table: str) -> None:
        key = "tw/kill-load.jsonl"
        env.put(key, b"".join(jsonl_lines(20_000, seed=31)))

        child = start_child(env, key, table, transform="harness.transforms:slow_document", transform_workers=2)
        try:
            wait_for("two workers", lambda: len(descendants(child.pid)) == 2)
            wait_for("the COPY", lambda: copying(env, table))
            workers = descendants(child.pid)
            child.kill()
            child.communicate(timeout=60)
        finally:
            child.kill()

        wait_for("the workers to exit", lambda: not alive(workers), timeout=30)
        wait_for("the backend to end", lambda: not copying(env, table), timeout=30)
        assert env.snapshot(table) in (None, [])


def _load_in_billiard_grandchild(queue: Any, spec: dict[str, Any]) -> None:
    """In a daemonic billiard process (a Celery prefork worker), fork as Airflow's task runner does, and load."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            report: dict[str, Any] = {"threads": len(os.listdir("/proc/self/task"))}
            try:
                report["stats"] = _child_load(spec)
            except BaseException as err:  # noqa: BLE001 - reported to the test
                report["error"] = f"{type(err).__name__}: {err}"
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.waitpid(pid, 0)
    queue.put(json.loads(data))


def _child_load(spec: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    from s3_postgres_copy.loader import LoadOptions, load_object
    from s3_postgres_copy.source import HttpObjectSource

    url = spec["url"]
    options = LoadOptions(spec["bucket"], spec["key"], spec["table"], batch_id="celery", **spec["options"])
    with psycopg.connect(spec["dsn"]) as conn:
        stats = load_object(conn, HttpObjectSource(lambda: url, name=options.location), options)
    return stats.as_dict()


def test_load_in_a_fork_of_a_billiard_daemon(env: IntegrationEnv, table: str) -> None:
    """What a CeleryExecutor task does: a fork of a daemonic billiard worker starts the pool (fork)."""
    billiard = pytest.importorskip("billiard")
    key = "tw/celery.jsonl"
    env.put(key, jsonl_object(2000))
    reference = env.load(key, "ref_" + table, transform=PICKY, transform_workers=0, **TOLERANT)
    try:
        expected = [(line, doc) for line, doc, _, _ in env.rows("ref_" + table)]
    finally:
        env.drop("ref_" + table)
    spec = {
        "dsn": env.postgres.dsn,
        "url": env.factory(key, direct=True)(),
        "bucket": env.bucket,
        "key": key,
        "table": table,
        "options": {"transform": PICKY, "transform_workers": 2, **TOLERANT},
    }
    queue = billiard.get_context("fork").Queue()
    process = billiard.Process(target=_load_in_billiard_grandchild, args=(queue, spec), daemon=True)
    process.start()
    report = queue.get(timeout=120)
    process.join(30)

    assert "error" not in report, report["error"]
    stats = report["stats"]
    assert report["threads"] == 1
    assert (stats["transform_workers"], stats["workers_start_method"]) == (2, "fork")
    assert (stats["rows_copied"], stats["rows_rejected"]) == (reference.rows_copied, reference.rows_rejected)
    assert [(line, doc) for line, doc, _, _ in env.rows(table)] == expected


def test_a_load_error_is_a_load_error() -> None:
    """TransformWorkerError is transient (Airflow retries it) and a LoadError (the loader rolls back)."""
    from s3_postgres_copy.exceptions import TransformWorkerError, is_terminal

    err = TransformWorkerError("s3://b/k", "transform worker process 1 was killed by SIGKILL", "lines 1-9")
    assert isinstance(err, LoadError)
    assert not is_terminal(err)
    assert str(err) == (
        "Loading s3://b/k failed: transform worker process 1 was killed by SIGKILL (lines 1-9 were being encoded); "
        "nothing was committed"
    )
