"""Shared pieces of the HTTP/2 engine's functional tests (this module holds no tests).

- ``running_proxy``: the queue-proxy's app (``QueueHandler``) on an ``HttpServer`` with the h2
  engine, as ``queueproxy.server`` builds it, on 127.0.0.1 port 0; everything stopped after.
- ``H2Client``: a raw HTTP/2 client (``h2`` library) with prior knowledge or ``Upgrade: h2c``,
  that can hold its receive windows closed to test backpressure.
- ``H2Backend``: a scripted h2c user container; each path is a behaviour (echo, trailers,
  resets, GOAWAY, holding, big bodies, slow reads) and it records what it saw.
- ``GrpcBackend``: a grpc.aio server with generic bytes handlers (no generated code).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings

from queueproxy.drain import Drainer
from queueproxy.h2 import H2ServerConnection
from queueproxy.h2upstream import GoawayFilter
from queueproxy.handler import QueueHandler
from queueproxy.http1 import HttpServer
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamPool

__all__ = ["Proxy", "running_proxy", "H2Client", "Response", "H2Backend", "running_h2_backend",
           "GrpcBackend", "running_grpc_backend", "until"]

WAIT = 10.0  # the most any single step of a test waits for the proxy or a backend


async def until(pred: Callable[[], bool], what: str = "condition") -> None:
    """Wait (bounded) until ``pred()`` holds: synchronisation with other tasks, not timing."""
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# ---- the proxy --------------------------------------------------------------------------------

@dataclass
class Proxy:
    port: int
    server: HttpServer
    handler: QueueHandler
    stats: RequestStats
    drainer: Drainer

    def h2_connections(self) -> list[H2ServerConnection]:
        return [c for c in self.server.connections if isinstance(c, H2ServerConnection)]

    def streams(self) -> list[Any]:
        return [s for c in self.h2_connections() for s in c.streams.values()]


@contextlib.asynccontextmanager
async def running_proxy(user_port: int, *, cc: int = 0, timeout: float = 300.0,
                        response_start_timeout: float = 0.0, idle_timeout: float = 0.0,
                        ready: bool = True) -> AsyncIterator[Proxy]:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool("127.0.0.1", user_port, loop=loop, max_idle=cc if cc > 0 else 1000)
    stats = RequestStats(loop.time())
    drainer = Drainer(30.0, loop)

    async def readiness() -> bool:
        return ready

    handler = QueueHandler(loop=loop, pool=pool, stats=stats, drainer=drainer, readiness=readiness,
                           container_concurrency=cc, timeout=timeout,
                           response_start_timeout=response_start_timeout, idle_timeout=idle_timeout)
    server = HttpServer(handler, loop=loop, h2_factory=H2ServerConnection)
    port = await server.listen("127.0.0.1", 0)
    try:
        yield Proxy(port, server, handler, stats, drainer)
    finally:
        reg = getattr(server, "h2_upstreams", None)
        if reg is not None:
            reg.close()
        await server.close()
        pool.close()
        await asyncio.sleep(0)  # let transports deliver connection_lost


# ---- a raw HTTP/2 client ---------------------------------------------------------------------

@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None
    ended: bool = False
    got_headers: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    unacked: int = 0
    informational: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: H2Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.closed.set()
        for r in self.client.responses.values():
            r.changed.set()
            r.got_headers.set()


class H2Client:
    """A test HTTP/2 client. ``auto_ack=False`` keeps response windows closed until ``ack``."""

    def __init__(self, *, auto_ack: bool = True, window: int = 65535) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.transport: asyncio.Transport | None = None
        self.auto_ack = auto_ack
        self.responses: dict[int, Response] = {}
        self.closed = asyncio.Event()
        self.goaway: int | None = None  # last_stream_id of a GOAWAY received
        self.window_opened = asyncio.Event()
        self._h1: bytearray | None = None
        self._h1_head = b""
        self._hold = False
        self._filter = GoawayFilter()  # h2 would stop at a GOAWAY; real clients finish streams

    @classmethod
    async def connect(cls, port: int, **kw: Any) -> H2Client:
        c = cls(**kw)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _ClientProtocol(c), "127.0.0.1", port)
        c.conn.initiate_connection()
        c._flush()
        return c

    @classmethod
    async def upgrade(cls, port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] = (),
                      body: bytes = b"", extra_h1: bytes = b"", after: list[bytes] = (),
                      **kw: Any) -> tuple[H2Client, bytes]:
        """HTTP/1.1 request with ``Upgrade: h2c``; returns the client and the HTTP/1 answer head.
        ``after``: body pieces written one by one after the head (with ``extra_h1`` framing)."""
        c = cls(**kw)
        c._h1 = bytearray()
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _ClientProtocol(c), "127.0.0.1", port)
        settings = c.conn.initiate_upgrade_connection()
        assert settings is not None
        lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: upgrade.example.com",
                 b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                 b"HTTP2-Settings: " + settings.rstrip(b"=")]
        lines += [n + b": " + v for n, v in headers]
        if body:
            lines.append(b"Content-Length: %d" % len(body))
        assert c.transport is not None
        c.responses[1] = Response()
        c._hold = True  # nothing of HTTP/2 leaves before the whole HTTP/1 request did
        c.transport.write(b"\r\n".join(lines) + b"\r\n" + extra_h1 + b"\r\n" + body)
        await asyncio.wait_for(c._until_h1_head(), WAIT)
        for piece in after:  # the proxy switched already (it sent 101): these reach HTTP/2's side
            c.transport.write(piece)
            await asyncio.sleep(0.01)
        head = bytes(c._h1_head)
        c._hold = False
        c._flush()  # the client preface and SETTINGS, after the body
        return c, head

    async def _until_h1_head(self) -> None:
        while self._h1 is not None and b"\r\n\r\n" not in self._h1 and not self.closed.is_set():
            await asyncio.sleep(0.005)

    def _feed(self, data: bytes) -> None:
        if self._h1 is not None:
            self._h1 += data
            end = self._h1.find(b"\r\n\r\n")
            if end < 0:
                return
            self._h1_head = self._h1[:end + 4]
            rest = bytes(self._h1[end + 4:])
            self._h1 = None
            if not self._h1_head.startswith(b"HTTP/1.1 101"):
                return
            data = rest
            if not data:
                return
        data, goaways = self._filter.feed(data)
        if goaways:
            self.goaway = goaways[-1][0]
            for r in self.responses.values():
                r.changed.set()
        for ev in self.conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                for n, v in ev.headers:
                    if n == b":status":
                        r.status = int(v)
                    else:
                        r.headers[n] = v
                r.got_headers.set()
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None:
                    r.body += ev.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif r is not None:
                    r.unacked += ev.flow_controlled_length
            elif isinstance(ev, h2.events.InformationalResponseReceived) and r is not None:
                r.informational += [int(v) for n, v in ev.headers if n == b":status"]
            elif isinstance(ev, h2.events.TrailersReceived) and r is not None:
                r.trailers.update(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r.reset = int(ev.error_code)
                r.got_headers.set()
            elif isinstance(ev, h2.events.WindowUpdated):
                self.window_opened.set()
            if r is not None:
                r.changed.set()
        self._flush()

    def _flush(self) -> None:
        if self._hold:
            return
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def request(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] = (),
                body: bytes | None = b"", end: bool = True, authority: bytes = b"svc.example.com") -> int:
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = Response()
        hdrs = [(b":method", method), (b":scheme", b"http"), (b":authority", authority), (b":path", path),
                *headers]
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self._flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> int:
        """Send as much of ``data`` as the windows allow; returns the bytes sent."""
        n = min(len(data), self.conn.local_flow_control_window(sid))
        step = self.conn.max_outbound_frame_size
        for i in range(0, n, step):
            self.conn.send_data(sid, data[i:min(i + step, n)])
        if end and n == len(data):
            self.conn.end_stream(sid)
        self._flush()
        return n

    async def send_all(self, sid: int, data: bytes, end: bool = True) -> None:
        while data:
            n = self.send(sid, data)
            data = data[n:]
            if data:
                self.window_opened.clear()
                await asyncio.wait_for(self.window_opened.wait(), WAIT)
        if end:
            self.conn.end_stream(sid)
            self._flush()

    def ack(self, sid: int) -> None:
        r = self.responses[sid]
        if r.unacked:
            self.conn.acknowledge_received_data(r.unacked, sid)
            r.unacked = 0
            self._flush()

    def send_trailers(self, sid: int, trailers: list[tuple[bytes, bytes]]) -> None:
        self.conn.send_headers(sid, trailers, end_stream=True)
        self._flush()

    def reset(self, sid: int, code: int = 0x8) -> None:
        self.conn.reset_stream(sid, code)
        self._flush()

    async def wait(self, sid: int, pred: Callable[[Response], bool] = lambda r: r.done) -> Response:
        r = self.responses[sid]

        async def loop() -> None:
            while not pred(r):
                if self.closed.is_set():
                    raise AssertionError(f"connection closed while waiting on stream {sid}: {r}")
                r.changed.clear()
                await r.changed.wait()
        await asyncio.wait_for(loop(), WAIT)
        return r

    async def get(self, path: bytes, headers: list[tuple[bytes, bytes]] = (), body: bytes = b"",
                  method: bytes | None = None, **kw: Any) -> Response:
        sid = self.request(method or (b"POST" if body else b"GET"), path, headers, body, **kw)
        return await self.wait(sid)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), WAIT)


# ---- a scripted h2c user container ------------------------------------------------------------

class _BackendStream:
    def __init__(self, conn: _BackendConn, sid: int, headers: dict[bytes, bytes]) -> None:
        self.conn = conn
        self.sid = sid
        self.headers = headers
        self.body = bytearray()
        self.ended = asyncio.Event()
        self.got = asyncio.Event()
        self.reset: int | None = None
        self.unacked = 0
        self.trailers: dict[bytes, bytes] = {}


class _BackendConn(asyncio.Protocol):
    def __init__(self, backend: H2Backend) -> None:
        self.backend = backend
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _BackendStream] = {}
        self.window = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.conns.append(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for t in self.tasks:
            t.cancel()
        self.window.set()
        for s in self.streams.values():
            s.ended.set()
            s.got.set()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                s = _BackendStream(self, ev.stream_id, dict(ev.headers))
                self.streams[ev.stream_id] = s
                self.backend.requests.append(s)
                if ev.stream_ended is not None:
                    s.ended.set()
                path = s.headers[b":path"].split(b"?")[0].decode()
                handler = getattr(self.backend, "h_" + path.strip("/").replace("-", "_"), self.backend.h_echo)
                t = asyncio.get_running_loop().create_task(self._run(handler, s))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.body += ev.data
                    s.got.set()
                if self.backend.ack_uploads or s is None:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    s.unacked += ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamEnded):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.ended.set()
                    s.got.set()
            elif isinstance(ev, h2.events.TrailersReceived):
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamReset):
                s = self.streams.get(ev.stream_id)
                self.backend.resets.append((ev.stream_id, int(ev.error_code)))
                if s is not None:
                    s.reset = int(ev.error_code)
                    s.ended.set()
                    s.got.set()
                self.window.set()
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self.window.set()
        self.flush()

    async def _run(self, handler: Callable[[_BackendStream], Awaitable[None]], s: _BackendStream) -> None:
        try:
            await handler(s)
        except h2.exceptions.StreamClosedError:
            pass
        self.flush()

    async def send(self, s: _BackendStream, data: bytes, end: bool = False) -> None:
        """Send respecting flow control; records progress in ``backend.sent``."""
        while data:
            if s.reset is not None or self.transport is None or self.transport.is_closing():
                return
            n = min(len(data), self.conn.local_flow_control_window(s.sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                self.window.clear()
                await self.window.wait()
                continue
            self.conn.send_data(s.sid, data[:n])
            self.backend.sent += n
            data = data[n:]
            self.flush()
        if end:
            self.conn.end_stream(s.sid)
            self.flush()


class H2Backend:
    """The user container for raw HTTP/2 tests. Paths pick the behaviour (``h_<path>``)."""

    def __init__(self) -> None:
        self.conns: list[_BackendConn] = []
        self.requests: list[_BackendStream] = []
        self.resets: list[tuple[int, int]] = []
        self.sent = 0
        self.ack_uploads = True
        self.release = asyncio.Event()
        self.port = 0

    async def h_echo(self, s: _BackendStream) -> None:
        """200 with a JSON body of the request headers and body length."""
        await s.ended.wait()
        body = json.dumps({"headers": [[k.decode(), v.decode()] for k, v in s.headers.items()],
                           "length": len(s.body),
                           "trailers": [[k.decode(), v.decode()] for k, v in s.trailers.items()]}).encode()
        s.conn.conn.send_headers(s.sid, [(b":status", b"200"), (b"content-type", b"application/json"),
                                         (b"x-backend", b"h2")])
        await s.conn.send(s, body, end=True)

    async def h_mirror(self, s: _BackendStream) -> None:
        """Streams the request body back as it arrives (both directions at once)."""
        s.conn.conn.send_headers(s.sid, [(b":status", b"200")])
        s.conn.flush()
        sent = 0
        while True:
            if sent < len(s.body):
                chunk = bytes(s.body[sent:])
                sent += len(chunk)
                await s.conn.send(s, chunk)
                s.conn.conn.acknowledge_received_data(len(chunk), s.sid)
                s.conn.flush()
                continue
            if s.ended.is_set():
                break
            s.got.clear()
            await s.got.wait()
        await s.conn.send(s, b"", end=True)

    async def h_trailers(self, s: _BackendStream) -> None:
        await s.ended.wait()
        s.conn.conn.send_headers(s.sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        await s.conn.send(s, b"partial")
        s.conn.conn.send_headers(s.sid, [(b"grpc-status", b"7"), (b"grpc-message", b"denied")], end_stream=True)

    async def h_rst_before(self, s: _BackendStream) -> None:
        s.conn.conn.reset_stream(s.sid, 0x2)

    async def h_refuse_once(self, s: _BackendStream) -> None:
        if sum(1 for r in self.requests if r.headers[b":path"] == b"/refuse-once") == 1:
            s.conn.conn.reset_stream(s.sid, 0x7)  # REFUSED_STREAM: never processed, may be retried
            return
        await self.h_echo(s)

    async def h_rst_after(self, s: _BackendStream) -> None:
        s.conn.conn.send_headers(s.sid, [(b":status", b"200")])
        await s.conn.send(s, b"some bytes")
        await self.release.wait()
        s.conn.conn.reset_stream(s.sid, 0x2)

    async def h_hold(self, s: _BackendStream) -> None:
        """Headers at once, then nothing until ``release``."""
        s.conn.conn.send_headers(s.sid, [(b":status", b"200")])
        await s.conn.send(s, b"started")
        await self.release.wait()
        await s.conn.send(s, b"done", end=True)

    async def h_hold_before(self, s: _BackendStream) -> None:
        """Nothing until ``release``."""
        await self.release.wait()
        await self.h_echo(s)

    async def h_big(self, s: _BackendStream) -> None:
        n = int(s.headers[b":path"].split(b"?n=")[1])
        s.conn.conn.send_headers(s.sid, [(b":status", b"200")])
        await s.conn.send(s, b"x" * n, end=True)

    async def h_goaway(self, s: _BackendStream) -> None:
        """A graceful GOAWAY naming this stream the last one, then the answer, then close."""
        await s.ended.wait()
        from queueproxy.h2upstream import goaway_frame
        assert s.conn.transport is not None
        s.conn.flush()
        s.conn.transport.write(goaway_frame(s.sid))
        await self.release.wait()
        await self.h_echo(s)

    async def h_drop_after(self, s: _BackendStream) -> None:
        s.conn.conn.send_headers(s.sid, [(b":status", b"200")])
        await s.conn.send(s, b"some bytes")
        await self.release.wait()
        assert s.conn.transport is not None
        s.conn.transport.close()

    async def h_drop(self, s: _BackendStream) -> None:
        assert s.conn.transport is not None
        s.conn.transport.close()

    def unacked(self) -> int:
        return sum(s.unacked for s in self.requests)

    def ack_all(self) -> None:
        for s in self.requests:
            if s.unacked:
                s.conn.conn.acknowledge_received_data(s.unacked, s.sid)
                s.unacked = 0
                s.conn.flush()

    def close(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()


@contextlib.asynccontextmanager
async def running_h2_backend() -> AsyncIterator[H2Backend]:
    b = H2Backend()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _BackendConn(b), "127.0.0.1", 0)
    b.port = srv.sockets[0].getsockname()[1]
    try:
        yield b
    finally:
        b.release.set()
        srv.close()
        b.close()
        await srv.wait_closed()
        await asyncio.sleep(0)


# ---- a gRPC user container -------------------------------------------------------------------

class GrpcBackend:
    """Service ``t.S``: Unary (echo), Hold (waits for a ``gate`` permit), ServerStream (one
    message per ``stream_gate`` permit), ClientStream (total bytes), Bidi (upper-cases each
    message), Fail (aborts with the code and message named in the request, plus trailing
    metadata), Big (answers with the number of bytes asked for)."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.gate = asyncio.Semaphore(0)
        self.stream_gate = asyncio.Semaphore(0)
        self.port = 0
        self.metadata: list[tuple[str, str]] = []

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("t.S", {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Hold": grpc.unary_unary_rpc_method_handler(self.hold),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Big": grpc.unary_unary_rpc_method_handler(self.big),
        })

    async def unary(self, req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        self.metadata = [(k, v) for k, v in ctx.invocation_metadata()]
        return b"echo:" + req

    async def hold(self, req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.gate.acquire()
        finally:
            self.active -= 1
        return req

    async def server_stream(self, req: bytes, ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(req)):
            yield b"message %d" % i
            await self.stream_gate.acquire()

    async def client_stream(self, it: AsyncIterator[bytes], ctx: grpc.aio.ServicerContext) -> bytes:
        n = 0
        count = 0
        async for m in it:
            n += len(m)
            count += 1
        return b"%d bytes in %d messages" % (n, count)

    async def bidi(self, it: AsyncIterator[bytes], ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for m in it:
            yield m.upper()

    async def fail(self, req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        code, _, message = req.decode().partition(":")
        ctx.set_trailing_metadata((("x-why", "because"),))
        await ctx.abort(grpc.StatusCode[code], message)
        raise AssertionError("abort returned")

    async def big(self, req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        return b"b" * int(req)


@contextlib.asynccontextmanager
async def running_grpc_backend() -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                      ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    server.add_generic_rpc_handlers((b.handlers(),))
    b.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield b
    finally:
        for _ in range(100):
            b.gate.release()
            b.stream_gate.release()
        await server.stop(None)


def grpc_channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024)])

