"""Holding requests until a pod can take them: the asyncio face of the throttler.

The request handler calls, per request::

    info = buffer.revision(key)                    # None -> 404 before anything else
    lease = await buffer.acquire(key, deadline=t)  # raises a ThrottlerError (status_hint)
    ... connect to lease.dest ...
    #   connection refused before any byte was sent: lease.refused(), then acquire again
    lease.response_started()                       # when the response headers arrive
    lease.release(ok=status < 500)                 # when the response is done

or ``async with buffer.lease(key, deadline=t) as lease:``, which releases on exit (``ok=False``
when the body raised). ``deadline`` is in the clock's time (``loop.time()``); past it the wait
ends with :class:`~activator.throttler.WaitTimeout` (504). ``lease.waited`` is the time spent
waiting, for ``Server-Timing`` and the ``kdp_activator_wait_seconds`` histogram.

The discovery side (:mod:`activator.backends`) feeds revisions, pods and failures in through
the ``upsert_revision`` / ``set_pods`` / ... methods; this layer adds the clock and the timer
that ends the pacing of fresh pods.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial

from activator.clock import Clock, TimerHandle, loop_clock
from activator.metrics import ActivatorMetrics, RevisionMetrics
from activator.revisions import RevisionInfo, RevisionKey
from activator.throttler import (
    PodTracker,
    QueueFull,
    RevisionFailed,
    RevisionNotFound,
    Throttler,
    ThrottlerError,
    WaitTimeout,
)

__all__ = ["Lease", "RequestBuffer"]

logger = logging.getLogger(__name__)

_REASONS: dict[type[ThrottlerError], str] = {
    QueueFull: "queue_full", RevisionFailed: "revision_failed",
    WaitTimeout: "timeout", RevisionNotFound: "not_found",
}


class Lease:
    """One request's hold on one pod's slot. Release it exactly once (extra calls are no-ops)."""

    __slots__ = ("pod", "key", "waited", "granted_at", "started_at", "_buffer", "_metrics", "_open")

    def __init__(self, buffer: RequestBuffer, key: RevisionKey, pod: PodTracker, waited: float,
                 granted_at: float, metrics: RevisionMetrics | None) -> None:
        self.pod = pod
        self.key = key
        self.waited = waited
        self.granted_at = granted_at
        self.started_at: float | None = None
        self._buffer = buffer
        self._metrics = metrics
        self._open = True
        if metrics is not None:
            metrics.active.inc()
            metrics.wait.observe(waited)

    @property
    def dest(self) -> str:
        """The queue-proxy address, ``host:port``."""
        return self.pod.dest

    @property
    def info(self) -> RevisionInfo:
        return self.pod.owner.info

    @property
    def server_timing(self) -> str:
        """A ``Server-Timing`` entry for the time this request waited in the activator."""
        return f"activator-wait;dur={self.waited * 1000:.3f}"

    def response_started(self) -> None:
        """Note the moment the response headers arrived (paces fresh pods)."""
        if self.started_at is None:
            self.started_at = self._buffer.clock.time()

    def release(self, ok: bool = True, latency: float | None = None) -> None:
        """The response is done. ``latency`` defaults to the time to response headers."""
        if not self._open:
            return
        self._open = False
        if latency is None and self.started_at is not None:
            latency = self.started_at - self.granted_at
        self._close()
        self._buffer.throttler.release(self.pod, self._buffer.clock.time(), ok, latency)

    def refused(self) -> None:
        """The pod refused the connection before any byte was sent: the caller may retry."""
        if not self._open:
            return
        self._open = False
        self._close()
        self._buffer.throttler.refused(self.pod, self._buffer.clock.time())
        self._buffer.pod_refused(self.key, self.pod.dest)

    def _close(self) -> None:
        if self._metrics is not None:
            self._metrics.active.dec()


def _grant(fut: asyncio.Future[PodTracker], pod: PodTracker) -> None:
    if not fut.done():
        fut.set_result(pod)


def _fail(fut: asyncio.Future[PodTracker], error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)


class RequestBuffer:
    def __init__(self, throttler: Throttler, *, clock: Clock | None = None,
                 metrics: ActivatorMetrics | None = None,
                 on_refused: Callable[[RevisionKey, str], object] | None = None) -> None:
        self.throttler = throttler
        self.metrics = metrics
        self.on_refused = on_refused
        self._clock = clock
        self._tick_handle: TimerHandle | None = None
        self._tick_at: float | None = None

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = loop_clock(None)
        return self._clock

    @property
    def waiting(self) -> int:
        return self.throttler.waiting

    # ---- request path --------------------------------------------------------------------

    def revision(self, key: RevisionKey) -> RevisionInfo | None:
        return self.throttler.revision(key)

    async def acquire(self, key: RevisionKey, deadline: float | None = None) -> Lease:
        throttler, metrics = self.throttler, self.metrics
        try:
            pod = throttler.try_acquire(key)
        except RevisionNotFound:
            self._rejected(key, "not_found")
            raise
        m = metrics.revision(key) if metrics is not None else None
        clock = self.clock
        now = clock.time()
        if pod is not None:
            return Lease(self, key, pod, 0.0, now, m)
        if deadline is not None and deadline <= now:
            self._rejected(key, "timeout")
            raise WaitTimeout(f"revision {key}: deadline passed before a pod was free")
        fut: asyncio.Future[PodTracker] = asyncio.get_running_loop().create_future()
        try:
            waiter = throttler.enqueue(key, now, partial(_grant, fut), partial(_fail, fut))
        except ThrottlerError as e:
            self._rejected(key, _REASONS.get(type(e), "error"))
            raise
        if m is not None:
            m.queued.inc()
        timer = None
        if deadline is not None:
            timer = clock.call_at(deadline, _fail, fut, WaitTimeout(f"revision {key}: no pod before the deadline"))
        try:
            pod = await fut
        except BaseException as e:
            throttler.cancel(waiter, clock.time())
            if isinstance(e, ThrottlerError):
                self._rejected(key, _REASONS.get(type(e), "error"))
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if m is not None:
                m.queued.dec()
        granted_at = clock.time()
        return Lease(self, key, pod, granted_at - now, granted_at, m)

    @asynccontextmanager
    async def lease(self, key: RevisionKey, deadline: float | None = None) -> AsyncIterator[Lease]:
        lease = await self.acquire(key, deadline)
        try:
            yield lease
        except BaseException:
            lease.release(ok=False)
            raise
        lease.release(ok=True)

    def pod_refused(self, key: RevisionKey, dest: str) -> None:
        if self.on_refused is not None:
            try:
                self.on_refused(key, dest)
            except Exception:
                logger.exception("on_refused hook failed for %s %s", key, dest)

    def _rejected(self, key: RevisionKey, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(key, reason)

    # ---- discovery side ------------------------------------------------------------------

    def upsert_revision(self, info: RevisionInfo) -> None:
        self.throttler.upsert(info)

    def delete_revision(self, key: RevisionKey) -> None:
        self.throttler.delete(key)

    def set_pods(self, key: RevisionKey, dests: Iterable[str]) -> None:
        self.throttler.set_pods(key, dests, self.clock.time())
        rt = self.throttler.get(key)
        if rt is not None:
            self._schedule_tick(rt.next_deadline())

    def set_activators(self, key: RevisionKey, activator_ips: Iterable[str]) -> None:
        self.throttler.set_activators(key, activator_ips)

    def set_decision_failure(self, key: RevisionKey, reason: str) -> None:
        self.throttler.set_decision_failure(key, reason)

    def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = self._tick_at = None

    def _schedule_tick(self, when: float | None) -> None:
        if when is None or (self._tick_at is not None and self._tick_at <= when):
            return
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._tick_at = when
        self._tick_handle = self.clock.call_at(when, self._on_tick, when)

    def _on_tick(self, when: float) -> None:
        self._tick_handle = self._tick_at = None
        # A loop timer may fire up to its clock resolution early: act as of the time asked for.
        self.throttler.tick(max(self.clock.time(), when))
        self._schedule_tick(self.throttler.next_deadline())
