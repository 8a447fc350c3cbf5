"""Harness for the autoscaler's functional tests: a server on 127.0.0.1 with a fake clock, a fake
scale target, and gRPC clients for control, stat push and the decision feed.

The clock is driven by the test (``server.service.step(clock.ns)``), never by sleeping; the only
waiting is for bytes to cross loopback sockets (:func:`eventually`).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry

from autoscaler.server import AutoscalerServer, ServerOptions
from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

T0 = 1_787_000_000  # an even second
NS = 1_000_000_000
A = "autoscaling.knative.dev/"


class FakeClock:
    """Unix nanoseconds, moved by the test."""

    def __init__(self, t: float = T0) -> None:
        self.ns = int(t * NS)

    def __call__(self) -> int:
        return self.ns

    def set(self, t: float) -> int:
        self.ns = int(t * NS)
        return self.ns


async def eventually(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for ``cond()`` to hold: bytes in flight on loopback, not time logic."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class FakeScaleTarget(kdp_pb2_grpc.ScaleTargetServicer):
    """The local runtime's ScaleTarget: records calls; can refuse the next ``fail`` of them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail = 0

    async def Scale(self, request: kdp_pb2.ScaleRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> kdp_pb2.ScaleResponse:
        self.calls.append((request.namespace, request.revision, request.replicas))
        if self.fail:
            self.fail -= 1
            return kdp_pb2.ScaleResponse(ok=False, error="no capacity")
        return kdp_pb2.ScaleResponse(ok=True, replicas=request.replicas)

    def replicas(self) -> list[int]:
        return [n for _, _, n in self.calls]


@dataclass
class Harness:
    server: AutoscalerServer
    clock: FakeClock
    target: FakeScaleTarget
    channel: grpc.aio.Channel
    decisions: list[kdp_pb2.Decision] = field(default_factory=list)

    @property
    def control(self) -> kdp_pb2_grpc.AutoscalerControlStub:
        return kdp_pb2_grpc.AutoscalerControlStub(self.channel)

    async def sync(self, revision: str = "hello-00001", annotations: dict[str, str] | None = None,
                   cc: int = 0, ready: int | None = 1, namespace: str = "default") -> kdp_pb2.Ack:
        ack = await self.control.SyncRevision(kdp_pb2.RevisionSpec(
            namespace=namespace, revision=revision, service="hello",
            annotations=annotations or {}, container_concurrency=cc, reachable=True))
        if ack.ok and ready is not None:
            ack = await self.pods(ready, revision, namespace)
        return ack

    async def pods(self, ready: int, revision: str = "hello-00001",
                   namespace: str = "default") -> kdp_pb2.Ack:
        return await self.control.ReportPods(kdp_pb2.PodCounts(
            namespace=namespace, revision=revision, ready=ready))

    def step(self, t: float) -> None:
        """The once-a-second work at T0 + t."""
        self.server.service.step(self.clock.set(T0 + t))

    async def settle(self) -> None:
        await self.server.dispatcher.step()
        await self.server.dispatcher.settle()


def stat(t: float | None, c: float, revision: str = "hello-00001", pod: str = "pod-0",
         r: float | None = None) -> stat_pb2.WireStatMessage:
    return stat_pb2.WireStatMessage(namespace="default", name=revision, stat=stat_pb2.Stat(
        pod_name=pod, average_concurrent_requests=c, request_count=c if r is None else r,
        timestamp=0 if t is None else int(T0 + t)))


class Pusher:
    """One ``StatIngest.Push`` stream."""

    def __init__(self, channel: grpc.aio.Channel, sender: str = "pod-0") -> None:
        self.sender = sender
        self.call = kdp_pb2_grpc.StatIngestStub(channel).Push()

    async def send(self, *messages: stat_pb2.WireStatMessage, poke: bool = False) -> None:
        await self.call.write(kdp_pb2.StatBatch(sender=self.sender, messages=messages, poke=poke))

    async def close(self) -> kdp_pb2.PushSummary:
        await self.call.done_writing()
        return await self.call


@contextlib.asynccontextmanager
async def running(options: ServerOptions | None = None, *, clock: FakeClock | None = None,
                  watch: bool = True) -> AsyncIterator[Harness]:
    """An autoscaler on 127.0.0.1 (every port 0) scaling a fake target; stops everything."""
    clock = clock or FakeClock()
    target = FakeScaleTarget()
    target_server = grpc.aio.server()
    kdp_pb2_grpc.add_ScaleTargetServicer_to_server(target, target_server)
    target_port = target_server.add_insecure_port("127.0.0.1:0")
    await target_server.start()
    base = options or ServerOptions()
    opts = ServerOptions(**{**base.__dict__, "host": "127.0.0.1", "grpc_port": 0,
                            "websocket_port": 0, "metrics_port": 0, "debug_port": 0,
                            "clock_loop": False,
                            "scale_target": f"grpc://127.0.0.1:{target_port}"})
    server = AutoscalerServer(opts, clock=clock, registry=CollectorRegistry())
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ports['grpc']}")
    h = Harness(server, clock, target, channel)
    watcher = None
    if watch:
        feed = kdp_pb2_grpc.DecisionFeedStub(channel).Watch(kdp_pb2.WatchRequest(subscriber="test"))

        async def follow() -> None:
            async for d in feed:
                h.decisions.append(d)

        watcher = asyncio.ensure_future(follow())
        await eventually(lambda: server.hub.subscriptions)
    try:
        yield h
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await channel.close()
        await server.stop(0)
        await target_server.stop(0)


async def test_the_harness_starts_and_stops_a_server_on_loopback() -> None:
    async with running() as h:
        assert all(port > 0 for port in h.server.ports.values())
        assert (await h.sync()).ok
