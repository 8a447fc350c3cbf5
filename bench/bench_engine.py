"""The proxy engine's Python cost per request, with no sockets: a request is fed to a
``ServerConnection``, the head it forwards is answered by feeding a response to the
``UpstreamConnection``, all through fake transports. Reports µs per request for the
queue-proxy handler with containerConcurrency 0 and 10 (everything on: stats, breaker,
timeouts, metrics), one request at a time and in bursts of 100 on 100 connections (where, at
containerConcurrency 10, 90 of every 100 wait in the breaker's queue).
Run: ``python -m bench.bench_engine``.
"""
from __future__ import annotations

import asyncio
import time

from queueproxy.drain import Drainer
from queueproxy.handler import QueueHandler
from queueproxy.http1 import HttpServer
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamConnection, UpstreamPool

REQUEST = (b"GET /hello?x=1 HTTP/1.1\r\nHost: hello.default.example.com\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\nX-Request-Id: 1234\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 05:01:08 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n")


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(data)

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...
    def set_protocol(self, protocol: object) -> None: ...  # type: ignore[override]


def make_handler(loop: asyncio.AbstractEventLoop, pool: UpstreamPool, cc: int) -> QueueHandler:
    async def ready() -> bool:
        return True

    return QueueHandler(loop=loop, pool=pool, stats=RequestStats(loop.time()), drainer=Drainer(30, loop),
                        readiness=ready, container_concurrency=cc, timeout=300)


class UpstreamTransport(FakeTransport):
    """Notes its connection in ``asked`` when a request is written to it."""

    def __init__(self, up: UpstreamConnection, asked: list[UpstreamConnection]) -> None:
        super().__init__()
        self.up = up
        self.asked = asked

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.asked.append(self.up)


async def run(cc: int, n: int) -> float:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool("127.0.0.1", 1, loop=loop)
    up = UpstreamConnection(pool)
    up_t = FakeTransport()
    up.connection_made(up_t)
    pool.put_idle(up)

    server = HttpServer(make_handler(loop, pool, cc), loop=loop)
    conn = server.protocol()
    t = FakeTransport()
    conn.connection_made(t)
    t0 = time.perf_counter()
    for _ in range(n):
        conn.data_received(REQUEST)
        up.data_received(RESPONSE)
    dt = time.perf_counter() - t0
    assert len(t.out) == n and t.out[-1].endswith(b"hello world\n"), t.out[-1:]
    return dt / n * 1e6


async def run_bursts(cc: int, width: int, rounds: int) -> float:
    """``width`` clients send at once; the upstream answers whatever reached it, then the loop
    runs its callbacks (a granted waiter is forwarded from one), until all are answered."""
    loop = asyncio.get_running_loop()
    pool = UpstreamPool("127.0.0.1", 1, loop=loop)
    asked: list[UpstreamConnection] = []  # upstream connections a request head was written to
    for _ in range(width):
        up = UpstreamConnection(pool)
        up.connection_made(UpstreamTransport(up, asked))
        pool.put_idle(up)
    server = HttpServer(make_handler(loop, pool, cc), loop=loop)
    clients = []
    for _ in range(width):
        conn = server.protocol()
        t = FakeTransport()
        conn.connection_made(t)
        clients.append((conn, t))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for conn, _t in clients:
            conn.data_received(REQUEST)
        answered = 0
        while answered < width:
            now, asked[:] = asked[:], []
            for up in now:
                up.data_received(RESPONSE)
            answered += len(now)
            await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    for _conn, t in clients:
        assert len(t.out) == rounds and t.out[-1].endswith(b"hello world\n"), t.out[-1:]
    return dt / (rounds * width) * 1e6


def main() -> None:
    import uvloop

    for cc in (0, 10):
        us = min(uvloop.run(run(cc, 20000)) for _ in range(3))
        print(f"containerConcurrency={cc}: {us:.1f} µs of Python per proxied request (no I/O)")
    for cc in (0, 10):
        us = min(uvloop.run(run_bursts(cc, 100, 200)) for _ in range(3))
        print(f"containerConcurrency={cc}, bursts of 100: {us:.1f} µs of Python per proxied request (no I/O)")


if __name__ == "__main__":
    main()
