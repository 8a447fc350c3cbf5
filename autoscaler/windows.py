"""Scalar reference windows: upstream's bucket rings and max window, one object per window.

These are the readable, exact ports of ``pkg/autoscaler/aggregation`` against which the
vectorised :mod:`autoscaler.batch_windows` is tested; the service uses the batch version.

* :class:`TimedBuckets` - a ring of per-granularity sums with a running total, averaged
  linearly over the valid part of the window (the default algorithm).
* :class:`WeightedBuckets` - the same ring, averaged with exponentially decaying weights
  (``metric-aggregation-algorithm: weighted-exponential``).
* :class:`MaxTimeWindow` - the maximum over a trailing time window (the scale-down delay).

Instants are ``int`` Unix nanoseconds (``now_ns``); durations are float seconds and must be
whole seconds for the granularity. The exact rules (gaps, partial windows, resize, float
order) are those of ``shared/conformance/README.md``; see :mod:`autoscaler.gotime` for the Go
semantics they rest on. Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler import gotime
from autoscaler.gotime import GO_ZERO_NS, go_div, sub

__all__ = [
    "BucketState",
    "MaxTimeWindow",
    "TimedBuckets",
    "WeightedBuckets",
    "bucket_count",
    "check_granularity",
]


def check_granularity(granularity: float) -> int:
    """The granularity in ns; upstream indexes rings by whole seconds, so it must be one."""
    g_ns = gotime.duration_ns(granularity)
    if g_ns < gotime.NS_PER_S or g_ns % gotime.NS_PER_S:
        raise ValueError(f"granularity: {granularity!r} s is not a whole number of seconds >= 1")
    return g_ns


def bucket_count(window_ns: int, granularity_ns: int) -> int:
    """``ceil(window / granularity)`` in float64, as upstream sizes its rings."""
    n = int(math.ceil(float(window_ns) / float(granularity_ns)))
    if n < 1:
        raise ValueError(f"window: {window_ns / 1e9!r} s gives {n} buckets; it must be > 0")
    return n


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket ring's bookkeeping, for debugging (``None`` = Go's zero time)."""

    first_write_ns: int | None
    last_write_ns: int | None
    window_total: float
    num_buckets: int
    window_ns: int
    smoothing_coeff: float | None = None


class TimedBuckets:
    """Upstream's ``TimedFloat64Buckets``: per-granularity sums averaged linearly."""

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        self._g = check_granularity(granularity)
        self._window = gotime.duration_ns(window)
        self._b = [0.0] * bucket_count(self._window, self._g)
        self._first = GO_ZERO_NS
        self._last = GO_ZERO_NS
        self._total = 0.0

    @property
    def num_buckets(self) -> int:
        return len(self._b)

    @property
    def window_ns(self) -> int:
        return self._window

    def _idx(self, t_ns: int) -> int:
        return gotime.time_to_index(t_ns, self._g)

    def record(self, now_ns: int, value: float) -> None:
        """Add ``value`` to the bucket of ``now_ns``, zeroing buckets skipped since the last write."""
        bt = gotime.truncate(now_ns, self._g)
        w = self._idx(now_ns)
        n = len(self._b)
        if self._last != bt:
            if bt + self._window > self._last:
                if self._first == GO_ZERO_NS or self._first > bt:
                    self._first = bt
                if bt > self._last:
                    if sub(bt, self._last) >= self._window:
                        self._first = bt
                        self._b = [0.0] * n
                        self._total = 0.0
                    else:
                        for i in range(self._idx(self._last) + 1, w + 1):
                            self._total -= self._b[i % n]
                            self._b[i % n] = 0.0
                    self._last = bt
            else:
                return  # older than a window behind the last write: dropped
        self._b[w % n] += value
        self._total += value

    def is_empty(self, now_ns: int) -> bool:
        """True when nothing was written within a window before ``now_ns``."""
        return sub(gotime.truncate(now_ns, self._g), self._last) > self._window

    def _span(self) -> float:
        """Number of bucket periods from first to last write, inclusive (saturating)."""
        return float(go_div(sub(self._last, self._first), self._g)) + 1.0

    def window_average(self, now_ns: int) -> float:
        """Linear average over the valid buckets, rounded to 6 decimals (0 when stale)."""
        now_t = gotime.truncate(now_ns, self._g)
        d = sub(now_t, self._last)
        n = len(self._b)
        if d <= 0:
            return gotime.round6(self._total / gotime.go_fmin(self._span(), float(n)))
        if d < self._window:
            s = self._idx(self._last)
            e = self._idx(now_t)
            ret = self._total
            for i in range(s + 1, e + 1):
                ret -= self._b[i % n]
            return gotime.round6(ret / gotime.go_fmin(self._span(), float(n - (e - s))))
        return 0.0

    def resize(self, window: float, now_ns: int) -> None:
        """Change the window; data written within the old window before ``now_ns`` is kept."""
        new_window = gotime.duration_ns(window)
        if new_window == self._window:
            return
        n_new = bucket_count(new_window, self._g)
        new_b = [0.0] * n_new
        total = 0.0
        if sub(gotime.truncate(now_ns, self._g), self._last) <= self._window:
            n_old = len(self._b)
            t = self._idx(self._last)
            for _ in range(min(n_new, n_old)):
                new_b[t % n_new] = self._b[t % n_old]
                total += self._b[t % n_old]
                t -= 1
            self._first = self._last - (n_old - 1) * self._g
        else:
            self._first = GO_ZERO_NS
        self._window = new_window
        self._b = new_b
        self._total = total

    def state(self) -> BucketState:
        return BucketState(
            first_write_ns=None if self._first == GO_ZERO_NS else self._first,
            last_write_ns=None if self._last == GO_ZERO_NS else self._last,
            window_total=self._total,
            num_buckets=len(self._b),
            window_ns=self._window,
        )

    def buckets(self, now_ns: int) -> list[tuple[int, float]]:
        """``(bucket start ns, value)`` from the last write backwards, as far as ``now_ns`` allows."""
        now_t = gotime.truncate(now_ns, self._g)
        n = len(self._b)
        count = n - go_div(sub(now_t, self._last), self._g)
        out = []
        t, si = self._last, self._idx(self._last)
        for _ in range(max(count, 0)):
            out.append((t, self._b[si % n]))
            si -= 1
            t -= self._g
        return out


class WeightedBuckets(TimedBuckets):
    """Upstream's ``WeightedFloat64Buckets``: the ring averaged with decaying weights."""

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        super().__init__(window, granularity)
        self._coeff = gotime.smoothing_coeff(float(len(self._b)))

    @property
    def smoothing_coeff(self) -> float:
        return self._coeff

    def window_average(self, now_ns: int) -> float:
        """``Σ v(last - i)·m(1-m)^(z+i)`` over the ring, unnormalised and unrounded."""
        now_t = gotime.truncate(now_ns, self._g)
        if self.is_empty(now_t):
            return 0.0
        n = len(self._b)
        num_b = n
        mult = self._coeff
        if now_t > self._last:
            num_z = go_div(sub(now_t, self._last), self._g)
            mult *= gotime.go_pow(1.0 - self._coeff, float(num_z))
            num_b -= num_z
        start = self._idx(self._last) + n
        ret = 0.0
        for i in range(num_b):
            ret += self._b[(start - i) % n] * mult
            mult *= 1.0 - self._coeff
        return ret

    def resize(self, window: float, now_ns: int) -> None:
        super().resize(window, now_ns)
        self._coeff = gotime.smoothing_coeff(math.ceil(float(self._window) / float(self._g)))

    def state(self) -> BucketState:
        s = super().state()
        return BucketState(s.first_write_ns, s.last_write_ns, s.window_total, s.num_buckets,
                           s.window_ns, self._coeff)


class MaxTimeWindow:
    """Upstream's ``max.TimeWindow``: the largest value recorded in the trailing ``duration``.

    A ring of ``ceil(duration/granularity)`` ``(index, value)`` entries kept in descending
    value order; the index of an instant is its Unix second divided by the granularity.
    Entries expire only when something is recorded. Upstream panics when a step back in time
    would overfill the ring; here the oldest entry is dropped instead and ``overflows`` counts it.
    """

    def __init__(self, duration: float, granularity: float) -> None:
        self._g = check_granularity(granularity)
        size = bucket_count(gotime.duration_ns(duration), self._g)
        self._idx = [0] * size
        self._val = [0] * size
        self._first = 0
        self._len = 0
        self.overflows = 0

    @property
    def size(self) -> int:
        return len(self._val)

    def record(self, now_ns: int, value: int) -> None:
        self.record_index(gotime.time_to_index(now_ns, self._g), value)

    def record_index(self, index: int, value: int) -> None:
        size = len(self._val)
        while self._len > 0 and value >= self._val[(self._first + self._len - 1) % size]:
            self._len -= 1
        while self._len > 0 and index - self._idx[self._first] >= size:
            self._len -= 1
            self._first = (self._first + 1) % size
        if self._len > 0:
            last = (self._first + self._len - 1) % size
            if self._idx[last] == index:
                value = max(value, self._val[last])
                self._len -= 1
        if self._len == size:  # only after a step back in time; upstream panics here
            self.overflows += 1
            self._len -= 1
            self._first = (self._first + 1) % size
        pos = (self._first + self._len) % size
        self._idx[pos] = index
        self._val[pos] = value
        self._len += 1

    def current(self) -> int:
        """The maximum among unexpired entries (0 before the first record)."""
        return self._val[self._first]
