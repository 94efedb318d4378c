"""``HttpObjectSource`` against scripted answers (a ``requests`` transport adapter, no network).

Covers what a resume must prove (the same strong ETag, or the same old-enough
Last-Modified and the same length), a body without a length, and the request path
sent exactly as signed. Real-server behaviour is in ``tests/faults``.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.response import HTTPResponse

from s3_postgres_copy.exceptions import SourceError
from s3_postgres_copy.source import HttpObjectSource, ResumeRefusedError, RetryPolicy

DATA = b"".join(b'{"n": %d}\n' % n for n in range(200))
OTHER = DATA.replace(b'{"n"', b'{"m"')  # another version, the same length
CUT = DATA.index(b"\n", len(DATA) // 2) + 1  # a line boundary
SIZE = len(DATA)
SECRET = "X-Amz-Signature=c0ffee"
URL = f"http://s3.test/bkt/key.jsonl?{SECRET}"
NAME = "s3://bkt/key.jsonl"
ETAG = '"5d41402abc4b2a76b9719d911017c592"'
MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
OLD = {"Last-Modified": MODIFIED, "Date": "Mon, 01 Jan 2024 00:05:00 GMT"}  # modified 5 min before
RECENT = {"Last-Modified": MODIFIED, "Date": "Mon, 01 Jan 2024 00:00:30 GMT"}  # modified 30 s before
REFUSED = (
    f"{NAME}: refused to resume at byte {CUT}: {{reason}}, so the rest could come from another version of "
    "the object; retry the load (it reads the object again from byte 0)"
)
NOT_PROVEN = "{reason}, so the rest could come from another version of the object"


@dataclass
class Answer:
    """One scripted response: ``length`` adds ``Content-Length: len(body)`` unless set."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True


def first(headers: dict[str, str], *, cut: int | None = CUT, length: bool = True) -> Answer:
    """The first 200, its connection closed after ``cut`` bytes (None: the whole body)."""
    body = DATA if cut is None else DATA[:cut]
    extra = {"Content-Length": str(SIZE)} if length else {}
    return Answer(200, body, {**extra, **headers}, length=False)


def partial(headers: dict[str, str], *, total: str = str(SIZE), body: bytes = DATA) -> Answer:
    """A 206 with the rest of ``body`` from ``CUT``."""
    return Answer(206, body[CUT:], {"Content-Range": f"bytes {CUT}-{SIZE - 1}/{total}", **headers})


class Scripted(HTTPAdapter):
    """Answers each request with the next :class:`Answer`; records the prepared requests."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__()
        self.answers = deque(answers)
        self.sent: list[requests.PreparedRequest] = []
        self.kwargs: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        self.kwargs.append(kwargs)
        answer = self.answers.popleft()
        headers = dict(answer.headers)
        if answer.length:
            headers.setdefault("Content-Length", str(len(answer.body)))
        raw = HTTPResponse(
            body=io.BytesIO(answer.body),
            headers=headers,
            status=answer.status,
            reason="scripted",
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)

    def header(self, number: int, name: str) -> str | None:
        """Request header ``name`` of the ``number``-th request (1-based)."""
        return self.sent[number - 1].headers.get(name)


def source_for(answers: list[Answer], url: str = URL, **kwargs: Any) -> tuple[HttpObjectSource, Scripted]:
    adapter = Scripted(answers)
    session = requests.Session()
    session.mount("http://", adapter)
    source = HttpObjectSource(
        lambda: url,
        name=NAME,
        session=session,
        retry=RetryPolicy(attempts=4, backoff=0.0),
        sleep=lambda _: None,
        **kwargs,
    )
    return source, adapter


def read(source: HttpObjectSource) -> tuple[bytes, SourceError | None]:
    """The bytes the consumer got, and the error that ended the stream (if any)."""
    got: list[bytes] = []
    try:
        for chunk in source.chunks():
            got.append(chunk)
    except SourceError as err:
        return b"".join(got), err
    return b"".join(got), None


def assert_clean(err: SourceError) -> None:
    message = str(err)
    assert SECRET not in message
    assert "http://" not in message
    assert err.__context__ is None
    assert err.__cause__ is None


class TestResumeProof:
    def test_same_etag_resumes(self) -> None:
        source, adapter = source_for([first({"ETag": ETAG, **RECENT}), partial({"ETag": ETAG, **RECENT})])
        assert read(source) == (DATA, None)
        assert (adapter.header(2, "Range"), adapter.header(2, "If-Match")) == (f"bytes={CUT}-", ETAG)
        assert (source.resumes, source.requests, source.content_length) == (1, 2, SIZE)

    def test_range_ignored_with_same_etag_skips_what_was_read(self) -> None:
        source, adapter = source_for([first({"ETag": ETAG}), Answer(200, DATA, {"ETag": ETAG})])
        assert read(source) == (DATA, None)

    def test_same_old_last_modified_and_length_resume_without_etag(self) -> None:
        source, adapter = source_for([first(OLD), partial({"Last-Modified": MODIFIED})])
        assert read(source) == (DATA, None)
        assert adapter.header(2, "If-Match") is None

    def test_nothing_delivered_yet_any_version_will_do(self) -> None:
        """Cut before the first byte: the next answer is taken as a first one (no proof needed)."""
        source, _ = source_for([first(RECENT, cut=0), Answer(200, OTHER, {"ETag": ETAG, **RECENT})])
        assert read(source) == (OTHER, None)
        assert (source.etag, source.resumes) == (ETAG, 1)

    def test_weak_etag_is_not_sent_as_if_match_and_not_a_proof(self) -> None:
        weak = 'W/"abc"'
        source, adapter = source_for([first({"ETag": weak, **OLD}), partial({"ETag": weak, **OLD})])
        assert read(source) == (DATA, None)  # the old Last-Modified and the length prove it
        assert adapter.header(2, "If-Match") is None

    @pytest.mark.parametrize(
        ("first_headers", "resumed", "reason"),
        [
            pytest.param(
                RECENT,
                partial({"Last-Modified": MODIFIED}),
                f"the server sent no ETag and its Last-Modified date ({MODIFIED}) is not at least 60 s before "
                "its Date, too recent to tell two versions apart",
                id="recent-last-modified",
            ),
            pytest.param(
                {"Date": OLD["Date"]},
                partial({}),
                "the server sent no ETag and no Last-Modified date",
                id="no-validators",
            ),
            pytest.param(
                {"ETag": ETAG},
                partial({}),
                "the resumed response has no ETag and no Last-Modified date",
                id="resumed-without-etag",
            ),
            pytest.param(
                OLD,
                partial({}),
                "the server sent no ETag and the resumed response has no Last-Modified date",
                id="resumed-without-last-modified",
            ),
            pytest.param(
                OLD,
                partial({"Last-Modified": MODIFIED}, total="*"),
                "the server sent no ETag and the resumed response gives no total length to compare",
                id="unknown-total",
            ),
            pytest.param(
                {"ETag": 'W/"abc"'},
                partial({"ETag": 'W/"abc"'}),
                'the server sent only a weak ETag (W/"abc") and no Last-Modified date',
                id="weak-etag",
            ),
            pytest.param(
                RECENT,
                Answer(200, OTHER, {"Last-Modified": MODIFIED}),
                f"the server sent no ETag and its Last-Modified date ({MODIFIED}) is not at least 60 s before "
                "its Date, too recent to tell two versions apart",
                id="range-ignored-other-body-same-length",
            ),
        ],
    )
    def test_unprovable_resume_is_refused(self, first_headers: dict[str, str], resumed: Answer, reason: str) -> None:
        source, _ = source_for([first(first_headers), resumed])
        got, err = read(source)
        assert got == DATA[:CUT]  # nothing of the resumed answer reached the consumer
        assert isinstance(err, ResumeRefusedError)
        assert str(err) == REFUSED.format(reason=reason)
        assert (err.offset, err.reason) == (CUT, NOT_PROVEN.format(reason=reason))
        assert_clean(err)

    @pytest.mark.parametrize(
        ("first_headers", "resumed", "message"),
        [
            pytest.param(
                {"ETag": ETAG},
                partial({"ETag": ETAG}, total=str(SIZE + 10)),
                f"{NAME} changed while it was being read (now {SIZE + 10} bytes, was {SIZE}); retry the load",
                id="206-other-total-same-etag",
            ),
            pytest.param(
                {},
                partial({}, total=str(SIZE + 10)),
                f"{NAME} changed while it was being read (now {SIZE + 10} bytes, was {SIZE}); retry the load",
                id="206-other-total-no-validators",
            ),
            pytest.param(
                {"ETag": ETAG},
                Answer(200, DATA + b"more\n", {"ETag": ETAG}),
                f"{NAME} changed while it was being read (now {SIZE + 5} bytes, was {SIZE}); retry the load",
                id="range-ignored-other-length",
            ),
            pytest.param(
                OLD,
                partial({"Last-Modified": "Mon, 01 Jan 2024 00:04:00 GMT"}),
                f"{NAME} changed while it was being read (Last-Modified Mon, 01 Jan 2024 00:04:00 GMT, "
                f"was {MODIFIED}); retry the load",
                id="last-modified-changed",
            ),
            pytest.param(
                {"ETag": ETAG},
                partial({"ETag": '"other"'}),
                f'{NAME} changed while it was being read (ETag "other", was {ETAG})',
                id="etag-changed",
            ),
            pytest.param(
                {"ETag": ETAG},
                Answer(206, DATA[CUT:], {"ETag": ETAG}),
                f"{NAME}: the server answered the resume at byte {CUT} with HTTP 206 but no usable "
                "Content-Range (''); retry the load",
                id="206-without-content-range",
            ),
        ],
    )
    def test_contradicting_resume_fails(self, first_headers: dict[str, str], resumed: Answer, message: str) -> None:
        source, _ = source_for([first(first_headers), resumed])
        got, err = read(source)
        assert got == DATA[:CUT]
        assert err is not None
        assert not isinstance(err, ResumeRefusedError)
        assert str(err) == message
        assert_clean(err)


class TestBodyWithoutLength:
    def test_close_is_checked_and_resumed(self, caplog: pytest.LogCaptureFixture) -> None:
        source, adapter = source_for([first({"ETag": ETAG}, length=False), partial({"ETag": ETAG})])
        with caplog.at_level(logging.INFO, logger="s3_postgres_copy.source"):
            assert read(source) == (DATA, None)
        assert (adapter.header(2, "Range"), adapter.header(2, "If-Match")) == (f"bytes={CUT}-", ETAG)
        assert (source.requests, source.resumes, source.content_length) == (2, 1, SIZE)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            f"{NAME}: the server sent no Content-Length and no chunked encoding, so a connection closed early "
            "looks like the end of the object; the end will be checked with a Range request",
            f"{NAME}: the body without a length ended at byte {CUT}, before the end of the object; resuming there",
        ]

    def test_end_confirmed_by_416_to_if_match(self) -> None:
        source, adapter = source_for([first({"ETag": ETAG}, cut=None, length=False), Answer(416, b"no")])
        assert read(source) == (DATA, None)
        assert (adapter.header(2, "Range"), adapter.header(2, "If-Match")) == (f"bytes={SIZE}-", ETAG)
        assert (source.requests, source.resumes, source.content_length) == (2, 0, SIZE)

    def test_end_confirmed_by_416_total_and_old_last_modified(self) -> None:
        answers = [first(OLD, cut=None, length=False), Answer(416, b"", {"Content-Range": f"bytes */{SIZE}", **OLD})]
        source, _ = source_for(answers)
        assert read(source) == (DATA, None)

    def test_empty_body_without_length_is_not_taken_for_an_empty_object(self) -> None:
        source, adapter = source_for([Answer(200, b"", {"ETag": ETAG}, length=False)] * 4)
        got, err = read(source)
        assert got == b""
        assert str(err) == (
            f"{NAME}: gave up after 4 requests at byte 0; last error: an empty body without a length "
            "(an empty object looks like a closed connection)"
        )
        assert adapter.header(2, "Range") is None

    @pytest.mark.parametrize(
        ("first_headers", "check", "message"),
        [
            pytest.param(
                RECENT,
                Answer(416, b""),
                f"{NAME}: refused to resume at byte {SIZE}: the end of the object cannot be verified: the server "
                "sent no ETag and the resumed response has no Last-Modified date, so its 416 answer (nothing from "
                "this byte on) could be about another version of the object; retry the load (it reads the object "
                "again from byte 0)",
                id="416-without-validators",
            ),
            pytest.param(
                {"ETag": ETAG},
                Answer(416, b"", {"Content-Range": f"bytes */{SIZE + 5}"}),
                f"{NAME} changed while it was being read (now {SIZE + 5} bytes, {SIZE} read); retry the load",
                id="416-other-total",
            ),
            pytest.param(
                {"ETag": ETAG},
                Answer(200, DATA, {"ETag": ETAG}, length=False),
                f"{NAME}: refused to resume at byte {SIZE}: the server ignores Range and sends no Content-Length, "
                "so the end of the object cannot be told from a connection closed early; retry the load (it reads "
                "the object again from byte 0)",
                id="range-ignored-without-length",
            ),
        ],
    )
    def test_unverifiable_end_fails(self, first_headers: dict[str, str], check: Answer, message: str) -> None:
        source, _ = source_for([first(first_headers, cut=None, length=False), check])
        got, err = read(source)
        assert got == DATA
        assert err is not None
        assert str(err) == message
        assert_clean(err)


class TestSignedPath:
    @pytest.mark.parametrize(
        ("path", "sent"),
        [
            ("/bkt/dots/../k.jsonl", "/bkt/dots/../k.jsonl"),
            ("/bkt/dots/./k.jsonl", "/bkt/dots/./k.jsonl"),
            ("/bkt/../k.jsonl", "/bkt/../k.jsonl"),
            ("/bkt/dots/..", "/bkt/dots/.."),
            ("/bkt//k.jsonl", "/bkt//k.jsonl"),
            ("/bkt/a%20b%2Bc%25%2F.jsonl", "/bkt/a%20b%2Bc%25%2F.jsonl"),
            ("/bkt/a b+c.jsonl", "/bkt/a%20b+c.jsonl"),
            ("/bkt/Zo%C3%AB%E2%98%83", "/bkt/Zo%C3%AB%E2%98%83"),
            ("/bkt/Zoë☃", "/bkt/Zo%C3%AB%E2%98%83"),
        ],
        ids=[
            "dot-dot",
            "dot",
            "leading-dot-dot",
            "last-dot-dot",
            "double-slash",
            "encoded",
            "raw-space",
            "utf8",
            "raw-utf8",
        ],
    )
    def test_path_is_sent_as_signed(self, path: str, sent: str) -> None:
        source, adapter = source_for([Answer(200, b"x\n")], url=f"http://s3.test{path}?{SECRET}")
        assert read(source) == (b"x\n", None)
        assert adapter.sent[0].path_url == f"{sent}?{SECRET}"
        assert adapter.sent[0].url == f"http://s3.test{sent}?{SECRET}"

    def test_send_keeps_session_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
        source, adapter = source_for([Answer(200, b"x\n"), Answer(200, b"x\n")], timeout=(3.0, 4.0))
        read(source)
        assert adapter.kwargs[0]["timeout"] == (3.0, 4.0)
        assert adapter.kwargs[0]["stream"] is True
        assert adapter.kwargs[0]["verify"] == "/etc/ssl/bundle.pem"  # as session.get would
        source, adapter = source_for([Answer(200, b"x\n")], verify=False)
        read(source)
        assert adapter.kwargs[0]["verify"] is False
        assert adapter.sent[0].headers["Accept-Encoding"] == "identity"
