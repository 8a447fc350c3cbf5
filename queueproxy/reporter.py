"""Per-second stats: cut a report from ``RequestStats``, keep it as upstream's protobuf
``Stat`` for the :9090 scrape, and push it to our autoscaler over gRPC when configured.

The push never blocks or slows requests: reports go into a bounded queue (the newest
``backlog`` seconds are kept while the autoscaler is away) drained by one background task
that holds a long-lived ``StatIngest.Push`` stream and reconnects with capped exponential
backoff.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from proto import stat_pb2
from queueproxy.stats import RequestStats, StatsReport

logger = logging.getLogger(__name__)

__all__ = ["StatReporter", "StatPusher", "to_stat"]

REPORTING_PERIOD = 1.0


def to_stat(report: StatsReport, pod_name: str, uptime: float, period: float = REPORTING_PERIOD,
            timestamp: int = 0) -> stat_pb2.Stat:
    """Upstream's mapping: counts become per-second rates, concurrencies are averages."""
    return stat_pb2.Stat(
        pod_name=pod_name,
        average_concurrent_requests=report.average_concurrency,
        average_proxied_concurrent_requests=report.average_proxied_concurrency,
        request_count=report.request_count / period,
        proxied_request_count=report.proxied_request_count / period,
        process_uptime=uptime,
        timestamp=timestamp,
    )


class StatReporter:
    """Cuts a report every ``period`` seconds on the loop's clock (a timer, not a task)."""

    def __init__(self, stats: RequestStats, pod_name: str, *, loop: asyncio.AbstractEventLoop,
                 period: float = REPORTING_PERIOD, sinks: tuple[Callable[[stat_pb2.Stat], None], ...] = ()) -> None:
        self.stats = stats
        self.pod_name = pod_name
        self.loop = loop
        self.period = period
        self.sinks = sinks
        self.started_at = loop.time()
        # Before the first tick the Stat holds only pod_name, as upstream's does.
        self.last = stat_pb2.Stat(pod_name=pod_name)
        self.snapshot = self.last.SerializeToString()
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0

    def start(self) -> None:
        self._next = self.loop.time() + self.period
        self._timer = self.loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = self.loop.time()
        self.tick(now)
        self._next += self.period
        if self._next <= now:  # the loop stalled: skip the missed ticks
            self._next = now + self.period
        self._timer = self.loop.call_at(self._next, self._tick)

    def tick(self, now: float) -> stat_pb2.Stat:
        stat = to_stat(self.stats.report(now), self.pod_name, now - self.started_at, self.period)
        self.last = stat
        self.snapshot = stat.SerializeToString()
        for sink in self.sinks:
            try:
                sink(stat)
            except Exception:
                logger.exception("stat sink failed")
        return stat


class StatPusher:
    """Pushes Stats to the autoscaler's ``StatIngest.Push`` stream."""

    def __init__(self, address: str, namespace: str, revision: str, sender: str, *,
                 backlog: int = 60, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        self.address = address
        self.namespace = namespace
        self.revision = revision
        self.sender = sender
        self.queue: deque[kdp_pb2.StatBatch] = deque(maxlen=backlog)
        self.backoff = backoff
        self.connected = False
        self.sent = 0
        self.dropped = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self, stat: stat_pb2.Stat) -> None:
        if not stat.timestamp:
            stat.timestamp = int(time.time())
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        from proto import kdp_pb2  # imported on first use (or by _run): only pods that push pay

        self.queue.append(kdp_pb2.StatBatch(sender=self.sender, messages=[
            stat_pb2.WireStatMessage(namespace=self.namespace, name=self.revision, stat=stat)]))
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _batches(self) -> object:
        assert self._wake is not None
        while True:
            while self.queue:
                batch = self.queue[0]
                yield batch
                if self.queue and self.queue[0] is batch:
                    self.queue.popleft()
                self.sent += 1
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> None:
        # grpc and the protos take ~35 ms to import: do it on a worker thread, so the
        # queue-proxy's first readiness probe and first request (a cold start) do not wait.
        await asyncio.to_thread(_import_grpc)
        import grpc

        from proto import kdp_pb2_grpc

        delay = self.backoff[0]
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address) as channel:
                    stub = kdp_pb2_grpc.StatIngestStub(channel)
                    await asyncio.wait_for(channel.channel_ready(), timeout=5.0)
                    self.connected = True
                    delay = self.backoff[0]
                    logger.info("stats stream to autoscaler %s is up", self.address)
                    await stub.Push(self._batches())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # grpc.aio.AioRpcError, timeouts: retry with backoff
                if self.connected:
                    logger.warning("stats stream to autoscaler %s broke: %s", self.address, e)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])


def _import_grpc() -> None:
    import grpc  # noqa: F401

    from proto import kdp_pb2, kdp_pb2_grpc  # noqa: F401
