"""The drainer: after ``drain()`` starts, probes fail and the drain completes once a quiet
period passes with no (non-probe) request.

Upstream's semantics (``vendor/knative.dev/pkg/network/handlers/drain.go``): every request
restarts the quiet period; concurrent ``drain()`` callers share one wait; ``reset()`` ends
draining (used when a preStop hook is not followed by SIGTERM). Requests only store a float
(``seen(now)``), so the hot path pays nothing for it; the timer re-arms itself lazily.
"""
from __future__ import annotations

import asyncio

__all__ = ["Drainer"]


class Drainer:
    def __init__(self, quiet_period: float, loop: asyncio.AbstractEventLoop) -> None:
        self.quiet_period = quiet_period
        self.loop = loop
        self.draining = False
        self.last_request = loop.time()
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._since = 0.0

    def seen(self, now: float) -> None:
        self.last_request = now

    async def drain(self) -> None:
        """Start draining (if not yet) and wait until the quiet period has passed."""
        if self._done is None or self._done.done():
            self.draining = True
            # Like upstream's timer, which starts when Drain() is called: even a drain that
            # begins long after the last request waits one full quiet period.
            self._since = self.loop.time()
            self._done = self.loop.create_future()
            self._arm()
        await asyncio.shield(self._done)

    def reset(self) -> None:
        """Stop draining: probes succeed again and waiting ``drain()`` callers return."""
        self.draining = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _quiet_since(self) -> float:
        return max(self.last_request, self._since)

    def _arm(self) -> None:
        self._timer = self.loop.call_at(self._quiet_since() + self.quiet_period, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self.draining or self._done is None or self._done.done():
            return
        if self.loop.time() - self._quiet_since() >= self.quiet_period:
            self._done.set_result(None)
        else:
            self._arm()
