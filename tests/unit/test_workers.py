"""``workers.OrderedPool``: order, bounded memory, errors, dead workers, no orphans, start methods.

Every test is bounded in time (pytest-timeout) and asserts no timings. Functions used with
``spawn`` are module-level so the new interpreter can import them (this module is on the
parent's ``sys.path``, which the pool hands on).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3_postgres_copy import workers
from s3_postgres_copy.workers import OrderedPool, RemoteTraceback, WorkerError, default_start_method

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
METHODS = pytest.mark.parametrize("method", workers.START_METHODS)
pytestmark = pytest.mark.timeout(120)


# -- functions the workers run (module level: importable by spawned workers) ---------------------


def square(x: int) -> int:
    return x * x


def uneven(x: int) -> tuple[int, int]:
    time.sleep(0.02 if x % 3 == 0 else 0.0)  # every third item is slow: results finish out of order
    return x, os.getpid()


def reverse(data: bytes) -> bytes:
    return data[::-1]


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise KeyError(f"bad item {x}")
    return x


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt from args
        super().__init__(f"needs two arguments: {a}, {b}")


def fail_unpicklable(x: int) -> int:
    raise Unpicklable(x, x)


def die_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def my_pid(_: object) -> int:
    return os.getpid()


# -- helpers -------------------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """Whether a process no longer runs (no /proc entry, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pids: list[int], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return all(gone(pid) for pid in pids)


def children(pid: int) -> set[int]:
    """Direct children of a process, from /proc."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            pass
    return out


def run_parent(code: str, timeout: float = 60.0) -> subprocess.Popen[str]:
    """Start a Python parent process running ``code`` (with plugins/ and this folder importable)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PLUGINS), str(Path(__file__).parent)]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    before = children(os.getpid())
    yield
    assert wait_gone(list(children(os.getpid()) - before), 10.0), "a test left worker processes behind"


# -- behaviour -----------------------------------------------------------------------------------


class TestOrder:
    @METHODS
    def test_order_kept_with_uneven_work(self, method: str) -> None:
        with OrderedPool(uneven, 3, start_method=method) as pool:
            out = list(pool.map(range(60)))
        assert [x for x, _ in out] == list(range(60))
        assert len({pid for _, pid in out}) > 1  # the work was shared

    @METHODS
    def test_big_items_both_ways(self, method: str) -> None:
        items = [bytes([i]) * (3 << 20) + b"end" for i in range(8)]  # larger than the socket buffers
        with OrderedPool(reverse, 2, in_flight=4, start_method=method) as pool:
            assert list(pool.map(items)) == [item[::-1] for item in items]

    def test_several_maps_and_empty_input(self) -> None:
        with OrderedPool(square, 2) as pool:
            assert list(pool.map([])) == []
            assert list(pool.map(range(5))) == [0, 1, 4, 9, 16]
            assert list(pool.map(iter([7]))) == [49]

    @pytest.mark.parametrize("count", [0, 1], ids=["zero", "one"])
    def test_zero_or_one_worker_runs_in_this_process(self, count: int) -> None:
        with OrderedPool(my_pid, count) as pool:
            assert pool.pids == []
            assert pool.start_method is None
            assert list(pool.map(range(3))) == [os.getpid()] * 3


class TestBoundedInFlight:
    @pytest.mark.parametrize(("count", "in_flight"), [(2, None), (3, 5), (2, 1)], ids=["default", "five", "one"])
    def test_items_pulled_lazily(self, count: int, in_flight: int | None) -> None:
        pulled = 0
        peak = 0
        yielded = 0

        def items() -> Iterator[int]:
            nonlocal pulled, peak
            for i in range(200):
                pulled += 1
                peak = max(peak, pulled - yielded)
                yield i

        with OrderedPool(square, count, in_flight=in_flight) as pool:
            limit = pool.in_flight
            results = pool.map(items())
            assert pulled == 0  # nothing happens before the first next()
            first = next(results)
            assert first == 0
            assert pulled <= limit
            yielded = 1
            for _ in results:
                yielded += 1
        assert limit == (in_flight or 2 * count)
        assert yielded == pulled == 200
        assert peak <= limit


class TestErrors:
    @METHODS
    def test_exception_re_raised_with_type_and_message(self, method: str) -> None:
        pool = OrderedPool(fail_on_seven, 2, start_method=method)
        pids = pool.pids
        got: list[int] = []
        with pytest.raises(KeyError, match="bad item 7") as caught:
            got.extend(pool.map(range(20)))
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "fail_on_seven" in caught.value.__cause__.text
        assert wait_gone(pids)  # the pool stopped
        with pytest.raises(RuntimeError, match="the pool is closed"):
            pool.map([1])

    def test_results_before_the_failure_were_yielded(self) -> None:
        got: list[int] = []
        with pytest.raises(KeyError), OrderedPool(fail_on_seven, 2) as pool:
            got.extend(pool.map(range(20)))
        assert got == list(range(7))

    def test_unpicklable_exception_becomes_worker_error(self) -> None:
        with pytest.raises(WorkerError, match=r"test_workers\.Unpicklable: needs two arguments: 0, 0"):
            with OrderedPool(fail_unpicklable, 2) as pool:
                list(pool.map(range(3)))

    @METHODS
    def test_worker_killing_itself(self, method: str) -> None:
        pool = OrderedPool(die_on_three, 3, start_method=method)
        pids = pool.pids
        with pytest.raises(WorkerError, match=r"was killed by SIGKILL while working on item 3; all 3 workers"):
            list(pool.map(range(50)))
        assert wait_gone(pids)

    @METHODS
    def test_worker_killed_from_outside(self, method: str) -> None:
        pool = OrderedPool(nap, 2, start_method=method)
        pids = pool.pids
        results = pool.map([0.0] + [30.0] * 4)
        assert next(results) == 0.0
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(WorkerError, match="was killed by SIGKILL"):
            next(results)
        assert wait_gone(pids)

    def test_spawn_needs_a_function_importable_by_name(self) -> None:
        offset = 3
        with pytest.raises(ValueError, match=r"start_method='spawn' needs func picklable by reference.*'fork'"):
            OrderedPool(lambda x: x + offset, 2, start_method="spawn")

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"workers": -1}, "workers must be an integer >= 0"),
            ({"workers": 2, "in_flight": 0}, "in_flight must be an integer >= 1"),
            ({"workers": 2, "start_method": "forkserver"}, "start_method must be one of fork, spawn or None"),
        ],
        ids=["negative-workers", "zero-in-flight", "unknown-method"],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], error: str) -> None:
        with pytest.raises(ValueError, match=error):
            OrderedPool(square, **kwargs)


class TestNoOrphans:
    @METHODS
    def test_consumer_stops_early(self, method: str) -> None:
        pool = OrderedPool(square, 2, start_method=method)
        pids = pool.pids
        results = pool.map(range(1000))
        assert [next(results) for _ in range(3)] == [0, 1, 4]
        results.close()
        assert all(gone(pid) for pid in pids)

    @pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt], ids=["exception", "keyboard-interrupt"])
    def test_consumer_raises(self, error: type[BaseException]) -> None:
        with pytest.raises(error):  # noqa: PT012 - the pool's context is what is tested
            with OrderedPool(nap, 2) as pool:
                pids = pool.pids
                for _ in pool.map([0.0, 0.0, 30.0, 30.0]):
                    raise error("consumer failed")
        assert all(gone(pid) for pid in pids)

    def test_close_without_map_and_twice(self) -> None:
        pool = OrderedPool(square, 3)
        pids = pool.pids
        assert len(set(pids)) == 3
        pool.close()
        pool.close()
        assert all(gone(pid) for pid in pids)

    def test_dropped_pool_is_reaped(self) -> None:
        pool = OrderedPool(square, 2)
        pids = pool.pids
        del pool  # the finalizer kills and reaps
        assert all(gone(pid) for pid in pids)

    def test_no_file_descriptor_left_open(self) -> None:
        before = len(os.listdir("/proc/self/fd"))
        for method in workers.START_METHODS:
            with OrderedPool(square, 2, start_method=method) as pool:
                list(pool.map(range(10)))
        assert len(os.listdir("/proc/self/fd")) == before

    @METHODS
    @pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
    def test_parent_sigkilled(self, method: str, busy: bool) -> None:
        parent = run_parent(
            f"""
            from s3_postgres_copy.workers import OrderedPool
            from test_workers import nap
            pool = OrderedPool(nap, 2, start_method={method!r})
            results = pool.map([60.0] * 4) if {busy} else None
            print(*pool.pids, flush=True)
            if results is not None:
                next(results)
            else:
                import time; time.sleep(60)
            """
        )
        try:
            assert parent.stdout is not None
            pids = [int(p) for p in parent.stdout.readline().split()]
            assert len(pids) == 2, parent.stderr.read() if parent.stderr else ""
            time.sleep(0.2)  # let the parent reach next() (busy) or sleep (idle)
            parent.kill()
            parent.wait(30)
            assert wait_gone(pids)
        finally:
            parent.kill()
            parent.wait(30)

    def test_idle_workers_exit_on_eof_without_pdeathsig(self) -> None:
        parent = run_parent(
            """
            from s3_postgres_copy import workers
            workers._pdeathsig_setter = lambda: None  # as on a system without prctl
            pool = workers.OrderedPool(abs, 2, start_method="fork")
            print(*pool.pids, flush=True)
            import time; time.sleep(60)
            """
        )
        try:
            assert parent.stdout is not None
            pids = [int(p) for p in parent.stdout.readline().split()]
            parent.kill()
            parent.wait(30)
            assert wait_gone(pids)
        finally:
            parent.kill()
            parent.wait(30)

    def test_real_sigint_stops_the_workers(self) -> None:
        parent = run_parent(
            """
            import os, signal, threading
            from s3_postgres_copy.workers import OrderedPool
            from test_workers import gone, nap
            # Python keeps SIGINT ignored when it starts with it ignored, and a test run's earlier
            # in-process Airflow code may leave it so in pytest: Ctrl-C's usual handler, whatever came in
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            pool = OrderedPool(nap, 2, start_method="fork")
            pids = pool.pids
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                list(pool.map([30.0] * 4))
            except KeyboardInterrupt:
                print("interrupted", all(gone(pid) for pid in pids), flush=True)
            """
        )
        out, err = parent.communicate(timeout=60)
        assert out.strip() == "interrupted True", err

    def test_workers_do_not_run_the_parents_atexit_handlers(self, tmp_path: Path) -> None:
        marks = tmp_path / "atexit.txt"
        parent = run_parent(
            f"""
            import atexit, os
            from s3_postgres_copy.workers import OrderedPool
            from test_workers import square
            atexit.register(lambda: open({str(marks)!r}, "a").write(f"{{os.getpid()}}\\n"))
            for method in ("fork", "spawn"):
                with OrderedPool(square, 2, start_method=method) as pool:
                    assert list(pool.map(range(10))) == [x * x for x in range(10)]
            print(os.getpid(), flush=True)
            """
        )
        out, err = parent.communicate(timeout=60)
        assert parent.returncode == 0, err
        assert marks.read_text().split() == [out.strip()]


class TestStartMethods:
    def test_closure_under_fork(self) -> None:
        offset = 10
        scale = {"k": 3}

        def closure(x: int) -> int:
            return x * scale["k"] + offset

        with OrderedPool(closure, 2, start_method="fork") as pool:
            assert list(pool.map(range(5))) == [10, 13, 16, 19, 22]
        negate: OrderedPool[int, int] = OrderedPool(lambda x: -x, 2, start_method="fork")
        with negate:
            assert list(negate.map(range(3))) == [0, -1, -2]

    def test_default_is_fork_with_one_thread(self) -> None:
        # In a fresh process: the suite's process may run other threads (Airflow's, the servers').
        parent = run_parent(
            """
            from s3_postgres_copy import workers
            from test_workers import square
            with workers.OrderedPool(square, 2) as pool:
                print(workers._thread_count(), workers.default_start_method(), pool.start_method,
                      list(pool.map(range(4))), flush=True)
            """
        )
        out, err = parent.communicate(timeout=60)
        assert out.strip() == "1 fork fork [0, 1, 4, 9]", err

    def test_default_is_spawn_when_threads_run(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            assert default_start_method() == "spawn"
            with OrderedPool(square, 2) as pool:
                assert pool.start_method == "spawn"
                assert list(pool.map(range(4))) == [0, 1, 4, 9]
        finally:
            stop.set()
            thread.join()

    def test_spawned_workers_get_the_parents_sys_path(self, tmp_path: Path) -> None:
        (tmp_path / "only_here_transform.py").write_text("def double(x):\n    return 2 * x\n")
        sys.path.insert(0, str(tmp_path))
        try:
            import only_here_transform  # type: ignore[import-not-found]

            with OrderedPool(only_here_transform.double, 2, start_method="spawn") as pool:
                assert list(pool.map(range(3))) == [0, 2, 4]
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("only_here_transform", None)

    def test_func_from_main_refused_by_spawn(self) -> None:
        def main_function(x: int) -> int:
            return x

        main_function.__module__ = "__main__"
        with pytest.raises(ValueError, match="defined in the __main__ script"):
            OrderedPool(main_function, 2, start_method="spawn")


def _pool_in_forked_grandchild(queue: Any) -> None:
    """In a daemonic process, fork (as Airflow's task runner does) and use pools there."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            report: dict[str, Any] = {}
            try:
                multiprocessing.get_context("fork").Process(target=print).start()
                report["multiprocessing"] = "started"
            except AssertionError as err:
                report["multiprocessing"] = str(err)
            for method in workers.START_METHODS:
                with OrderedPool(square, 2, start_method=method) as pool:
                    report[method] = list(pool.map(range(4)))
            os.write(write, pickle.dumps(report))
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.waitpid(pid, 0)
    queue.put(pickle.loads(data))


class TestDaemonicParents:
    """Celery's prefork workers are daemonic (billiard) processes; the task runs in a fork of one."""

    def check(self, report: dict[str, Any]) -> None:
        assert report["multiprocessing"] == "daemonic processes are not allowed to have children"
        assert report["fork"] == report["spawn"] == [0, 1, 4, 9]

    def test_in_a_fork_of_a_daemonic_multiprocessing_process(self) -> None:
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        process = ctx.Process(target=_pool_in_forked_grandchild, args=(queue,), daemon=True)
        process.start()
        report = queue.get(timeout=60)
        process.join(30)
        self.check(report)

    def test_in_a_fork_of_a_billiard_daemon(self) -> None:
        billiard = pytest.importorskip("billiard")
        queue = billiard.get_context("fork").Queue()
        process = billiard.Process(target=_pool_in_forked_grandchild, args=(queue,), daemon=True)
        process.start()
        report = queue.get(timeout=60)
        process.join(30)
        self.check(report)
