"""Benchmark: recording per-second stats and averaging every revision's windows.

    python -m bench.bench_windows [--revisions 10000] [--pods 1-10] [--seconds 20] [--out bench/out]

Each revision has upstream's four rings (concurrency and rps, stable 60 s and panic 6 s;
one revision in ten uses the weighted algorithm). Every simulated second each revision gets
one stat per pod (1-10 pods), and every stat is recorded into its four rings, in one
``BatchBuckets.record`` call per second. Then, as at a decider tick, all window averages are
computed in one call. The baseline is the scalar reference rings, one object per ring, on a
sample of the revisions. Prints stats/s, ring records/s and the averaging time; writes
``windows.png``.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

from autoscaler.batch_windows import BatchBuckets
from autoscaler.windows import TimedBuckets, WeightedBuckets

NS = 1_000_000_000
T0 = 1_787_315_304
STABLE, PANIC = 60.0, 6.0


def build(n: int, rng: np.random.Generator) -> tuple[BatchBuckets, np.ndarray, np.ndarray]:
    """The bank, (n, 4) ring rows [conc-stable, conc-panic, rps-stable, rps-panic], weighted."""
    bank = BatchBuckets(row_capacity=4 * n, slot_capacity=n * 2 * int(STABLE + PANIC))
    weighted = rng.random(n) < 0.1
    rows = np.array([[bank.add(w, weighted=bool(wt)) for w in (STABLE, PANIC, STABLE, PANIC)]
                     for wt in weighted], dtype=np.int64).reshape(n, 4)
    return bank, rows, weighted


def second_of_stats(pods: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One stat per pod: (revision index, concurrency, rps)."""
    rev = np.repeat(np.arange(len(pods)), pods)
    conc = rng.gamma(2.0, 5.0, len(rev))
    rps = conc * rng.uniform(5, 20, len(rev))
    return rev, conc, rps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=10_000)
    ap.add_argument("--pods", default="1-10", help="pods per revision, uniform range lo-hi")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--scalar-revisions", type=int, default=500)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    lo, hi = (int(x) for x in args.pods.split("-"))
    n = args.revisions
    pods = rng.integers(lo, hi + 1, n)
    bank, rows, weighted = build(n, rng)

    rec_times, avg_times, stats_per_s = [], [], []
    for sec in range(args.seconds):
        rev, conc, rps = second_of_stats(pods, rng)
        all_rows = np.concatenate([rows[rev, 0], rows[rev, 1], rows[rev, 2], rows[rev, 3]])
        values = np.concatenate([conc, conc, rps, rps])
        t = time.perf_counter()
        bank.record(all_rows, T0 + sec, values)
        rec_times.append(time.perf_counter() - t)
        stats_per_s.append(len(rev))
        t = time.perf_counter()
        bank.window_average(T0 + sec)
        avg_times.append(time.perf_counter() - t)

    # Baseline: the scalar rings, on a sample of revisions, for a few seconds.
    k = min(args.scalar_revisions, n)
    scalar = [[(WeightedBuckets if weighted[i] else TimedBuckets)(w)
               for w in (STABLE, PANIC, STABLE, PANIC)] for i in range(k)]
    s_rec, s_avg = [], []
    for sec in range(5):
        rev, conc, rps = second_of_stats(pods[:k], rng)
        now = (T0 + sec) * NS
        rl, cl, pl = rev.tolist(), conc.tolist(), rps.tolist()
        t = time.perf_counter()
        for r, c, p in zip(rl, cl, pl):
            cs, cp, rs, rp = scalar[r]
            cs.record(now, c)
            cp.record(now, c)
            rs.record(now, p)
            rp.record(now, p)
        s_rec.append((time.perf_counter() - t) / len(rl))
        t = time.perf_counter()
        for ring in scalar:
            for w in ring:
                w.window_average(now)
        s_avg.append((time.perf_counter() - t) / k)

    rec = statistics.median(rec_times[2:])
    stats = statistics.median(stats_per_s)
    avg = statistics.median(avg_times[2:])
    per_stat_scalar = statistics.median(s_rec)
    per_rev_avg_scalar = statistics.median(s_avg)
    print(f"revisions {n}, rings {4 * n}, stats per second ~{stats:,.0f} (1 per pod)")
    print(f"record:  {rec * 1e3:7.1f} ms per second of stats  -> {stats / rec:>12,.0f} stats/s "
          f"({4 * stats / rec:,.0f} ring records/s)")
    print(f"         scalar baseline {1 / per_stat_scalar:>12,.0f} stats/s   "
          f"speed-up {per_stat_scalar * stats / rec:.0f}x")
    print(f"average: {avg * 1e3:7.2f} ms for all {4 * n} rings at a tick; "
          f"scalar would take {per_rev_avg_scalar * n * 1e3:.0f} ms "
          f"(speed-up {per_rev_avg_scalar * n / avg:.0f}x)")
    plot(rec_times, avg_times, stats_per_s, 4 * n, pathlib.Path(args.out) / "windows.png")


def plot(rec: list[float], avg: list[float], stats: list[int], rings: int,
         path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    secs = range(len(rec))
    ax.plot(secs, [r * 1e3 for r in rec], "o-", label="record one second of stats (ms)")
    ax.plot(secs, [a * 1e3 for a in avg], "s-", label="all window averages (ms)")
    ax.set_xlabel("simulated second")
    ax.set_ylabel("ms")
    ax.set_title(f"~{statistics.median(stats):,.0f} stats/s into {rings:,} rings")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
