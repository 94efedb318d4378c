"""The DAG through a real ``airflow standalone``: REST API v2 runs, a backfill, and the UI in a real browser.

The browser is Debian's headless Chromium driven by Playwright (``browser``/``page`` fixtures).

The ``standalone`` fixture (conftest) starts a throwaway PostgreSQL, a local S3 with one sample
file per date, and ``airflow standalone`` on a free port; all of it is stopped after the module.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from playwright.sync_api import expect

from harness.sample import csv_bytes

from .conftest import (
    BACKFILL_DATES,
    BUCKET,
    HISTORICAL_DATES,
    MANUAL_DATE,
    NIGHTLY_DATES,
    Standalone,
    _timing,
    object_key,
)
from .support import assert_not_blank

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "s3_to_postgres_import"
RUN_TIMEOUT = 180.0
from harness.dag_runs import SUCCESS_STATES  # noqa: E402


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make screenshots` sets E2E_SCREENSHOT_DIR=docs to refresh the committed pictures; else pytest's temp folder."""
    configured = os.environ.get("E2E_SCREENSHOT_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("e2e-screenshots")


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


def _backfill(
    standalone: Standalone, first: dt.date, last: dt.date, table: str
) -> tuple[dict[str, Any], dict[dt.date, Any]]:
    """A real backfill of ``first``..``last`` through the REST API; the backfill and its finished runs by date."""
    backfill = standalone.api.post(
        "/backfills",
        {
            "dag_id": DAG_ID,
            "from_date": _iso(first, 0),
            "to_date": _iso(last, 3),
            "dag_run_conf": {"table": table},
            "reprocess_behavior": "none",
            # One run at a time, as the DAG's max_active_runs=1 (a backfill's runs obey its own setting).
            "max_active_runs": 1,
        },
    )
    assert backfill["dag_id"] == DAG_ID
    days = {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    deadline = time.monotonic() + 2 * RUN_TIMEOUT
    by_day: dict[dt.date, Any] = {}
    while time.monotonic() < deadline:
        runs = standalone.api.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        by_day = {day: run for run in runs if (day := dt.datetime.fromisoformat(run["logical_date"]).date()) in days}
        if len(by_day) == len(days) and all(run["state"] in ("success", "failed") for run in by_day.values()):
            break
        time.sleep(2)
    return backfill, by_day


def test_backfill_two_dates(standalone: Standalone) -> None:
    _ensure_unpaused(standalone)
    first, last = BACKFILL_DATES
    t0 = time.monotonic()
    backfill, by_day = _backfill(standalone, first, last, "e2e_backfill")
    _timing("backfill of 2 dates", time.monotonic() - t0)
    runs = list(by_day.values())
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


def test_historical_dates_load_by_hand_and_by_backfill(standalone: Standalone) -> None:
    """Dates long before the first nightly run: a manual run loads its file, and so does a real backfill."""
    _ensure_unpaused(standalone)
    manual_day, backfill_day = HISTORICAL_DATES
    created = standalone.api.post(
        f"/dags/{DAG_ID}/dagRuns", {"logical_date": _iso(manual_day), "conf": {"table": "e2e_history"}}
    )
    run = standalone.api.wait_for_run(DAG_ID, created["dag_run_id"], timeout=RUN_TIMEOUT)
    assert run["state"] == "success", standalone.api.describe(DAG_ID, run["dag_run_id"])
    assert standalone.api.task_states(DAG_ID, run["dag_run_id"]) == SUCCESS_STATES
    _assert_loaded(standalone, "e2e_history", object_key(manual_day), run["dag_run_id"])

    backfill, by_day = _backfill(standalone, backfill_day, backfill_day, "e2e_history")
    runs = list(by_day.values())
    assert [r["state"] for r in runs] == ["success"], backfill
    assert standalone.api.task_states(DAG_ID, runs[0]["dag_run_id"]) == SUCCESS_STATES
    _assert_loaded(standalone, "e2e_history", object_key(backfill_day), runs[0]["dag_run_id"])


# -- the UI in headless Chromium, driven by Playwright (after the runs, so the page shows them) --


def _open_trigger_form(page: Page, base_url: str) -> Locator:
    """Open the DAG page, press its *Trigger* button, wait for the params form; return the dialog."""
    page.goto(f"{base_url}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog").filter(has_text="Run Parameters")
    dialog.get_by_text("S3 bucket").wait_for()
    expect(page.get_by_test_id("trigger-dag-submit")).to_be_visible()
    page.wait_for_timeout(1000)  # the dialog's open animation, and the form's first validation
    return dialog


def _select(page: Page, param: str, option: str) -> None:
    """Pick ``option`` in the drop-down of enum param ``param``."""
    page.locator(f"#element_{param} [role=combobox]").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"input[name=element_{param}]")).to_have_value(option)


def _manual_runs_for_table(stack: Standalone, table: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The manual runs whose conf names ``table`` (waits until there is one)."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        manual = stack.api.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "manual"})["dag_runs"]
        runs = [run for run in manual if (run.get("conf") or {}).get("table") == table]
        time.sleep(0.5)
    return runs


def test_dag_page_screenshot(standalone: Standalone, page: Page, screenshot_dir: Path) -> None:
    path = screenshot_dir / "dag-page.png"
    t0 = time.monotonic()
    page.goto(f"{standalone.base_url}/dags/{DAG_ID}")
    # The SPA rendered the DAG (not a login page or an error): its id, its tasks and the Trigger button.
    expect(page.get_by_test_id("trigger-dag-button")).to_be_visible()
    for text in (DAG_ID, "validate", "check_row_count"):
        expect(page.get_by_text(text, exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=path)
    _timing("DAG page in the browser + screenshot", time.monotonic() - t0)
    stats = assert_not_blank(path)
    dom = page.content()
    for text in (DAG_ID, "validate", "load", "check_row_count", "Trigger"):
        assert text in dom, f"{text!r} not in the rendered DAG page ({stats})"
    assert "Sign in" not in dom
    assert "Login" not in dom


def test_trigger_form_screenshot(standalone: Standalone, page: Page, screenshot_dir: Path) -> None:
    """The *Trigger* button opens the params form (a dialog: the UI has no URL of its own for it)."""
    path = screenshot_dir / "trigger-form.png"
    dialog = _open_trigger_form(page, standalone.base_url)
    page.screenshot(path=path)
    text = dialog.inner_text()
    for title in ("S3 bucket", "Object key", "Prefix (optional)", "Target table", "Format", "Mode", "Max bad rows"):
        assert title in text, f"{title!r} not in the trigger form: {text[:2000]!r}"
    assert_not_blank(path)


def test_trigger_form_defaults_are_valid(standalone: Standalone, page: Page) -> None:
    """Every param's default passes the form's validation (an empty *required* field would disable Trigger)."""
    _open_trigger_form(page, standalone.base_url)
    expect(page.get_by_test_id("trigger-dag-submit")).to_be_enabled()


def test_trigger_through_the_form(standalone: Standalone, page: Page) -> None:
    """Press Trigger with the form's defaults but another table: the run loads the date's file."""
    _open_trigger_form(page, standalone.base_url)
    page.locator("#element_table").fill("e2e_form")
    submit = page.get_by_test_id("trigger-dag-submit")
    expect(submit).to_be_enabled()
    submit.click()
    runs = _manual_runs_for_table(standalone, "e2e_form")
    assert len(runs) == 1, "pressing Trigger in the form created no run (or several)"
    run = standalone.api.wait_for_run(DAG_ID, runs[0]["dag_run_id"], timeout=RUN_TIMEOUT)
    assert run["state"] == "success", standalone.api.describe(DAG_ID, run["dag_run_id"])
    # The form's logical date defaults to now: the key is the Jinja default for that date.
    day = dt.datetime.fromisoformat(run["logical_date"]).date()
    assert day in NIGHTLY_DATES
    _assert_loaded(standalone, "e2e_form", object_key(day), run["dag_run_id"])


def _record_starts(data: bytes) -> list[int]:
    """The physical line each CSV record starts on (the header is line 1)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(reader)
    starts, line = [], reader.line_num
    for _ in reader:
        starts.append(line + 1)
        line = reader.line_num
    return starts


def test_form_loads_a_csv_object_exactly(standalone: Standalone, page: Page) -> None:
    """Fill the form as a user would (key of a CSV object, format csv, a new table), submit, check every row."""
    from provider_directory.documents import build_provider_document

    records = 57
    key = f"uploads/e2e form/providers-{uuid.uuid4().hex[:8]}.data"  # a suffix that says nothing: format csv decides
    data = csv_bytes(records, seed=42)
    standalone.s3.put_object(BUCKET, key, data)
    table = "e2e_form_csv"

    _open_trigger_form(page, standalone.base_url)
    page.locator("#element_key").fill(key)
    _select(page, "format", "csv")
    page.locator("#element_table").fill(table)
    submit = page.get_by_test_id("trigger-dag-submit")
    expect(submit).to_be_enabled()
    submit.click()
    page.get_by_role("dialog").filter(has_text="Run Parameters").wait_for(state="hidden")  # the form closed

    runs = _manual_runs_for_table(standalone, table)
    assert len(runs) == 1, f"the form created {len(runs)} runs for table {table}"
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"]["key"] == key
    assert runs[0]["conf"]["format"] == "csv"
    run = standalone.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", standalone.api.describe(DAG_ID, run_id)
    assert standalone.api.task_states(DAG_ID, run_id) == SUCCESS_STATES

    with standalone.pg.connect() as conn:
        rows = conn.execute(
            f"SELECT source_line, document::text, source_key, batch_id FROM {table} ORDER BY source_line"  # noqa: S608
        ).fetchall()
    expected = [build_provider_document(record) for record in csv.DictReader(io.StringIO(data.decode("utf-8")))]
    assert len(expected) == records
    assert [line for line, _, _, _ in rows] == _record_starts(data)
    assert [json.loads(document) for _, document, _, _ in rows] == json.loads(json.dumps(expected))
    assert {(source_key, batch_id) for _, _, source_key, batch_id in rows} == {(key, run_id)}


def test_form_never_starts_a_run_with_a_fractional_max_bad_rows(standalone: Standalone, page: Page) -> None:
    """``max_bad_rows`` = 2.5 never becomes a run: the form itself refuses it (Trigger disabled, the field says why).

    The param's union type (integer, not boolean) makes Airflow's form check the value as JSON of
    those types: its plain integer field checks neither the type nor ``multipleOf``.
    """
    table = "e2e_form_fraction"
    _open_trigger_form(page, standalone.base_url)
    page.locator("#element_table").fill(table)
    field = page.locator("textarea#element_max_bad_rows")  # a checked JSON field (see the param)
    field.fill("2.5")
    field.blur()
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("trigger-dag-submit")).to_be_disabled()
    field.fill("3")
    field.blur()
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("trigger-dag-submit")).to_be_enabled()
    assert not _manual_runs_for_table(standalone, table, timeout=3), "a run was created with max_bad_rows=2.5"
