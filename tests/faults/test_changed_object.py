"""An object overwritten between the first request and the resume fails the load; nothing changes.

Two paths detect it: the server refuses ``If-Match`` with 412 (moto does), or, when a
server ignores ``If-Match``, the source compares the resumed response's ETag with the
first one. Both are exercised; the proxy record shows which one fired.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from harness.fault_proxy import CHANGED_ETAG, ChangeEtag, Cut, Pass, Rule
from s3_postgres_copy.exceptions import SourceError

if TYPE_CHECKING:
    from .support import FaultEnv

KEY = "in/changing.jsonl"


def _jsonl(version: int, count: int = 300) -> bytes:
    return b"".join(json.dumps({"id": i, "version": version, "pad": "x" * 60}).encode() + b"\n" for i in range(count))


V1, V2 = _jsonl(1), _jsonl(2)
CUT = len(V1) // 2  # past the loader's first 4 KiB peek, so the COPY has started


def _prepopulate(env: FaultEnv, table: str) -> list[str]:
    env.put(KEY, _jsonl(0, 20))
    env.load(KEY, table)
    env.put("in/other.jsonl", _jsonl(9, 5))
    env.load("in/other.jsonl", table)
    snapshot = env.snapshot(table)
    assert snapshot is not None
    assert len(snapshot) == 25
    return snapshot


# how the second request is handled, the status the proxy must have answered, the message
HOW: dict[str, tuple[Callable[[Callable[[], object]], Rule], int, str]] = {
    "server-refuses-if-match-412": (
        lambda overwrite: Pass(before=overwrite),
        412,
        r"changed while it was being read \(ETag no longer {old}\)",
    ),
    "server-ignores-if-match-etag-compared": (
        lambda overwrite: Pass(before=overwrite, drop_headers=("If-Match",)),
        206,
        r"changed while it was being read \(ETag {new}, was {old}\)",
    ),
    "server-ignores-range-and-if-match": (
        lambda overwrite: Pass(before=overwrite, drop_headers=("If-Match", "Range")),
        200,
        r"changed while it was being read \(ETag {new}, was {old}\)",
    ),
}


@pytest.mark.parametrize("how", list(HOW))
def test_overwritten_between_requests_fails_and_table_unchanged(env: FaultEnv, table: str, how: str) -> None:
    rule, status, pattern = HOW[how]
    before = _prepopulate(env, table)
    old = env.put(KEY, V1)
    new: list[str] = []

    def overwrite() -> None:
        new.append(env.put(KEY, V2))

    env.proxy.clear()
    env.proxy.plan(Cut(after=CUT), rule(overwrite))
    with pytest.raises(SourceError, match="changed") as caught:
        env.load(KEY, table)

    gets = env.proxy.gets
    assert len(gets) == 2
    assert gets[1].range == f"bytes={CUT}-"
    assert gets[1].if_match == old  # the client always asks; the proxy may hide it from the server
    assert gets[1].status == status
    message = str(caught.value)
    assert re.search(pattern.format(old=re.escape(old), new=re.escape(new[0])), message), message
    assert env.location(KEY) in message
    assert "X-Amz" not in message
    assert env.snapshot(table) == before


def test_etag_rewritten_on_resume_fails(env: FaultEnv, table: str) -> None:
    before = _prepopulate(env, table)
    old = env.put(KEY, V1)
    env.proxy.clear()
    env.proxy.plan(Cut(after=CUT), ChangeEtag())
    with pytest.raises(SourceError) as caught:
        env.load(KEY, table)
    assert str(caught.value) == f"{env.location(KEY)} changed while it was being read (ETag {CHANGED_ETAG}, was {old})"
    assert [get.status for get in env.proxy.gets] == [200, 206]
    assert env.snapshot(table) == before


def test_overwritten_with_identical_bytes_is_not_a_change(env: FaultEnv, table: str) -> None:
    """Same content, same ETag: the resume is accepted and the rows are exact (no false alarm)."""
    env.put(KEY, V1)
    expected = env.reference(KEY, f"{table}_ref")
    env.proxy.plan(Cut(after=CUT), Pass(before=lambda: env.put(KEY, V1)))
    stats = env.load(KEY, table)
    assert env.rows(table) == expected
    assert stats.resumes == 1
    assert [get.status for get in env.proxy.gets] == [200, 206]
