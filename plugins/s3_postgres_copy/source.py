"""The S3 object as a stream of byte chunks, read over HTTP from a pre-signed URL.

A broken stream (reset, time-out, truncated body, 5xx) is reopened at the byte
offset reached, with ``Range`` and ``If-Match`` on the first response's ETag, so
the consumer sees every byte exactly once. A resumed response is used only when it
provably continues the same bytes: the same strong ETag, or else the same
Last-Modified date (old enough to be a strong validator) and the same total length;
otherwise the load fails with :class:`ResumeRefusedError` (nothing is mixed).
A body without a length that ends at a close is checked with one more ``Range``
request, so a connection closed early is not taken for the end of the object.
A 403 asks the URL factory for a fresh URL (pre-signed URLs expire; S3 checks the
signature when a request starts). The request path is sent exactly as signed (no
dot-segment removal). The URL is a credential: it is never logged and never put
into an exception.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.utils import requote_uri
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from s3_postgres_copy.exceptions import SourceError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
#: RFC 9110 §8.8.2.2: a client may treat Last-Modified as a strong validator when it
#: is at least this many seconds before the response's Date.
STRONG_LAST_MODIFIED = 60.0
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_QUERY = re.compile(r"\?[^\s'\"<>)]*")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)\s*", re.IGNORECASE)

UrlFactory = Callable[[], str]


def redact(text: str) -> str:
    """Remove query strings (pre-signed URL signatures) from a message."""
    return _QUERY.sub("?<redacted>", text)


class ResumeRefusedError(SourceError):
    """A resumed response cannot be shown to continue the bytes already read.

    The bytes before ``offset`` are already with the consumer, so the source cannot
    start again by itself: the whole load has to be rolled back and run again.

    :param name: the object, as named in errors.
    :param offset: the byte offset the resume was asked for.
    :param reason: why the response is not accepted.
    """

    def __init__(self, name: str, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{name}: refused to resume at byte {offset}: {reason}; retry the load (it reads the object again "
            "from byte 0)"
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a broken stream is reopened.

    :param attempts: total requests allowed for one object (the first included).
    :param backoff: seconds before the first retry; doubles each time up to ``max_backoff``.
    """

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 20.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 2)))


class HttpObjectSource:
    """Stream one object's bytes from a (re-signable) pre-signed URL.

    :param url_factory: returns a fresh pre-signed GET URL each call.
    :param name: how the object is named in logs and errors (``s3://bucket/key``).
    :param chunk_size: bytes per read from the socket.
    :param timeout: ``(connect, read)`` time-outs in seconds.
    :param retry: the resume policy.
    :param verify: TLS certificate verification (``requests``' ``verify``).
    """

    def __init__(
        self,
        url_factory: UrlFactory,
        *,
        name: str,
        chunk_size: int = CHUNK_SIZE,
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url_factory = url_factory
        self.name = name
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.verify = verify
        self.session = session or requests.Session()
        self._sleep = sleep
        self._url: str | None = None
        self._response: requests.Response | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._last_modified_strong = False
        self.content_length: int | None = None
        self.content_encoding: str | None = None
        self._end: int | None = None  # the offset where the current response's body ends, if it says
        self.offset = 0
        self.requests = 0
        self.resumes = 0
        self.resigns = 0

    # -- opening -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the open response, if any (a load that stops before reading, e.g. a skipped object)."""
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def open(self) -> HttpObjectSource:
        """Send the first request; raises :class:`SourceError` if the object cannot be read."""
        self._response = self._request(first=True)
        return self

    def _fresh_url(self) -> str:
        url = self.url_factory()
        if not url:
            raise SourceError(f"could not get a pre-signed URL for {self.name} (the S3 hook returned nothing)")
        self._url = url
        return url

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        """``GET url`` with its path exactly as signed.

        ``requests`` removes dot segments while preparing a URL (urllib3's ``parse_url``),
        so the key ``a/../k`` would read ``k``; the signed path is put back before sending.
        """
        prepared = self.session.prepare_request(requests.Request("GET", url, headers=headers))
        prepared.url = _signed_path(url, prepared.url or url)
        settings = self.session.merge_environment_settings(prepared.url, {}, True, self.verify, None)
        return self.session.send(prepared, timeout=self.timeout, allow_redirects=True, **settings)

    def _request(self, *, first: bool) -> requests.Response:
        """Open the object at ``self.offset``, retrying transient failures."""
        attempt_errors: list[str] = []
        resigned = False
        while True:
            self.requests += 1
            attempt = self.requests
            headers = {"Accept-Encoding": "identity"}
            if self.offset:
                headers["Range"] = f"bytes={self.offset}-"
            if self.etag and _is_strong(self.etag):
                headers["If-Match"] = self.etag  # a weak ETag never matches (strong comparison)
            response: requests.Response | None = None
            problem = ""
            try:
                url = self._url or self._fresh_url()
                response = self._get(url, headers)
                if response.status_code in (200, 206):
                    self._accept(response, first=first)  # may read (skip) when Range was ignored
                    return response
            except (requests.RequestException, Urllib3HTTPError, OSError) as err:
                if response is not None:
                    response.close()
                problem = f"{type(err).__name__}: {redact(str(err))}"
            if problem:
                # Back off outside the ``except`` block: the error quotes the URL and must not
                # become the ``__context__`` of the SourceError raised when the attempts run out.
                attempt_errors.append(problem)
                self._backoff(attempt, problem)
                continue
            assert response is not None
            status = response.status_code
            response.close()
            if status == 416 and not first and self._at_end(response, sent_if_match="If-Match" in headers):
                return response  # nothing left to read
            if status == 404:
                raise SourceError(f"{self.name} does not exist (HTTP 404)")
            if status == 412:
                raise SourceError(
                    f"{self.name} changed while it was being read (ETag no longer {self.etag}); retry the load"
                )
            if status == 403 and not resigned:
                # An expired pre-signed URL; ask for a new one once per attempt.
                resigned = True
                self.resigns += 1
                self._url = None
                log.warning("Access to %s denied (HTTP 403); re-signing the URL (request %d)", self.name, attempt)
                self.requests -= 1
                continue
            if status in _RETRY_STATUS:
                problem = f"HTTP {status}"
                attempt_errors.append(problem)
                self._backoff(attempt, problem)
                continue
            raise SourceError(f"{self.name} could not be read: HTTP {status} {response.reason}")

    def _backoff(self, attempt: int, problem: str) -> None:
        if attempt >= self.retry.attempts:
            raise SourceError(
                f"{self.name}: gave up after {attempt} requests at byte {self.offset}; last error: {problem}"
            )
        delay = self.retry.delay(attempt + 1)
        log.warning(
            "Reading %s failed at byte %d (%s); retrying (request %d of %d) in %.1f s",
            self.name,
            self.offset,
            problem,
            attempt + 1,
            self.retry.attempts,
            delay,
        )
        self._sleep(delay)

    # -- checking responses --------------------------------------------------------------
    def _accept(self, response: requests.Response, *, first: bool) -> None:
        """Check a 200/206 answer and note where its body ends; raise if it cannot be used."""
        headers = response.headers
        if first or not self.offset:  # nothing delivered yet: any version will do
            self.etag = headers.get("ETag")
            self.last_modified = headers.get("Last-Modified")
            self._last_modified_strong = _strong_date(self.last_modified, headers.get("Date"))
            self.content_length = self._end = _length(headers.get("Content-Length"))
            self.content_encoding = headers.get("Content-Encoding")
            if self.content_length is None and not _chunked(response):
                log.warning(
                    "%s: the server sent no Content-Length and no chunked encoding, so a connection closed "
                    "early looks like the end of the object; the end will be checked with a Range request",
                    self.name,
                )
            return
        try:
            if response.status_code == 206:
                value = headers.get("Content-Range", "")
                match = _CONTENT_RANGE.fullmatch(value)
                if not match:
                    raise SourceError(
                        f"{self.name}: the server answered the resume at byte {self.offset} with HTTP 206 "
                        f"but no usable Content-Range ({value!r}); retry the load"
                    )
                if int(match.group(1)) != self.offset:
                    raise SourceError(f"{self.name}: the server resumed at the wrong offset (wanted {self.offset})")
                total = None if match.group(3) == "*" else int(match.group(3))
                self._check_same_version(response, total, expected=self.content_length)
                self._end = int(match.group(2)) + 1
            else:
                total = _length(headers.get("Content-Length"))
                if total is None and self.content_length is None:
                    raise ResumeRefusedError(
                        self.name,
                        self.offset,
                        "the server ignores Range and sends no Content-Length, so the end of the object "
                        "cannot be told from a connection closed early",
                    )
                self._check_same_version(response, total, expected=self.content_length)
                self._end = total
                self._skip(response)
        except SourceError:
            response.close()
            raise
        if total is not None:
            self.content_length = total

    def _check_same_version(self, response: requests.Response, total: int | None, *, expected: int | None) -> None:
        """Raise unless a resumed ``response`` provably holds the same bytes as the first one."""
        why = self._unproven(response, total, expected=expected)
        if why:
            raise ResumeRefusedError(
                self.name, self.offset, f"{why}, so the rest could come from another version of the object"
            )

    def _unproven(self, response: requests.Response, total: int | None, *, expected: int | None) -> str | None:
        """Why ``response`` cannot be shown to be the first response's version (None: it can).

        Raises :class:`SourceError` when the response shows a different version.

        :param total: the object's length the response states (``Content-Range``'s total
            for a 206, ``Content-Length`` for a 200), if it states one.
        :param expected: the object's length as known so far, if known.
        """
        etag = response.headers.get("ETag")
        modified = response.headers.get("Last-Modified")
        if self.etag and etag and etag != self.etag:
            raise SourceError(f"{self.name} changed while it was being read (ETag {etag}, was {self.etag})")
        if total is not None and expected is not None and total != expected:
            raise SourceError(
                f"{self.name} changed while it was being read (now {total} bytes, was {expected}); retry the load"
            )
        if self.etag and _is_strong(self.etag) and etag == self.etag:
            return None
        if self.last_modified and modified and not _same_date(modified, self.last_modified):
            raise SourceError(
                f"{self.name} changed while it was being read (Last-Modified {modified}, was {self.last_modified}); "
                "retry the load"
            )
        if self._last_modified_strong and modified and expected is not None and total is not None:
            return None  # the same Last-Modified, old enough to be a strong validator, and the same length
        if not self.etag:
            by_etag = "the server sent no ETag"
        elif not _is_strong(self.etag):
            by_etag = f"the server sent only a weak ETag ({self.etag})"
        else:
            by_etag = "the resumed response has no ETag"
        if not self.last_modified:
            by_date = "no Last-Modified date"
        elif not modified:
            by_date = "the resumed response has no Last-Modified date"
        elif not self._last_modified_strong:
            by_date = (
                f"its Last-Modified date ({self.last_modified}) is not at least {STRONG_LAST_MODIFIED:.0f} s "
                "before its Date, too recent to tell two versions apart"
            )
        elif expected is None:
            by_date = "the first response gave no length to compare"
        else:
            by_date = "the resumed response gives no total length to compare"
        return f"{by_etag} and {by_date}"

    def _skip(self, response: requests.Response) -> None:
        """Read and drop the bytes already delivered (the server ignored ``Range``)."""
        skip = self.offset
        while skip:
            data = response.raw.read(min(skip, self.chunk_size), decode_content=False)
            if not data:
                raise SourceError(f"{self.name}: the object is shorter than before")
            skip -= len(data)

    def _at_end(self, response: requests.Response, *, sent_if_match: bool) -> bool:
        """Tell whether a 416 to ``Range: bytes=<offset>-`` means the object ends at ``offset``."""
        if not self.offset:
            return False  # no Range was sent: a 416 makes no sense
        if self.content_length is not None:
            return self.offset >= self.content_length
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else None
        if total is not None and total != self.offset:
            raise SourceError(
                f"{self.name} changed while it was being read (now {total} bytes, {self.offset} read); retry the load"
            )
        # With If-Match the server checks the version before the range (RFC 9110 §13.2.2);
        # without it, only the 416's own validators can tie it to the bytes read.
        why = None if sent_if_match else self._unproven(response, total, expected=self.offset)
        if why:
            raise ResumeRefusedError(
                self.name,
                self.offset,
                f"the end of the object cannot be verified: {why}, so its 416 answer (nothing from this byte on) "
                "could be about another version of the object",
            )
        self.content_length = self.offset
        return True

    # -- reading -------------------------------------------------------------------------
    def chunks(self) -> Iterator[bytes]:
        """Yield the object's raw bytes (as stored) in chunks of up to ``chunk_size``."""
        if self._response is None:
            self.open()
        response = self._response
        assert response is not None
        try:
            while True:
                if response.status_code == 416:
                    return
                try:
                    data = response.raw.read(self.chunk_size, decode_content=False)
                except (Urllib3HTTPError, requests.RequestException, OSError) as err:
                    problem = f"{type(err).__name__}: {redact(str(err))}"
                else:
                    if data:
                        self.offset += len(data)
                        yield data
                        continue
                    end = self._end if self._end is not None else self.content_length
                    if end is None:
                        if _chunked(response):
                            return  # the last chunk was read: urllib3 raises on a chunked body cut short
                        if self.offset:
                            response = self._response = self._check_end(response)
                            continue
                        problem = "an empty body without a length (an empty object looks like a closed connection)"
                    elif self.offset >= end and (self.content_length is None or self.offset >= self.content_length):
                        return
                    else:
                        problem = f"connection closed at byte {self.offset} of {self.content_length or end}"
                response.close()
                self.resumes += 1
                self._backoff(self.requests, problem)
                response = self._response = self._request(first=False)
        finally:
            response.close()

    def _check_end(self, response: requests.Response) -> requests.Response:
        """Ask for the bytes after a body that ended with its connection (no length was sent).

        The answer is a 416 when that was the end of the object, else the rest of it.
        """
        log.info("Checking that %s ends at byte %d (no length was sent)", self.name, self.offset)
        response.close()
        response = self._request(first=False)
        if response.status_code != 416:
            self.resumes += 1
            log.warning(
                "%s: the body without a length ended at byte %d, before the end of the object; resuming there",
                self.name,
                self.offset,
            )
        return response


def _signed_path(signed: str, prepared: str) -> str:
    """``prepared`` (a URL ``requests`` prepared from ``signed``) with ``signed``'s path restored."""
    path = urlsplit(signed).path
    if not path:
        return prepared
    return urlunsplit(urlsplit(prepared)._replace(path=requote_uri(path)))


def _length(value: str | None) -> int | None:
    """A ``Content-Length`` value as a number (None if absent or not a number)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _chunked(response: requests.Response) -> bool:
    return "chunked" in response.headers.get("Transfer-Encoding", "").lower()


def _is_strong(etag: str) -> bool:
    return not etag.startswith("W/")


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date as an aware datetime (None if absent or not a date)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _same_date(first: str, second: str) -> bool:
    parsed = _http_date(first), _http_date(second)
    if parsed[0] is None or parsed[1] is None:
        return first.strip() == second.strip()
    return parsed[0] == parsed[1]


def _strong_date(last_modified: str | None, date: str | None) -> bool:
    """Whether ``last_modified`` is a strong validator: at least a minute before the response's ``date``."""
    modified, sent = _http_date(last_modified), _http_date(date)
    return modified is not None and sent is not None and (sent - modified).total_seconds() >= STRONG_LAST_MODIFIED


GZIP_PIECE = 4096
"""Bytes per inflate call once a file shows several gzip members (see :func:`gunzip`)."""


def gunzip(chunks: Iterator[bytes], *, max_output: int = CHUNK_SIZE, name: str = "object") -> Iterator[bytes]:
    """Decompress gzip (all members of a multi-member file) with bounded output per step.

    zlib stops at the end of each member and hands back the rest of its input as a copy
    (``unused_data``): fed whole 1 MiB chunks, a file of 200k one-line members would copy the
    rest of a chunk 200k times. Once a second member shows up, input is fed in
    :data:`GZIP_PIECE`-byte pieces, so each member's end copies at most that much.
    """
    decompressor = zlib.decompressobj(wbits=31)
    started = False
    small = False
    out = b""
    pending: deque[bytes] = deque()
    for chunk in chunks:
        pending.append(chunk)
        while pending:
            data = pending.popleft()
            if small and len(data) > GZIP_PIECE:
                pending.extendleft(reversed(_pieces(data[GZIP_PIECE:])))
                data = data[:GZIP_PIECE]
            while data or (started and not decompressor.eof and len(out) == max_output):
                if not started and data[:1] == b"\0" and not data.strip(b"\0"):
                    break  # zero padding after the last member, however it is chunked
                started = True
                try:
                    out = decompressor.decompress(data, max_output)
                except zlib.error as err:
                    raise SourceError(f"{name} is not valid gzip: {err}") from None
                if out:
                    yield out
                if decompressor.eof:
                    data = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
                    started = False
                    out = b""
                    if not small and len(data) > GZIP_PIECE:
                        small = True  # several members: small pieces from here on
                        pending.appendleft(data)
                        break
                else:
                    data = decompressor.unconsumed_tail
    if started:
        raise SourceError(f"{name} is truncated: the gzip stream ends mid-member")


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + GZIP_PIECE] for i in range(0, len(data), GZIP_PIECE)]


def sniff_gzip(chunks: Iterator[bytes]) -> tuple[bool, Iterator[bytes]]:
    """Tell whether a stream starts with the gzip magic bytes; return it with nothing consumed."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 2:
            break
    rest = _chain(head, chunks)
    return head.startswith(GZIP_MAGIC), rest


def _chain(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from chunks
