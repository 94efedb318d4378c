"""A broken stream resumes at the byte reached (Range + If-Match) and loads exactly the same rows.

Each case breaks the transfer through the fault proxy at a chosen byte, then compares
the whole table (every ``source_line`` and document) with an uninterrupted load of the
same object, and checks the headers of every request the loader sent.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import pytest

from harness.fault_proxy import Cut, Drop, Pass, Rule, Stall, Status
from s3_postgres_copy.exceptions import SourceError
from s3_postgres_copy.source import RetryPolicy

from .support import STALL_TIMEOUT

if TYPE_CHECKING:
    from .support import FaultEnv


# -- objects -------------------------------------------------------------------------------
def _jsonl(first: int, last: int) -> bytes:
    records = (
        {"id": i, "name": f"Zoë {i} 日本語 😀", "big": 10**30 + i, "price": f"{i}.10", "note": "tab\there"}
        for i in range(first, last + 1)
    )
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


@dataclass(frozen=True)
class Obj:
    key: str
    data: bytes
    marks: dict[str, int]  # named byte offsets


@cache
def jsonl_object() -> Obj:
    data = _jsonl(1, 400)
    line_200 = data.index(b'{"id": 200,')
    emoji = data.index("😀".encode(), line_200)
    return Obj(
        "in/2024-01-01/providers file.jsonl",  # a space: the URL path is percent-encoded
        data,
        {"mid": data.index(b'{"id": 250,') + 7, "utf8": emoji + 2, "last": len(data) - 1},
    )


@cache
def csv_object() -> Obj:
    rows = ["id,comment,amount\n"]
    rows += [f'{i},"first, line {i}\nsays ""hi"" ☃\nend",{i}.50\n' for i in range(1, 401)]
    data = "".join(rows).encode()
    row_200 = data.index(b'\n200,"first')
    return Obj("in/comments.csv", data, {"quoted": data.index(b'says ""hi', row_200) + 6, "last": len(data) - 1})


@cache
def gzip_object() -> Obj:
    first = gzip.compress(_jsonl(1, 200), mtime=0)
    second = gzip.compress(_jsonl(201, 400), mtime=0)
    boundary = len(first)
    return Obj(
        "in/members.jsonl.gz",
        first + second,
        {"boundary": boundary, "magic": 1, "inside": boundary // 2, "last": len(first) + len(second) - 1},
    )


OBJECTS: dict[str, Callable[[], Obj]] = {"jsonl": jsonl_object, "csv": csv_object, "gz": gzip_object}


# -- cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    obj: str
    plan: Callable[[Obj], list[Rule]]
    ranges: Callable[[Obj], list[int | None]]  # the Range offset each GET must carry
    exact: bool = True  # False: the resume offset may be below the cut (bytes lost in an RST)
    resigns: int = 0
    chunk_size: int | None = None
    timeout: tuple[float, float] = (5.0, 5.0)


def at(mark: str, delta: int = 0) -> Callable[[Obj], int]:
    return lambda obj: obj.marks[mark] + delta


CASES: dict[str, Case] = {
    "utf8-inside-multibyte-char": Case(
        "jsonl", lambda o: [Cut(after=o.marks["utf8"])], lambda o: [None, o.marks["utf8"]]
    ),
    "csv-inside-quoted-field": Case(
        "csv", lambda o: [Cut(after=o.marks["quoted"])], lambda o: [None, o.marks["quoted"]]
    ),
    "gzip-at-member-boundary": Case(
        "gz", lambda o: [Cut(after=o.marks["boundary"])], lambda o: [None, o.marks["boundary"]]
    ),
    "gzip-last-byte-of-first-member": Case(
        "gz", lambda o: [Cut(after=o.marks["boundary"] - 1)], lambda o: [None, o.marks["boundary"] - 1]
    ),
    "gzip-inside-second-magic": Case(
        "gz", lambda o: [Cut(after=o.marks["boundary"] + 1)], lambda o: [None, o.marks["boundary"] + 1]
    ),
    "gzip-inside-first-magic": Case("gz", lambda o: [Cut(after=1)], lambda o: [None, 1]),
    "gzip-inside-deflate-data": Case(
        "gz", lambda o: [Cut(after=o.marks["inside"])], lambda o: [None, o.marks["inside"]]
    ),
    "jsonl-before-last-byte": Case("jsonl", lambda o: [Cut(after=o.marks["last"])], lambda o: [None, o.marks["last"]]),
    "csv-before-last-byte": Case("csv", lambda o: [Cut(after=o.marks["last"])], lambda o: [None, o.marks["last"]]),
    "gzip-before-last-byte": Case("gz", lambda o: [Cut(after=o.marks["last"])], lambda o: [None, o.marks["last"]]),
    "cut-after-whole-body": Case("jsonl", lambda o: [Cut(after=len(o.data))], lambda o: [None]),
    "resumed-request-cut-at-byte-0": Case(
        "jsonl",
        lambda o: [Cut(after=o.marks["mid"]), Cut(after=0)],
        lambda o: [None, o.marks["mid"], o.marks["mid"]],
    ),
    "cut-three-times": Case(
        "jsonl",
        lambda o: [Cut(after=1000), Cut(after=2000), Cut(after=3000)],
        lambda o: [None, 1000, 3000, 6000],
    ),
    "tcp-reset": Case(
        "jsonl", lambda o: [Cut(after=o.marks["mid"], reset=True)], lambda o: [None, o.marks["mid"]], exact=False
    ),
    "resume-answered-500": Case(
        "jsonl",
        lambda o: [Cut(after=o.marks["mid"]), Status(500)],
        lambda o: [None, o.marks["mid"], o.marks["mid"]],
    ),
    "resume-answered-503-twice": Case(
        "csv",
        lambda o: [Cut(after=o.marks["quoted"]), Status(503), Status(503)],
        lambda o: [None, *[o.marks["quoted"]] * 3],
    ),
    "resume-connection-dropped": Case(
        "jsonl",
        lambda o: [Cut(after=o.marks["mid"]), Drop()],
        lambda o: [None, o.marks["mid"], o.marks["mid"]],
    ),
    "first-request-503": Case("gz", lambda o: [Status(503)], lambda o: [None, None]),
    "resume-403-resigned": Case(
        "jsonl",
        lambda o: [Cut(after=o.marks["mid"]), Status(403)],
        lambda o: [None, o.marks["mid"], o.marks["mid"]],
        resigns=1,
    ),
    "resume-range-ignored-by-server": Case(
        "gz",
        lambda o: [Cut(after=o.marks["inside"]), Pass(drop_headers=("Range",))],
        lambda o: [None, o.marks["inside"]],
    ),
    "range-ignored-and-cut-while-skipping": Case(
        "jsonl",
        lambda o: [Cut(after=o.marks["mid"]), Cut(after=o.marks["mid"] // 2, drop_headers=("Range",))],
        lambda o: [None, o.marks["mid"], o.marks["mid"]],
    ),
    "short-stall-within-read-timeout": Case(
        "jsonl",
        lambda o: [Stall(after=o.marks["mid"], seconds=0.2)],
        lambda o: [None],  # the client waits it out: no resume
    ),
    "read-timeout-stall": Case(
        "jsonl",
        lambda o: [Stall(after=8192, seconds=10)],
        lambda o: [None, 8192],
        chunk_size=1024,  # reads end on the stall point, so no partly read chunk is lost
        timeout=(5.0, STALL_TIMEOUT),
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_resume_loads_exact_rows(env: FaultEnv, table: str, case_id: str) -> None:
    case = CASES[case_id]
    obj = OBJECTS[case.obj]()
    etag = env.put(obj.key, obj.data)
    expected = env.reference(obj.key, f"{table}_ref")
    assert len(expected) == 400

    env.proxy.plan(case.plan(obj))
    factory = env.factory(obj.key)
    source = env.source(obj.key, factory=factory, chunk_size=case.chunk_size, timeout=case.timeout)
    stats = env.load(obj.key, table, source=source)

    assert env.rows(table) == expected
    assert (stats.rows_copied, stats.bytes_read, stats.content_length) == (400, len(obj.data), len(obj.data))
    assert stats.source_etag == etag
    assert env.proxy.pending == 0, "every planned fault was used"

    gets = env.proxy.gets
    wanted = case.ranges(obj)
    assert len(gets) == len(wanted), [(g.rule, g.status, g.range) for g in gets]
    seen_200 = False
    for number, (get, offset) in enumerate(zip(gets, wanted, strict=True), 1):
        if offset is None:
            assert get.range is None, f"request {number}"
        elif case.exact:
            assert get.range == f"bytes={offset}-", f"request {number}"
        else:
            # an RST may discard bytes the client had not read yet: it resumes at or before the cut
            match = re.fullmatch(r"bytes=(\d+)-", get.range or "bytes=0-")
            assert match is not None, f"request {number}: {get.range!r}"
            assert 0 <= int(match.group(1)) <= offset
        assert get.if_match == (etag if seen_200 else None), f"request {number}"
        seen_200 = seen_200 or get.status == 200
    assert stats.requests == len(gets) - case.resigns  # a 403 that leads to a re-sign is not an attempt

    assert stats.resigns == case.resigns
    assert factory.calls == 1 + case.resigns
    if case.resigns:
        # the 403 was answered to the old URL; the request after it carries the fresh URL's query
        refused = next(i for i, get in enumerate(gets) if get.status == 403)
        assert gets[refused].query == factory.queries[0]
        assert gets[refused + 1].query == factory.queries[1]
        assert factory.queries[0] != factory.queries[1]
    else:
        assert {get.query for get in gets} == {factory.queries[0]}


# -- retries exhausted ---------------------------------------------------------------------
FAILURES: dict[str, tuple[Callable[[Obj], list[Rule]], str, int]] = {
    # plan, fragment of the error, GETs the proxy must have seen (attempts=3)
    "503-until-exhausted": (
        lambda o: [Cut(after=o.marks["mid"]), Status(503), Status(503)],
        r"gave up after 3 requests at byte {mid}; last error: HTTP 503",
        3,
    ),
    "cut-until-exhausted": (
        lambda o: [Cut(after=o.marks["mid"]), Cut(after=0), Cut(after=0)],
        r"gave up after 3 requests at byte {mid}; last error: connection closed at byte {mid}|"
        r"gave up after 3 requests at byte {mid}; last error: ProtocolError",
        3,
    ),
    "first-request-500-until-exhausted": (
        lambda o: [Status(500)] * 3,
        r"gave up after 3 requests at byte 0; last error: HTTP 500",
        3,
    ),
    "403-after-resign": (
        lambda o: [Cut(after=o.marks["mid"]), Status(403), Status(403)],
        r"could not be read: HTTP 403",
        3,
    ),
    "404-on-resume": (
        lambda o: [Cut(after=o.marks["mid"]), Status(404)],
        r"does not exist \(HTTP 404\)",
        2,
    ),
    "stall-until-exhausted": (
        lambda o: [Stall(after=8192, seconds=10)] * 3,
        r"gave up after 3 requests at byte \d+; last error: \w+",
        3,
    ),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_exhausted_retries_fail_cleanly_and_leave_table_unchanged(env: FaultEnv, table: str, failure: str) -> None:
    plan, pattern, requests_seen = FAILURES[failure]
    obj = jsonl_object()
    # the table already holds an earlier version of this object and another object
    env.put(obj.key, _jsonl(1, 30))
    env.load(obj.key, table)
    env.put("in/other.jsonl", _jsonl(1000, 1009))
    env.load("in/other.jsonl", table)
    before = env.snapshot(table)
    assert before is not None
    assert len(before) == 40

    env.put(obj.key, obj.data)
    env.proxy.clear()
    env.proxy.plan(plan(obj))
    factory = env.factory(obj.key)
    source = env.source(
        obj.key,
        factory=factory,
        retry=RetryPolicy(attempts=3, backoff=0.01),
        chunk_size=1024 if failure.startswith("stall") else None,
        timeout=(5.0, STALL_TIMEOUT if failure.startswith("stall") else 5.0),
    )
    with pytest.raises(SourceError) as caught:
        env.load(obj.key, table, source=source)

    message = str(caught.value)
    assert re.search(pattern.format(**obj.marks), message), message
    assert env.location(obj.key) in message
    assert "X-Amz" not in message
    assert "?" not in message
    assert "http://" not in message
    assert f":{env.proxy.port}" not in message
    for query in factory.queries:
        assert query not in message
    assert len(env.proxy.gets) == requests_seen
    assert env.snapshot(table) == before
