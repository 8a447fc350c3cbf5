"""Stat collection: every revision's four windows, fed from push, websocket and scrape.

Upstream's MetricCollector (``pkg/autoscaler/metrics/collector.go``) keeps, per revision, the
concurrency and requests-per-second windows over the stable and the panic window, and adds
``value - proxied value`` of every Stat to them (requests that came through the activator are
counted by the activator). Here the four windows of all revisions are four
:class:`~autoscaler.batch_windows.BatchBuckets` with aligned row ids, and stats are recorded
in batches:

* :meth:`Collector.ingest` takes ``WireStatMessage``\\ s (from any source), validates them and
  appends them to a pending buffer; it is the per-stat hot path, so it is plain Python over
  lists, and it spots the two events that must not wait for the next tick: a **poke** (a
  pushed stat with concurrency != 0 for a revision whose desired scale is exactly 0, as
  upstream) and a **burst** (the seconds since the last tick, the one in progress included,
  have pushed the revision's panic-window value past the level at which it would start a
  panic or raise it; see :meth:`set_hints`);
* :meth:`Collector.flush` records the pending stats of **completed** seconds, summed per
  revision and second, in one batched call per window (the service calls it once a second
  and before each tick). A second still in progress is held back, so a tick never averages a
  half-reported second as if it were whole (many pods push at different phases of a second);
* :meth:`Collector.flush_rows` records everything pending for a few revisions at once: a poke
  or burst decides immediately, on the partial current second.

Validation (counted in :attr:`rejected` by ``(source, reason)``): unknown revision, no stat,
a negative / NaN / infinite field, a timestamp more than ``future_tolerance`` seconds ahead or
older than the revision's stable window. A zero timestamp is stamped with ``now``.

``now`` is float Unix seconds; windows work on whole Unix seconds. Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from autoscaler.batch_windows import BatchBuckets
from proto import stat_pb2

__all__ = [
    "Collector",
    "IngestResult",
    "PUSH",
    "REJECT_REASONS",
    "SCRAPE",
    "SOURCES",
    "WEBSOCKET",
    "WindowValues",
]

logger = logging.getLogger(__name__)

PUSH, WEBSOCKET, SCRAPE = "push", "websocket", "scrape"
SOURCES = (PUSH, WEBSOCKET, SCRAPE)
REJECT_REASONS = ("unknown_revision", "no_stat", "invalid_value", "future", "stale",
                  "duplicate", "malformed_frame", "not_binary")
_INF = math.inf
_I64, _F64 = np.int64, np.float64
Key = tuple[str, str]


class IngestResult(NamedTuple):
    accepted: int
    rejected: int
    pokes: list[int]
    """Rows to decide now: a stat with concurrency != 0 while the desired scale is 0."""
    bursts: list[int]
    """Rows to decide now: the current second's total crossed the burst level."""


@dataclass(frozen=True, slots=True)
class WindowValues:
    """Window averages at one instant; arrays aligned with the rows asked for."""

    stable_concurrency: np.ndarray
    panic_concurrency: np.ndarray
    stable_rps: np.ndarray
    panic_rps: np.ndarray
    stable_empty: np.ndarray
    """Upstream's ``IsEmpty``: nothing recorded within the stable window."""


class Collector:
    """The windows of every revision, and the buffer of stats not yet recorded."""

    def __init__(self, *, future_tolerance: float = 60.0, burst_interval: float = 0.5,
                 poke_interval: float = 0.1, capacity: int = 1024) -> None:
        self.future_tolerance = future_tolerance
        self.burst_interval = burst_interval
        self.poke_interval = poke_interval
        slots = capacity * 16
        self._rings = tuple(BatchBuckets(1.0, row_capacity=capacity, slot_capacity=slots)
                            for _ in range(4))
        self._rows: dict[Key, int] = {}
        self._keys: dict[int, Key] = {}
        # Per row, as plain lists for the hot path (index = row id).
        self._window_s: list[int] = []
        self._use_rps: list[bool] = []
        self._zero: list[bool] = []
        self._level: list[float] = []
        self._pend_sec: list[int] = []
        self._pend_x: list[float] = []
        self._base: list[float] = []
        self._carry: list[float] = []
        self._hint_sec = 0
        self._last_burst: list[float] = []
        self._last_poke: list[float] = []
        # Pending stats: new ones in lists, older ones held back in arrays.
        self._p_rows: list[int] = []
        self._p_ts: list[int] = []
        self._p_c: list[float] = []
        self._p_r: list[float] = []
        self._held = (np.empty(0, _I64), np.empty(0, _I64), np.empty(0, _F64), np.empty(0, _F64))
        # Pod names a scrape of the row has seen: their pushed stats would count twice.
        self._scraped: dict[int, frozenset[str]] = {}
        self.accepted: dict[str, int] = dict.fromkeys(SOURCES, 0)
        self.rejected: dict[tuple[str, str], int] = {}
        self.recorded = 0

    # -- revisions ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def row(self, key: Key) -> int | None:
        return self._rows.get(key)

    def key(self, row: int) -> Key:
        return self._keys[row]

    def add(self, key: Key, stable_window: float, panic_window: float, *,
            weighted: bool = False, use_rps: bool = False) -> int:
        """Start collecting for a revision; returns its row id."""
        if key in self._rows:
            raise KeyError(f"{key[0]}/{key[1]}: already collecting")
        ids = {ring.add(w, weighted=weighted) for ring, w in
               zip(self._rings, (stable_window, panic_window, stable_window, panic_window))}
        assert len(ids) == 1, "the four windows' row ids went out of step"
        row = ids.pop()
        self._rows[key] = row
        self._keys[row] = key
        for lst, fill in ((self._window_s, 0), (self._use_rps, False), (self._zero, False),
                          (self._level, _INF), (self._pend_sec, 0), (self._pend_x, 0.0),
                          (self._base, 0.0), (self._carry, 0.0),
                          (self._last_burst, -_INF), (self._last_poke, -_INF)):
            if row >= len(lst):
                lst.extend([fill] * (row + 1 - len(lst)))  # type: ignore[list-item]
            lst[row] = fill  # type: ignore[index]
        self._window_s[row] = int(math.ceil(stable_window))
        self._use_rps[row] = use_rps
        return row

    def update(self, key: Key, stable_window: float, panic_window: float, now: float, *,
               use_rps: bool | None = None) -> None:
        """A revision's windows changed: resize its rings, keeping recent data (upstream)."""
        row = self._rows[key]
        now_s = int(math.floor(now))
        for ring, w in zip(self._rings, (stable_window, panic_window, stable_window,
                                         panic_window)):
            ring.resize(row, w, now_s)
        self._window_s[row] = int(math.ceil(stable_window))
        if use_rps is not None:
            self._use_rps[row] = use_rps

    def remove(self, key: Key) -> None:
        row = self._rows.pop(key)
        del self._keys[row]
        rows, ts, c, r = self._materialize()
        keep = rows != row
        self._held = (rows[keep], ts[keep], c[keep], r[keep])
        for ring in self._rings:
            ring.remove(row)
        self._scraped.pop(row, None)
        self._zero[row] = False
        self._level[row] = _INF

    # -- hints from the decider ---------------------------------------------------------------

    def set_hints(self, rows: np.ndarray, desired_zero: np.ndarray, burst_level: np.ndarray,
                  base: np.ndarray | None = None, now: float | None = None) -> None:
        """What the decider saw at ``now`` (a tick), per row: its desired scale is exactly 0
        (a pushed stat with concurrency then pokes), the panic-window value ``base`` (the
        revision's metric, over the seconds before ``now``'s), and the burst ``level``: a
        burst fires when the current second's total plus the excess over ``base`` of the
        seconds completed since ``now`` exceeds it (``inf`` = never)."""
        zero, level, base_l, carry = self._zero, self._level, self._base, self._carry
        bases = base.tolist() if base is not None else [0.0] * len(rows)
        for r, z, lv, b in zip(rows.tolist(), desired_zero.tolist(), burst_level.tolist(),
                               bases):
            zero[r] = z
            level[r] = lv
            base_l[r] = b
            carry[r] = 0.0
        if now is not None:
            self._hint_sec = int(now // 1)

    # -- the hot path -------------------------------------------------------------------------

    def reject(self, source: str, reason: str, count: int = 1) -> None:
        k = (source, reason)
        self.rejected[k] = self.rejected.get(k, 0) + count

    def set_scraped_pods(self, key: Key, pod_names: Iterable[str]) -> None:
        """Pods a scrape of ``key`` reached: their own pushed stats are dropped as duplicates
        (the scrape already extrapolates over every pod)."""
        row = self._rows.get(key)
        if row is not None:
            names = frozenset(pod_names)
            if names:
                self._scraped[row] = names
            else:
                self._scraped.pop(row, None)

    def ingest(self, messages: Iterable[stat_pb2.WireStatMessage], now: float,
               source: str) -> IngestResult:
        """Validate and buffer stats; returns counts and the rows to decide at once."""
        now_s = int(now // 1)
        newest, oldest_ok = now_s + self.future_tolerance, now_s
        rows_get = self._rows.get
        window_s, use_rps, zero, level = self._window_s, self._use_rps, self._zero, self._level
        pend_sec, pend_x = self._pend_sec, self._pend_x
        p_rows, p_ts, p_c, p_r = self._p_rows, self._p_ts, self._p_c, self._p_r
        pokes: list[int] = []
        bursts: list[int] = []
        can_poke = source != SCRAPE
        scraped = self._scraped if source != SCRAPE else {}
        bad: dict[str, int] = {}
        n_ok = 0
        for m in messages:
            row = rows_get((m.namespace, m.name))
            if row is None:
                bad["unknown_revision"] = bad.get("unknown_revision", 0) + 1
                continue
            if not m.HasField("stat"):
                bad["no_stat"] = bad.get("no_stat", 0) + 1
                continue
            st = m.stat
            c = st.average_concurrent_requests
            pc = st.average_proxied_concurrent_requests
            r = st.request_count
            pr = st.proxied_request_count
            if not (0.0 <= c < _INF and 0.0 <= pc < _INF and 0.0 <= r < _INF
                    and 0.0 <= pr < _INF):
                bad["invalid_value"] = bad.get("invalid_value", 0) + 1
                continue
            ts = st.timestamp or now_s
            if ts > newest:
                bad["future"] = bad.get("future", 0) + 1
                continue
            if ts < oldest_ok - window_s[row]:
                bad["stale"] = bad.get("stale", 0) + 1
                continue
            if scraped and row in scraped and st.pod_name in scraped[row]:
                bad["duplicate"] = bad.get("duplicate", 0) + 1
                continue
            cv = c - pc
            rv = r - pr
            p_rows.append(row)
            p_ts.append(ts)
            p_c.append(cv)
            p_r.append(rv)
            n_ok += 1
            ps = pend_sec[row]
            if ts >= ps:
                x = rv if use_rps[row] else cv
                if ts > ps:
                    if ps >= self._hint_sec:  # a second the last tick did not see is over
                        self._carry[row] += pend_x[row] - self._base[row]
                    pend_sec[row] = ts
                    pend_x[row] = x
                else:
                    x = pend_x[row] = pend_x[row] + x
                if x + self._carry[row] > level[row] \
                        and now - self._last_burst[row] >= self.burst_interval:
                    self._last_burst[row] = now
                    bursts.append(row)
            if can_poke and c != 0.0 and zero[row] \
                    and now - self._last_poke[row] >= self.poke_interval:
                self._last_poke[row] = now
                pokes.append(row)
        self.accepted[source] = self.accepted.get(source, 0) + n_ok
        n_bad = 0
        for reason, n in bad.items():
            self.reject(source, reason, n)
            n_bad += n
        return IngestResult(n_ok, n_bad, pokes, bursts)

    def add_stat(self, key: Key, now: float, stat: stat_pb2.Stat, source: str = SCRAPE) -> bool:
        """One stat recorded at ``now`` (a scrape result); False if rejected."""
        stat.timestamp = int(now // 1)
        res = self.ingest([stat_pb2.WireStatMessage(namespace=key[0], name=key[1], stat=stat)],
                          now, source)
        return res.accepted == 1

    # -- recording ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._p_rows) + len(self._held[0])

    def _materialize(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Move the pending lists into the held arrays; returns the held arrays."""
        if self._p_rows:
            new = (np.array(self._p_rows, _I64), np.array(self._p_ts, _I64),
                   np.array(self._p_c, _F64), np.array(self._p_r, _F64))
            self._p_rows.clear()
            self._p_ts.clear()
            self._p_c.clear()
            self._p_r.clear()
            if len(self._held[0]):
                new = tuple(np.concatenate((h, n)) for h, n in zip(self._held, new))  # type: ignore[assignment]
            self._held = new
        return self._held

    def flush(self, now: float) -> int:
        """Record every pending stat of a second that has ended; returns how many."""
        rows, ts, c, r = self._materialize()
        if not len(rows):
            return 0
        done = ts < int(now // 1)
        if done.all():
            self._held = (rows[:0], ts[:0], c[:0], r[:0])
        else:
            keep = ~done
            self._held = (rows[keep], ts[keep], c[keep], r[keep])
            rows, ts, c, r = rows[done], ts[done], c[done], r[done]
        self._record(rows, ts, c, r)
        return len(rows)

    def flush_rows(self, rows: Iterable[int]) -> int:
        """Record everything pending for ``rows`` now, the current second included."""
        want = np.fromiter(rows, dtype=_I64)
        prows, ts, c, r = self._materialize()
        if not len(prows) or not len(want):
            return 0
        sel = np.isin(prows, want)
        if not sel.any():
            return 0
        keep = ~sel
        self._held = (prows[keep], ts[keep], c[keep], r[keep])
        self._record(prows[sel], ts[sel], c[sel], r[sel])
        return int(sel.sum())

    def _record(self, rows: np.ndarray, ts: np.ndarray, c: np.ndarray, r: np.ndarray) -> None:
        """Sum per (row, second) in arrival order, then record per row in time order."""
        if not len(rows):
            return
        t0 = int(ts.min())
        span = int(ts.max()) - t0 + 1
        key = rows * span + (ts - t0)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
        sr, st = rows[order][starts], ts[order][starts]
        sc = np.add.reduceat(c[order], starts)
        srps = np.add.reduceat(r[order], starts)
        cs, cp, rs, rp = self._rings
        dropped = cs.record(sr, st, sc)
        cp.record(sr, st, sc)
        rs.record(sr, st, srps)
        rp.record(sr, st, srps)
        self.recorded += len(rows)
        if dropped:
            self.reject("window", "stale", dropped)

    # -- queries ------------------------------------------------------------------------------

    def values(self, now: float, rows: np.ndarray | None = None) -> WindowValues:
        """Window averages at ``now`` for ``rows`` (all row ids when None)."""
        now_s = int(now // 1)
        cs, cp, rs, rp = self._rings
        return WindowValues(
            stable_concurrency=cs.window_average(now_s, rows),
            panic_concurrency=cp.window_average(now_s, rows),
            stable_rps=rs.window_average(now_s, rows),
            panic_rps=rp.window_average(now_s, rows),
            stable_empty=cs.is_empty(now_s, rows))

    def describe(self, key: Key, now: float) -> dict[str, object]:
        """The four windows of one revision, for the debug endpoint."""
        row = self._rows[key]
        now_s = int(now // 1)
        out: dict[str, object] = {"row": row}
        for name, ring in zip(("concurrency_stable", "concurrency_panic", "rps_stable",
                               "rps_panic"), self._rings):
            state = ring.state(row)
            out[name] = {
                "average": float(ring.window_average(now_s, np.array([row]))[0]),
                "empty": bool(ring.is_empty(now_s, np.array([row]))[0]),
                "num_buckets": state.num_buckets,
                "window_seconds": state.window_ns / 1e9,
                "first_write_unix": None if state.first_write_ns is None
                else state.first_write_ns // 10**9,
                "last_write_unix": None if state.last_write_ns is None
                else state.last_write_ns // 10**9,
                "window_total": state.window_total,
                "weighted_coeff": state.smoothing_coeff,
                "buckets": [[t, v] for t, v in ring.buckets(row, now_s)],
            }
        out["pending_second"] = self._pend_sec[row]
        out["pending_second_total"] = self._pend_x[row]
        out["burst_level"] = self._level[row]
        out["burst_base"] = self._base[row]
        out["burst_excess_since_tick"] = self._carry[row]
        out["pokes_on_stat"] = self._zero[row]
        return out
