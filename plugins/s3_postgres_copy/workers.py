"""An ordered, bounded process pool for the record path's transform (``transform_workers``).

:class:`OrderedPool` applies a function to items (blocks of records) in worker processes and
yields the results in input order, with a fixed number of items in flight whatever the input
size. It needs no Airflow and does not use :class:`multiprocessing.Process`: a Celery
prefork worker is a daemonic billiard process, billiard sets the stdlib's current process
to it, and every stdlib start method then refuses to start children, also in a process
``os.fork``-ed from it as Airflow's task runner is ("daemonic processes are not allowed to
have children"). Workers are started with ``os.fork`` or as a fresh interpreter
(:mod:`subprocess`), which have no such rule.

Start methods (``start_method=None`` picks one when the pool starts):

* ``"fork"`` when the process has one thread (counted in ``/proc/self/task``, so threads
  of C libraries count too): fast, and any callable works (a DAG file's function, a
  closure, a lambda). Forking while other threads run can copy a lock another thread
  holds, so a process with threads gets ``"spawn"``; create the pool before starting
  threads (e.g. a download thread) to keep ``"fork"``.
* ``"spawn"``: a new interpreter (``sys.executable``) with the parent's ``sys.path``;
  ``func`` must be picklable by reference (a module-level function of an importable
  module, e.g. the transform's ``"package.module:function"``), checked when the pool starts.

Workers never outlive the pool: closing it (also when the consumer stops iterating, raises,
or gets ``KeyboardInterrupt``) stops and reaps every worker; a worker that dies makes
:meth:`OrderedPool.map` raise :class:`WorkerError` at once and stops the others; and if
the parent dies (even by ``SIGKILL``) the workers exit: on Linux the kernel kills them
(``PR_SET_PDEATHSIG``), elsewhere they exit when their socket to the parent closes.

Worker processes ignore ``SIGINT`` (the parent handles Ctrl-C and stops them), restore the
default action of ``SIGTERM`` (a terminated process group takes them along) and leave
with ``os._exit``, so the parent's ``atexit`` handlers, finalizers and buffered output are
never run twice. The function must not use the parent's connections, Airflow's task
channel (``Variable.get``, XComs) or threads started before the fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = [
    "START_METHODS",
    "FunctionLoadError",
    "OrderedPool",
    "RemoteTraceback",
    "WorkerError",
    "default_start_method",
]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

START_METHODS = ("fork", "spawn")
"""The start methods :class:`OrderedPool` supports."""

CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`OrderedPool.close` waits for idle workers to exit before killing them."""

_HEADER = struct.Struct("<Q")
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_SOCKET_BUFFER = 4 << 20
_LOAD_FAILED = -1  # the index of the frame a spawned worker sends when it cannot load func
_PR_SET_PDEATHSIG = 1


class WorkerError(RuntimeError):
    """A worker process died, or failed in a way that cannot be re-raised as its own exception."""


class FunctionLoadError(WorkerError):
    """A spawned worker could not load the function (e.g. its module cannot be imported there)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, set as the re-raised exception's ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nthe worker's traceback:\n{self.text}"


def default_start_method() -> str:
    """``"fork"`` where ``os.fork`` exists and the process runs one thread, else ``"spawn"``."""
    if hasattr(os, "fork") and sys.platform != "darwin" and _thread_count() == 1:
        return "fork"
    return "spawn"


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class OrderedPool(Generic[T, R]):
    """Apply ``func`` to items in worker processes; results come back in input order.

    Worker processes start when the pool is created (so create it before starting threads
    to have ``fork``); use it as a context manager, or call :meth:`close`.

    :param func: item → result; both must be picklable (they travel over a socket).
        An exception it raises is re-raised by :meth:`map` (same type and message when
        picklable, else :class:`WorkerError`) and stops the pool.
    :param workers: worker processes; ``0`` or ``1`` runs ``func`` in this process.
    :param in_flight: items sent and not yet yielded, at most (default ``2 * workers``);
        memory is bounded by this many items and results.
    :param start_method: ``"fork"``, ``"spawn"`` or ``None`` (see :func:`default_start_method`).
    """

    def __init__(
        self,
        func: Callable[[T], R],
        workers: int,
        *,
        in_flight: int | None = None,
        start_method: str | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0 or 1 = in this process), got {workers!r}")
        if in_flight is not None and (not isinstance(in_flight, int) or in_flight < 1):
            raise ValueError(f"in_flight must be an integer >= 1, got {in_flight!r}")
        if start_method is not None and start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {', '.join(START_METHODS)} or None, got {start_method!r}")
        self.func = func
        self.workers = workers if workers > 1 else 0
        self.in_flight = in_flight if in_flight is not None else max(2 * self.workers, 1)
        self.start_method: str | None = None
        self._procs: list[_Worker] = []
        self._selector: selectors.BaseSelector | None = None
        self._closed = False
        self._mapping = False
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)  # if the pool is dropped unclosed
        if self.workers:
            self.start_method = start_method or default_start_method()
            self._start()

    # -- public --------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (empty when ``func`` runs in this process)."""
        return [w.pid for w in self._procs]

    def map(self, items: Iterable[T]) -> Generator[R, None, None]:
        """Yield ``func(item)`` for each item, in order, pulling items lazily.

        At most :attr:`in_flight` items are pulled and not yet yielded. Stopping early (the
        generator's ``close()``, an exception) stops the pool.

        :raises WorkerError: a worker died; the pool is stopped.
        :raises Exception: what ``func`` raised in a worker; the pool is stopped.
        """
        if self._closed:
            raise RuntimeError("the pool is closed; create a new OrderedPool")
        if self._mapping:
            raise RuntimeError("the pool is already mapping; one map() at a time")
        if not self.workers:
            return (self.func(item) for item in items)
        return self._map(iter(items))

    def close(self) -> None:
        """Let idle workers exit (waiting up to :data:`CLOSE_TIMEOUT`), kill the rest, reap them all."""
        self._shutdown(graceful=True)

    def terminate(self) -> None:
        """Kill the workers now and reap them."""
        self._shutdown(graceful=False)

    def __enter__(self) -> OrderedPool[T, R]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shutdown(graceful=exc_type is None)

    # -- starting ------------------------------------------------------------------------

    def _start(self) -> None:
        try:
            if self.start_method == "fork":
                self._fork_all()
            else:
                self._spawn_all()
        except BaseException:
            self._shutdown(graceful=False)
            raise
        self._selector = selectors.DefaultSelector()
        for worker in self._procs:
            self._selector.register(worker.sock, selectors.EVENT_READ, worker)

    def _fork_all(self) -> None:
        threads = _thread_count()
        if threads > 1:
            log.warning("Forking transform workers from a process with %s threads (start_method='fork')", threads)
        set_pdeathsig = _pdeathsig_setter()
        parent = os.getpid()
        _flush_std_streams()  # so that a child cannot write the parent's pending output again
        frozen_before = gc.get_freeze_count()
        gc.freeze()  # objects of the parent are never collected (and finalised) in a child
        try:
            for _ in range(self.workers):
                ours, theirs = _socketpair()
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    code = 1
                    try:
                        ours.close()
                        for other in self._procs:
                            other.sock.close()
                        _child_setup(set_pdeathsig, parent)
                        code = _serve(theirs, self.func)
                    except BaseException:  # noqa: BLE001 - a broken frame: say why, the parent sees the exit
                        traceback.print_exc()
                    finally:
                        _flush_std_streams()
                        os._exit(code)
                theirs.close()
                self._procs.append(_Worker(pid, ours, None))
        finally:
            if not frozen_before:  # leave a freeze of the application's (Airflow's) alone
                gc.unfreeze()

    def _spawn_all(self) -> None:
        if getattr(self.func, "__module__", None) == "__main__":
            raise ValueError(
                f"start_method='spawn' cannot load {func_name(self.func)} in a new interpreter (it is defined "
                "in the __main__ script); move it to an importable module, or use start_method='fork'"
            )
        try:
            payload = pickle.dumps(self.func, protocol=_PROTOCOL)
        except Exception as err:
            raise ValueError(
                f"start_method='spawn' needs func picklable by reference (a module-level function of an "
                f"importable module, e.g. 'package.module:function'); {func_name(self.func)} is not: {err}. "
                "Or create the pool before starting threads so that 'fork' is used."
            ) from err
        hello = pickle.dumps((list(sys.path), payload), protocol=_PROTOCOL)
        package_root = str(Path(__file__).resolve().parent.parent)
        for _ in range(self.workers):
            ours, theirs = _socketpair()
            try:
                popen = subprocess.Popen(
                    [sys.executable, "-c", _SPAWN_MAIN, package_root, str(theirs.fileno()), str(os.getpid())],
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    close_fds=True,
                )
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._procs.append(_Worker(popen.pid, ours, popen))
            ours.setblocking(True)
            _send_frame(ours, hello)
            ours.setblocking(False)

    # -- mapping -------------------------------------------------------------------------

    def _map(self, items: Iterator[T]) -> Generator[R, None, None]:
        self._mapping = True
        results: dict[int, R | _Failure] = {}
        sent = done = 0
        exhausted = False
        try:
            while True:
                while not exhausted and sent - done < self.in_flight:
                    try:
                        item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    worker = min(self._procs, key=_load)
                    worker.queue(sent, pickle.dumps((sent, item), protocol=_PROTOCOL))
                    self._flush(worker)
                    sent += 1
                if done in results:
                    result = results.pop(done)
                    if isinstance(result, _Failure):
                        raise _rebuild(result.packed)
                    done += 1
                    yield result
                elif exhausted and done == sent:
                    return
                else:
                    self._pump(results)
        except BaseException:
            self._shutdown(graceful=False)
            raise
        finally:
            self._mapping = False

    def _pump(self, results: dict[int, R | _Failure]) -> None:
        """Wait for I/O on the workers' sockets and do it; results land in ``results``."""
        assert self._selector is not None
        for key, events in self._selector.select():
            worker: _Worker = key.data
            if events & selectors.EVENT_WRITE:
                self._flush(worker)
            if events & selectors.EVENT_READ:
                for frame in worker.receive():
                    index, ok, value = pickle.loads(frame)
                    if index == _LOAD_FAILED:
                        raise _rebuild(value)
                    worker.sent.popleft()
                    results[index] = value if ok else _Failure(value)  # raised in its turn
                if worker.eof:
                    raise WorkerError(self._death(worker))

    def _flush(self, worker: _Worker) -> None:
        assert self._selector is not None
        try:
            pending = worker.send_some()
        except OSError as err:  # EPIPE, ECONNRESET: the worker is gone
            raise WorkerError(self._death(worker)) from err
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
        if events != worker.events:
            self._selector.modify(worker.sock, events, worker)
            worker.events = events

    def _death(self, worker: _Worker) -> str:
        status = worker.wait(timeout=2.0)
        item = f"item {worker.sent[0]}" if worker.sent else "no item"
        return (
            f"transform worker process {worker.pid} {_describe_status(status)} while working on {item}; "
            f"all {self.workers} workers are stopped. A worker killed by SIGKILL is often the "
            "out-of-memory killer: lower transform_workers or the block size"
        )

    # -- stopping ------------------------------------------------------------------------

    def _shutdown(self, *, graceful: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._selector is not None:
            self._selector.close()
        for worker in self._procs:
            worker.sock.close()  # an idle worker sees EOF and exits
        if graceful:
            deadline = time.monotonic() + CLOSE_TIMEOUT
            for worker in self._procs:
                worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        _kill_all(self._procs)
        self._finalizer.detach()


def func_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, for messages."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"


class _Failure:
    """What ``func`` raised for an item, kept until the item's turn comes."""

    __slots__ = ("packed",)

    def __init__(self, packed: tuple[bytes | None, str, str, str]) -> None:
        self.packed = packed


def _load(worker: _Worker) -> int:
    return len(worker.sent)


# -- the parent's side of one worker -------------------------------------------------------------


class _Worker:
    """A worker process, its socket and the frames in transit on it."""

    def __init__(self, pid: int, sock: socket.socket, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.sock = sock
        self.popen = popen
        self.status: int | None = None
        self.sent: deque[int] = deque()  # indexes sent and not answered, in order
        self.events = selectors.EVENT_READ
        self.eof = False
        self._out: deque[memoryview] = deque()
        self._head = bytearray(_HEADER.size)
        self._buf = self._head
        self._pos = 0
        self._in_body = False
        sock.setblocking(False)

    def queue(self, index: int, payload: bytes) -> None:
        self.sent.append(index)
        self._out.append(memoryview(_HEADER.pack(len(payload))))
        self._out.append(memoryview(payload))

    def send_some(self) -> bool:
        """Send what the socket takes now; whether something is left to send."""
        out = self._out
        while out:
            try:
                n = self.sock.send(out[0])
            except BlockingIOError:
                return True
            if n < len(out[0]):
                out[0] = out[0][n:]
                return True
            out.popleft()
        return False

    def receive(self) -> list[bytearray]:
        """The frames that are complete after reading what the socket has; sets ``eof``."""
        frames: list[bytearray] = []
        while True:
            view = memoryview(self._buf)[self._pos :]
            try:
                n = self.sock.recv_into(view)
            except BlockingIOError:
                return frames
            except ConnectionResetError:
                n = 0
            if n == 0:
                self.eof = True
                return frames
            self._pos += n
            if self._pos < len(self._buf):
                continue
            if self._in_body:
                frames.append(self._buf)
                self._buf, self._pos, self._in_body = self._head, 0, False
            else:
                (size,) = _HEADER.unpack(self._head)
                self._buf, self._pos, self._in_body = bytearray(size), 0, True
                if size == 0:
                    frames.append(self._buf)
                    self._buf, self._in_body = self._head, False

    def poll(self) -> int | None:
        """The wait status if the process has exited (and is reaped), else ``None``."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else
                self.status = -1
            else:
                if pid:
                    self.status = status
            if self.status is not None and self.popen is not None:
                self.popen.returncode = -1 if self.status == -1 else os.waitstatus_to_exitcode(self.status)
        return self.status

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.status


def _kill_all(procs: list[_Worker]) -> None:
    """SIGKILL every worker still running, then reap them all (a killed process exits at once)."""
    for worker in procs:
        worker.sock.close()
        if worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
    for worker in procs:
        if worker.wait(timeout=10.0) is None:  # pragma: no cover - an uninterruptible sleep
            log.warning("Transform worker process %s did not exit after SIGKILL", worker.pid)


def _describe_status(status: int | None) -> str:
    if status is None:
        return "closed its connection"
    if status == -1:
        return "exited"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _socketpair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in (ours, theirs):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    return ours, theirs


# -- exceptions across the socket ----------------------------------------------------------------


def _pack_error(err: BaseException) -> tuple[bytes | None, str, str, str]:
    """``(pickled exception or None, type name, message, traceback text)``."""
    text = "".join(traceback.format_exception(err))
    name = f"{type(err).__module__}.{type(err).__qualname__}"
    pickled: bytes | None
    try:
        pickled = pickle.dumps(err, protocol=_PROTOCOL)
        pickle.loads(pickled)  # some exceptions pickle but do not unpickle
    except Exception:  # noqa: BLE001 - then the parent gets the name and message
        pickled = None
    return pickled, name, str(err), text


def _rebuild(packed: tuple[bytes | None, str, str, str]) -> BaseException:
    pickled, name, message, text = packed
    error: BaseException | None = None
    try:
        error = pickle.loads(pickled) if pickled is not None else None
    except Exception:  # noqa: BLE001 - then WorkerError with the name and message
        error = None
    if not isinstance(error, BaseException):
        error = WorkerError(f"{name}: {message}")
    error.__cause__ = RemoteTraceback(text)
    return error


# -- the worker's side ---------------------------------------------------------------------------


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A function asking Linux to SIGKILL the calling process when its parent dies, or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


def _child_setup(set_pdeathsig: Callable[[], None] | None, parent: int) -> None:
    """Signals and parent-death handling for a worker process."""
    if set_pdeathsig is not None:
        set_pdeathsig()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)  # the parent's event loop must not get the child's signals
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    buf = bytearray(size)
    view = memoryview(buf)
    pos = 0
    while pos < size:
        n = sock.recv_into(view[pos:])
        if n == 0:
            return None
        pos += n
    return buf


def _recv_frame(sock: socket.socket) -> bytearray | None:
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    return _recv_exact(sock, _HEADER.unpack(head)[0])


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)))
    sock.sendall(payload)


def _serve(sock: socket.socket, func: Callable[[Any], Any]) -> int:
    """Answer frames until the parent closes the socket; the process's exit code."""
    sock.setblocking(True)
    while True:
        try:
            frame = _recv_frame(sock)
        except OSError:
            return 1
        if frame is None:
            return 0
        index, item = pickle.loads(frame)
        try:
            reply: tuple[int, bool, Any] = (index, True, func(item))
            payload = pickle.dumps(reply, protocol=_PROTOCOL)
        except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
            payload = pickle.dumps((index, False, _pack_error(err)), protocol=_PROTOCOL)
        del frame, item
        try:
            _send_frame(sock, payload)
        except OSError:
            return 1
        del payload


def _spawned(fd: int, parent: int) -> None:
    """The body of a spawned worker: load ``func`` as the parent sent it, then serve."""
    _child_setup(_pdeathsig_setter(), parent)
    sock = socket.socket(fileno=fd)
    code = 1
    try:
        hello = _recv_frame(sock)
        if hello is None:
            code = 0
            return
        path, payload = pickle.loads(hello)
        sys.path[:] = path + [p for p in sys.path if p not in path]
        try:
            func = pickle.loads(payload)
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            load_error = FunctionLoadError(f"the worker could not load the function: {type(err).__name__}: {err}")
            _send_frame(sock, pickle.dumps((_LOAD_FAILED, False, _pack_error(load_error)), protocol=_PROTOCOL))
            return
        code = _serve(sock, func)
    except BaseException:  # noqa: BLE001 - a broken frame: say why, the parent sees the exit
        traceback.print_exc()
    finally:
        _flush_std_streams()
        os._exit(code)


_SPAWN_MAIN = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from s3_postgres_copy.workers import _spawned; _spawned(int(sys.argv[2]), int(sys.argv[3]))"
)
