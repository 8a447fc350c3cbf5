"""The HTTP/2 cleartext (h2c) side of the proxy engine: many streams on one client connection.

``H2ServerConnection`` takes over a connection from ``queueproxy.http1.ServerConnection`` when
the client starts with the HTTP/2 preface (prior knowledge) or asks for ``Upgrade: h2c``. Each
stream becomes an ``H2Stream``, an exchange with the same surface as ``http1.Exchange``
(``method``, ``target``, ``headers``, ``special``, ``started_at``, ``set_timeouts``,
``respond``, ``prepare``, ``forward``...), so the same app (``QueueHandler``, the activator's)
serves both protocols and counts every stream as one request: stats, breaker slots and
revision timeouts are per stream.

``forward(pool)`` sends the stream over h2c to ``pool``'s address (``queueproxy.h2upstream``),
as upstream's transport does for HTTP/2 requests. Bodies stream both ways in DATA frames and
are never held whole: a stream's bytes are acknowledged to the sender (WINDOW_UPDATE) only
once the receiver took them, so each side buffers at most its advertised windows. Response
trailers (``grpc-status``) pass through; RST_STREAM passes both ways.

Errors the client sees from here (as HTTP/2 responses on the stream):
    502  dialling the user container failed, or it reset or dropped the stream before
         answering (body: the error text); RST_STREAM INTERNAL_ERROR once answering began
    504  a revision timeout fired before the response started (body ``request timeout``);
         RST_STREAM CANCEL once it had started
    405  CONNECT
"""
from __future__ import annotations

import asyncio
import binascii
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import h2.events
import h2.exceptions
import h2.settings

from queueproxy import batching
from queueproxy.exchange import ExchangeBase
from queueproxy.h2upstream import (
    CANCEL, INTERNAL_ERROR, NO_ERROR, REFUSED_STREAM, GoawayFilter, H2Sender, H2Settings, H2UpstreamConnection,
    goaway_frame, new_connection, open_connection_window, registry_for, send_window_limited,
)
from queueproxy.http1 import H_EXPECT, H_HOST, H_XFF, N_SPECIAL, SPECIAL, HttpServer, Limits, note_special
from queueproxy.upstream import HOP_BY_HOP, UpstreamPool

logger = logging.getLogger(__name__)

__all__ = ["H2ServerConnection", "H2Stream", "H2Settings", "h2_factory"]

PREFACE_LEN = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
_UPGRADE_HEADERS = HOP_BY_HOP | {b"http2-settings", b"host"}
_DROP_OUT = HOP_BY_HOP | {b"host", b"x-forwarded-for"}
_EMPTY: frozenset[bytes] = frozenset()


class H2Stream(ExchangeBase):
    """One HTTP/2 stream: a request and its response, the engine's exchange for HTTP/2."""

    __slots__ = (
        "sid", "scheme", "authority",
        "up", "up_sid", "_h2pool", "_out_headers", "_refused_retry", "_sent_up", "_acquires",
        "_req_buf", "_req_done", "_req_trailers", "_req_acks", "_up_req_ended", "_up_resp_ended",
        "_resp_buf", "_resp_end", "_resp_trailers", "_sent_end",
    )

    def __init__(self, conn: H2ServerConnection, sid: int) -> None:
        ExchangeBase.__init__(self, conn, N_SPECIAL)
        self.sid = sid
        self.method = b"GET"
        self.target = b"/"
        self.version = b"2"
        self.scheme = b"http"
        self.authority = b""
        self.up: H2UpstreamConnection | None = None
        self.up_sid = 0
        self._h2pool: Any = None
        self._out_headers: list[tuple[bytes, bytes]] | None = None
        self._refused_retry = False  # retried once after REFUSED_STREAM or GOAWAY (never processed)
        self._acquires = 0  # connections asked for (bounded: a peer that drops every one)
        self._sent_up = False  # any request DATA went upstream (then no retry)
        self._req_buf: deque[bytes] = deque()
        self._req_done = False
        self._req_trailers: list[tuple[bytes, bytes]] | None = None
        self._req_acks = True  # False for an upgraded request: its body came over HTTP/1
        self._up_req_ended = False
        self._up_resp_ended = False
        self._resp_buf: deque[bytes] = deque()
        self._resp_end = False
        self._resp_trailers: list[tuple[bytes, bytes]] | None = None
        self._sent_end = False

    def _set_request(self, headers: Any) -> None:
        """Pseudo-headers to attributes; the rest to ``headers`` and ``special`` (as http1)."""
        out = self.headers
        sp = self.special
        for name, value in headers:
            if name[0] == 58:  # b":"
                if name == b":method":
                    self.method = value
                elif name == b":path":
                    self.target = value
                elif name == b":authority":
                    self.authority = value
                elif name == b":scheme":
                    self.scheme = value
                continue
            out.append((name, name, value))
            i = SPECIAL.get(name)
            if i is not None:
                note_special(sp, i, value)  # a second host line is ignored: :authority rules
            if name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    pass
        if self.authority:
            if sp[H_HOST] is None:
                out.append((b"host", b"host", self.authority))
            sp[H_HOST] = self.authority
        elif sp[H_HOST] is not None:
            self.authority = sp[H_HOST]  # type: ignore[assignment]

    # ---- what apps read -------------------------------------------------------------

    @property
    def has_body(self) -> bool:
        return not self._req_done or bool(self._req_buf)

    # ---- timeouts (ExchangeBase's; the connection keeps one timer for all streams) -----

    def _arm_at(self, when: float) -> None:
        self.conn.arm(when)

    def timeout(self) -> None:
        """A revision timeout fired: 504 if nothing was sent yet, else RST_STREAM(CANCEL)."""
        self._release_up(CANCEL)
        if not self._resp_started:
            self._discard_response()
            self.respond(504, self.timeout_body)
        else:
            self.abort(504, CANCEL)

    # ---- answering locally ----------------------------------------------------------

    def respond(self, status: int, body: bytes = b"", headers: list[bytes] | tuple[bytes, ...] = (),
                close: bool = False, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """Send a complete response generated here (probe answers, errors). ``headers`` are
        ``b"Name: value"`` lines, as for HTTP/1; ``close`` has no meaning on a stream."""
        if self.state >= 2:
            return
        self._release_up(CANCEL)
        self.state = 2
        self.status = status
        out = [(b":status", str(status).encode())]
        for line in headers:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
        if body or status >= 200 and status not in (204, 304):
            out.append((b"content-type", content_type))
            out.append((b"content-length", str(len(body)).encode()))
        if self.method == b"HEAD":
            body = b""
        self.bytes_out = len(body)
        if not self._send_headers(out, end_stream=not body):
            return
        self._resp_started = True
        if body:
            self._resp_buf.append(body)
            self._resp_end = True
            self.pump_response()
        else:
            self._complete()

    # ---- forwarding -----------------------------------------------------------------

    def prepare(self, *, drop: frozenset[bytes] = _EMPTY, host: bytes | None = None,
                add: list[tuple[bytes, bytes]] | None = None) -> None:
        """The request headers to send upstream: hop-by-hop and ``drop`` headers (lower case)
        removed (``te: trailers`` kept, gRPC needs it), ``:authority`` from ``host`` when
        given, the client address appended to X-Forwarded-For, ``add`` appended."""
        out = [(b":method", self.method), (b":scheme", b"http"),
               (b":authority", host or self.authority), (b":path", self.target)]
        append = out.append
        for name, _, value in self.headers:
            if name in _DROP_OUT or name in drop:
                if name == b"te" and value.lower() == b"trailers":
                    append((b"te", b"trailers"))
                continue
            append((name, value))
        client = self.conn.client_ip
        prior = self.special[H_XFF]
        append((b"x-forwarded-for", prior + b", " + client if prior else client))
        if add:
            for name, value in add:
                append((name.lower(), value))
        self._out_headers = out

    def forward(self, pool: UpstreamPool) -> None:
        """Send the prepared request over h2c to ``pool``'s address; the response streams back."""
        if self.state != 0:
            return
        if self._out_headers is None:
            self.prepare()
        self.state = 1
        self._h2pool = registry_for(self.conn.server, self.conn.settings).pool(pool.host, pool.port)
        self._h2pool.acquire(self._bound)

    def _bound(self, up: H2UpstreamConnection | None, error: BaseException | None) -> None:
        if self.state != 1:  # timed out or reset meanwhile
            return
        if up is None:
            assert error is not None
            hook = self.on_connect_error
            if hook is not None and hook(self, error):
                return
            self.fail(502, str(error) or error.__class__.__name__)
            return
        end = self._req_done and not self._req_buf and self._req_trailers is None
        assert self._out_headers is not None
        sid = up.open_stream(self, self._out_headers, end)
        if sid is None:  # that connection filled up or is going away: ask again, a few times
            self._acquires += 1
            if self._acquires > 3:
                self.fail(502, f"no usable h2c connection to {self._h2pool.address}")
            else:
                self._h2pool.acquire(self._bound)
            return
        self.up = up
        self.up_sid = sid
        if end:
            self._up_req_ended = True
            return
        expect = self.special[H_EXPECT]
        if expect is not None and not self._req_done and not self._req_buf and expect.lower() == b"100-continue":
            # the client waits for 100 before its body: send it now that the request goes
            # upstream, as the HTTP/1 side does (the app's own 1xx are dropped in up_response)
            self._send_headers([(b":status", b"100")], end_stream=False)
        self.pump_request()

    def redirect(self, pool: UpstreamPool) -> None:
        """Forward to another upstream after a failed dial (nothing was sent yet)."""
        if self.state != 1:
            return
        self._acquires = 0
        self._h2pool = registry_for(self.conn.server, self.conn.settings).pool(pool.host, pool.port)
        self._h2pool.acquire(self._bound)

    def fail(self, status: int, message: str) -> None:
        """The upstream failed: an error status if nothing was sent yet, else RST_STREAM."""
        self._release_up(CANCEL)
        if not self._resp_started:
            self._discard_response()
            self.respond(status, message.encode("utf-8", "replace") + b"\n")
        else:
            self.abort(status, INTERNAL_ERROR)

    def abort(self, status: int, code: int) -> None:
        """End the stream with RST_STREAM ``code`` (the response cannot be completed)."""
        if self.state == 3:
            return
        self.status = self.status or status
        self._release_up(CANCEL)
        self._discard_response()
        if not self._sent_end:
            self._sent_end = True
            try:
                self.conn.h2.reset_stream(self.sid, code)
            except h2.exceptions.H2Error:
                pass
            self.conn.mark()
        self._finish()

    # ---- request body, from the client ----------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self.state >= 2:
            if self._req_acks:
                self.conn.ack(self.sid, len(data))
            return
        self._req_buf.append(data)
        if self.up is not None:
            self.pump_request()

    def on_end(self) -> None:
        self._req_done = True
        if self.up is not None:
            self.pump_request()

    def on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._req_trailers = [(n, v) for n, v in headers if n[0] != 58]
        self.on_end()

    def on_reset(self, code: int) -> None:
        """The client reset the stream."""
        self._sent_end = True
        self._req_done = True
        if self.status == 0:
            self.status = 499  # client closed before the answer (nginx's convention)
        self._release_up(CANCEL)
        self._discard_response()
        self._finish()

    def pump_request(self) -> None:
        """Move buffered request body upstream as the upstream windows allow."""
        up = self.up
        if up is None or up.write_paused or self._up_req_ended:
            return
        buf = self._req_buf
        if buf:
            end = self._req_done and self._req_trailers is None
            sent = send_window_limited(up.h2, self.up_sid, buf, end)
            if sent < 0:  # the upstream closed its side: drop the rest
                self._up_req_ended = True
                self._drop_request_body()
                return
            if sent:
                self._sent_up = True
                if self._req_acks:
                    self.conn.ack(self.sid, sent)
                if end and not buf:
                    self._up_req_ended = True
        if self._req_done and not buf and not self._up_req_ended:
            self._up_req_ended = True
            try:
                if self._req_trailers:
                    up.h2.send_headers(self.up_sid, self._req_trailers, end_stream=True)
                else:
                    up.h2.end_stream(self.up_sid)
            except h2.exceptions.H2Error:
                pass
        up.mark()

    def up_writable(self) -> None:
        if self._req_buf or self._req_done and not self._up_req_ended:
            self.pump_request()

    def _drop_request_body(self) -> None:
        n = sum(len(c) for c in self._req_buf)
        self._req_buf.clear()
        if self._req_acks:
            self.conn.ack(self.sid, n)

    # ---- response, from the upstream ------------------------------------------------

    def up_response(self, headers: list[tuple[bytes, bytes]], ended: bool = False) -> None:
        """Response headers; ``ended``: they also end the stream (gRPC's Trailers-Only
        errors), so they go out as one HEADERS frame with END_STREAM, as they came."""
        if self.state != 1:
            return
        out = []
        status = 0
        for name, value in headers:
            if name[0] == 58:
                if name == b":status":
                    status = int(value)
                    out.insert(0, (name, value))
                continue
            out.append((name, value))
        if status < 200:
            return  # informational answers stay between us and the user container
        self.status = status
        if self.on_response is not None:
            self.on_response(self)
            if self.state != 1:
                return
        if self.response_headers:
            for line in self.response_headers:
                name, _, value = line.partition(b":")
                out.append((name.strip().lower(), value.strip()))
        if self._send_headers(out, end_stream=ended):
            self._resp_started = True
            if ended:
                self._up_resp_ended = True
                self._complete()
            elif self._idle:
                self._last_write = self.conn.loop.time()

    def up_data(self, data: bytes) -> None:
        if self.state != 1:
            if self.up is not None:
                self.up.ack(self.up_sid, len(data))
            return
        self._resp_buf.append(data)
        self.pump_response()

    def up_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._resp_trailers = [(n, v) for n, v in headers if n[0] != 58]

    def up_end(self) -> None:
        self._up_resp_ended = True
        if self.state == 1:
            self._resp_end = True
            self.pump_response()

    def up_reset(self, code: int) -> None:
        """The user container reset the stream (the upstream connection forgot it already)."""
        self.up = None
        if self.state != 1:
            return
        if code == REFUSED_STREAM and self._retry():
            return
        if not self._resp_started:
            self.fail(502, f"upstream reset the stream (error code {code})")
        else:
            self.abort(502, code)

    def up_failed(self, message: str, retryable: bool) -> None:
        """The upstream connection went away under this stream (already forgotten there)."""
        self.up = None
        if self.state != 1:
            return
        if retryable and self._retry():
            return
        self.fail(502, message)

    def _retry(self) -> bool:
        """The user container never processed the stream: open it again elsewhere, once,
        if no request body went up yet (the buffered body is still here)."""
        if self._refused_retry or self._sent_up or self._resp_started:
            return False
        self._refused_retry = True
        self._up_req_ended = False
        self._h2pool.acquire(self._bound)
        return True

    def pump_response(self) -> None:
        """Move buffered response bytes to the client as its windows allow; end the stream
        (with trailers when there are some) once everything went."""
        conn = self.conn
        if conn.write_paused or self._sent_end:
            return
        buf = self._resp_buf
        if buf:
            sent = send_window_limited(conn.h2, self.sid, buf)
            if sent < 0:
                self.abort(499, CANCEL)
                return
            if sent:
                self.bytes_out += sent if self.state == 1 else 0
                if self._idle:
                    self._last_write = conn.loop.time()
                if self.up is not None:
                    self.up.ack(self.up_sid, sent)
                conn.mark()
        if not buf and self._resp_end:
            trailers = self._resp_trailers
            if trailers:
                self._send_headers(trailers, end_stream=True)
            else:
                try:
                    conn.h2.end_stream(self.sid)
                except h2.exceptions.H2Error:
                    pass
                conn.mark()
            self._complete()

    def _discard_response(self) -> None:
        if self._resp_buf:
            if self.up is not None:
                self.up.ack(self.up_sid, sum(len(c) for c in self._resp_buf))
            self._resp_buf.clear()
        self._resp_end = False
        self._resp_trailers = None

    # ---- endings --------------------------------------------------------------------

    def _send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> bool:
        try:
            self.conn.h2.send_headers(self.sid, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            self.on_reset(CANCEL)
            return False
        except h2.exceptions.H2Error as e:
            logger.warning("cannot send headers on stream %d: %s", self.sid, e)
            self.abort(502, INTERNAL_ERROR)
            return False
        self.conn.mark()
        return True

    def _complete(self) -> None:
        """The response went out whole. A client still sending is told to stop (RST_STREAM
        NO_ERROR, RFC 9113 §8.1)."""
        self._sent_end = True
        if not self._req_done:
            try:
                self.conn.h2.reset_stream(self.sid, NO_ERROR)
            except h2.exceptions.H2Error:
                pass
            self.conn.mark()
        self._release_up(NO_ERROR)
        self._finish()

    def _release_up(self, code: int | None) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.release(self.up_sid, None if self._up_req_ended and self._up_resp_ended else code)

    def _finish(self) -> None:
        if self.state == 3:
            return
        self.state = 3
        if self._req_buf:
            self._drop_request_body()
        cb = self.on_finish
        if cb is not None:
            self.on_finish = None
            cb(self)
        self.conn.stream_done(self)


class H2ServerConnection(H2Sender, asyncio.Protocol):
    """One client connection speaking HTTP/2: streams are dispatched to the server's app."""

    def __init__(self, server: HttpServer, settings: H2Settings | None = None) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.limits: Limits = server.limits
        self.settings = settings or H2Settings(max_header_list_size=max(1024, server.limits.max_head_bytes))
        self.h2 = new_connection(self.settings, client_side=False)
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.streams: dict[int, H2Stream] = {}
        self.started = False
        self.closed = False
        self.write_paused = False
        self.last_active = 0.0
        self.goaway_last: int | None = None  # set once we sent GOAWAY: streams above it are refused
        self._peer_goaway = False
        self._highest = 0
        self._upgrade_body = 0  # bytes of an upgraded request's HTTP/1 body still to come
        self._filter = GoawayFilter(PREFACE_LEN)
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._dispatch: dict[type, Callable[[Any], None]] = {
            h2.events.RequestReceived: self._on_request,
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_end,
            h2.events.TrailersReceived: self._on_trailers,
            h2.events.StreamReset: self._on_reset,
            h2.events.WindowUpdated: self._on_window,
            h2.events.RemoteSettingsChanged: self._on_settings,
        }

    @property
    def active_streams(self) -> int:
        """Streams in flight, for ``HttpServer.in_flight()`` (drain waits for them)."""
        return len(self.streams)

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if isinstance(peer, tuple) else b"127.0.0.1"
        self.last_active = self.loop.time()
        self.server.connections.add(self)

    def _start(self) -> None:
        self.started = True
        self.h2.initiate_connection()
        open_connection_window(self.h2, self.settings)
        self.mark()

    def upgraded_from_h1(self, ex: Any, rest: bytes) -> None:
        """``Upgrade: h2c`` on HTTP/1.1: answer 101, start HTTP/2 with the client's
        HTTP2-Settings, and serve the original request as stream 1."""
        need = ex.content_length or 0
        if ex.chunked or need > self.settings.stream_window:
            self._refuse_upgrade(413, b"an h2c upgrade request body must have a Content-Length of at most "
                                      b"%d bytes; send larger bodies over HTTP/2" % self.settings.stream_window)
            return
        settings = ex.header(b"http2-settings")
        try:
            if settings is None:
                raise ValueError("no HTTP2-Settings header")
            self.h2.initiate_upgrade_connection(settings + b"=" * (-len(settings) % 4))
        except (ValueError, binascii.Error, h2.exceptions.H2Error) as e:
            self._refuse_upgrade(400, b"bad h2c upgrade: " + str(e).encode(errors="replace"))
            return
        assert self.transport is not None
        self.transport.write(_SWITCHING)
        self.started = True
        open_connection_window(self.h2, self.settings)
        self.mark()
        s = H2Stream(self, 1)
        s.method = ex.method
        s.target = ex.target
        s._set_request([(lname, v) for _, lname, v in ex.headers if lname not in _UPGRADE_HEADERS]
                       + [(b":authority", ex.special[H_HOST] or b"")])
        # The HTTP/1 parser stops at the end of the head: the body leads ``rest``.
        s._req_acks = False
        if need:
            body, rest = rest[:need], rest[need:]
            if body:
                s._req_buf.append(body)
            self._upgrade_body = need - len(body)
        s._req_done = not self._upgrade_body
        s.started_at = ex.started_at or self.loop.time()
        self._highest = 1
        self.streams[1] = s
        try:
            self.transport.resume_reading()  # HTTP/1 may have paused for a large body
        except (RuntimeError, AttributeError):
            pass
        self._run_app(s)
        if rest:
            self.data_received(rest)

    def _refuse_upgrade(self, status: int, message: bytes) -> None:
        assert self.transport is not None
        body = message + b"\n"
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                 status, b"Bad Request" if status == 400 else b"Content Too Large", len(body), body))
        self.closed = True
        self.transport.close()

    def _upgrade_body_received(self, data: bytes) -> bytes:
        """More of the upgraded request's body (still HTTP/1 bytes); returns what follows it."""
        n = min(self._upgrade_body, len(data))
        self._upgrade_body -= n
        s = self.streams.get(1)
        if s is not None:
            s.on_data(data[:n])
            if not self._upgrade_body:
                s.on_end()
        return data[n:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for s in list(self.streams.values()):
            if s.state < 3:
                s.on_reset(CANCEL)
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        batching.received(self._received, data)

    def _received(self, data: bytes) -> None:
        if self._upgrade_body:
            data = self._upgrade_body_received(data)
            if not data:
                return
        if not self.started:
            self._start()
        data, goaways = self._filter.feed(data)
        if data:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                logger.info("h2c protocol error from %s: %s", self.client_ip.decode(), e)
                self.server.rejected += 1
                self._close()
                return
            dispatch = self._dispatch
            for ev in events:
                fn = dispatch.get(type(ev))
                if fn is not None:
                    fn(ev)
        if goaways:
            self._peer_goaway = True
            if not self.streams:
                self._close()
        self.mark()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump_all()

    # ---- h2 events ------------------------------------------------------------------

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        self._highest = sid
        self.last_active = now = self.loop.time()
        if self._peer_goaway or self.goaway_last is not None and sid > self.goaway_last:
            try:
                self.h2.reset_stream(sid, REFUSED_STREAM)
            except h2.exceptions.H2Error:
                pass
            return
        s = H2Stream(self, sid)
        s._set_request(ev.headers)
        s._req_done = ev.stream_ended is not None
        s.started_at = now
        self.streams[sid] = s
        if s.method == b"CONNECT":
            s.respond(405, b"CONNECT is not supported\n")
            return
        self._run_app(s)

    def _run_app(self, s: H2Stream) -> None:
        try:
            self.app.handle(s)
        except Exception:  # an app bug must not take the connection's other streams down
            logger.exception("handler failed")
            if s.state < 2:
                s.respond(500, b"internal error\n")

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        s = self.streams.get(sid)
        data = ev.data
        unused = ev.flow_controlled_length - (len(data) if s is not None else 0)
        if unused:  # padding, or data for a stream we are done with
            self.h2.acknowledge_received_data(unused, sid)
        if s is not None:
            if ev.stream_ended is not None:
                s._req_done = True  # so the body's last DATA frame upstream ends the stream too
            if data:
                s.on_data(data)
            elif ev.stream_ended is not None:
                s.on_end()

    def _on_end(self, ev: h2.events.StreamEnded) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None and not s._up_req_ended:
            s.on_end()

    def _on_trailers(self, ev: h2.events.TrailersReceived) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None:
            s.on_trailers(ev.headers)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None:
            s.on_reset(int(ev.error_code))

    def _on_window(self, ev: h2.events.WindowUpdated) -> None:
        if ev.stream_id:
            s = self.streams.get(ev.stream_id)
            if s is not None and (s._resp_buf or s._resp_end):
                s.pump_response()
        else:
            self._pump_all()

    def _on_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            self._pump_all()

    def _pump_all(self) -> None:
        for s in list(self.streams.values()):
            if s._resp_buf or s._resp_end:
                s.pump_response()

    # ---- used by streams ------------------------------------------------------------

    def stream_done(self, s: H2Stream) -> None:
        if self.streams.pop(s.sid, None) is None:
            return
        self.last_active = self.loop.time()
        if not self.streams and (self._peer_goaway or self.goaway_last is not None or self.server.draining_close):
            self._close()

    def arm(self, when: float) -> None:
        """One timer for all streams, set to the earliest deadline; when it fires every
        stream checks its own and re-arms."""
        t = self._timer
        if t is not None:
            if self._timer_at <= when:
                return
            t.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.check_deadlines(self.loop.time())

    def check_deadlines(self, now: float) -> None:
        """Time out every stream whose revision deadline is at or before ``now``."""
        for s in list(self.streams.values()):
            s.check_deadline(now)

    # ---- connection lifetime (the names HttpServer calls on every connection) -------

    def goaway(self) -> None:
        """Tell the client to open no more streams; those already open finish."""
        if self.goaway_last is None and self.transport is not None and not self.closed:
            self.goaway_last = self._highest
            self.flush()
            self.transport.write(goaway_frame(self._highest))

    def close_idle(self) -> bool:
        """Drain helper: GOAWAY now; close at once if no stream is in flight, else after the last."""
        if self.closed:
            return True
        if not self.streams:
            self._close()
            return True
        self.goaway()
        return False

    def sweep(self, now: float) -> None:
        """Called about once a second: close connections idle (no stream) for too long, and
        ones that never sent their preface within the header timeout."""
        if self.closed or self.streams:
            return
        limit = self.limits.idle_keepalive if self._highest else self.limits.header_timeout
        if now - self.last_active > limit:
            self._close()

    def _close(self) -> None:
        if self.closed or self.transport is None:
            return
        try:
            self.h2.close_connection(last_stream_id=self._highest)
        except h2.exceptions.H2Error:
            pass
        self.flush()
        self.closed = True
        self.transport.close()


def h2_factory(settings: H2Settings) -> Callable[[HttpServer], H2ServerConnection]:
    """An ``HttpServer(h2_factory=...)`` value with non-default HTTP/2 settings."""
    def make(server: HttpServer) -> H2ServerConnection:
        return H2ServerConnection(server, settings)
    return make

