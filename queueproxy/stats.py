"""Time-weighted request accounting for one process (or one revision in the activator).

Pure: no clock, no I/O. Every call takes ``now`` (seconds from ``loop.time()``), so tests
drive it as a timeline. The semantics are upstream's: concurrency is the integral of the
in-flight count over the window divided by the time covered, counts are arrivals in the
window, and the in-flight level carries over from one window to the next.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestStats", "StatsReport"]


@dataclass(frozen=True, slots=True)
class StatsReport:
    average_concurrency: float
    average_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


class RequestStats:
    """Accumulates in/out events; ``report(now)`` cuts the window and starts a new one."""

    __slots__ = (
        "concurrency", "proxied_concurrency", "_last_change",
        "_count", "_proxied_count", "_area", "_proxied_area", "_elapsed",
    )

    def __init__(self, started_at: float) -> None:
        self.concurrency = 0
        self.proxied_concurrency = 0
        self._last_change = started_at
        self._count = 0
        self._proxied_count = 0
        self._area = 0.0
        self._proxied_area = 0.0
        self._elapsed = 0.0

    def _advance(self, now: float) -> None:
        dt = now - self._last_change
        if dt > 0.0:
            self._elapsed += dt
            self._area += self.concurrency * dt
            self._proxied_area += self.proxied_concurrency * dt
            self._last_change = now

    def request_in(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency += 1
        self._count += 1
        if proxied:
            self.proxied_concurrency += 1
            self._proxied_count += 1

    def request_out(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency -= 1
        if proxied:
            self.proxied_concurrency -= 1

    def report(self, now: float) -> StatsReport:
        self._advance(now)
        elapsed = self._elapsed
        if elapsed > 0.0:
            avg, proxied_avg = self._area / elapsed, self._proxied_area / elapsed
        else:
            avg = proxied_avg = 0.0
        report = StatsReport(avg, proxied_avg, float(self._count), float(self._proxied_count))
        self._count = self._proxied_count = 0
        self._area = self._proxied_area = self._elapsed = 0.0
        return report
