"""Time for the activator's async parts: one seam, so tests and simulations can fast-forward.

A :class:`Clock` is the part of the event loop the activator uses for time: ``time()`` and
``call_at(when, callback, *args)``. The running loop is one (the default everywhere);
:class:`ManualClock` is another, whose time moves only when a test advances it.
:class:`Backoff` is upstream's reconnect schedule, kept here because every reconnecting
client uses it.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Backoff", "Clock", "ManualClock", "TimerHandle", "loop_clock", "sleep"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle: ...


def loop_clock(clock: Clock | None) -> Clock:
    """The given clock, or the running event loop's."""
    return clock if clock is not None else asyncio.get_running_loop()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep(clock: Clock, delay: float) -> None:
    """``asyncio.sleep`` on ``clock``'s time."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handle = clock.call_at(clock.time() + max(delay, 0.0), _resolve, fut)
    try:
        await fut
    finally:
        handle.cancel()


class _ManualTimer:
    __slots__ = ("when", "seq", "callback", "args", "cancelled")

    def __init__(self, when: float, seq: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when, self.seq, self.callback, self.args = when, seq, callback, args
        self.cancelled = False

    def __lt__(self, other: _ManualTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it, firing timers in order.

    Callbacks run on the real event loop; between timers ``advance`` lets the loop run the
    tasks they woke (``settle`` passes of ``asyncio.sleep(0)``), so a chain of sleeps inside
    the advanced span completes within one call.
    """

    def __init__(self, start: float = 1000.0, settle: int = 20) -> None:
        self.now = start
        self.settle = settle
        self._timers: list[_ManualTimer] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> _ManualTimer:
        timer = _ManualTimer(when, next(self._seq), callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _ManualTimer:
        return self.call_at(self.now + delay, callback, *args)

    @property
    def pending(self) -> list[float]:
        """Times of the timers still due, soonest first."""
        return sorted(t.when for t in self._timers if not t.cancelled)

    async def run_ready(self) -> None:
        for _ in range(self.settle):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await self.run_ready()
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
            await self.run_ready()
        self.now = target
        await self.run_ready()


class Backoff:
    """Upstream's reconnect delays: ``initial x factor**n`` for ``steps`` tries, then again.

    (``knative.dev/pkg/websocket``: 100 ms x 1.3, 20 steps, repeated forever.) ``reset()``
    after a success starts over from ``initial``.
    """

    def __init__(self, initial: float = 0.1, factor: float = 1.3, steps: int = 20) -> None:
        if initial <= 0 or factor < 1 or steps < 1:
            raise ValueError(f"bad backoff: initial={initial}, factor={factor}, steps={steps}")
        self.initial, self.factor, self.steps = initial, factor, steps
        self._n = 0

    def next(self) -> float:
        delay = self.initial * self.factor ** self._n
        self._n = (self._n + 1) % self.steps
        return delay

    def reset(self) -> None:
        self._n = 0
