"""The S3 object as a stream of byte chunks, read over HTTP from a pre-signed URL.

A broken stream (reset, time-out, truncated body, 5xx) is reopened at the byte
offset reached, with ``Range`` and ``If-Match`` on the first response's ETag, so
the consumer sees every byte exactly once. A 403 asks the URL factory for a fresh
URL (pre-signed URLs expire; S3 checks the signature when a request starts).
The request path is sent exactly as signed (no dot-segment removal).
The URL is a credential: it is never logged and never put into an exception.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.utils import requote_uri
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from s3_postgres_copy.exceptions import SourceError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_QUERY = re.compile(r"\?[^\s'\"<>)]*")

UrlFactory = Callable[[], str]


def redact(text: str) -> str:
    """Remove query strings (pre-signed URL signatures) from a message."""
    return _QUERY.sub("?<redacted>", text)


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
        self.content_length: int | None = None
        self.content_encoding: str | None = None
        self.offset = 0
        self.requests = 0
        self.resumes = 0
        self.resigns = 0

    # -- opening -------------------------------------------------------------------------
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
            if self.etag:
                headers["If-Match"] = self.etag
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
            if status == 416 and self.content_length is not None and self.offset >= self.content_length:
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

    def _accept(self, response: requests.Response, *, first: bool) -> None:
        etag = response.headers.get("ETag")
        if first:
            self.etag = etag
            length = response.headers.get("Content-Length")
            self.content_length = int(length) if length is not None else None
            self.content_encoding = response.headers.get("Content-Encoding")
            return
        if self.etag and etag and etag != self.etag:
            response.close()
            raise SourceError(f"{self.name} changed while it was being read (ETag {etag}, was {self.etag})")
        if response.status_code == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != self.offset:
                response.close()
                raise SourceError(f"{self.name}: the server resumed at the wrong offset (wanted {self.offset})")
        elif self.offset:
            # The server ignored Range: skip what was already delivered.
            skip = self.offset
            while skip:
                data = response.raw.read(min(skip, self.chunk_size), decode_content=False)
                if not data:
                    raise SourceError(f"{self.name}: the object is shorter than before")
                skip -= len(data)

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
                    if self.content_length is None or self.offset >= self.content_length:
                        return
                    problem = f"connection closed at byte {self.offset} of {self.content_length}"
                response.close()
                self.resumes += 1
                self._backoff(self.requests, problem)
                response = self._response = self._request(first=False)
        finally:
            response.close()


def _signed_path(signed: str, prepared: str) -> str:
    """``prepared`` (a URL ``requests`` prepared from ``signed``) with ``signed``'s path restored."""
    path = urlsplit(signed).path
    if not path:
        return prepared
    return urlunsplit(urlsplit(prepared)._replace(path=requote_uri(path)))


def gunzip(chunks: Iterator[bytes], *, max_output: int = CHUNK_SIZE, name: str = "object") -> Iterator[bytes]:
    """Decompress gzip (all members of a multi-member file) with bounded output per step."""
    decompressor = zlib.decompressobj(wbits=31)
    started = False
    out = b""
    for chunk in chunks:
        data = chunk
        while data or (started and not decompressor.eof and len(out) == max_output):
            if not started and not data.strip(b"\0"):
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
            else:
                data = decompressor.unconsumed_tail
    if started:
        raise SourceError(f"{name} is truncated: the gzip stream ends mid-member")


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
