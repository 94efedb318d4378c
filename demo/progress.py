"""What the demo shows on the terminal: a progress bar per load, with Airflow's own output in a log file.

:class:`TerminalOutput` sends file descriptors 1 and 2 (so Airflow's task logs, which
``dag.test()`` writes to stdout in this process, and anything a library prints) to a log file,
and gives the demo a :class:`rich.console.Console` on the real terminal.

:class:`CopyProgress` polls PostgreSQL's ``pg_stat_progress_copy`` from a thread: the rows and
bytes the server has taken in so far, whoever runs the ``COPY``. The demo knows how many records
it generated, so the bar has a total, and the ETA is rows left / rows per second. A load is a
series of ``COPY`` segments on one backend: a counter that drops means a new segment began.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

if TYPE_CHECKING:
    from harness.postgres import PostgresServer

POLL_INTERVAL_S = 0.25
PROGRESS_QUERY = (
    "SELECT pid, tuples_processed, bytes_processed FROM pg_stat_progress_copy "
    "WHERE command = 'COPY FROM' AND datname = current_database()"
)


class TerminalOutput:
    """``with TerminalOutput(log_path) as console:`` fds 1 and 2 go to ``log_path``; ``console`` is the terminal.

    On the way out the descriptors are restored; an exception's traceback is written to the
    log too, and the exception goes on (Python prints it on the restored terminal).
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._saved: tuple[int, int] | None = None
        self._log: IO[bytes] | None = None
        self._terminal: IO[str] | None = None

    def __enter__(self) -> Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self._terminal = os.fdopen(os.dup(self._saved[0]), "w", encoding="utf-8", errors="replace", buffering=1)
        self._log = open(self.log_path, "wb", buffering=0)  # noqa: SIM115 - closed in __exit__
        os.dup2(self._log.fileno(), 1)
        os.dup2(self._log.fileno(), 2)
        # Not a terminal (a pipe, a file): lines as wide as a summary line, not 80 columns.
        width = None if self._terminal.isatty() else 120
        return Console(file=self._terminal, highlight=False, width=width, soft_wrap=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = None
        for stream in (self._terminal, self._log):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._terminal = self._log = None


@contextlib.contextmanager
def step(console: Console, text: str) -> Iterator[None]:
    """A spinner with ``text`` while the block runs (not ``console.status``: see below)."""
    # console.status() swaps sys.stdout/sys.stderr for proxies to the terminal while it spins,
    # and Airflow's logging, configured on first import, keeps the stream it saw: its task logs
    # would then reach the terminal for good. This spinner leaves both streams alone.
    spinner = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with spinner:
        spinner.add_task(text, total=None)
        yield


@dataclass
class _Counter:
    """Rows and bytes the server has taken in for the current load (over all its COPY segments)."""

    rows: int = 0
    bytes: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    # pid -> (tuples, bytes) of the COPY seen last; the finished segments' counts are in ``done_*``.
    current: dict[int, tuple[int, int]] = field(default_factory=dict)
    done_rows: int = 0
    done_bytes: int = 0

    def observe(self, rows: list[tuple[int, int, int]], now: float) -> None:
        seen = {}
        for pid, tuples, nbytes in rows:
            previous = self.current.get(pid)
            if previous is not None and (tuples < previous[0] or nbytes < previous[1]):
                self.done_rows += previous[0]  # a new segment began on this backend
                self.done_bytes += previous[1]
            seen[pid] = (int(tuples), int(nbytes))
        for pid, previous in self.current.items():
            if pid not in seen:  # that backend's COPY ended (its last counts are the ones seen)
                self.done_rows += previous[0]
                self.done_bytes += previous[1]
        self.current = seen
        if seen:
            self.first_seen = self.first_seen or now
            self.last_seen = now
        self.rows = self.done_rows + sum(t for t, _ in seen.values())
        self.bytes = self.done_bytes + sum(b for _, b in seen.values())


class RateColumn(ProgressColumn):
    """Rows/s and MB/s over the time the server was copying."""

    def render(self, task: Task) -> Text:
        seconds = task.fields.get("copy_seconds") or 0.0
        if seconds <= 0:
            return Text("", style="progress.data.speed")
        rows = task.completed / seconds
        nbytes = float(task.fields.get("bytes", 0))
        mb = f"{nbytes / 1e6 / seconds:4.1f} MB/s" if nbytes else ""  # none seen: the load was over between polls
        return Text(f"{rows:>7,.0f} rows/s {mb}", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """ETA = rows left / rate while loading; the load's time once it is done."""

    def render(self, task: Task) -> Text:
        seconds = float(task.fields.get("copy_seconds") or 0.0)
        if task.fields.get("state"):
            return Text(f"{task.fields['state']} {task.fields.get('wall_seconds', 0.0):.1f} s", style="bold")
        if seconds <= 0 or not task.completed or task.total is None:
            return Text("ETA --:--", style="progress.remaining")
        left = max(task.total - task.completed, 0) / (task.completed / seconds)
        return Text(f"ETA {int(left) // 60:d}:{int(left) % 60:02d}", style="progress.remaining")


class CopyProgress:
    """A rich progress display with one bar per load, fed from ``pg_stat_progress_copy``."""

    def __init__(self, pg: PostgresServer, console: Console, interval: float = POLL_INTERVAL_S) -> None:
        self.pg = pg
        self.interval = interval
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=12),
            TextColumn("{task.completed:>9,.0f}/{task.total:,.0f}"),
            RateColumn(),
            EtaColumn(),
            console=console,
            refresh_per_second=4,
            # rich would otherwise print whatever goes to sys.stdout/sys.stderr (Airflow's task logs)
            # above the bars while they show; here that belongs in the log file fds 1 and 2 point to.
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> CopyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def load(self, description: str, total_rows: int) -> Iterator[LoadBar]:
        """A bar for one load while the block runs; :meth:`LoadBar.finish` sets the final figures."""
        task_id = self.progress.add_task(description, total=max(total_rows, 1), bytes=0, copy_seconds=0.0)
        bar = LoadBar(self, task_id)
        thread = threading.Thread(target=bar.poll, name="copy-progress", daemon=True)
        thread.start()
        try:
            yield bar
        finally:
            bar.stop.set()
            thread.join(timeout=10)
            bar.finalize()


class LoadBar:
    """One load's bar; :meth:`poll` runs in a thread until :attr:`stop` is set."""

    def __init__(self, owner: CopyProgress, task_id: Any) -> None:
        self.owner = owner
        self.task_id = task_id
        self.stop = threading.Event()
        self.counter = _Counter()
        self.started = time.monotonic()
        self.final: dict[str, Any] | None = None
        self.error: str | None = None

    def poll(self) -> None:
        try:
            with self.owner.pg.connect(autocommit=True) as conn:
                while not self.stop.is_set():
                    rows = conn.execute(PROGRESS_QUERY).fetchall()
                    self.counter.observe([(int(p), int(t or 0), int(b or 0)) for p, t, b in rows], time.monotonic())
                    self._show()
                    self.stop.wait(self.owner.interval)
        except Exception as err:  # noqa: BLE001 - progress is a nicety; the load's outcome is reported anyway
            self.error = f"progress unavailable: {err}"

    def _copy_seconds(self) -> float:
        counter = self.counter
        if counter.first_seen is None or counter.last_seen is None:
            return 0.0
        return max(counter.last_seen - counter.first_seen, self.owner.interval)

    def _show(self) -> None:
        self.owner.progress.update(
            self.task_id,
            completed=self.counter.rows,
            bytes=self.counter.bytes,
            copy_seconds=self._copy_seconds(),
        )

    def finish(self, state: str, rows_copied: int | None = None, copy_seconds: float | None = None) -> None:
        """Record the load's outcome: its state and, from its stats, the rows it copied and its time."""
        self.final = {"state": state, "rows": rows_copied, "seconds": copy_seconds}

    def finalize(self) -> None:
        fields: dict[str, Any] = {"wall_seconds": time.monotonic() - self.started}
        final = self.final or {"state": "stopped"}
        fields["state"] = final["state"]
        if final.get("rows") is not None:
            fields["completed"] = final["rows"]
            if self.counter.rows and final["rows"]:
                # The poll misses the last moments of each segment: scale the bytes seen to the rows copied.
                fields["bytes"] = int(self.counter.bytes * final["rows"] / self.counter.rows)
        if final.get("seconds"):
            fields["copy_seconds"] = float(final["seconds"])
        self.owner.progress.update(self.task_id, **fields)
