"""Upstream side of the HTTP/2 engine: multiplexed h2c (prior knowledge) connections to one address.

Upstream's transport speaks h2c to the user container when the request came in over HTTP/2
(gRPC needs it). Here ``H2UpstreamPool`` keeps a few ``H2UpstreamConnection``s to one address
and hands out the newest one with a free stream slot, dialling another only when every one is
full (the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS``) or going away. Each upstream stream is
bound to one downstream stream (``queueproxy.h2.H2Stream``), which receives the response as
``up_response`` / ``up_data`` / ``up_trailers`` / ``up_end`` / ``up_reset`` / ``up_failed`` and
is told ``up_writable`` when it may send more request body.

Also here, because both sides need them: the tuning knobs (``H2Settings``), ``GoawayFilter``
(the ``h2`` library treats GOAWAY as the end of everything, so GOAWAY frames are taken out of
the byte stream and handled gracefully here: streams the peer did process finish, the rest are
retried), ``send_window_limited`` (move buffered body bytes into a stream as far as flow control
allows) and the per-server registry of pools (``registry_for``).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from queueproxy import batching

if TYPE_CHECKING:
    from queueproxy.h2 import H2Stream

logger = logging.getLogger(__name__)

__all__ = [
    "H2Settings", "GoawayFilter", "H2UpstreamConnection", "H2UpstreamPool", "H2UpstreamRegistry",
    "registry_for", "send_window_limited", "goaway_frame",
]

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL = 0x0, 0x1, 0x2, 0x7, 0x8
_MAX_WINDOW = 2**31 - 1

Acquired = Callable[["H2UpstreamConnection | None", "BaseException | None"], None]


@dataclass(frozen=True, slots=True)
class H2Settings:
    """HTTP/2 tuning, the same for the client-facing and the upstream side."""

    max_concurrent_streams: int = 250
    """Streams one client may have open at once (Go's HTTP/2 server default)."""
    stream_window: int = 256 * 1024
    """Per-stream receive window: the most body bytes held for one stream in each direction."""
    connection_window: int = 4 * 1024 * 1024
    """Per client connection receive window: the most request body bytes held for one client."""
    upstream_connection_window: int = 16 * 1024 * 1024
    """Per upstream connection receive window. Every client's streams share an upstream
    connection, so it is larger: a few clients that stop reading (each holding at most
    ``stream_window``) must not stall the others."""
    max_header_list_size: int = 64 * 1024
    """Largest header block accepted (decoded size)."""
    connect_timeout: float = 10.0
    """Dialling the user container gives up after this long (then 502)."""
    upstream_idle_timeout: float = 90.0
    """An upstream connection with no stream for this long is closed."""

    def __post_init__(self) -> None:
        def check(key: str, value: float, lo: float, hi: float) -> None:
            if not lo <= value <= hi:
                raise ValueError(f"H2Settings.{key}: {value!r} is outside the allowed range [{lo}, {hi}]")

        check("max_concurrent_streams", self.max_concurrent_streams, 1, 2**31 - 1)
        check("stream_window", self.stream_window, 65535, _MAX_WINDOW)
        check("connection_window", self.connection_window, 65535, _MAX_WINDOW)
        check("upstream_connection_window", self.upstream_connection_window, 65535, _MAX_WINDOW)
        check("max_header_list_size", self.max_header_list_size, 1024, 2**31 - 1)
        check("connect_timeout", self.connect_timeout, 0.001, 3600.0)
        check("upstream_idle_timeout", self.upstream_idle_timeout, 0.001, 86400.0)


def new_connection(settings: H2Settings, *, client_side: bool) -> h2.connection.H2Connection:
    """An ``H2Connection`` with our SETTINGS (sent in the preface by ``initiate_connection``).
    Inbound headers are validated; outbound ones are not checked again (about a tenth of the
    cost of a call): they are headers ``h2`` validated on the way in, or ones built here in
    lower case."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=client_side, header_encoding=None,
        validate_outbound_headers=False, normalize_outbound_headers=False))
    codes = h2.settings.SettingCodes
    values = {
        codes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
        codes.INITIAL_WINDOW_SIZE: settings.stream_window,
        codes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
    }
    if client_side:
        values[codes.ENABLE_PUSH] = 0
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=values)
    return conn


def open_connection_window(conn: h2.connection.H2Connection, settings: H2Settings) -> None:
    """After ``initiate_connection``: grow the connection window from 65535 to ours."""
    size = settings.upstream_connection_window if conn.config.client_side else settings.connection_window
    extra = size - 65535
    if extra > 0:
        conn.increment_flow_control_window(extra)


def goaway_frame(last_stream_id: int, error_code: int = NO_ERROR) -> bytes:
    """A GOAWAY frame built outside ``h2`` (whose state machine would stop the connection)."""
    f = GoAwayFrame(0)
    f.last_stream_id = last_stream_id
    f.error_code = error_code
    return f.serialize()


class GoawayFilter:
    """Takes GOAWAY frames out of an inbound HTTP/2 byte stream.

    ``feed(data)`` returns the bytes to give to ``h2`` and the GOAWAYs found, each as
    ``(last_stream_id, error_code)``. The common case (no GOAWAY) returns ``data`` itself;
    only a partial frame header at the end is held back until the next call.
    """

    __slots__ = ("_skip", "_held")

    def __init__(self, preface: int = 0) -> None:
        self._skip = preface  # bytes still to pass before the next frame header
        self._held = b""  # an incomplete frame header, or an incomplete GOAWAY frame

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        pos = self._skip
        if pos >= n:
            self._skip = pos - n
            return data, []
        cuts: list[tuple[int, int]] = []
        found: list[tuple[int, int]] = []
        while True:
            if pos + 9 > n:
                self._held = data[pos:]
                cuts.append((pos, n))
                self._skip = 0
                break
            end = pos + 9 + int.from_bytes(data[pos:pos + 3], "big")
            if data[pos + 3] == 0x7:  # GOAWAY
                if end > n:
                    self._held = data[pos:]
                    cuts.append((pos, n))
                    self._skip = 0
                    break
                found.append((int.from_bytes(data[pos + 9:pos + 13], "big") & 0x7FFFFFFF,
                              int.from_bytes(data[pos + 13:pos + 17], "big")))
                cuts.append((pos, end))
            if end >= n:
                self._skip = end - n
                break
            pos = end
        if not cuts:
            return data, found
        out = []
        start = 0
        for a, b in cuts:
            out.append(data[start:a])
            start = b
        out.append(data[start:])
        return b"".join(out), found


def send_window_limited(conn: h2.connection.H2Connection, sid: int, buf: deque[bytes], end: bool = False) -> int:
    """Send from ``buf`` on stream ``sid`` as far as the flow-control windows allow, in
    frames of at most the peer's frame size; with ``end``, the frame that empties ``buf``
    also ends the stream. Returns the bytes sent, or -1 if the stream is closed (nothing
    more can be sent on it)."""
    try:
        window = conn.local_flow_control_window(sid)
    except h2.exceptions.StreamClosedError:
        return -1
    frame = conn.max_outbound_frame_size
    sent = 0
    while buf and window > 0:
        chunk = buf[0]
        room = window if window < frame else frame
        piece = chunk[:room] if len(chunk) > room else chunk
        try:
            conn.send_data(sid, piece, end_stream=end and piece is chunk and len(buf) == 1)
        except h2.exceptions.ProtocolError:  # closed or half-closed here (only the first can fail)
            return sent or -1
        if piece is chunk:
            buf.popleft()
        else:
            buf[0] = chunk[room:]
        window -= len(piece)
        sent += len(piece)
    return sent


class H2Sender:
    """Sending for an ``h2`` connection, either side: what ``h2`` has queued goes out now, or
    once when the current batch of protocol callbacks ends (``queueproxy.batching``). The
    class using it has ``h2``, ``transport``, ``closed`` and ``_dirty``."""

    h2: Any
    transport: Any
    closed: bool
    _dirty: bool

    def ack(self, sid: int, n: int) -> None:
        """``n`` bytes received on ``sid`` went on to the next hop: open its window again."""
        if n and not self.closed:
            self.h2.acknowledge_received_data(n, sid)
            self.mark()

    def mark(self) -> None:
        """Bytes are waiting in ``h2``: send them now, or when the current batch ends."""
        if self._dirty:
            return
        if batching.active:
            self._dirty = True
            batching.dirty.append(self)
        else:
            self.flush()

    def flush(self) -> None:
        self._dirty = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)


class H2UpstreamConnection(H2Sender, asyncio.Protocol):
    """One h2c connection to the user container, carrying many streams."""

    def __init__(self, pool: H2UpstreamPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.h2 = new_connection(pool.settings, client_side=True)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.goaway = False  # no new streams (GOAWAY received, ids exhausted, or closing)
        self.write_paused = False
        self._filter = GoawayFilter()
        self._dirty = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._dispatch: dict[type, Callable[[Any], None]] = {
            h2.events.ResponseReceived: self._on_response,
            h2.events.DataReceived: self._on_data,
            h2.events.TrailersReceived: self._on_trailers,
            h2.events.StreamEnded: self._on_end,
            h2.events.StreamReset: self._on_reset,
            h2.events.WindowUpdated: self._on_window,
            h2.events.RemoteSettingsChanged: self._on_settings,
        }

    # ---- used by the downstream stream --------------------------------------------

    def can_open(self) -> bool:
        return not self.goaway and not self.closed and \
            len(self.streams) < self.h2.remote_settings.max_concurrent_streams

    def open_stream(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end_stream: bool) -> int | None:
        """Send the request headers on a new stream; None if this connection cannot take it."""
        if self.goaway or self.closed:
            return None
        try:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.NoAvailableStreamIDError:
            self.goaway = True
            self.pool.forget(self)
            return None
        except h2.exceptions.TooManyStreamsError:  # our count and h2's disagree: start afresh
            self.goaway = True
            self.pool.forget(self)
            return None
        self.streams[sid] = stream
        self.mark()
        return sid

    def release(self, sid: int, reset: int | None) -> None:
        """The downstream stream is done with ``sid``; reset it first if ``reset`` is a code."""
        if self.streams.pop(sid, None) is None:
            return
        if reset is not None and not self.closed:
            try:
                self.h2.reset_stream(sid, reset)
            except h2.exceptions.H2Error:
                pass
            self.mark()
        if not self.streams:
            if self.goaway:
                self.close()
            elif not self.closed:
                self._idle_since = self.loop.time()
                if self._idle_timer is None:  # set lazily: busy connections make no timers
                    self._idle_timer = self.loop.call_later(self.pool.settings.upstream_idle_timeout, self._idle)

    def close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.closed:
            return
        try:
            self.h2.close_connection()
        except h2.exceptions.H2Error:
            pass
        self.flush()
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()

    def _idle(self) -> None:
        self._idle_timer = None
        if self.streams or self.closed:
            return
        left = self._idle_since + self.pool.settings.upstream_idle_timeout - self.loop.time()
        if left <= 0:
            self.close()
        else:
            self._idle_timer = self.loop.call_later(left, self._idle)

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        open_connection_window(self.h2, self.pool.settings)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        streams, self.streams = self.streams, {}
        msg = "upstream closed the connection" + (f": {exc}" if exc else "")
        for s in streams.values():
            s.up_failed(msg, retryable=False)

    def data_received(self, data: bytes) -> None:
        batching.received(self._received, data)

    def _received(self, data: bytes) -> None:
        data, goaways = self._filter.feed(data)
        if data:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                logger.warning("h2c protocol error from upstream %s: %s", self.pool.address, e)
                self.flush()
                self._fail_all(f"h2c protocol error from upstream: {e}")
                return
            dispatch = self._dispatch
            for ev in events:
                fn = dispatch.get(type(ev))
                if fn is not None:
                    fn(ev)
        for last, code in goaways:
            self._on_goaway(last, code)
        self.mark()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for s in list(self.streams.values()):
            s.up_writable()

    # ---- h2 events ------------------------------------------------------------------

    def _on_response(self, ev: h2.events.ResponseReceived) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None:
            s.up_response(ev.headers, ev.stream_ended is not None)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        s = self.streams.get(sid)
        data = ev.data
        unused = ev.flow_controlled_length - (len(data) if s is not None else 0)
        if unused:  # padding, or data nobody will read: hand the window back now
            self.h2.acknowledge_received_data(unused, sid)
        if s is not None and data:
            s.up_data(data)

    def _on_trailers(self, ev: h2.events.TrailersReceived) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None:
            s.up_trailers(ev.headers)

    def _on_end(self, ev: h2.events.StreamEnded) -> None:
        s = self.streams.get(ev.stream_id)
        if s is not None:
            s.up_end()

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        s = self.streams.pop(ev.stream_id, None)
        if s is not None:
            s.up_reset(int(ev.error_code))
        if not self.streams and self.goaway:
            self.close()

    def _on_window(self, ev: h2.events.WindowUpdated) -> None:
        if ev.stream_id:
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.up_writable()
        else:
            for s in list(self.streams.values()):
                s.up_writable()

    def _on_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            for s in list(self.streams.values()):
                s.up_writable()

    def _on_goaway(self, last: int, code: int) -> None:
        """The user container stops taking streams: those above ``last`` were never
        processed and may be retried; the rest finish here, then the connection closes."""
        if code != NO_ERROR:
            logger.info("upstream %s sent GOAWAY (error code %d, last stream %d)", self.pool.address, code, last)
        self.goaway = True
        self.pool.forget(self)
        for sid in [sid for sid in self.streams if sid > last]:
            s = self.streams.pop(sid)
            try:
                self.h2.reset_stream(sid, CANCEL)
            except h2.exceptions.H2Error:
                pass
            s.up_failed(f"upstream sent GOAWAY (error code {code})", retryable=True)
        if not self.streams:
            self.close()

    def _fail_all(self, msg: str) -> None:
        streams, self.streams = self.streams, {}
        self.goaway = True
        self.close()
        for s in streams.values():
            s.up_failed(msg, retryable=False)


class H2UpstreamPool:
    """h2c connections to one address; streams go on the newest connection with room."""

    def __init__(self, host: str, port: int, *, loop: asyncio.AbstractEventLoop,
                 settings: H2Settings = H2Settings()) -> None:
        self.host = host
        self.port = port
        self.loop = loop
        self.settings = settings
        self.conns: list[H2UpstreamConnection] = []
        self.dials = 0
        self._waiters: list[Acquired] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def acquire(self, done: Acquired) -> None:
        """Call ``done(connection, None)`` with a connection that can take a stream (at once
        when one is open), or ``done(None, error)`` when dialling fails."""
        for c in reversed(self.conns):
            if c.can_open():
                done(c, None)
                return
        if self._waiters is not None:
            self._waiters.append(done)
            return
        self._waiters = [done]
        task = self.loop.create_task(self._dial())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self) -> None:
        self.dials += 1
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: H2UpstreamConnection(self), self.host, self.port),
                self.settings.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            msg = f"dial tcp {self.host}:{self.port}: " + (
                "connect timeout" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e)))
            waiters, self._waiters = self._waiters or [], None
            err = ConnectionError(msg)
            for w in waiters:
                w(None, err)
            return
        conn: H2UpstreamConnection = proto  # type: ignore[assignment]
        self.conns.append(conn)
        waiters, self._waiters = self._waiters or [], None
        for w in waiters:
            w(conn, None)

    def forget(self, c: H2UpstreamConnection) -> None:
        try:
            self.conns.remove(c)
        except ValueError:
            pass

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for c in list(self.conns):
            c.close()
        self.conns.clear()


class H2UpstreamRegistry:
    """The h2c pools of one server, keyed by upstream address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: H2Settings = H2Settings()) -> None:
        self.loop = loop
        self.settings = settings
        self.pools: dict[tuple[str, int], H2UpstreamPool] = {}

    def pool(self, host: str, port: int) -> H2UpstreamPool:
        key = (host, port)
        p = self.pools.get(key)
        if p is None:
            p = self.pools[key] = H2UpstreamPool(host, port, loop=self.loop, settings=self.settings)
        return p

    def close(self) -> None:
        for p in self.pools.values():
            p.close()


def registry_for(server: Any, settings: H2Settings = H2Settings()) -> H2UpstreamRegistry:
    """The registry kept on ``server`` (an ``HttpServer``) as ``server.h2_upstreams``."""
    reg = getattr(server, "h2_upstreams", None)
    if reg is None:
        reg = H2UpstreamRegistry(server.loop, settings)
        server.h2_upstreams = reg
    return reg
