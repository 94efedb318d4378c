"""``airflow standalone`` with its own throwaway PostgreSQL, local S3 and Airflow home, for the e2e tests."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import TYPE_CHECKING

import pytest

from demo.standalone import (
    DAG_ID,
    StandaloneError,
    alive,
    standalone_env,
    standalone_processes,
    start_standalone,
    stop_standalone,
    wait_for_api,
    wait_for_dag,
)
from harness.airflow_env import airflow_connection_env, prepare_airflow_home
from harness.postgres import ThrowawayPostgres, find_free_port
from harness.s3 import LocalS3
from harness.sample import gzip_bytes, jsonl_bytes

from .support import VIEWPORT, ApiClient, launch_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

BUCKET = "imports"
RECORDS = 300
TODAY = dt.datetime.now(dt.UTC).date()
# Past dates (relative to today, so they stay after the DAG's start_date and before now).
MANUAL_DATE = TODAY - dt.timedelta(days=10)
BACKFILL_DATES = (TODAY - dt.timedelta(days=6), TODAY - dt.timedelta(days=5))
# The scheduler creates the latest nightly run by itself at start-up (catchup=False): today's or
# yesterday's, depending on the hour. Both get a file so that run succeeds too.
NIGHTLY_DATES = (TODAY - dt.timedelta(days=1), TODAY)
# Historical files, long before the DAG's first nightly run: a manual run and a backfill must load them.
HISTORICAL_DATES = (dt.date(2024, 3, 4), dt.date(2024, 3, 5))


def object_key(day: dt.date) -> str:
    """The DAG's default key for logical date ``day``."""
    return f"imports/{day.isoformat()}/providers.jsonl.gz"


@dataclass
class Standalone:
    """What the ``standalone`` fixture started."""

    pg: ThrowawayPostgres
    s3: LocalS3
    home: Path
    base_url: str
    api: ApiClient
    proc: Popen[bytes]
    log_path: Path
    uploaded: dict[str, int]  # key -> records
    timings: dict[str, float] = field(default_factory=dict)

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _timing(name: str, seconds: float) -> None:
    print(f"\n[e2e timing] {name}: {seconds:.1f} s", file=sys.stderr)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """Throwaway PostgreSQL + local S3 + sample files + ``airflow standalone`` on a free port.

    Everything is stopped at the end of the module, also when a test or the start-up fails;
    processes of the standalone's group still alive after the stop fail the teardown.
    """
    home = tmp_path_factory.mktemp("standalone-home")
    log_path = home / "standalone.log"
    with ExitStack() as stack:
        t0 = time.monotonic()
        pg = stack.enter_context(ThrowawayPostgres())
        s3 = stack.enter_context(LocalS3())
        s3.create_bucket(BUCKET)
        uploaded: dict[str, int] = {}
        days = (MANUAL_DATE, *BACKFILL_DATES, *NIGHTLY_DATES, *HISTORICAL_DATES)
        for seed, day in enumerate(days, start=1):
            key = object_key(day)
            s3.put_object(BUCKET, key, gzip_bytes(jsonl_bytes(RECORDS + seed, seed=seed)))
            uploaded[key] = RECORDS + seed
        services_s = time.monotonic() - t0

        port = find_free_port()
        base = dict(os.environ)
        base.update(prepare_airflow_home(home))
        base.update(airflow_connection_env(s3, pg))
        env = standalone_env(port, base=base)
        base_url = f"http://127.0.0.1:{port}"
        log_file = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115 - closed by the ExitStack
        t1 = time.monotonic()
        proc = start_standalone(env, output=log_file)
        stack.callback(_stop_and_check, proc)
        state = Standalone(pg, s3, home, base_url, ApiClient(base_url), proc, log_path, uploaded)
        try:
            state.timings["api_ready"] = wait_for_api(base_url, timeout=240, proc=proc)
            wait_for_dag(base_url, DAG_ID, timeout=180, proc=proc)
        except (StandaloneError, TimeoutError) as err:
            pytest.fail(f"airflow standalone did not start: {err}\n--- log tail ---\n{state.log_tail()}")
        state.timings["services"] = services_s
        state.timings["standalone_ready"] = time.monotonic() - t1
        for name, seconds in state.timings.items():
            _timing(name, seconds)
        yield state


def _stop_and_check(proc: Popen[bytes]) -> None:
    started = standalone_processes(proc)
    t0 = time.monotonic()
    stop_standalone(proc)
    _timing(f"standalone_stop ({len(started)} processes)", time.monotonic() - t0)
    left = alive({**started, **standalone_processes(proc)})
    assert not left, f"processes of airflow standalone still alive after stop: {left}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's ``/usr/bin/chromium``) under Playwright, for the module's UI tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) and page, 1400x900, for one test."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(60_000)  # a 2-core machine under load: the SPA may take a while to render
    try:
        yield context.new_page()
    finally:
        context.close()
