"""Vectorised max windows: many of upstream's ``max.TimeWindow`` in numpy arrays.

Each row is the ring of descending maxima that upstream keeps for the scale-down delay,
with the same ``(first, length)`` bookkeeping, so a row answers exactly as the scalar
:class:`autoscaler.windows.MaxTimeWindow` does, including after repeated slots, gaps and
steps back in time. The pops at either end of the ring vary per row; they run as repeated
array steps over the rows that still pop, which is amortised O(1) per record.

Times are ``int`` Unix seconds (floored); the index of an instant is that second divided
(truncating) by the whole-second granularity. Pure: no I/O, no clock.
"""
from __future__ import annotations

import numpy as np

from autoscaler import gotime
from autoscaler.arena import Arena
from autoscaler.batch_windows import record_rounds
from autoscaler.gotime import NS_PER_S, np_go_div
from autoscaler.windows import bucket_count, check_granularity

__all__ = ["BatchMaxWindows"]

_I64 = np.int64


class BatchMaxWindows:
    """Many max-over-time windows sharing one granularity."""

    def __init__(self, granularity: float, *, row_capacity: int = 16,
                 slot_capacity: int = 256) -> None:
        self._g_ns = check_granularity(granularity)
        self._g = self._g_ns // NS_PER_S
        self._arena = Arena(
            row_fields={"first": (_I64, 0), "length": (_I64, 0)},
            slot_fields={"idx": (_I64, 0), "val": (_I64, 0)},
            row_capacity=row_capacity, slot_capacity=slot_capacity)
        #: Records that would have overfilled a ring (upstream panics; we drop the oldest).
        self.overflows = 0

    def __len__(self) -> int:
        return len(self._arena)

    def add(self, duration: float) -> int:
        """A new window over ``duration`` seconds; returns its row id."""
        return self._arena.add(bucket_count(gotime.duration_ns(duration), self._g_ns))

    def remove(self, row: int) -> None:
        self._arena.remove(row)

    def size(self, row: int) -> int:
        return int(self._arena.size[row])

    def record(self, rows: np.ndarray, t_s: np.ndarray | int, values: np.ndarray | int) -> int:
        """Record ``values[i]`` at Unix second ``t_s[i]`` in window ``rows[i]``, in batch order.

        Returns the number of overflows (see :attr:`overflows`).
        """
        rows = np.asarray(rows, dtype=_I64).ravel()
        if not len(rows):
            return 0
        self._arena.check_rows(rows)
        t = np.broadcast_to(np.asarray(t_s, dtype=_I64), rows.shape)
        idx = t if self._g == 1 else np_go_div(t, self._g)
        v = np.broadcast_to(np.asarray(values, dtype=_I64), rows.shape)
        rounds = record_rounds(rows)
        if rounds is None:
            n = self._record_once(rows, idx, v.copy())
        else:
            n = sum(self._record_once(rows[s], idx[s], v[s]) for s in rounds)
        self.overflows += n
        return n

    def _record_once(self, r: np.ndarray, index: np.ndarray, v: np.ndarray) -> int:
        A = self._arena
        sidx, sval = A.slot["idx"], A.slot["val"]
        off, size = A.offset[r], A.size[r]
        first, length = A.row["first"][r], A.row["length"][r]

        # Drop entries from the back that the new value dominates.
        act = np.flatnonzero(length > 0)
        while len(act):
            back = sval[off[act] + (first[act] + length[act] - 1) % size[act]]
            act = act[v[act] >= back]
            length[act] -= 1
            act = act[length[act] > 0]
        # Expire entries from the front that are a window or more older than this index.
        act = np.flatnonzero(length > 0)
        while len(act):
            act = act[index[act] - sidx[off[act] + first[act]] >= size[act]]
            length[act] -= 1
            first[act] = (first[act] + 1) % size[act]
            act = act[length[act] > 0]
        # Same index as the newest entry: keep the larger value, replace the entry.
        act = np.flatnonzero(length > 0)
        if len(act):
            pos = off[act] + (first[act] + length[act] - 1) % size[act]
            same = sidx[pos] == index[act]
            act, pos = act[same], pos[same]
            v[act] = np.maximum(v[act], sval[pos])
            length[act] -= 1
        # A step back in time can leave the ring full: drop the oldest (upstream panics).
        full = np.flatnonzero(length == size)
        if len(full):
            length[full] -= 1
            first[full] = (first[full] + 1) % size[full]
        pos = off + (first + length) % size
        sidx[pos] = index
        sval[pos] = v
        A.row["first"][r] = first
        A.row["length"][r] = length + 1
        return len(full)

    def current(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Per row: the maximum among unexpired entries (0 before any record; dead rows 0)."""
        A = self._arena
        if rows is None:
            return np.where(A.live, A.slot["val"][A.offset + A.row["first"]], 0)
        rows = np.asarray(rows, dtype=_I64).ravel()
        A.check_rows(rows)
        return A.slot["val"][A.offset[rows] + A.row["first"][rows]]
