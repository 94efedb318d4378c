"""``make demo`` and ``make airflow`` as a user runs them: what they print, what they write, what they leave behind.

Each runs ``python -m demo`` in a subprocess with its own ``TMPDIR`` (so a ``demo-airflow-*``
home left behind would be seen, whatever else runs on the machine) and its own log folder.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.standalone import airflow_command, alive, standalone_processes
from harness.postgres import find_free_port

from .conftest import _timing

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDS, CSV_RECORDS = 3000, 200
# What Airflow's own log lines look like (structlog's console format, stdlib logging, dag.test()).
AIRFLOW_LINE = re.compile(r"\[DAG TEST\]|\[(info|warning|error|debug)\s*\]|\bINFO\b|\bINFO -")


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """A ``TMPDIR`` of the demo's own; world-traversable, because its PostgreSQL runs as ``postgres`` when root."""
    path = Path(tempfile.mkdtemp(prefix="e2e-demo-tmp-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's env without the suite's Airflow settings and connections, with ``TMPDIR=tmp``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST"))}
    env.update({"TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", **extra})
    return env


def _leftovers(tmp: Path) -> list[str]:
    return sorted(path.name for path in tmp.iterdir() if path.name.startswith(("demo-airflow-", "pgtmp-")))


def test_make_demo_shows_progress_and_summary_and_logs_airflow_to_a_file(demo_tmp: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--records", str(RECORDS), "--csv-records", str(CSV_RECORDS)]
        + ["--log-dir", str(log_dir)],
        cwd=REPO_ROOT,
        env=_env(demo_tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    _timing("python -m demo (small)", time.monotonic() - t0)
    out = result.stdout
    assert result.returncode == 0, f"python -m demo failed:\n{out[-4000:]}\n{result.stderr[-4000:]}"

    # The summary, and a progress bar per load with its final figures.
    assert "Nightly run " in out
    assert "Manual run " in out
    assert out.count(": success") == 2, out
    assert f"provider_directory now holds {RECORDS + CSV_RECORDS} rows." in out
    bars = [line for line in out.splitlines() if "━" in line]
    assert len(bars) == 2, out
    assert f"{RECORDS:,}/{RECORDS:,}" in bars[0]
    assert f"{CSV_RECORDS:,}/{CSV_RECORDS:,}" in bars[1]
    assert all("rows/s" in bar and "success" in bar for bar in bars), bars
    # ... and nothing of Airflow's own logs, on either stream.
    noise = [line for line in (out + result.stderr).splitlines() if AIRFLOW_LINE.search(line)]
    assert not noise, f"Airflow log lines on the terminal: {noise[:10]}"
    assert len(out.splitlines()) < 40, out

    # Airflow's logs are in the file the demo names.
    named = re.search(r"Airflow's logs of these runs: (\S+)", out)
    assert named, out
    log_file = Path(named.group(1))
    assert log_file == log_dir / "demo.log"
    text = log_file.read_text(errors="replace")
    assert "[DAG TEST] starting task_id=load" in text
    assert "Loaded s3://imports/" in text
    assert len(text.splitlines()) > 50

    assert not _leftovers(demo_tmp), f"left in the temp folder: {_leftovers(demo_tmp)}"


def test_make_airflow_refuses_a_busy_port_before_starting_anything(demo_tmp: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "demo", "--standalone", "--log-dir", str(tmp_path / "logs")],
            cwd=REPO_ROOT,
            env=_env(demo_tmp, AIRFLOW__API__PORT=str(port)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1, result
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "logs").exists(), "it started before it checked the port"
    assert not list(demo_tmp.iterdir()), f"it created {list(demo_tmp.iterdir())} before it checked the port"


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, output: Path) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip().endswith("=" * 72):
            return path.read_text()
        if proc.poll() is not None:
            pytest.fail(f"python -m demo --standalone exited ({proc.returncode}):\n{output.read_text()[-4000:]}")
        time.sleep(1)
    pytest.fail(f"no banner in {path} after {timeout:.0f} s:\n{output.read_text()[-4000:]}")


def test_make_airflow_prints_its_banner_once_and_cleans_up(demo_tmp: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    terminal = tmp_path / "terminal.txt"
    port = find_free_port()
    t0 = time.monotonic()
    with open(terminal, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--standalone", "--records", "500", "--csv-records", "50"]
            + ["--log-dir", str(log_dir)],
            cwd=REPO_ROOT,
            env=_env(demo_tmp, AIRFLOW__API__PORT=str(port)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tracked: dict[int, int] = {}
    try:
        banner = _wait_for_file(log_dir / "standalone-banner.txt", proc, 300, terminal)
        _timing("python -m demo --standalone: banner", time.monotonic() - t0)
        tracked = standalone_processes(proc)  # the demo, airflow standalone and its components, PostgreSQL
        assert "Airflow standalone is up" in banner
        assert f"http://localhost:{port}/dags/s3_to_postgres_import" in banner
        home_match = re.search(r"export AIRFLOW_HOME=(\S+)", banner)
        assert home_match, banner
        home = Path(home_match.group(1))
        assert home.parent == demo_tmp
        assert home.name.startswith("demo-airflow-")
        assert "export AIRFLOW_CONN_AWS_DEFAULT=" in banner

        # The terminal shows the banner once and none of Airflow's component logs.
        shown = terminal.read_text()
        assert shown.count("Airflow standalone is up") == 1, shown
        noise = [line for line in shown.splitlines() if AIRFLOW_LINE.search(line)]
        assert not noise, f"Airflow log lines on the terminal: {noise[:10]}"
        components = (log_dir / "standalone.log").read_text(errors="replace")
        for component in ("scheduler", "api-server", "dag-processor", "triggerer"):
            assert component in components, f"no {component} output in standalone.log"

        # The CLI works against it with nothing but the printed export.
        today = dt.datetime.now(dt.UTC).date()
        cli = subprocess.run(
            [*airflow_command(), "backfill", "create", "--dag-id", "s3_to_postgres_import"]
            + ["--from-date", str(today - dt.timedelta(days=1)), "--to-date", str(today), "--dry-run"],
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "AIRFLOW_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert f"{today - dt.timedelta(days=1)} 02:00:00+00:00" in cli.stdout, cli.stdout[-2000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # what `kill` or a service manager sends; Ctrl-C takes the same path
        try:
            returncode = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert returncode == 0, terminal.read_text()[-3000:]
    assert "airflow standalone stopped" in terminal.read_text()
    assert not (log_dir / "standalone-banner.txt").exists(), "the banner of a stopped instance is still there"
    assert (log_dir / "standalone.log").exists()
    left = alive(tracked)
    assert not left, f"processes still alive after the demo stopped: {left}"
    assert not _leftovers(demo_tmp), f"left in the temp folder: {_leftovers(demo_tmp)}"
