"""Benchmark: one decider tick for N revisions, vectorised vs the scalar reference.

    python -m bench.bench_decider [--sizes 100,1000,10000,30000] [--ticks 40] [--out bench/out]

For each fleet size it builds a mixed fleet (a third with a scale-down delay, some with
activation scale, some unreachable, loads that burst into panic and fall back) and times
``BatchDecider.scale`` over all revisions at once (median and p95 of ``--ticks`` ticks, 2 s
apart), then the same ticks through one scalar ``Decider`` per revision as the baseline,
and prints the speed-up. A single-revision poke is timed too. Writes ``decider.png``.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

from autoscaler.batch_decider import BatchDecider
from autoscaler.decider import Decider
from autoscaler.spec import DeciderSpec

NS = 1_000_000_000
T0 = 1_787_315_304 * NS


def fleet_specs(n: int, rng: np.random.Generator) -> list[DeciderSpec]:
    specs = []
    for i in range(n):
        total = float(rng.choice([10, 50, 100, 100, 200]))
        specs.append(DeciderSpec(
            target_value=total * 0.7, total_value=total,
            target_burst_capacity=float(rng.choice([211, 211, 0, -1, 50])),
            scale_down_delay=float(rng.choice([0, 0, 30, 120])),
            activation_scale=int(rng.choice([0, 0, 0, 3])),
            reachable=bool(rng.random() < 0.9),
            stable_window=float(rng.choice([60, 60, 30, 120]))))
    return specs


def inputs(n: int, ticks: int, rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """Per tick: ready pods, stable and panic totals (bursty), pod_ok, metrics_ok."""
    base = rng.uniform(0, 2000, n)
    out = []
    for k in range(ticks):
        wave = 1 + 0.5 * np.sin(k / 5 + base / 300)
        stable = base * wave
        burst = rng.random(n) < 0.05
        panic = stable * np.where(burst, rng.uniform(2, 6, n), rng.uniform(0.8, 1.2, n))
        ready = np.maximum(0, (stable / 70 + rng.normal(0, 1, n))).astype(np.int64)
        out.append((ready, stable, panic, rng.random(n) > 0.01, rng.random(n) > 0.02))
    return out


def time_batch(specs: list[DeciderSpec], ticks: list[tuple[np.ndarray, ...]]) -> list[float]:
    bd = BatchDecider(row_capacity=len(specs))
    rows = np.array([bd.add(s, T0, 1) for s in specs])
    times = []
    for k, (ready, stable, panic, pod_ok, metrics_ok) in enumerate(ticks):
        now = T0 + (k + 1) * 2 * NS
        t = time.perf_counter()
        bd.scale(now, rows, ready, stable, panic, pod_ok=pod_ok, metrics_ok=metrics_ok)
        times.append(time.perf_counter() - t)
    return times


def time_poke(specs: list[DeciderSpec], ticks: list[tuple[np.ndarray, ...]]) -> float:
    bd = BatchDecider(row_capacity=len(specs))
    rows = np.array([bd.add(s, T0, 1) for s in specs])
    times = []
    for k, (ready, stable, panic, _, _) in enumerate(ticks):
        r = rows[k % len(rows)]
        t = time.perf_counter()
        bd.scale(T0 + (k + 1) * NS, [r], ready[r:r + 1], stable[r:r + 1], panic[r:r + 1])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_scalar(specs: list[DeciderSpec], ticks: list[tuple[np.ndarray, ...]]) -> list[float]:
    deciders = [Decider(s, T0, 1) for s in specs]
    times = []
    for k, (ready, stable, panic, pod_ok, metrics_ok) in enumerate(ticks):
        now = T0 + (k + 1) * 2 * NS
        rl, sl, pl = ready.tolist(), stable.tolist(), panic.tolist()
        po, mo = pod_ok.tolist(), metrics_ok.tolist()
        t = time.perf_counter()
        for i, d in enumerate(deciders):
            d.scale(now, ready_pods=rl[i] if po[i] else None,
                    stable=sl[i] if mo[i] else None, panic=pl[i] if mo[i] else None)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000,30000")
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--scalar-ticks", type=int, default=5, help="ticks timed for the baseline")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"{'revisions':>10} {'batch ms p50':>13} {'p95':>8} {'scalar ms':>10} "
          f"{'speed-up':>9} {'poke us':>8}")
    for n in sizes:
        specs = fleet_specs(n, rng)
        ticks = inputs(n, args.ticks, rng)
        batch = time_batch(specs, ticks)[2:]  # first ticks warm numpy up
        scalar = time_scalar(specs, ticks[:args.scalar_ticks])
        poke = time_poke(specs, ticks)
        b50, b95 = statistics.median(batch), float(np.percentile(batch, 95))
        s50 = statistics.median(scalar)
        rows.append((n, b50, b95, s50))
        print(f"{n:>10} {b50 * 1e3:>13.2f} {b95 * 1e3:>8.2f} {s50 * 1e3:>10.1f} "
              f"{s50 / b50:>8.0f}x {poke * 1e6:>8.0f}")
    plot(rows, pathlib.Path(args.out) / "decider.png")


def plot(rows: list[tuple[int, float, float, float]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    n = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [r[1] * 1e3 for r in rows], "o-", label="BatchDecider.scale (p50)")
    ax.loglog(n, [r[2] * 1e3 for r in rows], ".--", label="BatchDecider.scale (p95)")
    ax.loglog(n, [r[3] * 1e3 for r in rows], "s-", label="scalar Decider loop (baseline)")
    ax.axhline(100, color="grey", lw=0.8, ls=":", label="100 ms budget")
    ax.set_xlabel("revisions decided in one tick")
    ax.set_ylabel("ms per tick")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
