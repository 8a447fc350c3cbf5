"""Vectorised bucket windows: every revision's rings in one set of numpy arrays.

:class:`BatchBuckets` holds many rings (rows) of upstream's ``TimedFloat64Buckets`` or
``WeightedFloat64Buckets`` and gives, for all of them at once, exactly what the scalar
reference :mod:`autoscaler.windows` gives one by one: same buckets, same running totals
built in the same float order, same averages to the last bit.

How the sequential rules become array operations:

* a batch of records is applied in rounds; round *k* holds each row's *k*-th record of the
  batch, so records of one row keep their order while different rows move together;
* loops whose length differs per row (zeroing skipped buckets, subtracting stale ones,
  the weighted sum) run over rows sorted by loop length, so step *i* works on a prefix.

Times are ``int`` Unix seconds (floored): with whole-second granularity nothing finer
matters. Durations are float seconds. Row ids come from :meth:`BatchBuckets.add`. Compared
with Go, differences of times are not saturated at ±292 years; that changes no answer
unless a window is that long. Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from autoscaler import gotime
from autoscaler.arena import Arena, ragged_ranges
from autoscaler.gotime import GO_ZERO_UNIX_S as ZERO_S
from autoscaler.gotime import NS_PER_S, np_go_div, np_round6
from autoscaler.windows import BucketState, bucket_count, check_granularity

__all__ = ["BatchBuckets", "record_rounds"]

_F64 = np.float64
_I64 = np.int64


def record_rounds(rows: np.ndarray) -> list[np.ndarray] | None:
    """Split a batch into rounds with at most one entry per row, keeping each row's order.

    Returns ``None`` when every row appears once (a single round: the whole batch).
    """
    n = len(rows)
    if n <= 1:
        return None
    order = np.argsort(rows, kind="stable")
    sr = rows[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sr[1:], sr[:-1], out=new[1:])
    if new.all():
        return None
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    return [order[starts[sizes > k] + k] for k in range(int(sizes.max()))]


@lru_cache(maxsize=4096)
def _decay(coeff: float, num_zeros: int) -> float:
    return gotime.go_pow(1.0 - coeff, float(num_zeros))


def _by_length(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order putting longer loops first, and for each step ``i`` how many rows still run."""
    order = np.argsort(-lengths, kind="stable")
    ls = lengths[order]
    steps = int(ls[0]) if len(ls) else 0
    counts = np.searchsorted(-ls, -np.arange(steps), side="left")  # rows with length > i
    return order, counts


class BatchBuckets:
    """Many bucket rings, linear or weighted per row, with one granularity."""

    def __init__(self, granularity: float = 1.0, *, row_capacity: int = 16,
                 slot_capacity: int = 1024) -> None:
        self._g_ns = check_granularity(granularity)
        self._g = self._g_ns // NS_PER_S
        self._arena = Arena(
            row_fields={
                "window_ns": (_I64, 0), "w_floor": (_I64, 0), "w_ceil": (_I64, 0),
                "first": (_I64, ZERO_S), "last": (_I64, ZERO_S), "total": (_F64, 0.0),
                "weighted": (bool, False), "coeff": (_F64, 0.0),
            },
            slot_fields={"buf": (_F64, 0.0)},
            row_capacity=row_capacity, slot_capacity=slot_capacity)

    # -- rows ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._arena)

    @property
    def granularity(self) -> float:
        return float(self._g)

    @property
    def row_capacity(self) -> int:
        """Length of the arrays returned when no ``rows`` are given (all row ids)."""
        return self._arena.row_capacity

    def add(self, window: float, *, weighted: bool = False) -> int:
        """A new empty ring over ``window`` seconds; returns its row id."""
        w_ns = gotime.duration_ns(window)
        n = bucket_count(w_ns, self._g_ns)
        r = self._arena.add(n)
        self._set_window(r, w_ns)
        R = self._arena.row
        R["weighted"][r] = weighted
        if weighted:
            R["coeff"][r] = gotime.smoothing_coeff(float(n))
        return r

    def remove(self, row: int) -> None:
        self._arena.remove(row)

    def _set_window(self, r: int, w_ns: int) -> None:
        R = self._arena.row
        R["window_ns"][r] = w_ns
        R["w_floor"][r] = w_ns // NS_PER_S  # d_s*1e9 >  W  <=>  d_s >  floor(W/1e9)
        R["w_ceil"][r] = -(-w_ns // NS_PER_S)  # d_s*1e9 >= W  <=>  d_s >= ceil(W/1e9)

    def num_buckets(self, row: int) -> int:
        return int(self._arena.size[row])

    def smoothing_coeff(self, row: int) -> float | None:
        R = self._arena.row
        return float(R["coeff"][row]) if R["weighted"][row] else None

    # -- time helpers -------------------------------------------------------------------------

    def _trunc(self, t: np.ndarray) -> np.ndarray:
        return t if self._g == 1 else t - (t - ZERO_S) % self._g

    def _index(self, t: np.ndarray) -> np.ndarray:
        return t if self._g == 1 else np_go_div(t, self._g)

    def _rows(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(row ids to compute, mask of live ones among them)."""
        if rows is None:
            return np.arange(self._arena.row_capacity), self._arena.live.copy()
        rows = np.asarray(rows, dtype=_I64).ravel()
        self._arena.check_rows(rows)
        return rows, np.ones(len(rows), dtype=bool)

    # -- record -------------------------------------------------------------------------------

    def record(self, rows: np.ndarray, t_s: np.ndarray | int, values: np.ndarray | float) -> int:
        """Add ``values[i]`` at Unix second ``t_s[i]`` to ring ``rows[i]``, in batch order.

        Returns how many values were dropped for being a window or more older than their
        ring's last write.
        """
        rows = np.asarray(rows, dtype=_I64).ravel()
        if not len(rows):
            return 0
        self._arena.check_rows(rows)
        t = np.broadcast_to(np.asarray(t_s, dtype=_I64), rows.shape)
        v = np.broadcast_to(np.asarray(values, dtype=_F64), rows.shape)
        rounds = record_rounds(rows)
        if rounds is None:
            return self._record_once(rows, t, v)
        return sum(self._record_once(rows[s], t[s], v[s]) for s in rounds)

    def _record_once(self, r: np.ndarray, t: np.ndarray, v: np.ndarray) -> int:
        A = self._arena
        R, buf = A.row, A.slot["buf"]
        bt = self._trunc(t)
        w = self._index(t)
        lw, fw, w_ceil = R["last"][r], R["first"][r], R["w_ceil"][r]
        off, nb = A.offset[r], A.size[r]
        total = R["total"][r]

        changed = lw != bt
        inside = (lw - bt) < w_ceil  # bt + window > lastWrite
        keep = ~changed | inside
        upd = changed & inside
        fw = np.where(upd & ((fw == ZERO_S) | (fw > bt)), bt, fw)
        fwd = upd & (bt > lw)
        reset = fwd & ((bt - lw) >= w_ceil)
        gap = fwd & ~reset
        fw = np.where(reset, bt, fw)
        if reset.any():
            buf[ragged_ranges(off[reset], nb[reset])] = 0.0
            total[reset] = 0.0
        if gap.any():
            gi = np.flatnonzero(gap)
            s = self._index(lw[gi])
            order, counts = _by_length(w[gi] - s)
            gi, s = gi[order], s[order]
            g_off, g_nb, g_tot = off[gi], nb[gi], total[gi]
            for j, c in enumerate(counts, start=1):
                slot = g_off[:c] + (s[:c] + j) % g_nb[:c]
                g_tot[:c] -= buf[slot]
                buf[slot] = 0.0
            total[gi] = g_tot
        R["first"][r] = fw
        R["last"][r] = np.where(fwd, bt, lw)

        k = np.flatnonzero(keep)
        slot = off[k] + w[k] % nb[k]
        buf[slot] += v[k]
        total[k] += v[k]
        R["total"][r] = total
        return len(r) - len(k)

    # -- queries ------------------------------------------------------------------------------

    def is_empty(self, now_s: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Per row: nothing was written within a window before ``now_s`` (dead rows: True)."""
        rows, live = self._rows(rows)
        R = self._arena.row
        nt = int(self._trunc(np.asarray(now_s, dtype=_I64)))
        return ~live | ((nt - R["last"][rows]) > R["w_floor"][rows])

    def window_average(self, now_s: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Per row: its linear or weighted window average at ``now_s`` (dead rows: 0).

        Without ``rows``, the result is indexed by row id over :attr:`row_capacity`.
        """
        rows, live = self._rows(rows)
        A = self._arena
        R = A.row
        nt = int(self._trunc(np.asarray(now_s, dtype=_I64)))
        out = np.zeros(len(rows), dtype=_F64)
        weighted = R["weighted"][rows]
        lin = np.flatnonzero(live & ~weighted)
        if len(lin):
            out[lin] = self._linear(rows[lin], nt)
        wei = np.flatnonzero(live & weighted)
        if len(wei):
            out[wei] = self._weighted(rows[wei], nt)
        return out

    def _linear(self, r: np.ndarray, nt: int) -> np.ndarray:
        A = self._arena
        R, buf = A.row, A.slot["buf"]
        lw, nb = R["last"][r], A.size[r]
        d = nt - lw
        span = np_go_div(lw - R["first"][r], self._g).astype(_F64) + 1.0
        out = np.zeros(len(r), dtype=_F64)

        now_or_later = np.flatnonzero(d <= 0)
        if len(now_or_later):
            i = now_or_later
            out[i] = np_round6(R["total"][r[i]] / np.minimum(span[i], nb[i].astype(_F64)))

        stale = np.flatnonzero((d > 0) & (d < R["w_ceil"][r]))
        if len(stale):
            i = stale
            s = self._index(lw[i])
            k = int(self._index(np.asarray(nt, dtype=_I64))) - s  # trailing buckets to drop
            order, counts = _by_length(k)
            i, s = i[order], s[order]
            ri = r[i]
            ret = R["total"][ri]
            g_off, g_nb = A.offset[ri], nb[i]
            for j, c in enumerate(counts, start=1):
                ret[:c] -= buf[g_off[:c] + (s[:c] + j) % g_nb[:c]]
            num = np.minimum(span[i], (g_nb - k[order]).astype(_F64))
            out[i] = np_round6(ret / num)
        return out

    def _weighted(self, r: np.ndarray, nt: int) -> np.ndarray:
        A = self._arena
        R, buf = A.row, A.slot["buf"]
        lw, nb, coeff = R["last"][r], A.size[r], R["coeff"][r]
        out = np.zeros(len(r), dtype=_F64)
        i = np.flatnonzero((nt - lw) <= R["w_floor"][r])  # not empty
        if not len(i):
            return out
        lw, nb, coeff = lw[i], nb[i], coeff[i]
        mult = coeff.copy()
        num_b = nb.copy()
        later = np.flatnonzero(nt > lw)
        if len(later):
            num_z = np_go_div(nt - lw[later], self._g)
            mult[later] *= np.array([_decay(float(c), int(z))
                                     for c, z in zip(coeff[later], num_z)], dtype=_F64)
            num_b[later] -= num_z
        start = self._index(lw) + nb
        order, counts = _by_length(np.maximum(num_b, 0))
        off, nb, coeff, start = A.offset[r[i]][order], nb[order], coeff[order], start[order]
        mult = mult[order]
        decay = 1.0 - coeff
        ret = np.zeros(len(order), dtype=_F64)
        for step, c in enumerate(counts):
            ret[:c] += buf[off[:c] + (start[:c] - step) % nb[:c]] * mult[:c]
            mult[:c] *= decay[:c]
        res = np.empty(len(order), dtype=_F64)
        res[order] = ret
        out[i] = res
        return out

    # -- resize -------------------------------------------------------------------------------

    def resize(self, row: int, window: float, now_s: int) -> None:
        """Change a ring's window, keeping its newest buckets if written within the old window."""
        A = self._arena
        A.check_rows(np.array([row]))
        R = A.row
        w_ns = gotime.duration_ns(window)
        if w_ns != R["window_ns"][row]:
            n_new = bucket_count(w_ns, self._g_ns)
            last = int(R["last"][row])
            nt = int(self._trunc(np.asarray(now_s, dtype=_I64)))
            recent = nt - last <= R["w_floor"][row]
            old_off, n_old = A.resize(row, n_new)
            buf = A.slot["buf"]
            total = 0.0
            if recent:
                t = int(self._index(np.asarray(last, dtype=_I64))) - np.arange(min(n_new, n_old))
                vals = buf[old_off + t % n_old]
                buf[A.offset[row] + t % n_new] = vals
                for x in vals.tolist():  # the same float order as the scalar ring
                    total += x
                R["first"][row] = last - (n_old - 1) * self._g
            else:
                R["first"][row] = ZERO_S
            R["total"][row] = total
            self._set_window(row, w_ns)
        if R["weighted"][row]:
            R["coeff"][row] = gotime.smoothing_coeff(math.ceil(float(w_ns) / float(self._g_ns)))

    # -- debugging views ----------------------------------------------------------------------

    def state(self, row: int) -> BucketState:
        A = self._arena
        A.check_rows(np.array([row]))
        R = A.row

        def ns(s: int) -> int | None:
            return None if s == ZERO_S else s * NS_PER_S

        return BucketState(
            first_write_ns=ns(int(R["first"][row])), last_write_ns=ns(int(R["last"][row])),
            window_total=float(R["total"][row]), num_buckets=int(A.size[row]),
            window_ns=int(R["window_ns"][row]), smoothing_coeff=self.smoothing_coeff(row))

    def buckets(self, row: int, now_s: int) -> list[tuple[int, float]]:
        """``(bucket start, Unix s; value)`` from the last write backwards, as ``now_s`` allows."""
        A = self._arena
        A.check_rows(np.array([row]))
        last = int(A.row["last"][row])
        n = int(A.size[row])
        nt = int(self._trunc(np.asarray(now_s, dtype=_I64)))
        count = n - gotime.go_div(nt - last, self._g)
        si = int(self._index(np.asarray(last, dtype=_I64)))
        seg = A.slot["buf"][A.offset[row]:A.offset[row] + n]
        return [(last - j * self._g, float(seg[(si - j) % n])) for j in range(max(count, 0))]
