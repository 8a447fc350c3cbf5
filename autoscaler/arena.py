"""Ragged rows in flat numpy buffers: the storage under the vectorised windows.

Each row (one window of one revision) owns a per-row record (``row[name][r]``) and a
contiguous segment of ``size[r]`` slots in every slot buffer (``slot[name][offset[r] + i]``).
Rows have different sizes (a 60 s window has 60 buckets, a 6 s one 6), so padding every
row to the largest would waste memory; segments are appended at the end of the used area,
and the buffers are compacted when removed or resized rows have left enough holes.

Row ids are small ints, reused after :meth:`Arena.remove`. Buffers may be reallocated by
:meth:`Arena.add` and :meth:`Arena.resize`: always read them through the arena, never keep a
reference across those calls. Pure: no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["Arena", "ragged_ranges"]

FieldSpec = Mapping[str, tuple[type | np.dtype, object]]


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``range(s, s + n)`` for every ``(s, n)``, as one int64 array."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    base = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return base + np.arange(total, dtype=np.int64)


class Arena:
    """Rows with per-row fields and variable-length slot segments in shared buffers."""

    def __init__(self, row_fields: FieldSpec, slot_fields: FieldSpec,
                 row_capacity: int = 16, slot_capacity: int = 256) -> None:
        self._row_specs = dict(row_fields)
        self._slot_specs = dict(slot_fields)
        self.row: dict[str, np.ndarray] = {
            k: np.full(row_capacity, fill, dtype=dt) for k, (dt, fill) in self._row_specs.items()}
        self.slot: dict[str, np.ndarray] = {
            k: np.full(slot_capacity, fill, dtype=dt) for k, (dt, fill) in self._slot_specs.items()}
        self.offset = np.zeros(row_capacity, dtype=np.int64)
        self.size = np.zeros(row_capacity, dtype=np.int64)
        self.live = np.zeros(row_capacity, dtype=bool)
        self._free: list[int] = []
        self._next_row = 0
        self._top = 0  # slots in use, including holes
        self._holes = 0

    def __len__(self) -> int:
        return self._next_row - len(self._free)

    @property
    def row_capacity(self) -> int:
        return len(self.live)

    @property
    def slots_in_use(self) -> int:
        return self._top - self._holes

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.live)

    def check_rows(self, rows: np.ndarray) -> None:
        """Raise ``KeyError`` unless every id in ``rows`` is a live row."""
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.live)
                          or not self.live[rows].all()):
            raise KeyError(f"rows: not all of {rows[:8].tolist()}... are live rows")

    def add(self, size: int) -> int:
        """A new row with ``size`` slots, all fields at their fill values; returns its id."""
        if self._free:
            r = self._free.pop()
        else:
            r = self._next_row
            self._next_row += 1
            if r >= len(self.live):
                self._grow_rows(2 * len(self.live))
        for k, (_, fill) in self._row_specs.items():
            self.row[k][r] = fill
        self.live[r] = True
        self.size[r] = 0
        self._place(r, size)
        return r

    def remove(self, row: int) -> None:
        self.check_rows(np.array([row]))
        self.live[row] = False
        self._holes += int(self.size[row])
        self.size[row] = 0
        self._free.append(row)

    def resize(self, row: int, size: int) -> tuple[int, int]:
        """Give ``row`` a fresh segment of ``size`` slots (at fill values).

        Returns the old segment's ``(offset, size)``; its data stays readable until the next
        :meth:`add` or :meth:`resize`.
        """
        self.check_rows(np.array([row]))
        self._ensure_slots(size)
        old = (int(self.offset[row]), int(self.size[row]))
        self._holes += old[1]
        self._place(row, size, compact=False)
        return old

    def _place(self, row: int, size: int, compact: bool = True) -> None:
        if compact:
            self._ensure_slots(size)
        off = self._top
        for k, (_, fill) in self._slot_specs.items():
            self.slot[k][off:off + size] = fill
        self.offset[row] = off
        self.size[row] = size
        self._top += size

    def _ensure_slots(self, size: int) -> None:
        cap = len(next(iter(self.slot.values()))) if self.slot else 0
        if self._top + size <= cap:
            return
        if self._holes * 2 >= self._top:
            self._compact()
            if self._top + size <= cap:
                return
        self._grow_slots(max(2 * cap, self._top + size))

    def _compact(self) -> None:
        rows = self.live_rows()
        sizes = self.size[rows]
        new_off = np.cumsum(sizes) - sizes
        src = ragged_ranges(self.offset[rows], sizes)
        n = len(src)
        for k, buf in self.slot.items():
            buf[:n] = buf[src]
        self.offset[rows] = new_off
        self._top = n
        self._holes = 0

    def _grow_slots(self, capacity: int) -> None:
        for k, (dt, fill) in self._slot_specs.items():
            new = np.full(capacity, fill, dtype=dt)
            new[:self._top] = self.slot[k][:self._top]
            self.slot[k] = new

    def _grow_rows(self, capacity: int) -> None:
        def grown(a: np.ndarray, fill: object) -> np.ndarray:
            new = np.full(capacity, fill, dtype=a.dtype)
            new[:len(a)] = a
            return new

        for k, (_, fill) in self._row_specs.items():
            self.row[k] = grown(self.row[k], fill)
        self.offset = grown(self.offset, 0)
        self.size = grown(self.size, 0)
        self.live = grown(self.live, False)
