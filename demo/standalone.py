"""``airflow standalone`` against the demo's throwaway PostgreSQL and local S3 (``make airflow``).

:func:`run_standalone` is what ``python -m demo --standalone`` calls: it starts ``airflow
standalone`` (it migrates the metadata DB, then runs api-server, scheduler, dag-processor and
triggerer; the executor is the LocalExecutor, which works on the SQLite metadata DB of the
demo's ``AIRFLOW_HOME`` because tasks talk to the execution API, not to the DB) in its own
process group, prints how to use the UI and the CLI once (and writes that banner to a file),
waits for Ctrl-C or SIGTERM, then stops it with everything it started. The components' own
output goes to the log file the caller set up (``logs/standalone.log``), not to the terminal,
so the banner stays in view. Start-up to a healthy API with the DAG parsed: 20-40 s on 2 cores.

The Airflow home gets an ``airflow.cfg`` holding the settings below, so that
``export AIRFLOW_HOME=<home>`` is all the ``airflow`` CLI needs to work on this instance (e.g.
``airflow backfill create``); commands that run tasks in the CLI process (``airflow dags
test``, ``airflow tasks test``) also need the ``AIRFLOW_CONN_*`` exports the banner prints.

With the DAG unpaused at creation, the scheduler at once creates the latest nightly run
(``catchup=False`` still runs the most recent schedule point); so the demo's sample is also
put under today's default key (``_ensure_todays_object``).

:func:`standalone_env`, :func:`start_standalone`, :func:`wait_for_api`, :func:`wait_for_dag`,
:func:`stop_standalone` and :func:`standalone_processes` are reused by ``tests/e2e``.

Settings (all through the environment, so every component sees the same values):

* ``AIRFLOW__API_AUTH__JWT_SECRET``: one random secret per session (an existing value is
  kept). The api-server checks the tokens the scheduler hands to task workers with it, so
  it must be the same in every component.
* ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True``: no login page, and the REST API
  accepts requests without a token (the auth manager's middleware adds an admin token).
* ``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False``.
* ``AIRFLOW__API__PORT`` (default 8080) and ``AIRFLOW__API__HOST`` (default ``127.0.0.1``).
* ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``: derived from the port; Airflow's default
  assumes ``http://localhost:8080``, so any other port would break every task.
* ``AIRFLOW__WORKERS__EXECUTION_API_RETRIES``/``_TIMEOUT``: the scheduler can start the
  first task before the api-server answers; the task waits for it instead of failing.
* ``AIRFLOW__CORE__PARALLELISM=8``: the LocalExecutor forks that many workers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import requests

from demo.progress import step

if TYPE_CHECKING:
    from rich.console import Console

    from harness.postgres import PostgresServer
    from harness.s3 import LocalS3

log = logging.getLogger(__name__)

DAG_ID = "s3_to_postgres_import"
BUCKET = "imports"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
HEALTH_PATH = "/api/v2/monitor/health"
COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
STOP_TIMEOUT_S = 20.0
LOG_NAME = "standalone.log"  # in the log folder: every component's output
BANNER_NAME = "standalone-banner.txt"  # in the log folder: what the banner says


class StandaloneError(RuntimeError):
    """``airflow standalone`` did not start, or exited early."""


def airflow_command() -> list[str]:
    """The ``airflow`` CLI of this interpreter's environment."""
    airflow_bin = Path(sys.executable).with_name("airflow")
    return [str(airflow_bin)] if airflow_bin.exists() else [sys.executable, "-m", "airflow"]


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    """Whether ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_port(env: Mapping[str, str] | None = None) -> str | None:
    """Why ``airflow standalone`` cannot take its port (``AIRFLOW__API__PORT``/``_HOST`` of ``env``), or ``None``."""
    env = os.environ if env is None else env
    port = int(env.get("AIRFLOW__API__PORT") or DEFAULT_PORT)
    host = env.get("AIRFLOW__API__HOST") or DEFAULT_HOST
    if port_is_free(port, host):
        return None
    return (
        f"Port {port} on {host} is in use: stop what uses it or pick another port, "
        f"e.g. AIRFLOW__API__PORT={port + 1} make airflow"
    )


def write_airflow_cfg(home: Path, env: Mapping[str, str]) -> Path:
    """Write ``env``'s ``AIRFLOW__SECTION__KEY`` settings to ``home/airflow.cfg``; return its path.

    Environment variables still win over the file: this only lets a shell that sets nothing
    but ``AIRFLOW_HOME`` see the same instance (metadata DB, dags folder, API URL).
    """
    sections: dict[str, dict[str, str]] = {}
    for name, value in sorted(env.items()):
        parts = name.split("__")
        if len(parts) != 3 or parts[0] != "AIRFLOW" or not parts[1] or not parts[2]:
            continue
        sections.setdefault(parts[1].lower(), {})[parts[2].lower()] = value.replace("%", "%%")
    lines = ["# Written by demo/standalone.py for this throwaway instance; removed with it.\n"]
    for section, values in sections.items():
        lines.append(f"\n[{section}]\n")
        lines.extend(f"{key} = {value}\n" for key, value in values.items())
    path = home / "airflow.cfg"
    path.write_text("".join(lines))
    path.chmod(0o600)  # holds the JWT secret
    return path


def standalone_env(
    port: int = DEFAULT_PORT,
    *,
    host: str | None = None,
    base: Mapping[str, str] | None = None,
    jwt_secret: str | None = None,
) -> dict[str, str]:
    """The environment for ``airflow standalone``: ``base`` (default ``os.environ``) plus the settings above.

    ``base`` must already hold the Airflow home settings (``AIRFLOW_HOME``, the SQLite
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, dags/plugins folders) and the ``AIRFLOW_CONN_*``
    connections. An ``AIRFLOW__API_AUTH__JWT_SECRET`` already in ``base`` is kept.
    """
    env = dict(os.environ if base is None else base)
    host = host or env.get("AIRFLOW__API__HOST") or DEFAULT_HOST
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - comparing, not binding
    env.update(
        {
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{client_host}:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": env.get("AIRFLOW__CORE__LOAD_EXAMPLES", "False"),
            # The LocalExecutor forks one worker per parallelism slot (32 by default) on the first task.
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "8"),
            # The DAG file is picked up within seconds, not the default 5 minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": env.get("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "30"),
            # The scheduler may hand out the first task before the api-server answers (it starts
            # last and its first request is slow on 2 cores): let the task's execution API client
            # wait for it instead of failing the task (defaults: 5 tries, 5 s timeout).
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": env.get("AIRFLOW__WORKERS__EXECUTION_API_RETRIES", "10"),
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": env.get("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30"),
            "AWS_EC2_METADATA_DISABLED": env.get("AWS_EC2_METADATA_DISABLED", "true"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # 64+ bytes: HS512 warns about shorter keys.
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    # ``airflow standalone`` starts its components as plain ``airflow ...``: find this venv's.
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    return env


def start_standalone(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    output: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``airflow standalone`` in a new process group; return its ``Popen``.

    ``env`` is typically :func:`standalone_env`'s result; a ``port`` different from its
    ``AIRFLOW__API__PORT`` is applied on top (with the matching execution API URL).
    ``output`` receives stdout and stderr (default: inherited, i.e. the terminal).
    Stop it with :func:`stop_standalone`.
    """
    env = dict(env)
    if port is not None and str(port) != env.get("AIRFLOW__API__PORT"):
        env = standalone_env(port, base=env)
    if "AIRFLOW_HOME" not in env:
        raise StandaloneError("AIRFLOW_HOME is not set in the environment for airflow standalone")
    return subprocess.Popen(
        [*airflow_command(), "standalone"],
        env=env,
        cwd=env["AIRFLOW_HOME"],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,  # its own process group: stopped as a whole, and the terminal's Ctrl-C is ours
    )


def _health(base_url: str) -> dict[str, Any] | None:
    try:
        response = requests.get(base_url.rstrip("/") + HEALTH_PATH, timeout=5)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    return dict(response.json())


def _unhealthy(health: Mapping[str, Any] | None, components: tuple[str, ...]) -> list[str]:
    if health is None:
        return ["api-server"]
    return [name for name in components if (health.get(name) or {}).get("status") != "healthy"]


def wait_for_api(
    base_url: str,
    timeout: float = 180.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    components: tuple[str, ...] = COMPONENTS,
    interval: float = 1.0,
) -> float:
    """Wait until ``base_url`` answers and every one of ``components`` reports healthy; return seconds waited.

    Raises :class:`StandaloneError` if ``proc`` exits first, :class:`TimeoutError` after
    ``timeout`` seconds (naming what was still not healthy).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    missing: list[str] = ["api-server"]
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StandaloneError(f"airflow standalone exited with code {proc.returncode} before it was ready")
        missing = _unhealthy(_health(base_url), components)
        if not missing:
            return time.monotonic() - t0
        time.sleep(interval)
    raise TimeoutError(f"Airflow at {base_url} not ready after {timeout:.0f}s; not healthy: {', '.join(missing)}")


def wait_for_dag(
    base_url: str,
    dag_id: str = DAG_ID,
    timeout: float = 120.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Wait until the dag-processor has stored ``dag_id``; return its ``GET /api/v2/dags/{dag_id}`` body.

    An import error for the DAG file fails at once with the error's text.
    """
    base = base_url.rstrip("/")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StandaloneError(f"airflow standalone exited with code {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            response = requests.get(f"{base}/api/v2/dags/{dag_id}", headers=headers, timeout=10)
            if response.status_code == 200:
                return dict(response.json())
            errors = requests.get(f"{base}/api/v2/importErrors", headers=headers, timeout=10)
            if errors.status_code == 200 and errors.json().get("import_errors"):
                raise StandaloneError(f"DAG import errors: {errors.json()['import_errors']}")
        time.sleep(1.0)
    raise TimeoutError(f"DAG {dag_id} did not appear at {base_url} within {timeout:.0f}s")


def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """``pid`` -> (ppid, pgid, start time, state) of every process, read from ``/proc``."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses; starttime is field 22
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[19]), fields[0])
    return table


def standalone_processes(proc: subprocess.Popen[bytes]) -> dict[int, int]:
    """Live processes of ``airflow standalone``: its process group plus all descendants (``pid`` -> start time).

    Descendants matter because task runners move to process groups of their own.
    """
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, (_, pgid, _, _) in table.items() if pgid == proc.pid}
    stack = [proc.pid, *found]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return {pid: table[pid][2] for pid in found if pid in table and table[pid][3] != "Z"}


def alive(processes: Mapping[int, int]) -> list[int]:
    """The ``pid``s of ``processes`` (``pid`` -> start time) that still run (same start time: no reused pid)."""
    table = _proc_table()
    return sorted(
        pid for pid, start in processes.items() if pid in table and table[pid][2] == start and table[pid][3] != "Z"
    )


def _describe(pids: list[int]) -> str:
    names = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmdline = "?"
        names.append(f"{pid} {cmdline[:80]}")
    return "; ".join(names)


def _signal_all(proc: subprocess.Popen[bytes], processes: Mapping[int, int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid in alive(processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_standalone(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop ``airflow standalone`` and every process it started; return its exit code.

    SIGTERM to its process group and to every descendant (each component and each task
    shuts down gracefully on it; ``airflow standalone`` itself only handles SIGINT, and its
    SIGINT path waits for running tasks to finish, so SIGTERM is what stops it promptly),
    then SIGKILL to whatever is left after ``timeout`` seconds.
    """
    tracked = standalone_processes(proc)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        left = alive(tracked)
        if not left:
            break
        if sig == signal.SIGKILL:
            log.warning("airflow standalone: still running %.0f s after SIGTERM, killing: %s", timeout, _describe(left))
        _signal_all(proc, tracked, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader
            tracked.update(standalone_processes(proc))
            if not alive(tracked):
                break
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return proc.returncode


def _default_port(port: int | None) -> int:
    if port is not None:
        return port
    return int(os.environ.get("AIRFLOW__API__PORT") or DEFAULT_PORT)


def _next_trigger_date() -> str:
    """``ds`` a manual run triggered now gets (the form's logical date defaults to now, UTC)."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def _bucket_listing(s3: LocalS3) -> list[tuple[str, int]]:
    response = s3.client().list_objects_v2(Bucket=BUCKET)
    return [(item["Key"], int(item["Size"])) for item in response.get("Contents", [])]


def _ensure_todays_object(s3: LocalS3) -> str | None:
    """Copy the demo's JSON-lines sample to today's default key, so *Trigger* works with the form's defaults."""
    listing = _bucket_listing(s3)
    keys = {key for key, _ in listing}
    target = f"imports/{_next_trigger_date()}/providers.jsonl.gz"
    if target in keys:
        return None
    source = next((key for key in sorted(keys) if key.endswith("providers.jsonl.gz")), None)
    if source is None:
        return None
    s3.client().copy_object(Bucket=BUCKET, Key=target, CopySource={"Bucket": BUCKET, "Key": source})
    return target


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _banner(url: str, home: Path, pg: PostgresServer, s3: LocalS3, seconds: float, log_dir: Path) -> str:
    objects = "\n".join(f"    s3://{BUCKET}/{key}  ({size / 1e6:.1f} MB)" for key, size in _bucket_listing(s3))
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)  # the demo's sample is yesterday's file
    connections = " ".join(
        f"{name}={_quote(value)}" for name, value in sorted(os.environ.items()) if name.startswith("AIRFLOW_CONN_")
    )
    airflow_bin = " ".join(airflow_command())
    return f"""
========================================================================
Airflow standalone is up ({seconds:.0f} s): open {url}
  DAG:        {url}/dags/{DAG_ID}
  Trigger:    the DAG page's "Trigger" button shows the params form (bucket, key, prefix,
              table, format, mode, max_bad_rows). The key defaults to
              imports/{{{{ ds }}}}/providers.jsonl.gz for the run's logical date; objects here:
{objects}
              e.g. key imports/<date>/providers.csv with format csv loads the CSV sample.
  REST API:   {url}/api/v2 (no login: every user is admin), docs at {url}/docs
  PostgreSQL: psql "{pg.dsn}"  (table provider_directory)
  S3:         {s3.endpoint_url} (bucket {BUCKET}, access key {s3.access_key})
  CLI:        in another shell, with this virtualenv's airflow ({airflow_bin}):
                export AIRFLOW_HOME={home}
                airflow backfill create --dag-id {DAG_ID} --from-date {yesterday} --to-date {today}
              (a run per date from --from-date up to, not including, --to-date; a date needs its
              file under imports/<date>/). For airflow dags test and airflow tasks test, which
              run tasks in the CLI process, also:
                export {connections}
  Logs:       Airflow's components: {log_dir / LOG_NAME}; task logs under {home}/logs
  This text:  {log_dir / BANNER_NAME}
Press Ctrl-C to stop Airflow, PostgreSQL and S3 (and remove {home}).
========================================================================
"""


class _Stop(Exception):
    """Raised from the SIGTERM handler to leave the wait loop."""


def run_standalone(
    home: str | Path,
    pg: PostgresServer,
    s3: LocalS3,
    port: int | None = None,
    *,
    log_dir: Path,
    console: Console,
) -> int:
    """Run ``airflow standalone`` until Ctrl-C/SIGTERM; return 0, or 1 if it failed or exited by itself.

    The Airflow home env and the ``AIRFLOW_CONN_*`` connections must already be in
    ``os.environ``, and this process's stdout/stderr already go to ``log_dir/standalone.log``
    (``airflow standalone`` inherits them); ``console`` is the terminal. The banner is printed
    once and written to ``log_dir/standalone-banner.txt``. The caller's context managers stop
    PostgreSQL and S3 afterwards.
    """
    home = Path(home)
    port = _default_port(port)
    env = standalone_env(port)
    host = env["AIRFLOW__API__HOST"]
    problem = check_port(env)
    if problem:
        console.print(problem)
        return 1
    write_airflow_cfg(home, env)
    log_path, banner_path = log_dir / LOG_NAME, log_dir / BANNER_NAME
    copied = _ensure_todays_object(s3)
    if copied:
        console.print(
            f"Copied the JSON-lines sample to s3://{BUCKET}/{copied} (the default key of a run triggered today)"
        )
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"  # noqa: S104
    client_url = f"http://127.0.0.1:{port}" if host in ("127.0.0.1", "0.0.0.0") else url  # noqa: S104

    def on_sigterm(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    t0 = time.monotonic()
    proc = start_standalone(env)
    code = 0
    try:
        try:
            with step(console, f"Starting airflow standalone on port {port} (30-60 s; its output: {log_path}) ..."):
                wait_for_api(client_url, timeout=300, proc=proc)
                wait_for_dag(client_url, proc=proc, timeout=180)
        except (StandaloneError, TimeoutError) as err:
            console.print(f"airflow standalone failed to start: {err}; its output is in {log_path}")
            return 1
        banner = _banner(url, home, pg, s3, time.monotonic() - t0, log_dir)
        banner_path.write_text(banner.lstrip("\n"))
        console.print(banner, soft_wrap=True, markup=False)
        returncode = proc.wait()
        console.print(f"airflow standalone exited by itself with code {returncode}; see {log_path}")
        code = 1
    except (KeyboardInterrupt, _Stop):
        console.print("\nStopping airflow standalone ...")
    finally:
        # A second Ctrl-C must not cut the (bounded: at most ~30 s) stop short and orphan processes.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            t1 = time.monotonic()
            stop_standalone(proc)
            banner_path.unlink(missing_ok=True)  # it describes a running instance; the log stays
            console.print(f"airflow standalone stopped in {time.monotonic() - t1:.1f} s")
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    return code
