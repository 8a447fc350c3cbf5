"""The stat sinks against real servers on 127.0.0.1: a grpc.aio StatIngest and an aiohttp
websocket endpoint. Reconnect delays run on a manual clock; network waits are bounded."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry

from activator.clock import ManualClock
from activator.concurrency import RevisionStat
from activator.metrics import ActivatorMetrics
from activator.reporter import GrpcStatSink, StatReporter, StatSink, WebsocketStatSink
from activator.revisions import RevisionKey
from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

pytestmark = pytest.mark.functional

A, B = RevisionKey("ns", "a"), RevisionKey("ns", "b")
WAIT = 5.0  # bound on any network wait


class Ingest(kdp_pb2_grpc.StatIngestServicer):
    def __init__(self) -> None:
        self.batches: asyncio.Queue[kdp_pb2.StatBatch] = asyncio.Queue()

    async def Push(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        n = 0
        async for batch in request_iterator:
            n += 1
            await self.batches.put(batch)
        return kdp_pb2.PushSummary(accepted=n)


@contextlib.asynccontextmanager
async def grpc_server(ingest: Ingest, port: int = 0) -> AsyncIterator[int]:
    server = grpc.aio.server()
    kdp_pb2_grpc.add_StatIngestServicer_to_server(ingest, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def running(sink: StatSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(sink.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def reconnect(sink: StatSink, clock: ManualClock) -> None:
    """Let backoff delays pass on the manual clock until the sink is connected (bounded)."""
    async with asyncio.timeout(WAIT):
        while not sink.connected:
            if clock.pending:  # jump to the next backoff timer, no further
                await clock.advance(max(0.0, clock.pending[0] - clock.now))
            await asyncio.sleep(0.01)  # real time for the connection attempt itself


async def test_grpc_sink_sends_the_poke_and_the_ticks_on_one_stream() -> None:
    clock, ingest, registry = ManualClock(0.0), Ingest(), CollectorRegistry()
    async with grpc_server(ingest) as port:
        sink = GrpcStatSink(f"127.0.0.1:{port}", pod_name="activator-0", clock=clock,
                            metrics=ActivatorMetrics(registry))
        reporter = StatReporter(sink, clock=clock)
        reporter.start()
        try:
            async with asyncio.timeout(WAIT):
                await sink.wait_connected()
            assert reporter.connected
            assert registry.get_sample_value("kn_activator_stats_conn_reachable", {"peer": "autoscaler"}) == 1
            reporter.request_in(A)
            poke = await asyncio.wait_for(ingest.batches.get(), WAIT)
            assert poke.poke and poke.sender == "activator-0"
            (msg,) = poke.messages
            assert (msg.namespace, msg.name, msg.stat.average_concurrent_requests, msg.stat.request_count) == \
                ("ns", "a", 1.0, 1.0)
            reporter.request_in(B)
            await asyncio.wait_for(ingest.batches.get(), WAIT)
            await clock.advance(1.0)
            tick = await asyncio.wait_for(ingest.batches.get(), WAIT)
            assert not tick.poke and sorted(m.name for m in tick.messages) == ["a", "b"]
        finally:
            await reporter.close()


async def test_grpc_sink_reconnects_after_the_autoscaler_restarts() -> None:
    clock, ingest = ManualClock(0.0), Ingest()
    registry = CollectorRegistry()
    sink: GrpcStatSink | None = None
    async with contextlib.AsyncExitStack() as stack:
        async with grpc_server(ingest) as port:
            sink = GrpcStatSink(f"127.0.0.1:{port}", pod_name="p", clock=clock, metrics=ActivatorMetrics(registry))
            await stack.enter_async_context(running(sink))
            async with asyncio.timeout(WAIT):
                await sink.wait_connected()
        # the server is gone; the sink notices without sending anything
        async with asyncio.timeout(WAIT):
            await sink.wait_connected(False)
        assert registry.get_sample_value("kn_activator_stats_conn_errors_total", {"peer": "autoscaler"}) >= 1
        assert registry.get_sample_value("kn_activator_stats_conn_reachable", {"peer": "autoscaler"}) == 0
        async with grpc_server(ingest, port):
            await reconnect(sink, clock)
            sink.send([], poke=False)
            batch = await asyncio.wait_for(ingest.batches.get(), WAIT)
            assert batch.sender == "p"
    assert not sink.connected


async def test_grpc_sink_drops_stale_stats_queued_while_the_autoscaler_was_away() -> None:
    clock, ingest = ManualClock(0.0), Ingest()
    async with grpc_server(ingest) as port:
        pass  # reserve a port nobody listens on any more
    sink = GrpcStatSink(f"127.0.0.1:{port}", pod_name="p", clock=clock, max_age=30.0, handshake_timeout=0.2)
    async with running(sink):
        sink.send([RevisionStat(A, 5.0, 5.0)])
        await clock.advance(60.0)  # stale by now
        sink.send([RevisionStat(B, 1.0, 1.0)])
        assert not sink.connected
        async with grpc_server(ingest, port):
            await reconnect(sink, clock)
            batch = await asyncio.wait_for(ingest.batches.get(), WAIT)
            assert [m.name for m in batch.messages] == ["b"]
            assert sink.dropped >= 1


class WsAutoscaler:
    """An upstream-like stats endpoint: binary WireStatMessages frames on any path."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[stat_pb2.WireStatMessages] = asyncio.Queue()
        self.sockets: list[web.WebSocketResponse] = []
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await self.messages.put(stat_pb2.WireStatMessages.FromString(msg.data))
        return ws

    async def start(self, port: int = 0) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        return self.runner.addresses[0][1]

    async def restart_clients(self) -> None:
        for ws in self.sockets:
            await ws.close(code=WSCloseCode.SERVICE_RESTART)
        self.sockets.clear()

    async def stop(self) -> None:
        await self.runner.cleanup()


async def test_websocket_sink_sends_binary_wire_stat_messages_with_stat_set() -> None:
    clock, server = ManualClock(0.0), WsAutoscaler()
    port = await server.start()
    try:
        sink = WebsocketStatSink(f"ws://127.0.0.1:{port}", pod_name="activator-0", clock=clock)
        reporter = StatReporter(sink, clock=clock)
        reporter.start()
        try:
            async with asyncio.timeout(WAIT):
                await sink.wait_connected()
            reporter.request_in(A)
            poke = await asyncio.wait_for(server.messages.get(), WAIT)
            (msg,) = poke.messages
            assert msg.HasField("stat") and msg.stat.pod_name == "activator-0"
            assert msg.stat.average_concurrent_requests == 1.0
            await clock.advance(1.0)
            tick = await asyncio.wait_for(server.messages.get(), WAIT)
            (msg,) = tick.messages
            assert msg.HasField("stat") and msg.stat.average_concurrent_requests == 0.0  # adjusted
        finally:
            await reporter.close()
    finally:
        await server.stop()


async def test_websocket_sink_reconnects_when_the_server_says_restarting() -> None:
    clock, server = ManualClock(0.0), WsAutoscaler()
    port = await server.start()
    try:
        sink = WebsocketStatSink(f"ws://127.0.0.1:{port}", pod_name="p", clock=clock)
        async with running(sink):
            async with asyncio.timeout(WAIT):
                await sink.wait_connected()
            await server.restart_clients()
            async with asyncio.timeout(WAIT):
                await sink.wait_connected(False)
            await reconnect(sink, clock)
            sink.send([], poke=True)
            got = await asyncio.wait_for(server.messages.get(), WAIT)
            assert list(got.messages) == []
    finally:
        await server.stop()


async def test_websocket_sink_is_not_connected_while_nobody_listens() -> None:
    clock, server = ManualClock(0.0), WsAutoscaler()
    port = await server.start()
    await server.stop()
    registry = CollectorRegistry()
    sink = WebsocketStatSink(f"ws://127.0.0.1:{port}", pod_name="p", clock=clock, handshake_timeout=0.5,
                             metrics=ActivatorMetrics(registry))
    errors = 0.0
    async with running(sink):
        async with asyncio.timeout(WAIT):
            while errors < 3:  # three refused attempts, each followed by a backoff delay
                if clock.pending:
                    await clock.advance(max(0.0, clock.pending[0] - clock.now))
                await asyncio.sleep(0.01)
                errors = registry.get_sample_value("kn_activator_stats_conn_errors_total", {"peer": "autoscaler"}) or 0
        assert not sink.connected
        assert registry.get_sample_value("kn_activator_stats_conn_reachable", {"peer": "autoscaler"}) == 0
