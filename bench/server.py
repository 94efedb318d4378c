"""The benchmark's PostgreSQL side: server settings, resets between runs, CPU accounting, psql."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.procstat import STAT_SQL, machine_cpu, parse_stat
from harness.postgres import BASE_SETTINGS, ThrowawayPostgres
from s3_postgres_copy.sink import Columns, PostgresSink

TABLE = "bench_load"
BINARY_SUFFIX = ".pgcopy"
COLUMNS = Columns()
COPY_COLUMNS = ", ".join(name for _, name in COLUMNS.roles())

# On top of the harness's BASE_SETTINGS (fsync=off, synchronous_commit=off, full_page_writes=off):
# no checkpoint and no autovacuum during a measured load, so every contender meets the same server.
BENCH_SETTINGS: dict[str, str] = {
    "shared_buffers": "256MB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "autovacuum": "off",
    "maintenance_work_mem": "256MB",
}
REPORTED_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "max_wal_senders",
    "shared_buffers",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "maintenance_work_mem",
    "work_mem",
    "wal_compression",
    "server_encoding",
)
_STAT_LINE = re.compile(r"^\d+ \(postgres\) ")


def settings_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The ``-c`` settings a bench server starts with (BASE_SETTINGS are added by the harness)."""
    return {**BENCH_SETTINGS, **(extra or {})}


def start_server(extra: dict[str, str] | None = None) -> ThrowawayPostgres:
    """Start a throwaway server with the bench settings (plus ``extra``)."""
    return ThrowawayPostgres(settings=settings_for(extra)).start()


def effective_settings(pg: ThrowawayPostgres) -> dict[str, str]:
    """``SHOW`` of the settings that matter for a bulk load."""
    with pg.connect() as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in REPORTED_SETTINGS}  # type: ignore[index]


def server_version(pg: ThrowawayPostgres) -> str:
    """``SELECT version()``."""
    with pg.connect() as conn:
        return str(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]


def requested_settings(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Every ``-c`` flag the server got (harness base + bench + extra)."""
    return {**BASE_SETTINGS, **settings_for(extra)}


def create_table(pg: ThrowawayPostgres, table: str = TABLE, *, unlogged: bool = False) -> None:
    """Create ``table`` exactly as the sink does (columns, types and the source_key index)."""
    with pg.connect(autocommit=False) as conn:
        PostgresSink(conn, table, COLUMNS).prepare(create_table=True, with_rejects=False)
        if unlogged:
            conn.execute(f"ALTER TABLE {table} SET UNLOGGED")
        conn.commit()


def role_types(pg: ThrowawayPostgres, table: str = TABLE) -> dict[str, str]:
    """The type of each loaded column by role, read by the sink as a load reads it."""
    with pg.connect(autocommit=False) as conn:
        sink = PostgresSink(conn, table, COLUMNS)
        sink.prepare(create_table=False, with_rejects=False)
        conn.rollback()
        return sink.role_types()


def self_cpu() -> float:
    """CPU seconds of this process (all threads: the in-process S3 server included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class CpuWindow:
    """CPU accounting around one measured run: the machine, this process (S3 server) and children."""

    started: float = field(default_factory=time.monotonic)
    machine: tuple[float, float] = field(default_factory=machine_cpu)
    own: float = field(default_factory=self_cpu)
    children: float = 0.0

    def __post_init__(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = ru.ru_utime + ru.ru_stime

    def close(self) -> dict[str, float]:
        """Seconds elapsed and CPU seconds used since the window opened."""
        wall = time.monotonic() - self.started
        busy, steal = machine_cpu()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "wall": wall,
            "machine_busy": busy - self.machine[0],
            "machine_steal": steal - self.machine[1],
            "bench_process": self_cpu() - self.own,
            "children": ru.ru_utime + ru.ru_stime - self.children,
        }


class Admin:
    """An autocommit connection for resets between runs."""

    def __init__(self, pg: ThrowawayPostgres) -> None:
        self.pg = pg
        self.conn = pg.connect()

    def reset(self, *tables: str, sync: bool = True) -> float:
        """TRUNCATE, CHECKPOINT and ``sync``: every run starts from the same clean state; return seconds."""
        started = time.monotonic()
        for table in tables or (TABLE,):
            self.conn.execute(f"TRUNCATE {table}")
        self.conn.execute("CHECKPOINT")
        if sync:
            os.sync()
        return time.monotonic() - started

    def count(self, table: str = TABLE) -> int:
        """Rows in ``table``."""
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    def execute(self, query: str) -> None:
        """Run one statement."""
        self.conn.execute(query)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def psql_path(pg: ThrowawayPostgres) -> str:
    """psql from the server's bin directory, else from PATH."""
    candidate = Path(pg.bin_dir) / "psql"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("psql")
    if not found:
        raise FileNotFoundError("psql not found next to the server binaries nor on PATH")
    return found


def psql_version(pg: ThrowawayPostgres) -> str:
    """``psql --version``."""
    return subprocess.run([psql_path(pg), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def copy_command(path: Path, table: str = TABLE, options: str = "") -> str:
    """The psql ``\\copy`` meta-command loading ``path`` into ``table`` (the operator's columns).

    A ``.pgcopy`` file holds binary rows (``FORMAT binary``), anything else text rows.
    """
    if path.suffix == BINARY_SUFFIX:
        options = ", ".join(filter(None, ["FORMAT binary", options]))
    suffix = f" WITH ({options})" if options else ""
    return f"\\copy {table} ({COPY_COLUMNS}) FROM '{path}'{suffix}"


@dataclass
class PsqlResult:
    """One psql run: wall seconds, the server backend's CPU seconds, the CPU window."""

    seconds: float
    server_cpu: float
    cpu: dict[str, float]
    output: str


def run_psql(pg: ThrowawayPostgres, commands: list[str], *, options: str | None = None) -> PsqlResult:
    """Run ``commands`` in one psql session (reading the backend's CPU before and after); time it.

    The wall time is the psql process's: start, connect, two tiny SELECTs and the commands.
    ``options`` become ``PGOPTIONS`` (e.g. ``-c synchronous_commit=on``).
    """
    script = "\n".join([STAT_SQL, *commands, STAT_SQL]) + "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    env = dict(os.environ)
    if options:
        env["PGOPTIONS"] = options
    cmd = [psql_path(pg), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", pg.dsn, "-f", f.name]
    try:
        window = CpuWindow()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        cpu = window.close()
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed ({proc.returncode}): {proc.stderr.strip()[:2000]}")
    stats = [line for line in proc.stdout.splitlines() if _STAT_LINE.match(line)]
    server = parse_stat(stats[-1]) - parse_stat(stats[0]) if len(stats) >= 2 else float("nan")
    return PsqlResult(cpu["wall"], server, cpu, proc.stdout)


def connect_psycopg(pg: ThrowawayPostgres, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg 3 connection (autocommit off unless given)."""
    kwargs.setdefault("autocommit", False)
    return psycopg.connect(pg.dsn, **kwargs)
