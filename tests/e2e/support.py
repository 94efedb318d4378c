"""Helpers for the end-to-end tests: a small REST API v2 client, headless Chromium (Playwright), PNG checks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright, ViewportSize

REPO_ROOT = Path(__file__).resolve().parents[2]
TERMINAL_STATES = {"success", "failed"}


class ApiClient:
    """``requests`` session on ``{base_url}/api/v2`` that fetches a token only if the API asks for one.

    With ``simple_auth_manager_all_admins`` the API accepts requests without a token (the auth
    manager's middleware adds an admin token to each request); otherwise a 401 makes the client
    call ``GET /auth/token`` (the no-credentials token endpoint of the all-admins mode) once
    and retry with ``Authorization: Bearer``.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.token_used = False

    def _fetch_token(self) -> None:
        response = self.session.get(f"{self.base_url}/auth/token", timeout=self.timeout)
        assert response.status_code in (200, 201), f"GET /auth/token: {response.status_code} {response.text}"
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        self.token_used = True

    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """``method`` ``/api/v2{path}``; assert the status is one of ``expect``; return the JSON body."""
        url = f"{self.base_url}/api/v2{path}"
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, url, **kwargs)
        if response.status_code == 401 and not self.token_used:
            self._fetch_token()
            response = self.session.request(method, url, **kwargs)
        assert response.status_code in expect, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=body, **kwargs)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180.0, interval: float = 2.0) -> dict[str, Any]:
        """Poll ``GET dagRuns/{run_id}`` until it is ``success`` or ``failed``; return the last body."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_STATES:
                return run
            time.sleep(interval)
        raise TimeoutError(
            f"run {run_id} still {run.get('state')!r} after {timeout:.0f}s: {self.describe(dag_id, run_id)}"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """``GET dagRuns/{run_id}/taskInstances``, sorted by task id and map index."""
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return sorted(body["task_instances"], key=lambda t: (t["task_id"], t["map_index"]))

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """The return value of a task instance (``map_index`` for a mapped one)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.get(path, params={"map_index": map_index, "deserialize": True})["value"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, list[str | None]]:
        """``task_id`` → states of its task instances (one per map index)."""
        states: dict[str, list[str | None]] = {}
        for ti in self.task_instances(dag_id, run_id):
            states.setdefault(ti["task_id"], []).append(ti["state"])
        return states

    def retried(self, dag_id: str, run_id: str) -> dict[str, int]:
        """Task instances of a run that needed more than one try (``task_id[map_index]`` → try number)."""
        return {
            f"{ti['task_id']}[{ti['map_index']}]": ti["try_number"]
            for ti in self.task_instances(dag_id, run_id)
            if ti["try_number"] > 1  # 0: never ran (a skipped task)
        }

    def describe(self, dag_id: str, run_id: str) -> str:
        """Task states of a run, for failure messages."""
        with contextlib.suppress(Exception):
            return json.dumps(self.task_states(dag_id, run_id))
        return "<task states unavailable>"


# -- headless Chromium through Playwright ---------------------------------------------------------

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Debian's chromium as root in a sandbox without a GPU or a network beyond the loopback.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
)
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}


def find_chromium() -> str:
    """Path of a Chromium binary; fails the test (never skips) with the install command if there is none."""
    for candidate in CHROMIUM_CANDIDATES:
        found = candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    pytest.fail(
        "headless Chromium is required for the UI tests but was not found: install Debian's package with "
        "`make browser` (apt-get install -y chromium, which provides /usr/bin/chromium)",
        pytrace=False,
    )


def launch_chromium(playwright: Playwright) -> Browser:
    """The machine's Chromium, headless, driven by Playwright (no browser download: ``executable_path``)."""
    return playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=list(CHROMIUM_ARGS))


# -- PNG --------------------------------------------------------------------------------------


@dataclass
class PngStats:
    width: int
    height: int
    colors: int  # distinct colours in the sample
    background_share: float  # share of the most common colour


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_stats(path: Path, row_step: int = 4) -> PngStats:
    """Decode an 8-bit RGB/RGBA PNG with ``zlib`` (no PIL) and count the colours of every ``row_step``-th row."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, f"unsupported PNG bit depth {depth}"
    assert color_type in (2, 6), f"unsupported PNG colour type {color_type} (RGB/RGBA only)"
    assert interlace == 0, "interlaced PNG not supported"
    bpp = 3 if color_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    previous = bytearray(stride)
    counts: Counter[bytes] = Counter()
    unfilters: dict[int, Callable[[bytearray, bytearray], None]] = {}

    def sub(row: bytearray, prev: bytearray) -> None:
        for i in range(bpp, stride):
            row[i] = (row[i] + row[i - bpp]) & 0xFF

    def up(row: bytearray, prev: bytearray) -> None:
        for i in range(stride):
            row[i] = (row[i] + prev[i]) & 0xFF

    def average(row: bytearray, prev: bytearray) -> None:
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF

    def paeth(row: bytearray, prev: bytearray) -> None:
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            upper_left = prev[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + _paeth(left, prev[i], upper_left)) & 0xFF

    unfilters.update({1: sub, 2: up, 3: average, 4: paeth})
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        row = bytearray(raw[start + 1 : start + 1 + stride])
        if kind:
            unfilters[kind](row, previous)
        if y % row_step == 0:
            counts.update(bytes(row[x : x + 3]) for x in range(0, stride, bpp))
        previous = row
    total = sum(counts.values())
    return PngStats(width, height, len(counts), counts.most_common(1)[0][1] / total if total else 1.0)


def assert_not_blank(path: Path, min_bytes: int = 20_000) -> PngStats:
    """The screenshot exists, is a real PNG of the window's size, and shows more than a blank page."""
    assert path.exists(), f"{path} was not written"
    size = path.stat().st_size
    assert size > min_bytes, f"{path} is only {size} bytes: probably a blank page"
    stats = png_stats(path)
    assert (stats.width, stats.height) == (1400, 900), f"unexpected screenshot size {stats}"
    assert stats.colors > 50, f"{path} has only {stats.colors} colours: blank? {stats}"
    assert stats.background_share < 0.97, f"{path} is {stats.background_share:.1%} one colour: blank? {stats}"
    return stats
