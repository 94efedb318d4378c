"""Throwaway PostgreSQL server for tests, demos and benchmarks."""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from harness.service import Service

log = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"
DEFAULT_DBNAME = "postgres"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}


class PostgresServer(Protocol):
    """What callers may rely on from any PostgreSQL handle returned by the harness."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def dbname(self) -> str: ...
    @property
    def dsn(self) -> str: ...
    @property
    def uri(self) -> str: ...
    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def create_database(self, name: str) -> str: ...


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>`` directories."""
    return tuple(int(p) for p in re.findall(r"\d+", path.name)) or (-1,)


def find_pg_bin_dir() -> Path:
    """Locate the PostgreSQL server binaries (``initdb``, ``postgres``)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            out = ""
        if out and (Path(out) / "initdb").exists() and (Path(out) / "postgres").exists():
            return Path(out)
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin" / "initdb").exists()),
        key=_version_key,
    )
    if candidates:
        return candidates[-1] / "bin"
    initdb, server = shutil.which("initdb"), shutil.which("postgres")
    if initdb and server:
        return Path(initdb).parent
    raise FileNotFoundError("PostgreSQL server binaries (initdb/postgres) not found")


class _DsnMixin:
    """Shared connection-string helpers; subclasses supply host/port/user/dbname."""

    host: str
    user: str
    dbname: str

    @property
    def port(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def dsn_for(self, dbname: str) -> str:
        """libpq keyword/value string for ``dbname`` on this server."""
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    def uri_for(self, dbname: str) -> str:
        """``postgresql://`` URI for ``dbname`` on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def dsn(self) -> str:
        """libpq keyword/value DSN of the default database."""
        return self.dsn_for(self.dbname)

    @property
    def uri(self) -> str:
        """URI of the default database."""
        return self.uri_for(self.dbname)

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """Open a psycopg 3 connection (autocommit unless overridden)."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.dsn_for(dbname or self.dbname), **kwargs)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its DSN."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)


class ThrowawayPostgres(_DsnMixin, Service):
    """A private PostgreSQL server in a temp dir, removed on ``stop()``."""

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        bin_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        die_with_parent: bool = True,
    ) -> None:
        """Configure (but do not start) the server; ``settings`` become ``-c`` flags.

        ``die_with_parent`` wraps ``postgres`` in ``setpriv --pdeathsig SIGQUIT`` (when
        available) so it shuts down even if this process is SIGKILLed.  The signal fires
        when the *thread* that called ``start()`` exits, so start it from a long-lived one.
        """
        self.host = host
        self.user = PG_SUPERUSER
        self.dbname = DEFAULT_DBNAME
        self.settings: dict[str, str] = {**BASE_SETTINGS, "listen_addresses": host}
        self.settings.update(settings or {})
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self._requested_port = port
        self._port: int | None = None
        self._tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self._die_with_parent = die_with_parent

    # -- properties -------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """Directory holding ``initdb``/``postgres``."""
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin_dir()
        return self._bin_dir

    @property
    def port(self) -> int:
        """TCP port (only valid after ``start()``)."""
        if self._port is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        return self._port

    @property
    def data_dir(self) -> Path:
        """PGDATA directory."""
        return self._require_tmpdir() / "data"

    @property
    def socket_dir(self) -> Path:
        """Unix socket directory."""
        return self._require_tmpdir() / "sock"

    @property
    def log_path(self) -> Path:
        """Server log file."""
        return self._require_tmpdir() / "postgres.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _require_tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        return self._tmpdir

    # -- lifecycle --------------------------------------------------------
    def start(self) -> ThrowawayPostgres:
        """initdb + launch ``postgres`` in the foreground and wait until it accepts connections."""
        if self.running:
            return self
        t0 = time.monotonic()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="pgtmp-"))
        atexit.register(self.stop)
        try:
            self.socket_dir.mkdir()
            if self._as_root:
                for p in (self._tmpdir, self.socket_dir):
                    shutil.chown(p, user=PG_SUPERUSER, group=PG_SUPERUSER)
                self._tmpdir.chmod(0o755)
            self._initdb()
            self._launch_with_port_retry()
        except BaseException:
            self.stop()
            raise
        log.info(
            "PostgreSQL started on %s:%s (%s) in %.2fs",
            self.host,
            self._port,
            self._tmpdir,
            time.monotonic() - t0,
        )
        return self

    def _run_kwargs(self) -> dict[str, Any]:
        """Extra Popen kwargs to drop privileges when running as root."""
        if not self._as_root:
            return {}
        return {"user": PG_SUPERUSER, "group": PG_SUPERUSER, "extra_groups": []}

    def _initdb(self) -> None:
        base = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        attempts: Sequence[list[str]] = (["--locale=C.UTF-8"], ["--no-locale"])
        last: subprocess.CompletedProcess[str] | None = None
        for extra in attempts:
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            last = subprocess.run(
                [*base, *extra, "--no-sync"],
                capture_output=True,
                text=True,
                env=env,
                cwd=self._tmpdir,
                **self._run_kwargs(),
            )
            if last.returncode == 0:
                return
            log.debug("initdb %s failed: %s", extra, last.stderr)
        assert last is not None
        raise RuntimeError(f"initdb failed ({last.returncode}):\n{last.stdout}\n{last.stderr}")

    def _launch_with_port_retry(self, attempts: int = 3) -> None:
        """Launch and wait; on a lost free-port race (bind failure) retry with a new port."""
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or find_free_port(self.host)
            self._launch()
            try:
                self._wait_ready()
                return
            except RuntimeError:
                lost_race = "could not bind" in self.log_tail() or "already in use" in self.log_tail()
                if not lost_race or self._requested_port or attempt == attempts:
                    raise
                log.warning("port %s was taken; retrying PostgreSQL on another port", self._port)
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None

    def _launch(self) -> None:
        cmd = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        setpriv = shutil.which("setpriv") if self._die_with_parent else None
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "SIGQUIT", *cmd]
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self._proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._tmpdir,
            start_new_session=True,  # keep terminal Ctrl-C from hitting it twice
            **self._run_kwargs(),
        )

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as err:
                last_err = err
                time.sleep(0.05)
        raise TimeoutError(f"postgres not ready after {timeout:.0f}s ({last_err}):\n{self.log_tail()}")

    def restart(self) -> float:
        """Fast-restart the server on the same port and data (every session is terminated); return seconds."""
        t0 = time.monotonic()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("ThrowawayPostgres is not running")
        proc.send_signal(signal.SIGINT)  # fast shutdown: terminates sessions, rolls back their transactions
        proc.wait(timeout=STOP_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._launch()
        self._wait_ready()
        return time.monotonic() - t0

    def stop(self) -> None:
        """Fast-shutdown the server (SIGINT, SIGKILL after 10 s) and delete its files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("postgres did not stop in %ss; killing", STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._port = None
        atexit.unregister(self.stop)


class ExistingPostgres(_DsnMixin):
    """Handle on an already-running server (from ``POSTGRES_TEST_DSN``); start/stop are no-ops."""

    def __init__(self, dsn: str) -> None:
        """Parse ``dsn`` (keyword string or URI)."""
        params = conninfo_to_dict(dsn)
        self._params = params
        self.host = str(params.get("host") or "127.0.0.1")
        self._port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or PG_SUPERUSER)
        self.dbname = str(params.get("dbname") or self.user)
        self.password: str | None = str(params["password"]) if params.get("password") is not None else None

    @property
    def port(self) -> int:
        """TCP port."""
        return self._port

    def dsn_for(self, dbname: str) -> str:
        """DSN for ``dbname`` keeping all original parameters (password, sslmode, ...)."""
        return make_conninfo("", **{**self._params, "dbname": dbname})

    def uri_for(self, dbname: str) -> str:
        """URI for ``dbname`` (includes the password if one was given)."""
        auth = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def __enter__(self) -> ExistingPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self) -> ExistingPostgres:
        """No-op."""
        return self

    def stop(self) -> None:
        """No-op."""


def postgres_from_env(var: str = "POSTGRES_TEST_DSN") -> ExistingPostgres | None:
    """Return an ``ExistingPostgres`` for ``$POSTGRES_TEST_DSN`` or ``None`` if unset."""
    dsn = os.environ.get(var)
    return ExistingPostgres(dsn) if dsn else None
