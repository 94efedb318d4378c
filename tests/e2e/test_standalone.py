"""The DAG through a real ``airflow standalone``: REST API v2 runs, a backfill, and the UI in headless Chromium.

The ``standalone`` fixture (conftest) starts a throwaway PostgreSQL, a local S3 with one sample
file per date, and ``airflow standalone`` on a free port; all of it is stopped after the module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import BACKFILL_DATES, MANUAL_DATE, NIGHTLY_DATES, Standalone, _timing, object_key
from .support import DevToolsPage, assert_not_blank, chromium_screenshot, devtools_page

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "s3_to_postgres_import"
RUN_TIMEOUT = 180.0
# `make screenshots` sets E2E_SCREENSHOT_DIR=docs to refresh the committed pictures; tests alone keep the tree clean.
SCREENSHOT_DIR = Path(os.environ.get("E2E_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="e2e-screenshots-"))
from harness.dag_runs import SUCCESS_STATES  # noqa: E402


def _iso(day: dt.date, hour: int = 2) -> str:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC).isoformat()


def _rows(stack: Standalone, table: str, key: str) -> list[tuple[Any, ...]]:
    """(count, distinct batch ids, one batch id, distinct source lines) of ``table``'s rows from ``key``."""
    with stack.pg.connect() as conn:
        return conn.execute(
            f"SELECT count(*), count(DISTINCT batch_id), min(batch_id), count(DISTINCT source_line) "  # noqa: S608
            f"FROM {table} WHERE source_key = %s",
            [key],
        ).fetchall()


def _assert_loaded(stack: Standalone, table: str, key: str, run_id: str) -> None:
    records = stack.uploaded[key]
    count, batches, batch_id, lines = _rows(stack, table, key)[0]
    assert (count, batches, batch_id, lines) == (records, 1, run_id, records), (
        f"{table} rows for {key}: {count} rows, {batches} batch ids ({batch_id}), {lines} lines; "
        f"expected {records} rows of batch {run_id}"
    )


def _ensure_unpaused(stack: Standalone) -> dict[str, Any]:
    dag = stack.api.get(f"/dags/{DAG_ID}")
    if dag["is_paused"]:
        dag = stack.api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
    assert dag["is_paused"] is False
    return dag


def test_dag_is_listed_active_and_unpaused(standalone: Standalone) -> None:
    dag = _ensure_unpaused(standalone)
    assert dag["dag_id"] == DAG_ID
    assert dag["is_stale"] is False
    assert not standalone.api.get("/importErrors")["import_errors"]
    details = standalone.api.get(f"/dags/{DAG_ID}/details")
    assert set(details["params"]) >= {"bucket", "key", "prefix", "table", "format", "mode", "max_bad_rows"}
    # all-admins simple auth: the REST API needs no token (the client would fetch one on a 401)
    assert standalone.api.token_used is False
    # ... and the token endpoint a client without that knowledge would use works too
    token = requests.get(f"{standalone.base_url}/auth/token", timeout=30)
    assert token.status_code == 201, token.text
    with_token = requests.get(
        f"{standalone.base_url}/api/v2/dags/{DAG_ID}",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=30,
    )
    assert with_token.status_code == 200, with_token.text


def test_nightly_run_created_by_the_scheduler_succeeds(standalone: Standalone) -> None:
    """The scheduler creates the latest nightly run itself (catchup=False); its key is the Jinja default."""
    _ensure_unpaused(standalone)
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        runs = standalone.api.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})["dag_runs"]
        time.sleep(1)
    assert runs, "the scheduler created no scheduled run"
    run = standalone.api.wait_for_run(DAG_ID, runs[0]["dag_run_id"], timeout=RUN_TIMEOUT)
    day = dt.datetime.fromisoformat(run["logical_date"]).date()
    assert day in NIGHTLY_DATES
    assert run["state"] == "success", standalone.api.describe(DAG_ID, run["dag_run_id"])
    # It starts while the api-server may still be starting: its tasks must wait for it, not fail.
    assert not standalone.api.retried(DAG_ID, run["dag_run_id"]), "a task needed a retry"
    _assert_loaded(standalone, "provider_directory", object_key(day), run["dag_run_id"])


def test_trigger_run_with_conf(standalone: Standalone) -> None:
    _ensure_unpaused(standalone)
    t0 = time.monotonic()
    created = standalone.api.post(
        f"/dags/{DAG_ID}/dagRuns",
        {"logical_date": _iso(MANUAL_DATE, 12), "conf": {"table": "e2e_manual", "max_bad_rows": 0}},
    )
    run_id = created["dag_run_id"]
    assert created["conf"]["table"] == "e2e_manual"
    run = standalone.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    _timing("triggered run (queued -> success)", time.monotonic() - t0)
    assert run["state"] == "success", f"{run_id}: {standalone.api.describe(DAG_ID, run_id)}"
    assert standalone.api.task_states(DAG_ID, run_id) == SUCCESS_STATES
    assert not standalone.api.retried(DAG_ID, run_id), "a task needed a retry"
    _assert_loaded(standalone, "e2e_manual", object_key(MANUAL_DATE), run_id)

    xcom = standalone.api.get(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/load/xcomEntries/return_value",
        params={"map_index": 0, "deserialize": True},
    )
    stats = xcom["value"]
    assert stats["rows_copied"] == standalone.uploaded[object_key(MANUAL_DATE)]
    assert stats["batch_id"] == run_id
    assert stats["rows_rejected"] == 0


def test_backfill_two_dates(standalone: Standalone) -> None:
    _ensure_unpaused(standalone)
    first, last = BACKFILL_DATES
    t0 = time.monotonic()
    backfill = standalone.api.post(
        "/backfills",
        {
            "dag_id": DAG_ID,
            "from_date": _iso(first, 0),
            "to_date": _iso(last, 3),
            "dag_run_conf": {"table": "e2e_backfill"},
            "reprocess_behavior": "none",
            # A backfill's runs obey the backfill's max_active_runs (default 10), not the DAG's
            # max_active_runs=1: two runs creating the same new table at once collide in PostgreSQL
            # (CREATE TABLE IF NOT EXISTS is not concurrency-safe) and the loser needs a retry.
            "max_active_runs": 1,
        },
    )
    assert backfill["dag_id"] == DAG_ID
    deadline = time.monotonic() + 2 * RUN_TIMEOUT
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = standalone.api.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        if len(runs) == 2 and all(run["state"] in ("success", "failed") for run in runs):
            break
        time.sleep(2)
    _timing("backfill of 2 dates", time.monotonic() - t0)
    by_day = {dt.datetime.fromisoformat(run["logical_date"]).date(): run for run in runs}
    assert set(by_day) == set(BACKFILL_DATES), f"backfill runs: {[(r['dag_run_id'], r['state']) for r in runs]}"
    for day, run in sorted(by_day.items()):
        assert run["state"] == "success", f"{run['dag_run_id']}: {standalone.api.describe(DAG_ID, run['dag_run_id'])}"
        assert run["conf"]["table"] == "e2e_backfill"
        assert standalone.api.task_states(DAG_ID, run["dag_run_id"]) == SUCCESS_STATES
        assert not standalone.api.retried(DAG_ID, run["dag_run_id"]), "a task needed a retry"
        _assert_loaded(standalone, "e2e_backfill", object_key(day), run["dag_run_id"])
    deadline = time.monotonic() + 60
    while standalone.api.get(f"/backfills/{backfill['id']}")["completed_at"] is None:
        assert time.monotonic() < deadline, "the scheduler never marked the backfill complete"
        time.sleep(2)


# -- the UI in headless Chromium (after the runs, so the page shows them) ----------------------


def test_dag_page_screenshot(standalone: Standalone) -> None:
    path = SCREENSHOT_DIR / "dag-page.png"
    t0 = time.monotonic()
    dom = chromium_screenshot(f"{standalone.base_url}/dags/{DAG_ID}", path)
    _timing("chromium screenshot + DOM", time.monotonic() - t0)
    stats = assert_not_blank(path)
    # The SPA rendered the DAG (not a login page or an error): its id and its tasks are on the page.
    for text in (DAG_ID, "validate", "load", "check_row_count", "Trigger"):
        assert text in dom, f"{text!r} not in the rendered DAG page ({stats}); DOM starts: {dom[:1500]!r}"
    assert "Sign in" not in dom
    assert "Login" not in dom


TRIGGER_BUTTON = "document.querySelector('[data-testid=\"trigger-dag-button\"]')"
SUBMIT_BUTTON = "document.querySelector('[data-testid=\"trigger-dag-submit\"]')"
FORM_TEXT = (
    "Array.from(document.querySelectorAll('[role=dialog]'))"
    ".map(e => e.innerText).filter(t => t.includes('Run Parameters') && t.includes('S3 bucket'))[0] || ''"
)


def _open_trigger_form(page: DevToolsPage) -> str:
    """Click the DAG page's *Trigger* button; wait for the params form; return the dialog's text."""
    page.wait_for(f"{TRIGGER_BUTTON} !== null", what="the Trigger button")
    page.evaluate(f"{TRIGGER_BUTTON}.click()")
    page.wait_for(FORM_TEXT, what="the trigger dialog with its params form")
    page.wait_for(f"{SUBMIT_BUTTON} !== null", what="the dialog's Trigger button")
    time.sleep(1.0)  # the dialog's open animation, and the form's validation
    return str(page.evaluate(FORM_TEXT))


def _fill(page: DevToolsPage, element_id: str, value: str) -> None:
    """Type ``value`` into a React-controlled input (native setter + input event)."""
    page.evaluate(
        f"""(() => {{ const el = document.getElementById({json.dumps(element_id)});
        const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        set.call(el, {json.dumps(value)}); el.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"""
    )


def test_trigger_form_screenshot(standalone: Standalone) -> None:
    """The *Trigger* button opens the params form (a dialog: the UI has no URL of its own for it)."""
    path = SCREENSHOT_DIR / "trigger-form.png"
    with devtools_page(f"{standalone.base_url}/dags/{DAG_ID}") as page:
        text = _open_trigger_form(page)
        page.screenshot(path)
    for title in ("S3 bucket", "Object key", "Prefix (optional)", "Target table", "Format", "Mode", "Max bad rows"):
        assert title in text, f"{title!r} not in the trigger form: {text[:2000]!r}"
    assert_not_blank(path)


def test_trigger_form_defaults_are_valid(standalone: Standalone) -> None:
    """Every param's default passes the form's validation (an empty *required* field would disable Trigger)."""
    with devtools_page(f"{standalone.base_url}/dags/{DAG_ID}") as page:
        _open_trigger_form(page)
        assert page.evaluate(f"{SUBMIT_BUTTON}.disabled") is False, "Trigger is disabled with the form's defaults"


def test_trigger_through_the_form(standalone: Standalone) -> None:
    """Press Trigger in the browser with the form's defaults but another table: the run loads the date's file."""
    with devtools_page(f"{standalone.base_url}/dags/{DAG_ID}") as page:
        _open_trigger_form(page)
        _fill(page, "element_table", "e2e_form")
        page.wait_for(f"{SUBMIT_BUTTON}.disabled === false", what="an enabled Trigger button")
        page.evaluate(f"{SUBMIT_BUTTON}.click()")
        deadline = time.monotonic() + 30
        runs: list[dict[str, Any]] = []
        while not runs and time.monotonic() < deadline:
            manual = standalone.api.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "manual"})["dag_runs"]
            runs = [run for run in manual if (run.get("conf") or {}).get("table") == "e2e_form"]
            time.sleep(0.5)
    assert len(runs) == 1, "pressing Trigger in the form created no run (or several)"
    run = standalone.api.wait_for_run(DAG_ID, runs[0]["dag_run_id"], timeout=RUN_TIMEOUT)
    assert run["state"] == "success", standalone.api.describe(DAG_ID, run["dag_run_id"])
    # The form's logical date defaults to now: the key is the Jinja default for that date.
    day = dt.datetime.fromisoformat(run["logical_date"]).date()
    assert day in NIGHTLY_DATES
    _assert_loaded(standalone, "e2e_form", object_key(day), run["dag_run_id"])
