"""A programmable HTTP/1.1 fault-injection proxy in front of the local S3 (moto) server.

moto accepts expired and tampered pre-signed URLs and never breaks a connection, so
the faults a real network and a real S3 produce are injected here instead::

    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.plan(Cut(after=1000), Status(503), Status(403))   # then Pass() forever
        source = HttpObjectSource(lambda: proxy.rewrite(presigned_url), name=...)

Every incoming ``GET`` consumes the next rule of the plan (``Pass()`` when the plan is
empty); other methods are always passed through. Rules:

* ``Pass()``: forward to upstream and relay status, headers and body unchanged.
* ``Cut(after=N)``: relay the real status and headers (full ``Content-Length``) but close
  the socket after ``N`` body bytes (``reset=True``: abort with a TCP RST instead of FIN).
* ``Status(code)``: answer ``code`` with a short body, without contacting upstream.
* ``Stall(after=N, seconds=S)``: stop sending after ``N`` body bytes for ``S`` seconds
  (a read time-out on the client), then send the rest if the client is still there.
* ``ChangeEtag()``: forward, but replace the response's ``ETag`` (a changed object).
* ``Drop()``: read the request and close the connection without any answer.

Every rule takes ``before=callable`` (run in the proxy thread before the request is
handled, e.g. to overwrite the object in moto between two attempts) and
``drop_headers=("Range", ...)`` (request headers not forwarded, e.g. to play a server
that ignores ``Range`` or ``If-Match``). Rules that relay an answer also take:

* ``drop_response_headers=("ETag", ...)``: response headers not relayed (a server
  without validators);
* ``response_headers=(("Content-Range", "bytes 0-9/99"),)``: response headers set,
  replacing any of the same name (a server that states the wrong length);
* ``no_length=True``: relay the body without ``Content-Length`` (and not chunked), so
  it ends where the connection closes (HTTP/1.0 style); with ``Cut`` the client cannot
  tell the cut from the end.

Each request is recorded (:class:`Seen`: method, path, query, headers, the rule, the
status answered and the body bytes sent). All sockets have time-outs, stalls wake up
on :meth:`FaultProxy.stop`, and ``stop`` joins every handler thread with a bound.
"""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.service import Service

log = logging.getLogger(__name__)

RELAY_CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHANGED_ETAG = '"00000000000000000000000000c4a9ed"'


# -- rules -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Rule:
    """What the proxy does with one ``GET``.

    :param before: called (in the proxy thread) before the request is handled.
    :param drop_headers: request headers that are not forwarded upstream.
    :param drop_response_headers: response headers that are not relayed to the client.
    :param response_headers: response headers set (replacing any of the same name).
    :param no_length: relay the body without ``Content-Length``; it ends at the close.
    """

    before: Callable[[], object] | None = None
    drop_headers: tuple[str, ...] = ()
    drop_response_headers: tuple[str, ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    no_length: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Pass(Rule):
    """Forward unchanged."""


@dataclass(frozen=True)
class Cut(Rule):
    """Relay status and headers, then close after ``after`` body bytes (RST if ``reset``)."""

    after: int
    reset: bool = False


@dataclass(frozen=True)
class Status(Rule):
    """Answer ``code`` without contacting upstream."""

    code: int
    body: bytes = b""


@dataclass(frozen=True)
class Stall(Rule):
    """Relay ``after`` body bytes, pause ``seconds``, then relay the rest."""

    after: int
    seconds: float


@dataclass(frozen=True)
class ChangeEtag(Rule):
    """Forward, replacing the response's ``ETag`` header."""

    etag: str = CHANGED_ETAG


@dataclass(frozen=True)
class Drop(Rule):
    """Close the connection without answering."""

    reset: bool = False


# -- records -----------------------------------------------------------------------------
@dataclass
class Seen:
    """One request the proxy received, and what it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    rule: str
    status: int | None = None
    body_bytes: int = 0
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """The value of request header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def range(self) -> str | None:
        return self.header("Range")

    @property
    def if_match(self) -> str | None:
        return self.header("If-Match")


# -- the server --------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fault-proxy-{client_address[1]}",
            daemon=True,
        )
        self.proxy._track(thread, request)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fault proxy: error handling a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.proxy.client_timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Silent: request lines carry pre-signed query strings."""

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    # -- plumbing ------------------------------------------------------------------------
    def _handle(self) -> None:
        proxy = self.server.proxy
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        rule: Rule = proxy._next_rule() if self.command == "GET" else Pass()
        split = urlsplit(self.path)
        seen = proxy._record(
            Seen(self.command, split.path, split.query, dict(self.headers.items()), rule.name),
        )
        try:
            if rule.before is not None:
                rule.before()
            if isinstance(rule, Status):
                self._answer(seen, rule.code, rule.body or f"fault proxy: HTTP {rule.code}\n".encode())
            elif isinstance(rule, Drop):
                self._close(reset=rule.reset)
            else:
                self._forward(seen, rule, body)
        except (OSError, http.client.HTTPException) as err:
            seen.error = f"{type(err).__name__}: {err}"
            self._close(reset=False)
        finally:
            seen.done.set()

    def _answer(self, seen: Seen, code: int, body: bytes) -> None:
        seen.status = code
        self.send_response_only(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            seen.body_bytes = len(body)

    def _close(self, *, reset: bool) -> None:
        sock = self.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _forward(self, seen: Seen, rule: Rule, body: bytes | None) -> None:
        proxy = self.server.proxy
        dropped = {name.lower() for name in rule.drop_headers} | HOP_BY_HOP | {"host"}
        headers = {key: value for key, value in self.headers.items() if key.lower() not in dropped}
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout)
        try:
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
            except OSError as err:
                seen.error = f"upstream: {type(err).__name__}: {err}"
                self._answer(seen, 502, b"fault proxy: upstream unreachable\n")
                return
            self._relay(seen, rule, response)
        finally:
            upstream.close()

    def _relay(self, seen: Seen, rule: Rule, response: http.client.HTTPResponse) -> None:
        proxy = self.server.proxy
        seen.status = response.status
        dropped = set(HOP_BY_HOP) | {name.lower() for name in rule.drop_response_headers}
        dropped |= {name.lower() for name, _ in rule.response_headers}
        if rule.no_length:
            dropped.add("content-length")
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in dropped]
        headers.extend(rule.response_headers)
        chunks: Iterator[bytes] = iter(lambda: response.read(RELAY_CHUNK), b"")
        if response.getheader("Content-Length") is None and self.command != "HEAD" and not rule.no_length:
            body = response.read()  # a chunked upstream answer: relay it with a length
            headers.append(("Content-Length", str(len(body))))
            chunks = (body[i : i + RELAY_CHUNK] for i in range(0, len(body), RELAY_CHUNK))
        if isinstance(rule, ChangeEtag):
            headers = [(k, rule.etag if k.lower() == "etag" else v) for k, v in headers]
        self.send_response_only(response.status, response.reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = rule.after if isinstance(rule, Cut | Stall) else None
        for chunk in chunks:
            data = chunk
            if limit is not None and seen.body_bytes + len(data) >= limit:
                split = limit - seen.body_bytes
                self._send(seen, data[:split])
                data = data[split:]
                if isinstance(rule, Cut):
                    break
                assert isinstance(rule, Stall)
                limit = None
                proxy.stalled.set()
                if proxy._stopping.wait(rule.seconds):
                    break
            self._send(seen, data)
        else:
            if not isinstance(rule, Cut) and not rule.no_length:
                return
        self._close(reset=isinstance(rule, Cut) and rule.reset)

    def _send(self, seen: Seen, data: bytes) -> None:
        if data:
            self.wfile.write(data)
            seen.body_bytes += len(data)


# -- the proxy ---------------------------------------------------------------------------
class FaultProxy(Service):
    """A fault-injecting HTTP/1.1 proxy on ``host`` (a free port) in front of ``upstream``.

    :param upstream: ``http://host:port`` of the real server (moto).
    :param client_timeout: socket time-out towards the client, in seconds.
    :param upstream_timeout: socket time-out towards upstream, in seconds.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        client_timeout: float = 30.0,
        upstream_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.host = host
        self.client_timeout = client_timeout
        self.upstream_timeout = upstream_timeout
        self.stalled = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._rules: deque[Rule] = deque()
        self._seen: list[Seen] = []
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, 0), self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, wake stalls, close client sockets and join the handler threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        with self._lock:
            threads, sockets = list(self._threads), list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads did not stop: {alive}")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    def rewrite(self, url: str) -> str:
        """``url`` with scheme, host and port replaced by the proxy's (path and query kept)."""
        parts = urlsplit(url)
        return urlunsplit(("http", f"{self.host}:{self.port}", parts.path, parts.query, parts.fragment))

    # -- programming ---------------------------------------------------------------------
    def plan(self, *rules: Rule | Iterable[Rule]) -> FaultProxy:
        """Append rules (or lists of rules) to the queue consumed by incoming GETs."""
        flat: list[Rule] = []
        for item in rules:
            flat.extend([item] if isinstance(item, Rule) else item)
        for rule in flat:
            if not isinstance(rule, Rule):
                raise TypeError(f"not a rule: {rule!r}")
        with self._lock:
            self._rules.extend(flat)
        return self

    def clear(self) -> None:
        """Forget the remaining rules, the recorded requests and the stall flag."""
        with self._lock:
            self._rules.clear()
            self._seen.clear()
        self.stalled.clear()

    @property
    def pending(self) -> int:
        """How many planned rules are still unused."""
        with self._lock:
            return len(self._rules)

    @property
    def requests(self) -> list[Seen]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    @property
    def gets(self) -> list[Seen]:
        """The GET requests received so far."""
        return [seen for seen in self.requests if seen.method == "GET"]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every request received so far has been fully handled."""
        for seen in self.requests:
            if not seen.done.wait(timeout):
                raise TimeoutError(f"fault proxy still handling {seen.method} ({seen.rule})")

    # -- called by the handlers ----------------------------------------------------------
    def _next_rule(self) -> Rule:
        with self._lock:
            return self._rules.popleft() if self._rules else Pass()

    def _record(self, seen: Seen) -> Seen:
        with self._lock:
            self._seen.append(seen)
        return seen

    def _track(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._sockets = [s for s in self._sockets if s.fileno() != -1]
            self._threads.append(thread)
            self._sockets.append(sock)
