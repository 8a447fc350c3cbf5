"""A scripted autoscaler for the runtime's functional tests, and small helpers.

:class:`FakeAutoscaler` serves what the runtime talks to — ``AutoscalerControl`` (recording
every ``SyncRevision`` and ``ReportPods``), ``DecisionFeed`` (what the test publishes with
:meth:`FakeAutoscaler.decide`) and ``StatIngest`` (recording the queue-proxies' pushes) — and
scales like the real one does, by calling the runtime's ``ScaleTarget`` (:meth:`scale`). It
decides nothing by itself: each test says when and to what.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from proto import kdp_pb2, kdp_pb2_grpc

__all__ = ["FakeAutoscaler", "eventually", "pid_alive"]


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition",
                     interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class _Control(kdp_pb2_grpc.AutoscalerControlServicer):
    def __init__(self, owner: FakeAutoscaler) -> None:
        self.owner = owner

    async def SyncRevision(self, request: kdp_pb2.RevisionSpec, context: Any) -> kdp_pb2.Ack:  # noqa: N802
        self.owner.specs.append(request)
        return kdp_pb2.Ack(ok=True)

    async def ReportPods(self, request: kdp_pb2.PodCounts, context: Any) -> kdp_pb2.Ack:  # noqa: N802
        self.owner.pods.append(request)
        return kdp_pb2.Ack(ok=True)


class _Decisions(kdp_pb2_grpc.DecisionFeedServicer):
    def __init__(self, owner: FakeAutoscaler) -> None:
        self.owner = owner

    async def Watch(self, request: kdp_pb2.WatchRequest, context: Any) -> AsyncIterator[kdp_pb2.Decision]:  # noqa: N802
        q: asyncio.Queue[kdp_pb2.Decision] = asyncio.Queue()
        self.owner.watchers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.owner.watchers.discard(q)


class _Stats(kdp_pb2_grpc.StatIngestServicer):
    def __init__(self, owner: FakeAutoscaler) -> None:
        self.owner = owner

    async def Push(self, request_iterator: AsyncIterator[kdp_pb2.StatBatch], context: Any) -> kdp_pb2.PushSummary:  # noqa: N802
        n = 0
        async for batch in request_iterator:
            self.owner.stats.append(batch)
            n += 1
        return kdp_pb2.PushSummary(accepted=n)


class FakeAutoscaler:
    def __init__(self, scale_target: str = "") -> None:
        self.scale_target = scale_target
        self.specs: list[kdp_pb2.RevisionSpec] = []
        self.pods: list[kdp_pb2.PodCounts] = []
        self.stats: list[kdp_pb2.StatBatch] = []
        self.watchers: set[asyncio.Queue[kdp_pb2.Decision]] = set()
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeAutoscaler:
        server = grpc.aio.server()
        kdp_pb2_grpc.add_AutoscalerControlServicer_to_server(_Control(self), server)
        kdp_pb2_grpc.add_DecisionFeedServicer_to_server(_Decisions(self), server)
        kdp_pb2_grpc.add_StatIngestServicer_to_server(_Stats(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port or self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None

    def last_spec(self, revision: str) -> kdp_pb2.RevisionSpec | None:
        return next((s for s in reversed(self.specs) if s.revision == revision), None)

    def last_pods(self, revision: str) -> kdp_pb2.PodCounts | None:
        return next((p for p in reversed(self.pods) if p.revision == revision), None)

    def decide(self, revision: str, *, namespace: str = "default", desired: int = 0, failure: str = "",
               in_panic: bool = False) -> kdp_pb2.Decision:
        d = kdp_pb2.Decision(namespace=namespace, revision=revision, desired_pods=desired, failure=failure,
                             in_panic=in_panic, mode=kdp_pb2.MODE_PROXY)
        for q in self.watchers:
            q.put_nowait(d)
        return d

    async def scale(self, revision: str, replicas: int, *, namespace: str = "default") -> kdp_pb2.ScaleResponse:
        async with grpc.aio.insecure_channel(self.scale_target) as channel:
            return await kdp_pb2_grpc.ScaleTargetStub(channel).Scale(
                kdp_pb2.ScaleRequest(namespace=namespace, revision=revision, replicas=replicas), timeout=5.0)
