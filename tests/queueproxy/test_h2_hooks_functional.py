"""The activator's hooks on HTTP/2 streams (the same as on HTTP/1 exchanges): ``on_response``,
``response_headers``, ``timeout_body``, ``on_connect_error`` with ``redirect``; driven by a small
activator-like app on a real ``HttpServer`` with the h2 engine, against the scripted h2c user
container on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queueproxy.h2 import H2ServerConnection
from queueproxy.http1 import HttpServer
from queueproxy.upstream import UpstreamPool

from tests.queueproxy.test_h2_harness import H2Backend, H2Client, running_h2_backend, until

pytestmark = pytest.mark.functional


class RoutingApp:
    """Forwards every stream to ``first``; when dialling it fails, to ``second`` (if any)."""

    def __init__(self, first: UpstreamPool, second: UpstreamPool | None) -> None:
        self.first = first
        self.second = second
        self.responses: list[int] = []
        self.errors: list[str] = []

    def handle(self, ex: Any) -> None:
        ex.on_response = lambda e: self.responses.append(e.status)
        ex.on_connect_error = self.connect_error
        ex.response_headers = [b"Server-Timing: activator-wait;dur=1.500\r\n"]
        ex.timeout_body = b"activator request timeout"
        ex.set_timeouts(30.0)
        ex.prepare(host=b"first.example.com")
        ex.forward(self.first)

    def connect_error(self, ex: Any, error: BaseException) -> bool:
        self.errors.append(str(error))
        if self.second is None:
            return False
        ex.prepare(host=b"second.example.com")
        ex.redirect(self.second)
        return True


@contextlib.asynccontextmanager
async def serving(app: RoutingApp) -> AsyncIterator[tuple[HttpServer, H2Client]]:
    loop = asyncio.get_running_loop()
    server = HttpServer(app, loop=loop, h2_factory=H2ServerConnection)
    port = await server.listen("127.0.0.1", 0)
    client = await H2Client.connect(port)
    try:
        yield server, client
    finally:
        await client.close()
        server.h2_upstreams.close()  # type: ignore[attr-defined]
        await server.close()


async def dead_port() -> int:
    async with running_h2_backend() as b:
        return b.port


@pytest.fixture
async def backend() -> AsyncIterator[H2Backend]:
    async with running_h2_backend() as b:
        yield b


async def test_a_failed_dial_asks_the_app_which_redirects_to_another_upstream(backend: H2Backend) -> None:
    loop = asyncio.get_running_loop()
    dead = UpstreamPool("127.0.0.1", await dead_port(), loop=loop)
    app = RoutingApp(dead, UpstreamPool("127.0.0.1", backend.port, loop=loop))
    async with serving(app) as (_, client):
        r = await client.get(b"/echo")
    assert r.status == 200
    assert dict(json.loads(r.body)["headers"])[":authority"] == "second.example.com"
    assert len(app.errors) == 1 and app.errors[0].startswith("dial tcp 127.0.0.1:")
    assert app.responses == [200]
    assert r.headers[b"server-timing"] == b"activator-wait;dur=1.500"


async def test_a_failed_dial_the_app_does_not_handle_gives_502() -> None:
    loop = asyncio.get_running_loop()
    app = RoutingApp(UpstreamPool("127.0.0.1", await dead_port(), loop=loop), None)
    async with serving(app) as (_, client):
        r = await client.get(b"/echo")
    assert r.status == 502 and r.body.startswith(b"dial tcp 127.0.0.1:")
    assert app.responses == []


async def test_the_apps_timeout_body_is_the_504_answer(backend: H2Backend) -> None:
    loop = asyncio.get_running_loop()
    app = RoutingApp(UpstreamPool("127.0.0.1", backend.port, loop=loop), None)
    async with serving(app) as (server, client):
        sid = client.request(b"GET", b"/hold-before")
        await until(lambda: backend.requests, "the request to reach the user container")
        (conn,) = [c for c in server.connections if isinstance(c, H2ServerConnection)]
        (stream,) = conn.streams.values()
        conn.check_deadlines(stream.started_at + 30.0)
        r = await client.wait(sid)
    assert (r.status, bytes(r.body)) == (504, b"activator request timeout")
