"""The HTTP/1.1 proxy engine: raw asyncio protocols and httptools, no framework.

One ``ServerConnection`` per client connection parses requests with httptools and hands
each one, as an ``Exchange``, to an *app* (the queue-proxy's or the activator's handler)
the moment its head is complete. The app answers locally (``exchange.respond``) or
forwards (``exchange.forward(pool, head)``) at once or later; bodies stream both ways
with backpressure and are never buffered whole. The engine owns framing, keep-alive,
pipelining, upgrades (tunnelled byte for byte), the three revision timeouts, header limits
and slow-header cut-off. It knows nothing of Knative: probes, stats and the breaker live in
the apps.

The common path runs entirely inside protocol callbacks: no task, no future, one timer.

Errors the client sees from the engine itself:
    400  malformed request line or headers, no or several Host headers (connection closed)
    501  a transfer coding other than chunked (connection closed)
    431  request head larger than ``Limits.max_head_bytes`` (connection closed)
    408  head not complete within ``Limits.header_timeout`` (connection closed)
    502  the upstream refused, reset or closed before answering (body: the error text)
    504  a revision timeout fired before the response started (body ``request timeout``)
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from queueproxy import batching
from queueproxy.exchange import ExchangeBase
from queueproxy.httptoken import is_token
from queueproxy.upstream import HOP_BY_HOP, UpstreamConnection, UpstreamPool

logger = logging.getLogger(__name__)

__all__ = ["App", "Exchange", "Limits", "ServerConnection", "HttpServer", "STATUS_REASONS", "h2_connection"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# Request headers the apps need to look at, collected while parsing (index into Exchange.special).
# When a name repeats, the first line wins, as Go's ``Header.Get``; only the list-valued
# Connection and X-Forwarded-For join every line (the first X-Forwarded-For line is then kept
# apart in H_XFF_FIRST, for the Forwarded shim, which reads only that one upstream).
SPECIAL = {
    b"host": 0, b"user-agent": 1, b"k-network-probe": 2, b"k-network-hash": 3,
    b"k-kubelet-probe": 4, b"k-proxy-request": 5, b"k-original-host": 6,
    b"connection": 7, b"x-forwarded-for": 8, b"forwarded": 9, b"x-forwarded-proto": 10,
    b"x-forwarded-host": 11, b"knative-serving-namespace": 12, b"knative-serving-revision": 13,
    b"traceparent": 14, b"x-b3-traceid": 15, b"upgrade": 16, b"expect": 17,
    b"content-length": 19, b"transfer-encoding": 20,
}
N_SPECIAL = 21
H_HOST, H_UA, H_PROBE, H_HASH, H_KUBELET, H_PROXY, H_ORIG_HOST, H_CONNECTION = range(8)
H_XFF, H_FORWARDED, H_XFP, H_XFH, H_NS, H_REV, H_TRACEPARENT, H_B3, H_UPGRADE, H_EXPECT = range(8, 18)
H_XFF_FIRST = 18  # set only when X-Forwarded-For came on more than one line
H_CL, H_TE = 19, 20

try:
    from queueproxy import _fasthead
except ImportError:  # not compiled (no C compiler at install): httptools reads every head
    _fasthead = None
else:
    _fasthead.configure(SPECIAL, N_SPECIAL, H_HOST, H_CONNECTION, H_XFF, H_XFF_FIRST, H_CL, H_UPGRADE,
                        H_TE)

# The request methods llhttp parses as HTTP (httptools 0.6+). Any other token, which Go's server
# and so upstream's queue-proxy pass through, reaches llhttp as a stand-in (see
# ServerConnection._stand_in) and gets its own name back on the Exchange.
LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH UNLOCK BIND "
    b"REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE "
    b"MKCALENDAR LINK UNLINK SOURCE QUERY PRI".split())
# Request starts that need no look at the method: one C call, no allocation, per request head.
COMMON_STARTS = tuple(m + b" " for m in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS"))
MAX_METHOD = 64  # bytes; a longer first token is not looked at, and llhttp refuses it
STAND_IN = b"GET"  # for llhttp, a request's method changes nothing but CONNECT's framing

STATUS_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created", 202: b"Accepted",
    204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    304: b"Not Modified", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    """Request line plus headers; beyond it the request gets 431."""
    header_timeout: float = 60.0
    """A request head (or the first one on a new connection) must arrive within this."""
    idle_keepalive: float = 60.0
    """An idle keep-alive connection is closed after this long without a request."""
    max_body_buffer: int = 256 * 1024
    """Request body bytes held while waiting for an upstream before reading pauses."""
    max_pipelined: int = 16
    """Requests parsed ahead of the one being answered before the connection is refused."""


class App(Protocol):
    def handle(self, ex: Exchange) -> None:
        """Called once per request when its head is complete; must lead to exactly one
        ``ex.respond(...)`` or ``ex.prepare(...)`` + ``ex.forward(pool)``, now or later.
        The HTTP/2 engine's streams offer the same methods, so one app serves both."""


def note_special(sp: list[bytes | None], i: int, value: bytes) -> bool:
    """Keep a special header's value: the first line wins, as Go's ``Header.Get``, except
    X-Forwarded-For, Connection and Transfer-Encoding, whose lines are joined (the first
    X-Forwarded-For line is also kept apart for the Forwarded shim). Returns False for a
    second Host."""
    prior = sp[i]
    if prior is None:
        sp[i] = value
    elif i == H_HOST:
        return False
    elif i == H_XFF or i == H_CONNECTION or i == H_TE:
        if i == H_XFF and sp[H_XFF_FIRST] is None:
            sp[H_XFF_FIRST] = prior
        sp[i] = prior + b", " + value
    return True


_STATUS_LINES: dict[tuple[int, bytes | None], bytes] = {}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason if reason is not None else STATUS_REASONS.get(status, b"Unknown"))
        if len(_STATUS_LINES) < 256:  # the few an app uses; an odd reason phrase is not kept
            _STATUS_LINES[(status, reason)] = line
    return line


def _forward_head(ex: Exchange, *, drop: frozenset[bytes] = frozenset(), host: bytes | None = None,
                       add: list[bytes] | None = None, xff: bool = True) -> bytes:
    """The request head to send upstream: hop-by-hop and ``drop`` headers removed, Host
    replaced when ``host`` is given, the client address appended to X-Forwarded-For,
    ``add`` lines (each ``b"Name: value"``) appended, framing re-declared."""
    sp = ex.special
    conn_tokens: frozenset[bytes] | None = None
    if sp[H_CONNECTION] is not None:
        conn_tokens = frozenset(t.strip().lower() for t in sp[H_CONNECTION].split(b","))
    lines = [b"%s %s HTTP/1.1" % (ex.method, ex.target)]
    append = lines.append
    for name, lname, value in ex.headers:
        if lname in HOP_BY_HOP or lname in drop:
            continue
        if conn_tokens is not None and lname in conn_tokens:
            continue
        if lname == b"host":
            if host is not None:
                continue
        elif xff and lname == b"x-forwarded-for":
            continue
        append(name + b": " + value)
    if host is not None:
        append(b"Host: " + host)
    if xff:
        client = ex.conn.client_ip
        prior = sp[H_XFF]
        append(b"X-Forwarded-For: " + (prior + b", " + client if prior else client))
    if add:
        lines.extend(add)
    if ex.upgrade:
        append(b"Connection: Upgrade")
        append(b"Upgrade: " + (sp[H_UPGRADE] or b""))
    elif ex.chunked:
        append(b"Transfer-Encoding: chunked")
    append(b"\r\n")
    return b"\r\n".join(lines)


class Exchange(ExchangeBase):
    """One request and its response on a client connection."""

    __slots__ = (
        "upstream", "_pool", "_head", "_body", "_body_size", "_body_done", "_resp_chunked",
        "_resp_close", "tunnel_data",
    )

    def __init__(self, conn: ServerConnection) -> None:
        ExchangeBase.__init__(self, conn, N_SPECIAL)
        self.upstream: UpstreamConnection | None = None
        self._pool: UpstreamPool | None = None
        self._head = b""
        self._body: list[bytes] | None = []
        self._body_size = 0
        self._body_done = False
        self._resp_chunked = False
        self._resp_close = False
        self.tunnel_data = b""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def _arm_at(self, when: float) -> None:
        self.conn.arm(self, when)

    def timeout(self) -> None:
        """A revision timeout fired: 504 if nothing was written yet, else cut the response."""
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abandon()
        if not self._resp_started and self.state != 2:
            self.respond(504, self.timeout_body, close=not self._body_done)
        else:
            self.conn.abort_exchange(self, 504)

    # ---- answering locally ----------------------------------------------------------

    def respond(self, status: int, body: bytes = b"", headers: list[bytes] | tuple[bytes, ...] = (),
                close: bool = False, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """Write a complete response generated here (probe answers, errors)."""
        if self.state >= 2:
            return
        self.state = 2
        self.status = status
        self._resp_started = True
        if not self._body_done:
            close = True  # the rest of the request body would be read as the next request
        close = close or not self.keep_alive
        parts = [status_line(status)]
        for h in headers:
            parts.append(h + b"\r\n")
        if body or status >= 200 and status not in (204, 304):
            parts.append(b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body)))
        if close:
            parts.append(b"Connection: close\r\n")
        elif self.version != b"1.1":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if self.method != b"HEAD":
            parts.append(body)
        data = b"".join(parts)
        self.bytes_out = len(body)
        self.conn.write(data)
        self._finish(close)

    # ---- forwarding -----------------------------------------------------------------

    def prepare(self, *, drop: frozenset[bytes] = frozenset(), host: bytes | None = None,
                add: list[tuple[bytes, bytes]] | None = None) -> None:
        """Build the request head to send upstream: hop-by-hop and ``drop`` headers (lower
        case) removed, Host replaced when ``host`` is given, the client address appended to
        X-Forwarded-For, ``add`` headers appended, framing re-declared."""
        self._head = _forward_head(self, drop=drop, host=host,
                                   add=[n + b": " + v for n, v in add] if add else None)

    def forward(self, pool: UpstreamPool) -> None:
        """Send the prepared request upstream through ``pool``; the response streams back
        as it comes."""
        if self.state != 0:
            return
        if not self._head:
            self.prepare()
        self.state = 1
        self._pool = pool
        up = None if self.upgrade else pool.take_idle()
        if up is not None:
            self._bind(up)
        else:
            pool.connect(self._connected)

    def _connected(self, up: UpstreamConnection | None, error: BaseException | None) -> None:
        if self.state != 1:  # timed out or the client went away meanwhile
            if up is not None:
                up.release_to_pool()
            return
        if up is None:
            assert error is not None
            hook = self.on_connect_error
            if hook is not None and hook(self, error):
                return
            self.fail(502, str(error) or error.__class__.__name__)
            return
        self._bind(up)

    def redirect(self, pool: UpstreamPool) -> None:
        """Forward to another upstream after a failed dial (nothing was sent yet)."""
        self._pool = pool
        up = None if self.upgrade else pool.take_idle()
        if up is not None:
            self._bind(up)
        else:
            pool.connect(self._connected)

    def _bind(self, up: UpstreamConnection) -> None:
        self.upstream = up
        up.start(self)
        if self.special[H_EXPECT] is not None and not self._body_done:
            self._continue()
        body = self._body
        if body:
            self._body = None
            up.write(b"".join([self._head, *body]) if not self.chunked else
                     b"".join([self._head, *(b"%x\r\n%s\r\n" % (len(c), c) for c in body)]))
            if self._body_size >= self.conn.limits.max_body_buffer:
                self.conn.resume_reading()
        else:
            self._body = None
            up.write(self._head)
        if self._body_done and self.chunked:
            up.write(b"0\r\n\r\n")
        if self.upgrade and self.tunnel_data:
            up.write(self.tunnel_data)
            self.tunnel_data = b""

    def _continue(self) -> None:
        """The client waits for ``100 Continue`` before sending its body: send it now that the
        request goes upstream, as Go's server does when the proxy first reads the body (the
        app's own 100, if any, is dropped in ``response_head``)."""
        expect = self.special[H_EXPECT]
        if self.version == b"1.1" and expect is not None and expect.lower() == b"100-continue":
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def fail(self, status: int, message: str) -> None:
        """The upstream failed: an error status if nothing was sent yet, else cut."""
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abandon()
        if not self._resp_started:
            self.respond(status, message.encode("utf-8", "replace") + b"\n")
        else:
            self.conn.abort_exchange(self, status)

    def retry_upstream(self) -> bool:
        """A reused pooled connection died before any response byte; try once more on a
        fresh one when nothing of the request body went out. Returns False if not allowed."""
        if self._retried or self.has_body or self.upgrade or self._pool is None:
            return False
        self._retried = True
        self.upstream = None
        self._pool.connect(self._connected)
        return True

    # request body, from the client connection
    def _body_chunk(self, chunk: bytes) -> None:
        up = self.upstream
        if up is not None:
            up.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        elif self._body is not None:
            self._body.append(chunk)
            self._body_size += len(chunk)
            if self._body_size >= self.conn.limits.max_body_buffer:
                self.conn.pause_reading()

    def _body_end(self) -> None:
        self._body_done = True
        up = self.upstream
        if up is not None and self.chunked:
            up.write(b"0\r\n\r\n")

    # response, from the upstream connection
    def response_head(self, status: int, reason: bytes, lines: list[bytes], has_length: bool,
                      upstream_close: bool) -> None:
        """``lines`` are complete header lines (``b"Name: value\\r\\n"``), hop-by-hop ones
        already removed except for 1xx answers, which pass through as they are."""
        if self.state != 1:
            return
        if status < 200:
            if status == 100:  # the client had its 100 Continue from us (see _continue)
                return
            if status == 101:
                # An upgraded connection lives as long as both ends want it: the total and
                # response-start timeouts end here; the idle timeout watches the tunnel.
                self.status = status
                self._resp_started = True
                self._deadline_total = 0.0
                if self.on_response is not None:
                    self.on_response(self)
            self._write(b"".join([status_line(status, reason), *lines, b"\r\n"]))
            return
        self.status = status
        self._resp_started = True
        if self.on_response is not None:
            self.on_response(self)
        if self.response_headers:
            lines = lines + self.response_headers
        close = not self.keep_alive or not self._body_done or self.upgrade
        extra = b"\r\n"
        if not has_length and self.method != b"HEAD" and status != 204 and status != 304:
            if self.version == b"1.1":
                self._resp_chunked = True
                extra = b"Transfer-Encoding: chunked\r\n\r\n"
            else:
                close = True
        if close:
            extra = b"Connection: close\r\n" + extra
        elif self.version != b"1.1":  # an HTTP/1.0 client keeps the connection only if told
            extra = b"Connection: keep-alive\r\n" + extra
        self._resp_close = close
        self._write(b"".join([status_line(status, reason), *lines, extra]))

    def response_body(self, chunk: bytes) -> None:
        if self.state != 1:
            return
        self.bytes_out += len(chunk)
        self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self._resp_chunked else chunk)

    def response_trailers(self, lines: list[bytes]) -> None:
        """Trailer lines (``b"Name: value\\r\\n"``) of a chunked upstream body, just before its
        end: they close the chunked body sent to the client (an unchunked one drops them)."""
        if self.state == 1 and self._resp_chunked:
            self._resp_chunked = False  # the last chunk is written here, not in response_end
            self.conn.write(b"".join([b"0\r\n", *lines, b"\r\n"]))

    def response_end(self) -> None:
        """The upstream response is complete; the upstream connection was released."""
        self.upstream = None
        if self.state != 1:
            return
        if self._resp_chunked:
            self.conn.write(b"0\r\n\r\n")
        # The answer leaves now, in the one write it was gathered into: the bookkeeping of
        # _finish (stats, histogram, log, the next pipelined request) is off its latency path.
        self.conn.flush()
        self._finish(self._resp_close)

    def _write(self, data: bytes) -> None:
        if self._idle:
            self._last_write = self.conn.loop.time()
        self.conn.write(data)

    def _finish(self, close: bool) -> None:
        self.state = 3
        cb = self.on_finish
        if cb is not None:
            self.on_finish = None
            cb(self)
        self.conn.exchange_done(self, close)


class ServerConnection(batching.Writer, asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time in order."""

    __slots__ = (
        "server", "app", "loop", "limits", "transport", "parser", "client_ip", "peer", "current", "parsing",
        "pipeline", "head_bytes", "head_started", "last_active", "write_paused", "read_paused", "closed",
        "tunnel_up", "first", "bad_input", "wbuf", "_timer", "_timer_at", "method_override",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.peer: Any = None
        self.current: Exchange | None = None  # the one being answered
        self.parsing: Exchange | None = None  # the one whose bytes are arriving
        # Requests parsed ahead of the current one; an empty tuple until the first one, since
        # almost no client pipelines (a deque costs 600 bytes per connection).
        self.pipeline: deque[Exchange] | tuple[()] = ()
        self.head_bytes = 0
        self.head_started = 0.0
        self.last_active = 0.0
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.tunnel_up: UpstreamConnection | None = None
        self.first = True
        self.bad_input: tuple[int, bytes] | None = None
        """(status, body) owed to a bad request once the ones before it are answered."""
        self.wbuf: list[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.method_override: bytes | None = None
        """The method of the request being parsed, when llhttp was given a stand-in for it."""

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer  # (ip, port, ...): Go's RemoteAddr for request logs
        self.client_ip = peer[0].encode() if isinstance(peer, tuple) else b"127.0.0.1"
        self.last_active = self.head_started = self.loop.time()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for ex in (self.current, *self.pipeline):
            if ex is not None and ex.state < 3:
                ex.state = 3
                up = ex.upstream
                ex.upstream = None
                if up is not None:
                    up.abandon()
                if ex.status == 0:
                    ex.status = 499  # client closed before the answer (nginx's convention)
                cb = ex.on_finish
                if cb is not None:
                    ex.on_finish = None
                    cb(ex)
        self.current = None
        self.pipeline = ()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tunnel_up is not None:
            self.tunnel_up.abandon()
            self.tunnel_up = None

    def data_received(self, data: bytes) -> None:
        if self.tunnel_up is not None:
            self.tunnel_up.write(data)
            self.tunnel_activity()
            return
        batching.received(self._received, data)

    def _received(self, data: bytes) -> None:
        if self.first:
            self.first = False
            if data[:3] == b"PRI" and self.server.h2_factory is not None:
                self._switch_h2(data, upgrade_ex=None)
                return
        if self.parsing is None:
            if self.current is None and data[-4:] == b"\r\n\r\n" and _fasthead is not None \
                    and self._whole_head(data):
                return
            if not data.startswith(COMMON_STARTS):
                data = self._stand_in(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade_tail(data[e.args[0]:])
        except httptools.HttpParserError as e:
            bad = e.__context__
            if isinstance(bad, _BadHead):
                self._bad_input(bad.status, bad.body)
            else:
                self._bad_input(400, b"malformed request: " + str(e).encode(errors="replace") + b"\n")

    def _stand_in(self, data: bytes) -> bytes:
        """``data`` starts a request. If its method is a token llhttp does not know (WebDAV's
        and the other registered ones it does), llhttp gets ``STAND_IN`` in its place and the
        Exchange the real name. Only a method that arrives whole at the start of a read is
        seen here: one split across reads, or in a request pipelined behind another in the
        same read, still gets llhttp's 400."""
        end = data.find(b" ", 0, MAX_METHOD + 1)
        if end <= 0:
            return data
        method = data[:end]
        if method in LLHTTP_METHODS or not is_token(method.decode("latin-1")):
            return data
        self.method_override = method
        return STAND_IN + data[end:]

    def _whole_head(self, data: bytes) -> bool:
        """``data`` may be exactly one bodiless request head. If ``_fasthead`` reads it (the
        common case: see ``queueproxy/_fasthead.c``), run it as the httptools callbacks would
        have, in one call instead of a dozen, and return True; else False, nothing changed."""
        if len(data) > self.limits.max_head_bytes:
            return False
        head = _fasthead.request_head(data)
        if head is None:
            return False
        ex = Exchange(self)
        ex.method, ex.target, ex.version, ex.headers, ex.special, ex.keep_alive = head
        if ex.special[H_CL] is not None:
            ex.content_length = 0
        ex._body_done = True
        ex.started_at = self.last_active = self.loop.time()
        self.head_started = 0.0
        self.current = ex
        self._dispatch(ex)
        return True

    def _bad_input(self, status: int, body: bytes) -> None:
        """The parser gave up on this connection. Requests before the bad one are answered
        first, in order; then the bad one gets ``status`` and the connection closes. If the
        bad part is the body of the request being answered, that request fails instead."""
        bad, self.parsing = self.parsing, None
        ex = self.current
        if bad is not None and bad is ex:
            if ex.state < 3:
                ex.fail(status, body.decode(errors="replace").rstrip("\n"))
            else:
                self._close()
            return
        if bad is not None and bad in self.pipeline:
            self.pipeline.remove(bad)  # type: ignore[union-attr]
        if ex is None and not self.pipeline:
            self._reject(status, body)
            return
        self.bad_input = (status, body)
        self.pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()
        elif self.tunnel_up is not None:
            self.tunnel_up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()
        elif self.tunnel_up is not None:
            self.tunnel_up.resume_reading()

    # ---- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        ex = Exchange(self)
        self.parsing = ex
        self.head_bytes = 0
        self.head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.target += url
        self.head_bytes += len(url)
        if self.head_bytes > self.limits.max_head_bytes:
            raise _BadHead(431, b"request header fields too large\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_head_bytes:
            raise _BadHead(431, b"request header fields too large\n")
        lname = name.lower()
        ex.headers.append((name, lname, value))
        i = SPECIAL.get(lname)
        if i is not None and not note_special(ex.special, i, value):
            raise _BadHead(400, b"too many Host headers\n")

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        p = self.parser
        method = self.method_override
        if method is None:
            ex.method = p.get_method()
        else:
            ex.method = method
            self.method_override = None
        ex.version = p.get_http_version().encode()
        if ex.special[H_HOST] is None and ex.version == b"1.1":
            raise _BadHead(400, b"missing required Host header\n")
        ex.keep_alive = p.should_keep_alive()
        ex.upgrade = p.should_upgrade()
        sp = ex.special
        te = sp[H_TE]
        if te is not None:
            # Only chunked, as Go's server: another coding (or chunked twice, joined here as
            # "chunked, chunked") could not be re-framed faithfully.
            if te.strip().lower() != b"chunked":
                raise _BadHead(501, b"unsupported transfer encoding\n")
            ex.chunked = True
        elif sp[H_CL] is not None:
            ex.content_length = int(sp[H_CL])  # llhttp has checked it is digits
        ex._body_done = not ex.chunked and not ex.content_length
        ex.started_at = self.last_active = self.loop.time()
        self.head_started = 0.0
        if self.current is None:
            self.current = ex
            if ex.upgrade and self.server.h2_factory is not None \
                    and (ex.special[H_UPGRADE] or b"").lower() == b"h2c":
                return  # switched to HTTP/2 in _upgrade_tail, which answers it as stream 1
            self._dispatch(ex)
        else:
            if len(self.pipeline) >= self.limits.max_pipelined:
                self._close()
                return
            if not self.pipeline:
                self.pipeline = deque()
            self.pipeline.append(ex)  # type: ignore[union-attr]
            self.pause_reading()

    def on_body(self, chunk: bytes) -> None:
        ex = self.parsing
        if ex is not None and ex.state < 3:
            ex._body_chunk(chunk)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        if ex is not None:
            ex._body_end()
            if ex.state == 3 and ex is self.current:  # answered before the body ended
                self._next()

    # ---- internals ------------------------------------------------------------------

    def _dispatch(self, ex: Exchange) -> None:
        try:
            self.app.handle(ex)
        except Exception:  # an app bug must not take the connection's other requests down
            logger.exception("handler failed")
            if ex.state < 2:
                ex.respond(500, b"internal error\n", close=True)

    def _upgrade_tail(self, rest: bytes) -> None:
        """The parser stopped after an Upgrade (or CONNECT) head: what follows is not HTTP."""
        ex = self.current
        if ex is None or not ex.upgrade:
            self._reject(400, b"unexpected upgrade\n")
            return
        if ex.method == b"CONNECT":
            ex.respond(405, b"CONNECT is not supported\n", close=True)
            return
        ex._body_done = True
        up_proto = (ex.special[H_UPGRADE] or b"").lower()
        if up_proto == b"h2c" and self.server.h2_factory is not None and ex.state == 0:
            self._switch_h2(rest, upgrade_ex=ex)
            return
        if rest:
            if ex.upstream is not None:
                ex.upstream.write(rest)
            else:
                ex.tunnel_data += rest
        self.pause_reading()  # until the upstream says 101

    def _switch_h2(self, data: bytes, upgrade_ex: Exchange | None) -> None:
        assert self.server.h2_factory is not None and self.transport is not None
        proto = self.server.h2_factory(self.server)
        self.server.connections.discard(self)
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if upgrade_ex is not None:
            proto.upgraded_from_h1(upgrade_ex, data)  # type: ignore[attr-defined]
        elif data:
            proto.data_received(data)

    def arm(self, ex: Exchange, when: float) -> None:
        """One timer per connection, re-armed lazily: a request's deadline is nearly always
        later than the one already set, so most requests create no timer at all."""
        t = self._timer
        if t is not None:
            if self._timer_at <= when:
                return
            t.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        ex = self.current
        if ex is not None:
            ex.check_deadline(self.loop.time())

    def tunnel_activity(self) -> None:
        ex = self.current
        if ex is not None and ex._idle:
            ex._last_write = self.loop.time()

    def start_tunnel(self, up: UpstreamConnection) -> None:
        """After a 101: bytes flow raw both ways until either side closes."""
        self.tunnel_up = up
        self.resume_reading()

    def tunnel_closed(self) -> None:
        self.tunnel_up = None
        ex = self.current
        if ex is not None and ex.state < 3:
            ex._finish(True)
        else:
            self._close()

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def exchange_done(self, ex: Exchange, close: bool) -> None:
        if ex is not self.current:
            return
        self.last_active = self.loop.time()
        if close or self.server.draining_close:
            self.current = None
            self._close()
            return
        if self.parsing is ex:  # body still arriving (answered early): wait for its end
            return
        self._next()

    def _next(self) -> None:
        self.current = None
        if self.pipeline:
            ex = self.pipeline.popleft()  # type: ignore[union-attr]
            self.current = ex
            if not self.pipeline and self.bad_input is None:
                self.resume_reading()
            self._dispatch(ex)
        elif self.bad_input is not None:
            self._reject(*self.bad_input)
        elif not self.closed:
            self.resume_reading()

    def abort_exchange(self, ex: Exchange, status: int) -> None:
        """The response already started and cannot be completed: cut the connection."""
        ex.status = ex.status or status
        if ex.state < 3:
            ex._finish(True)
        else:
            self._close()

    def _reject(self, status: int, body: bytes) -> None:
        self.server.rejected += 1
        # Through write(): a response still held by write batching must go out first.
        self.write(b"%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n%s" % (status_line(status), len(body), body))
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.flush()
            self.closed = True
            self.transport.close()

    def sweep(self, now: float) -> None:
        """Called about once a second: cut slow heads and long-idle keep-alive connections."""
        if self.closed or self.tunnel_up is not None:
            return
        if self.head_started and now - self.head_started > self.limits.header_timeout:
            if self.parsing is not None or self.current is None and self.head_bytes:
                self._reject(408, b"request head timeout\n")
            elif self.current is None:
                self._close()
        elif self.current is None and not self.pipeline and self.parsing is None \
                and now - self.last_active > self.limits.idle_keepalive:
            self._close()

    def close_idle(self) -> bool:
        """Drain helper: close the connection if no request is in flight."""
        if self.current is None and self.parsing is None and self.tunnel_up is None:
            self._close()
            return True
        return False


class _BadHead(Exception):
    """Raised from a parser callback: the request head is refused with ``status``."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def h2_connection(server: HttpServer) -> asyncio.Protocol:
    """The ``h2_factory`` for a server that also speaks h2c: the h2 library is imported on
    the first HTTP/2 connection, not at start-up (cold starts pay for every import)."""
    from queueproxy.h2 import H2ServerConnection
    return H2ServerConnection(server)


class HttpServer:
    """Listens on one or more sockets and serves ``app`` with ``ServerConnection``s."""

    def __init__(self, app: App, *, loop: asyncio.AbstractEventLoop | None = None,
                 limits: Limits = Limits(), h2_factory: Callable[[HttpServer], asyncio.Protocol] | None = None,
                 sweep_interval: float = 1.0) -> None:
        self.app = app
        self.loop = loop or asyncio.get_running_loop()
        self.limits = limits
        self.h2_factory = h2_factory
        self.connections: set[Any] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.rejected = 0
        self.draining_close = False
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> ServerConnection:
        return ServerConnection(self)

    async def listen(self, host: str, port: int, *, ssl: Any = None, backlog: int = 1024) -> int:
        srv = await self.loop.create_server(self.protocol, host, port, ssl=ssl, backlog=backlog,
                                            reuse_address=True)
        self.servers.append(srv)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_interval, self._sweep)
        return srv.sockets[0].getsockname()[1]

    def _sweep(self) -> None:
        now = self.loop.time()
        for c in list(self.connections):
            c.sweep(now)
        self._sweeper = self.loop.call_later(self._sweep_interval, self._sweep)

    def stop_listening(self) -> None:
        for s in self.servers:
            s.close()

    def close_idle_connections(self) -> int:
        """Close connections with nothing in flight; later ones close after their response."""
        self.draining_close = True
        return sum(1 for c in list(self.connections) if c.close_idle())

    def in_flight(self) -> int:
        n = 0
        for c in self.connections:
            if getattr(c, "current", None) is not None or getattr(c, "tunnel_up", None) is not None:
                n += 1
            n += getattr(c, "active_streams", 0)
        return n

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for s in self.servers:
            s.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        for s in self.servers:
            await s.wait_closed()
        upstreams = getattr(self, "h2_upstreams", None)  # h2c pools to user containers, if any
        if upstreams is not None:
            upstreams.close()
