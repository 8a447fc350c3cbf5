"""The vectorised windows answer exactly as the scalar reference, row by row.

Checked on the whole conformance corpus and on random timelines that mix many rows of
different sizes, batches with several records per row, gaps, late and out-of-order writes,
resizes, and rows being removed and added (which reuses ids and compacts the arena).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from autoscaler import gotime
from autoscaler.arena import Arena, ragged_ranges
from autoscaler.batch_max import BatchMaxWindows
from autoscaler.batch_windows import BatchBuckets, record_rounds
from autoscaler.windows import MaxTimeWindow, TimedBuckets, WeightedBuckets
from tests.autoscaler.conformance import corpus

NS = gotime.NS_PER_S


def bit_equal(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


# -- the corpus through scalar and batch side by side -----------------------------------------

@pytest.mark.parametrize("scenario", corpus.load(corpus.WINDOWS), ids=lambda s: s["name"])
def test_scalar_and_batch_give_the_corpus_answers(scenario: dict) -> None:
    t0 = scenario["t0_unix_s"] * NS + scenario["t0_nanos"]
    kind, g = scenario["kind"], scenario["granularity_s"]
    if kind == "max_time_window":
        ref: object = MaxTimeWindow(scenario["window_s"], g)
        batch: object = BatchMaxWindows(g)
        row = batch.add(scenario["window_s"])
    else:
        ref = (WeightedBuckets if kind == "weighted_buckets" else TimedBuckets)(
            scenario["window_s"], g)
        batch = BatchBuckets(g)
        row = batch.add(scenario["window_s"], weighted=kind == "weighted_buckets")
    for op in scenario["ops"]:
        ns = t0 + gotime.duration_ns(op.get("t", 0.0))
        s = ns // NS
        name = op["op"]
        if name == "record":
            ref.record(ns, op["value"])
            batch.record([row], s, [op["value"]])
        elif name == "window_average":
            want = op["expect"]
            assert bit_equal(ref.window_average(ns), want)
            assert bit_equal(float(batch.window_average(s, [row])[0]), want)
        elif name == "is_empty":
            assert ref.is_empty(ns) is op["expect"] is bool(batch.is_empty(s, [row])[0])
        elif name == "current":
            assert ref.current() == op["expect"] == int(batch.current([row])[0])
        elif name == "resize":
            now = gotime.GO_ZERO_UNIX_S if op["data_recent"] else 253_402_300_799
            ref.resize(op["window_s"], now * NS)
            batch.resize(row, op["window_s"], now)
            assert ref.state() == batch.state(row)
        elif name == "buckets":
            assert [(t // NS, v) for t, v in ref.buckets(ns)] == batch.buckets(row, s)
        elif name == "state":
            assert ref.state() == batch.state(row)


# -- random timelines -------------------------------------------------------------------------

class Pair:
    """A scalar ring and its batch row, fed the same inputs."""

    def __init__(self, batch: BatchBuckets, rng: random.Random, g: int) -> None:
        self.window = float(rng.choice([1, 2, 3, 5, 6, 7, 10, 13, 30, 60]) * rng.choice([1, g]))
        self.weighted = rng.random() < 0.4
        cls = WeightedBuckets if self.weighted else TimedBuckets
        self.ref = cls(self.window, float(g))
        self.row = batch.add(self.window, weighted=self.weighted)
        self.clock = 0


def random_timeline(seed: int, g: int, steps: int = 120) -> None:
    rng = random.Random(f"windows:{seed}:{g}")
    base = rng.choice([1_500_000_000, 1_787_315_305, 7_258_118_400]) * NS + rng.randrange(NS)
    batch = BatchBuckets(float(g), row_capacity=2, slot_capacity=8)
    pairs = [Pair(batch, rng, g) for _ in range(rng.randint(3, 12))]
    now = base
    for _ in range(steps):
        now += rng.choice([0, 250, 500, 1000, 1000, 1000, 2000, 7000, 70_000]) * 1_000_000
        # A batch of records: several per row, some late or far in the past.
        recs = []
        for p in pairs:
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                t = now - rng.choice([0, 0, 0, 0, 1, 3, 200]) * NS - rng.randrange(NS)
                v = rng.choice([0.0, 1.0, 0.1, 14.0, rng.uniform(0, 500), rng.uniform(-1, 1)])
                recs.append((p, t, v))
        rng.shuffle(recs)
        for p, t, v in recs:
            p.ref.record(t, v)
        if recs:
            batch.record([p.row for p, _, _ in recs], [t // NS for _, t, _ in recs],
                         [v for _, _, v in recs])
        # Query every row at once, at now or slightly off it.
        q = now + rng.choice([0, 0, -3, 2, 9, 40]) * NS
        rows = np.array([p.row for p in pairs])
        avg = batch.window_average(q // NS, rows)
        empty = batch.is_empty(q // NS, rows)
        full = batch.window_average(q // NS)
        for i, p in enumerate(pairs):
            assert bit_equal(float(avg[i]), p.ref.window_average(q)), (p.window, p.weighted)
            assert bit_equal(float(full[p.row]), float(avg[i]))
            assert bool(empty[i]) == p.ref.is_empty(q)
        # Now and then: resize a row, or replace one (ids and arena space get reused).
        r = rng.random()
        if r < 0.08:
            p = rng.choice(pairs)
            w = float(rng.choice([1, 3, 5, 10, 60]) * rng.choice([1, g]))
            when = now + rng.choice([0, 0, 300]) * NS
            p.ref.resize(w, when)
            batch.resize(p.row, w, when // NS)
            assert p.ref.state() == batch.state(p.row)
        elif r < 0.14:
            old = pairs.pop(rng.randrange(len(pairs)))
            batch.remove(old.row)
            pairs.append(Pair(batch, rng, g))
    assert len(batch) == len(pairs)


@pytest.mark.parametrize("g", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("seed", range(4))
def test_batch_buckets_match_the_scalar_rings_on_random_timelines(seed: int, g: int) -> None:
    random_timeline(seed, g)


@pytest.mark.parametrize("g", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_batch_max_windows_match_the_scalar_window_on_random_timelines(seed: int, g: int) -> None:
    rng = random.Random(f"max:{seed}:{g}")
    batch = BatchMaxWindows(float(g), row_capacity=1, slot_capacity=4)
    refs, rows = [], []
    for _ in range(rng.randint(2, 10)):
        d = float(rng.choice([1, 2, 5, 15, 30, 60, 121]))
        refs.append(MaxTimeWindow(d, float(g)))
        rows.append(batch.add(d))
    t = rng.choice([1_700_000_000, -62_135_596_800]) * NS  # also Go's year 1
    for _ in range(200):
        t += rng.choice([0, 500, 1000, 2000, 2000, 9000, -1000, 60_000]) * 1_000_000
        recs = [(i, rng.choice([0, 1, 2, 5, rng.randint(0, 40)]))
                for i in range(len(refs)) for _ in range(rng.choice([0, 1, 1, 2]))]
        rng.shuffle(recs)
        for i, v in recs:
            refs[i].record(t, v)
        if recs:
            batch.record([rows[i] for i, _ in recs], t // NS, [v for _, v in recs])
        cur = batch.current(np.array(rows))
        assert [int(c) for c in cur] == [r.current() for r in refs]
    assert batch.overflows == sum(r.overflows for r in refs)


# -- plumbing ---------------------------------------------------------------------------------

def test_record_rounds_keep_each_rows_order() -> None:
    rows = np.array([4, 1, 4, 4, 2, 1])
    rounds = record_rounds(rows)
    assert rounds is not None
    assert [r.tolist() for r in rounds] == [[1, 4, 0], [5, 2], [3]]
    assert record_rounds(np.array([3, 1, 2])) is None


def test_ragged_ranges_concatenate_segments() -> None:
    assert ragged_ranges(np.array([10, 0, 5]), np.array([2, 0, 3])).tolist() == [
        10, 11, 5, 6, 7]


def test_arena_reuses_ids_and_compacts_holes() -> None:
    a = Arena({"x": (np.int64, -1)}, {"v": (np.float64, 0.0)}, row_capacity=1, slot_capacity=4)
    rows = [a.add(3) for _ in range(4)]
    for r in rows:
        a.slot["v"][a.offset[r]:a.offset[r] + 3] = r
    a.remove(rows[1])
    a.remove(rows[2])
    assert a.add(3) == rows[2]
    a.resize(rows[0], 5)
    for _ in range(3):
        a.add(8)  # forces compaction and growth
    assert a.slots_in_use == 3 + 5 + 3 + 24
    assert a.slot["v"][a.offset[rows[3]]:a.offset[rows[3]] + 3].tolist() == [rows[3]] * 3
    assert len(a) == 6


def test_unknown_rows_are_refused() -> None:
    b = BatchBuckets()
    r = b.add(60)
    b.remove(r)
    with pytest.raises(KeyError):
        b.record([r], 0, [1.0])
    with pytest.raises(KeyError):
        b.window_average(0, [99])


def test_dead_rows_read_as_empty_and_zero() -> None:
    b = BatchBuckets()
    keep, gone = b.add(60), b.add(60)
    b.record([keep, gone], 100, [3.0, 4.0])
    b.remove(gone)
    avg = b.window_average(100)
    assert len(avg) == b.row_capacity
    assert avg[keep] == 3.0 and avg[gone] == 0.0 and b.is_empty(100)[gone]


def test_records_a_window_too_old_are_counted_as_dropped() -> None:
    b = BatchBuckets()
    r = b.add(10)
    assert b.record([r, r, r], [100, 50, 95], [1.0, 2.0, 3.0]) == 1
    assert b.window_average(100, [r])[0] == round(4.0 / 6, 6)
