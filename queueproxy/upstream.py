"""Upstream side of the HTTP/1.1 engine: pooled keep-alive connections to one address.

An ``UpstreamConnection`` carries one exchange at a time: it writes the request head and
body it is given, parses the response with httptools and pushes head, body chunks and end
into the ``Exchange`` (see ``queueproxy.http1``). After a 101 it turns into a raw tunnel.
``UpstreamPool`` keeps idle connections (newest first, so a small working set stays warm)
up to ``max_idle`` and dials new ones when none is free.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from queueproxy import batching

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})

MAX_RESPONSE_HEAD = 1 << 20
"""Bytes of response head (1xx heads included) beyond which the answer is a 502: an app
streaming headers forever must not grow the queue-proxy without bound."""

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})

try:
    from queueproxy import _fasthead
except ImportError:  # not compiled (no C compiler at install): httptools reads every head
    _fasthead = None

if TYPE_CHECKING:
    from queueproxy.http1 import Exchange, ServerConnection

logger = logging.getLogger(__name__)

__all__ = ["UpstreamConnection", "UpstreamPool"]

Connected = Callable[["UpstreamConnection | None", "BaseException | None"], None]


class UpstreamConnection(batching.Writer, asyncio.Protocol):
    __slots__ = (
        "pool", "transport", "parser", "ex", "reused", "got_bytes", "closed", "reason", "headers",
        "has_length", "chunked", "keep_alive", "head_done", "tunnel", "fresh_parser", "wbuf", "hop",
        "n_head", "head_bytes", "body_left",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.reason = b""
        self.headers: list[bytes] = []
        self.hop: list[tuple[bytes, bytes]] = []
        self.has_length = False
        self.chunked = False
        self.keep_alive = True
        self.head_done = False
        self.n_head = 0
        """How many of ``headers`` belong to the head; any later ones are a chunked body's trailers."""
        self.head_bytes = 0
        """Bytes received for this exchange while its final head is not complete."""
        self.body_left = 0
        """Body bytes still to come of a response whose head ``_whole_head`` read."""
        self.tunnel: ServerConnection | None = None
        self.fresh_parser = False
        self.wbuf: list[bytes] | None = None

    # ---- driving it -------------------------------------------------------------------

    def start(self, ex: Exchange) -> None:
        self.ex = ex
        self.got_bytes = False
        self.head_bytes = 0
        self.body_left = 0
        if self.fresh_parser:
            self.parser = httptools.HttpResponseParser(self)
            self.fresh_parser = False

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The exchange gave up on this connection (timeout, client gone): close it."""
        self.ex = None
        self.tunnel = None
        self._close()

    def release_to_pool(self) -> None:
        self.ex = None
        self.pool.put_idle(self)

    def _close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.tunnel is not None:
            client, self.tunnel = self.tunnel, None
            client.tunnel_closed()
            return
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        if self.head_done and not self.has_length and not self.chunked:
            ex.response_end()  # a close-delimited body ends with the connection
            return
        if not self.got_bytes and self.reused and ex.retry_upstream():
            return
        if self.head_done:
            ex.fail(502, "upstream closed mid-response")
        else:
            ex.fail(502, "upstream closed the connection before responding"
                    + (f": {exc}" if exc else ""))

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            self.tunnel.tunnel_activity()
            return
        batching.received(self._received, data)

    def _received(self, data: bytes) -> None:
        if self.ex is None:  # bytes nobody asked for: the connection is out of step
            self._close()
            return
        left = self.body_left
        if left:
            self._body_part(data, left)
            return
        self.got_bytes = True
        if not self.head_done:
            if not self.head_bytes and _fasthead is not None and self._whole_head(data):
                return
            self.head_bytes += len(data)
            if self.head_bytes > MAX_RESPONSE_HEAD:
                self._malformed(f"response head over {MAX_RESPONSE_HEAD} bytes")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._become_tunnel(data[e.args[0]:])
        except httptools.HttpParserError as e:
            self._malformed(str(e))

    def _whole_head(self, data: bytes) -> bool:
        """The first bytes of a response: if they start with a whole head ``_fasthead`` reads
        (the common case: framed by Content-Length, see ``queueproxy/_fasthead.c``), handle
        head and body here, one call instead of a dozen httptools callbacks, and return True;
        otherwise False, nothing changed."""
        ex = self.ex
        assert ex is not None
        if ex.method == b"HEAD" or ex.upgrade:
            return False
        head = _fasthead.response_head(data)
        if head is None:
            return False
        status, reason, start, lines, length, keep_alive = head
        self.head_done = True
        self.has_length = True
        self.chunked = False
        self.keep_alive = keep_alive
        self.reason = reason
        self.headers = [lines] if lines else []
        self.n_head = len(self.headers)
        self.hop = []
        ex.response_head(status, reason, self.headers, True, not keep_alive)
        if len(data) - start < length:
            if len(data) > start:
                ex.response_body(data[start:])
            self.body_left = length - (len(data) - start)
        else:
            self._body_part(data[start:], length)
        return True

    def _body_part(self, data: bytes, left: int) -> None:
        """Body bytes of a response read by ``_whole_head``; ``left`` are still owed."""
        ex = self.ex
        n = len(data)
        if n < left:
            self.body_left = left - n
            if ex is not None:
                ex.response_body(data)
            return
        self.body_left = 0
        if n > left:  # bytes past the response: the connection is out of step, not reused
            self.keep_alive = False
            data = data[:left]
        if data and ex is not None:
            ex.response_body(data)
        self._complete()

    def _malformed(self, why: str) -> None:
        ex, self.ex = self.ex, None
        self._close()
        if ex is not None:
            ex.fail(502, f"malformed response from upstream: {why}")

    def pause_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.pause_reading()
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.resume_reading()
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # ---- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.ex is None:  # bytes past the response just completed: out of step, not reusable
            self._close()
        self.headers = []
        self.hop = []
        self.reason = b""
        self.has_length = False
        self.chunked = False
        self.head_done = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # Lines are prebuilt here so the response head is one join; hop-by-hop ones are
        # kept apart (a 101 passes them on, every other response drops them).
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif lname == b"connection" and value.lower() in _PLAIN_CONNECTION:
                lname = b""  # names no other header: nothing to look up in on_headers_complete
            self.hop.append((lname, name + b": " + value + b"\r\n"))
            return
        if lname == b"content-length":
            self.has_length = True
        self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        ex = self.ex
        if ex is None:
            return
        p = self.parser
        status = p.get_status_code()
        self.keep_alive = p.should_keep_alive()
        if status < 200 or status == 101:
            if status == 101:
                self.head_done = True
            ex.response_head(status, self.reason, self.headers + [h for _, h in self.hop], False, False)
            return
        self.head_done = True
        headers = self.headers
        self.n_head = len(headers)
        for lname, line in self.hop:
            if lname == b"connection":  # drop what Connection names, too (rare)
                tokens = {t.strip().lower() for t in line.split(b":", 1)[1].split(b",")} - {b"close", b"keep-alive"}
                if tokens:
                    headers = [h for h in headers if h.split(b":", 1)[0].lower() not in tokens]
        ex.response_head(status, self.reason, headers, self.has_length, not self.keep_alive)
        if ex.method == b"HEAD":
            # httptools cannot be told a HEAD response has no body: finish here and
            # give the next response a fresh parser.
            self.fresh_parser = True
            self._complete()

    def on_body(self, chunk: bytes) -> None:
        ex = self.ex
        if ex is not None:
            ex.response_body(chunk)

    def on_message_complete(self) -> None:
        ex = self.ex
        if self.head_done and ex is not None:
            if ex.status == 101:  # the parser ends the message at a 101; the tunnel starts next
                return
            self._complete()

    def _complete(self) -> None:
        ex = self.ex
        self.ex = None
        self.head_done = False
        self.reused = True
        # Reuse only a connection that carried the whole request: after an early answer the
        # app still waits for the rest of the body and would read the next request as body.
        if self.keep_alive and ex is not None and not ex.upgrade and ex._body_done:
            self.pool.put_idle(self)
        else:
            self._close()
        if ex is not None:
            if self.chunked and len(self.headers) > self.n_head:  # trailers came after the body
                ex.response_trailers(self.headers[self.n_head:])
            ex.response_end()

    def _become_tunnel(self, rest: bytes) -> None:
        ex = self.ex
        self.ex = None
        if ex is None or ex.status != 101:
            self._close()
            return
        client = ex.conn
        self.tunnel = client
        client.start_tunnel(self)
        if rest:
            client.write(rest)


class UpstreamPool:
    """Keep-alive connections to one upstream address."""

    def __init__(self, host: str, port: int, *, loop: asyncio.AbstractEventLoop | None = None,
                 max_idle: int = 1000, connect_timeout: float = 10.0, ssl: Any = None) -> None:
        self.host = host
        self.port = port
        self.loop = loop or asyncio.get_running_loop()
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.ssl = ssl
        self.idle: list[UpstreamConnection] = []
        self.dials = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed:
                return c
        return None

    def put_idle(self, c: UpstreamConnection) -> None:
        if c.closed:
            return
        if len(self.idle) < self.max_idle:
            self.idle.append(c)
        else:
            c._close()

    def forget(self, c: UpstreamConnection) -> None:
        try:
            self.idle.remove(c)
        except ValueError:
            pass

    def connect(self, done: Connected) -> None:
        task = self.loop.create_task(self._dial(done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, done: Connected) -> None:
        self.dials += 1
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            msg = f"dial tcp {self.host}:{self.port}: " + (
                "connect timeout" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e)))
            done(None, ConnectionError(msg))
            return
        done(proto, None)

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for c in self.idle:
            c._close()
        self.idle.clear()
