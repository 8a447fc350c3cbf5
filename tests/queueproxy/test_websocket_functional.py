"""Websockets through the queue-proxy at the process level (contract §1.11, §1.6): the upgrade is
tunnelled byte for byte both ways to an aiohttp user container, counts as a request in flight,
and holds the shutdown until it closes."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    QueueProxies,
    QueueProxyProcess,
    eventually,
    fetch_stat,
    kdp_only,
    probe,
    qps,
    upstream_only,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


class WsApp:
    """The user container: ``/ws`` echoes, ``push:N`` makes it send N messages unasked,
    ``close:CODE`` makes it close; the handshake headers are recorded."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.closed_by_client: list[int | None] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("chat.v2",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data.startswith("push:"):
                    for i in range(int(msg.data[5:])):
                        await ws.send_str(f"pushed {i}")
                elif msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye")
                else:
                    await ws.send_str("echo " + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        self.closed_by_client.append(ws.close_code)
        return ws

    async def start(self) -> WsApp:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ws_app() -> AsyncIterator[WsApp]:
    a = await WsApp().start()
    yield a
    await a.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


def url(qp: QueueProxyProcess) -> str:
    return f"http://127.0.0.1:{qp.serving_port}/ws"


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> aiohttp.WSMessage:
    return await asyncio.wait_for(ws.receive(), timeout)


async def test_messages_flow_both_ways_through_the_tunnel(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.get(ws_app.port)
    async with session.ws_connect(url(qp), protocols=("chat.v1", "chat.v2"), headers={"Host": "ws.example"}) as ws:
        assert ws.protocol == "chat.v2"
        await ws.send_str("hello")
        assert (await receive(ws)).data == "echo hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await receive(ws)).data == b"yranib\x01\x00"
        big = bytes(range(256)) * 4096  # 1 MiB in one message
        await ws.send_bytes(big)
        assert (await receive(ws)).data == big[::-1]
        await ws.send_str("push:3")  # the app speaks without being asked
        assert [(await receive(ws)).data for _ in range(3)] == ["pushed 0", "pushed 1", "pushed 2"]
    hs = ws_app.handshakes[-1]
    assert hs["Upgrade"].lower() == "websocket" and "upgrade" in hs["Connection"].lower()
    assert "Sec-WebSocket-Key" in hs and hs["Host"] == "ws.example"
    assert hs["X-Forwarded-For"] == "127.0.0.1"


async def test_an_upgrade_the_app_declines_gets_the_apps_answer(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.get(ws_app.port)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(f"http://127.0.0.1:{qp.serving_port}/not-a-websocket")
    assert info.value.status == 404
    async with session.ws_connect(url(qp)) as ws:  # and the next one works
        await ws.send_str("ok?")
        assert (await receive(ws)).data == "echo ok?"


async def test_a_close_from_either_side_reaches_the_other(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.get(ws_app.port)
    async with session.ws_connect(url(qp)) as ws:
        await ws.send_str("close:4001")
        msg = await receive(ws)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
    before = len(ws_app.closed_by_client)
    async with session.ws_connect(url(qp)) as ws:
        await ws.send_str("hi")
        await receive(ws)
        await ws.close(code=4002)
    await eventually(lambda: len(ws_app.closed_by_client) > before, what="the app seeing the close")
    assert ws_app.closed_by_client[-1] == 4002


async def test_an_open_websocket_counts_as_a_request_in_flight(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.fresh(ws_app.port)
    async with session.ws_connect(url(qp)) as ws:
        async def one_in_flight() -> bool:
            return (await fetch_stat(qp))[1].average_concurrent_requests >= 0.999
        await eventually(one_in_flight, timeout=4, interval=0.1, what="a full window with the websocket open")
        await ws.send_str("still here")
        assert (await receive(ws)).data == "echo still here"


async def test_shutdown_waits_for_an_open_websocket(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.fresh(ws_app.port)
    q = qp.quiet_period
    loop = asyncio.get_running_loop()
    async with session.ws_connect(url(qp), timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
        t0 = loop.time()
        qp.signal(signal.SIGTERM)
        await eventually(lambda: _probe_fails(qp), timeout=2, what="probes failing")
        await asyncio.sleep(1.5 * q - (loop.time() - t0))
        assert qp.returncode is None, "exited under an open websocket"
        await ws.send_str("after the quiet period")
        assert (await receive(ws)).data == "echo after the quiet period"
    assert await qp.wait_exit(10) == 0


async def _probe_fails(qp: QueueProxyProcess) -> bool:
    return (await probe(qp)).status == 503


@kdp_only("upgraded connections keep only the idle timeout, which watches tunnel traffic")
async def test_a_busy_websocket_outlives_the_revision_timeouts(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.get(ws_app.port, REVISION_TIMEOUT_SECONDS="1", REVISION_RESPONSE_START_TIMEOUT_SECONDS="1",
                       REVISION_IDLE_TIMEOUT_SECONDS="1")
    async with session.ws_connect(url(qp)) as ws:
        for i in range(5):  # 1.5 s of traffic, a message every 0.3 s
            await ws.send_str(f"m{i}")
            assert (await receive(ws)).data == f"echo m{i}"
            await asyncio.sleep(0.3)
        msg = await receive(ws, timeout=4)  # then silence: the idle timeout ends it
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@upstream_only("upstream bounds a websocket's life by the revision timeout")
async def test_upstream_cuts_a_websocket_at_the_revision_timeout(
        ws_app: WsApp, qps: QueueProxies, session: aiohttp.ClientSession) -> None:
    qp = await qps.get(ws_app.port, REVISION_TIMEOUT_SECONDS="1")
    async with session.ws_connect(url(qp)) as ws:
        closed = False
        for i in range(10):
            with contextlib.suppress(ConnectionError):
                await ws.send_str(f"m{i}")
            msg = await receive(ws)
            if msg.type != aiohttp.WSMsgType.TEXT:
                closed = True
                break
            await asyncio.sleep(0.3)
        assert closed
