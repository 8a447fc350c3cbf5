"""Publishing decisions: to every ``DecisionFeed`` subscriber, and to the scale target.

* :class:`DecisionHub` keeps the latest decision of every revision and a queue per subscriber.
  A subscriber's queue holds at most one decision per revision (a newer one replaces the one
  not yet sent), so a slow subscriber costs memory bounded by the number of revisions, always
  receives the latest state, and never slows the tick. :class:`DecisionFeedServicer` serves
  ``DecisionFeed.Watch``: the current decision of every revision first, then changes.
* :class:`ScaleDispatcher` applies desired replicas to a pluggable :class:`ScaleTarget`:
  only changes, plus a periodic resync of everything; a failed call is retried with
  exponential backoff until it succeeds or a newer value replaces it, and the failure is
  visible in :meth:`ScaleDispatcher.status` and the metrics. Nothing is dropped.
* Targets: :class:`GrpcScaleTarget` (``ScaleTarget.Scale`` of the local runtime) and
  :class:`LoggingScaleTarget` (a dry run that logs and accepts).

Time comes from an injected clock (``loop.time`` by default), so backoff and resync can be
tested without sleeping.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from proto import kdp_pb2, kdp_pb2_grpc

__all__ = [
    "DecisionFeedServicer",
    "DecisionHub",
    "GrpcScaleTarget",
    "LoggingScaleTarget",
    "ScaleDispatcher",
    "ScaleError",
    "ScaleTarget",
    "Subscription",
]

logger = logging.getLogger(__name__)

Key = tuple[str, str]


# -- the decision feed ----------------------------------------------------------------------

class Subscription:
    """One subscriber's queue: at most one pending decision per revision."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: dict[Key, kdp_pb2.Decision] = {}
        self.sent = 0
        self.coalesced = 0
        self._ready = asyncio.Event()

    def offer(self, key: Key, decision: kdp_pb2.Decision) -> None:
        if key in self.pending:
            self.coalesced += 1
        self.pending[key] = decision
        self._ready.set()

    async def next_batch(self) -> list[kdp_pb2.Decision]:
        """Wait for decisions, then take everything pending (oldest revision first)."""
        while not self.pending:
            self._ready.clear()
            await self._ready.wait()
        batch = list(self.pending.values())
        self.pending = {}
        self.sent += len(batch)
        return batch


class DecisionHub:
    """The latest decision of every revision, fanned out to subscriptions."""

    def __init__(self) -> None:
        self.latest: dict[Key, kdp_pb2.Decision] = {}
        self.subscriptions: set[Subscription] = set()
        self.published = 0

    def publish(self, decision: kdp_pb2.Decision) -> None:
        key = (decision.namespace, decision.revision)
        self.latest[key] = decision
        self.published += 1
        for sub in self.subscriptions:
            sub.offer(key, decision)

    def forget(self, key: Key) -> None:
        self.latest.pop(key, None)
        for sub in self.subscriptions:
            sub.pending.pop(key, None)

    def subscribe(self, name: str) -> Subscription:
        sub = Subscription(name)
        for key, decision in self.latest.items():
            sub.offer(key, decision)
        sub.coalesced = 0
        self.subscriptions.add(sub)
        logger.info("decision feed: %s subscribed (%d revisions)", name or "?", len(self.latest))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        logger.info("decision feed: %s left", sub.name or "?")


class DecisionFeedServicer(kdp_pb2_grpc.DecisionFeedServicer):
    def __init__(self, hub: DecisionHub) -> None:
        self.hub = hub

    async def Watch(self, request: kdp_pb2.WatchRequest,  # noqa: N802 (gRPC's name)
                    context: grpc.aio.ServicerContext) -> AsyncIterator[kdp_pb2.Decision]:
        sub = self.hub.subscribe(request.subscriber)
        try:
            while True:
                for decision in await sub.next_batch():
                    yield decision
        finally:
            self.hub.unsubscribe(sub)


# -- scale targets --------------------------------------------------------------------------

class ScaleError(Exception):
    """The scale target did not apply the replicas (refused, unreachable, timed out)."""


class ScaleTarget(Protocol):
    async def scale(self, namespace: str, revision: str, replicas: int) -> int:
        """Set the revision's replicas; returns what the target now has. Raises ScaleError."""
        ...

    async def close(self) -> None: ...


class LoggingScaleTarget:
    """A dry run: logs each change and accepts it."""

    def __init__(self) -> None:
        self.calls = 0

    async def scale(self, namespace: str, revision: str, replicas: int) -> int:
        logger.info("scale target (dry run): %s/%s -> %d replicas", namespace, revision, replicas)
        self.calls += 1
        return replicas

    async def close(self) -> None:
        return None


class GrpcScaleTarget:
    """``ScaleTarget.Scale`` at ``address`` (``host:port``), e.g. the local runtime."""

    def __init__(self, address: str, *, timeout: float = 3.0) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: kdp_pb2_grpc.ScaleTargetStub | None = None

    async def scale(self, namespace: str, revision: str, replicas: int) -> int:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.address, options=(("grpc.max_reconnect_backoff_ms", 1000),))
            self._stub = kdp_pb2_grpc.ScaleTargetStub(self._channel)
        try:
            resp = await self._stub.Scale(
                kdp_pb2.ScaleRequest(namespace=namespace, revision=revision, replicas=replicas),
                timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise ScaleError(f"{self.address}: {e.code().name}: {e.details()}") from None
        if not resp.ok:
            raise ScaleError(resp.error or "refused")
        return resp.replicas

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


@dataclass
class _Applied:
    want: int
    applied: int | None = None
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    in_flight: bool = False
    failures: int = 0


class ScaleDispatcher:
    """Applies desired replicas to a target: changes only, retries, periodic resync."""

    def __init__(self, target: ScaleTarget, *, clock: Callable[[], float] | None = None,
                 resync_period: float = 30.0, backoff: tuple[float, float] = (0.2, 30.0),
                 concurrency: int = 32) -> None:
        self.target = target
        self.resync_period = resync_period
        self.backoff = backoff
        self.concurrency = concurrency
        self.applied_ok = 0
        self.applied_failed = 0
        self._clock = clock
        self._state: dict[Key, _Applied] = {}
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._next_resync: float | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def set(self, key: Key, replicas: int) -> None:
        """The revision should have ``replicas``; applied unless it already has them."""
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _Applied(want=replicas)
        elif st.want == replicas and st.applied == replicas and not st.last_error:
            return
        elif st.want != replicas:
            st.want = replicas
            st.attempts = 0
            st.next_try = 0.0  # a new value goes out at once, even while the old one failed
        self._dirty.add(key)
        self._wake.set()

    def forget(self, key: Key) -> None:
        self._state.pop(key, None)
        self._dirty.discard(key)

    @property
    def failing(self) -> int:
        return sum(1 for st in self._state.values() if st.last_error)

    def status(self, key: Key) -> dict[str, object] | None:
        st = self._state.get(key)
        if st is None:
            return None
        return {"want": st.want, "applied": st.applied, "attempts": st.attempts,
                "last_error": st.last_error, "failures": st.failures, "in_flight": st.in_flight}

    def resync(self) -> None:
        """Send every revision's replicas again (heals a target that lost its state)."""
        for key, st in self._state.items():
            st.applied = None
            self._dirty.add(key)
        self._wake.set()

    async def step(self) -> float | None:
        """Start every due apply; returns the next instant something is due (None: idle)."""
        now = self._now()
        if self.resync_period <= 0:
            self._next_resync = None
        elif self._next_resync is None:
            self._next_resync = now + self.resync_period
        elif now >= self._next_resync:
            self._next_resync = now + self.resync_period
            self.resync()
        nxt: float | None = self._next_resync
        for key in list(self._dirty):
            st = self._state.get(key)
            if st is None:
                self._dirty.discard(key)
                continue
            if st.in_flight:
                continue
            if st.next_try > now:
                nxt = st.next_try if nxt is None else min(nxt, st.next_try)
                continue
            if len(self._inflight) >= self.concurrency:
                break  # a finishing apply wakes the loop for the rest
            self._dirty.discard(key)
            st.in_flight = True
            task = asyncio.ensure_future(self._apply(key, st, st.want))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return nxt

    async def _apply(self, key: Key, st: _Applied, want: int) -> None:
        try:
            await self.target.scale(key[0], key[1], want)
        except Exception as e:  # ScaleError, or anything a target raises
            self.applied_failed += 1
            st.failures += 1
            st.attempts += 1
            st.last_error = str(e) or type(e).__name__
            lo, hi = self.backoff
            st.next_try = self._now() + min(hi, lo * 2 ** (st.attempts - 1))
            logger.warning("scaling %s/%s to %d failed (attempt %d, retrying in %.1fs): %s",
                           key[0], key[1], want, st.attempts, st.next_try - self._now(),
                           st.last_error, extra={"key": f"{key[0]}/{key[1]}"})
            if key in self._state:
                self._dirty.add(key)
        else:
            self.applied_ok += 1
            st.applied, st.attempts, st.last_error = want, 0, ""
            logger.info("scaled %s/%s to %d", key[0], key[1], want,
                        extra={"key": f"{key[0]}/{key[1]}", "replicas": want})
            if key in self._state and st.want != want:
                self._dirty.add(key)  # a newer value arrived meanwhile
        finally:
            st.in_flight = False
            self._wake.set()

    async def settle(self) -> None:
        """Wait for the applies in flight to finish."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def run(self) -> None:
        """Apply forever (until cancelled)."""
        try:
            while True:
                nxt = await self.step()
                self._wake.clear()
                timeout = None if nxt is None else max(0.0, nxt - self._now())
                with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
