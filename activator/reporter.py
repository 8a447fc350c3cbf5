"""Reporting the activator's per-revision concurrency to the autoscaler.

:class:`StatReporter` wraps the pure :class:`~activator.concurrency.ConcurrencyTracker`:
the request path calls ``request_in(key)`` / ``request_out(handle)`` (never blocking: a
poke or a report is only queued); every ``period`` (1 s) a tick sends all revisions'
stats in one message. Two sinks, chosen by configuration, both reconnecting forever with
upstream's backoff (100 ms x 1.3, 20 steps, repeated) and keeping at most ``backlog``
messages no older than ``max_age`` seconds while the autoscaler is away (stale stats
replayed at once would read as a burst):

* :class:`GrpcStatSink` — our autoscaler: one long-lived ``StatIngest.Push`` client stream
  of ``StatBatch{sender, messages, poke}``; ``poke=True`` marks the scale-from-zero poke;
* :class:`WebsocketStatSink` — an upstream autoscaler: ``ws://autoscaler.<ns>.svc.<domain>:8080``,
  one binary frame of ``WireStatMessages`` per message, ``stat`` always present.

``connected`` is what the kubelet health check reads: upstream's activator is not Ready
until its stats connection is up.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

import aiohttp
import grpc

from activator.clock import Backoff, Clock, loop_clock, sleep
from activator.concurrency import ConcurrencyTracker, RevisionStat
from activator.metrics import ActivatorMetrics
from activator.revisions import RevisionInfo, RevisionKey
from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

__all__ = ["GrpcStatSink", "StatReporter", "StatSink", "WebsocketStatSink", "to_wire"]

logger = logging.getLogger(__name__)


def to_wire(stats: Sequence[RevisionStat], pod_name: str) -> list[stat_pb2.WireStatMessage]:
    """Upstream's activator stat: pod name, concurrency and count; every other field 0."""
    return [stat_pb2.WireStatMessage(namespace=s.key.namespace, name=s.key.name, stat=stat_pb2.Stat(
        pod_name=pod_name, average_concurrent_requests=s.concurrency, request_count=s.request_count))
        for s in stats]


class StatSink:
    """A bounded outbox and a reconnect loop; subclasses supply :meth:`_session`."""

    peer = "autoscaler"

    def __init__(self, *, pod_name: str, clock: Clock | None = None, metrics: ActivatorMetrics | None = None,
                 backoff: Backoff | None = None, backlog: int = 16, max_age: float = 2.0,
                 handshake_timeout: float = 3.0) -> None:
        self.pod_name = pod_name
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.max_age = max_age
        self.handshake_timeout = handshake_timeout
        self.sent = 0
        self.dropped = 0
        self._clock = clock
        self._outbox: deque[tuple[float, list[stat_pb2.WireStatMessage], bool]] = deque(maxlen=backlog)
        self._wake = asyncio.Event()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, connected: bool = True) -> None:
        await (self._up if connected else self._down).wait()

    def send(self, stats: Sequence[RevisionStat], poke: bool = False) -> None:
        """Queue a message; never blocks. The oldest is dropped when the outbox is full."""
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append((loop_clock(self._clock).time(), to_wire(stats, self.pod_name), poke))
        self._wake.set()

    async def run(self) -> None:
        """Connect, send, reconnect; forever (until cancelled)."""
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # connect refused, stream broken, handshake timeout...
                    logger.debug("stats connection to the autoscaler failed: %r", e)
                if self.connected:
                    logger.warning("stats connection to the autoscaler lost")
                self._set_connected(False)
                if self.metrics is not None:
                    self.metrics.autoscaler_reachable(False)
                await sleep(loop_clock(self._clock), self.backoff.next())
        finally:
            self._set_connected(False)

    async def close(self) -> None:
        self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        if up:
            self._up.set()
            self._down.clear()
            self.backoff.reset()
            if self.metrics is not None:
                self.metrics.autoscaler_reachable(True)
        else:
            self._up.clear()
            self._down.set()

    async def _drain(self, write: Callable[[list[stat_pb2.WireStatMessage], bool], object],
                     gone: asyncio.Future[object]) -> None:
        """Send what is queued, then wait for more, until the connection is ``gone``."""
        while True:
            now = loop_clock(self._clock).time()
            while self._outbox:
                queued_at, messages, poke = self._outbox[0]
                if now - queued_at > self.max_age:
                    self._outbox.popleft()
                    self.dropped += 1
                    continue
                await write(messages, poke)  # type: ignore[misc]
                if self._outbox and self._outbox[0][1] is messages:
                    self._outbox.popleft()
                self.sent += 1
            self._wake.clear()
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waker, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            if gone.done():
                gone.result()  # raises the reason, if any
                raise ConnectionError("the autoscaler closed the stats connection")


class GrpcStatSink(StatSink):
    """``StatIngest.Push`` to our autoscaler at ``address`` (``host:port``)."""

    def __init__(self, address: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.address = address

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            async with asyncio.timeout(self.handshake_timeout):
                await channel.channel_ready()
            call = kdp_pb2_grpc.StatIngestStub(channel).Push()
            finished = asyncio.ensure_future(_await(call))
            try:
                self._set_connected(True)
                logger.info("stats stream to the autoscaler at %s is up", self.address)

                async def write(messages: list[stat_pb2.WireStatMessage], poke: bool) -> None:
                    await call.write(kdp_pb2.StatBatch(sender=self.pod_name, messages=messages, poke=poke))

                await self._drain(write, finished)
            finally:
                finished.cancel()
                call.cancel()


class WebsocketStatSink(StatSink):
    """Binary ``WireStatMessages`` frames to an upstream autoscaler at ``url`` (``ws://...``)."""

    def __init__(self, url: str, *, heartbeat: float = 10.0 / 3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.url = url
        self.heartbeat = heartbeat

    async def _session(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(self.handshake_timeout):
                ws = await session.ws_connect(self.url, heartbeat=self.heartbeat, autoclose=True,
                                              timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0))
            reader = asyncio.ensure_future(_read_until_closed(ws))
            try:
                self._set_connected(True)
                logger.info("stats websocket to the autoscaler at %s is up", self.url)

                async def write(messages: list[stat_pb2.WireStatMessage], poke: bool) -> None:
                    await ws.send_bytes(stat_pb2.WireStatMessages(messages=messages).SerializeToString())

                await self._drain(write, reader)
            finally:
                reader.cancel()
                await ws.close()


async def _await(call: grpc.aio.StreamUnaryCall) -> object:
    return await call


async def _read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:  # the server sends nothing we use; this ends when the socket closes
        pass


class StatReporter:
    """Counts requests per revision and reports them to a sink every ``period`` seconds."""

    def __init__(self, sink: StatSink, *, period: float = 1.0, clock: Clock | None = None,
                 metrics: ActivatorMetrics | None = None,
                 describe: Callable[[RevisionKey], RevisionInfo | None] | None = None) -> None:
        self.sink = sink
        self.period = period
        self.metrics = metrics
        self.describe = describe
        self.tracker = ConcurrencyTracker()
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        return self.sink.connected

    def request_in(self, key: RevisionKey, now: float | None = None) -> object:
        """Call after revision lookup; pass the result to :meth:`request_out`. ``now`` is the
        clock's time, when the caller has it at hand."""
        entry, poke = self.tracker.request_in(key, loop_clock(self._clock).time() if now is None else now)
        if poke:
            self.sink.send([self.tracker.poke(key)], poke=True)
        return entry

    def request_out(self, handle: object, now: float | None = None) -> None:
        self.tracker.request_out(handle, loop_clock(self._clock).time() if now is None else now)  # type: ignore[arg-type]

    def tick(self, now: float) -> list[RevisionStat]:
        stats = self.tracker.report(now)
        if stats:
            self.sink.send(stats)
            if self.metrics is not None:
                for s in stats:
                    self._record(s)
        return stats

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.sink.run()), loop.create_task(self._ticker())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.sink.close()

    async def _ticker(self) -> None:
        clock = loop_clock(self._clock)
        next_at = clock.time() + self.period
        while True:
            await sleep(clock, next_at - clock.time())
            now = clock.time()
            try:
                self.tick(now)
            except Exception:
                logger.exception("stats tick failed")
            next_at += self.period
            if next_at <= now:  # fell behind: skip the missed ticks
                next_at = now + self.period

    def _record(self, s: RevisionStat) -> None:
        assert self.metrics is not None
        info = self.describe(s.key) if self.describe is not None else None
        service, configuration = (info.service, info.configuration) if info is not None else ("", "")
        self.metrics.request_concurrency.labels(service, configuration, s.key.name, s.key.namespace).set(s.concurrency)
