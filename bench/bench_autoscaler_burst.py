"""Benchmark (c): burst-to-decision latency, from a step in load at the queue-proxies to the
scale-up decision published on the DecisionFeed.

    python -m bench.bench_autoscaler_burst [--revisions 20] [--max-pods 6] [--step 10]
                                           [--background 1000] [--out bench/out]

``python -m autoscaler`` runs on loopback twice: as shipped (a revision whose current second
crosses its panic level is decided at once) and with ``--no-burst-decisions`` (the 2 s tick
only, as upstream decides; upstream also waits up to 1 s for its scrape). Each of
``--revisions`` revisions (containerConcurrency 10, target 7) has 1..``--max-pods`` simulated
queue-proxies, each on its own ``StatIngest.Push`` stream reporting once a second at its own
phase, as real ones do: the time-weighted average concurrency of the second that just ended,
stamped with the second it was cut in. After a warm-up at 5 concurrent requests per pod, each
revision's load steps to ``--step`` times that at a random instant L (so the step lands at
every phase of the tick); the latency is the first decision on the feed with more pods than
before L, minus L. ``--background`` more revisions get batched stats meanwhile, to keep the
autoscaler busy. Writes ``autoscaler_burst.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import statistics
import time

import grpc

from bench.bench_autoscaler_common import percentile, register, start_autoscaler, write_outputs
from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

NAMESPACE = "bench"
BASE = 5.0  # concurrent requests per pod before the step


class Pod:
    def __init__(self, revision: str, index: int, phase: float) -> None:
        self.revision = revision
        self.name = f"{revision}-pod-{index}"
        self.phase = phase


async def run_pods(address: str, revision: str, pods: int, step_at: float, step: float,
                   until: float, rng: random.Random) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        async def one(pod: Pod) -> None:
            call = kdp_pb2_grpc.StatIngestStub(ch).Push()
            msg = stat_pb2.WireStatMessage(namespace=NAMESPACE, name=revision,
                                           stat=stat_pb2.Stat(pod_name=pod.name))
            batch = kdp_pb2.StatBatch(sender=pod.name, messages=[msg])
            st = batch.messages[0].stat
            t = int(time.time()) + 1 + pod.phase
            while t < until:
                await asyncio.sleep(max(0.0, t - time.time()))
                # The second (t-1, t] just ended: its time-weighted concurrency.
                after = min(1.0, max(0.0, t - step_at))
                c = BASE * (1 - after) + BASE * step * after
                st.average_concurrent_requests = c
                st.request_count = c * 10
                st.timestamp = int(t)
                await call.write(batch)
                t += 1.0
            await call.done_writing()
            await call
        await asyncio.gather(*(one(Pod(revision, i, rng.random())) for i in range(pods)))


async def background(address: str, names: list[str], until: float) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        call = kdp_pb2_grpc.StatIngestStub(ch).Push()
        batches = []
        for i in range(0, len(names), 100):
            batches.append(kdp_pb2.StatBatch(sender=f"node-{i}", messages=[
                stat_pb2.WireStatMessage(namespace=NAMESPACE, name=n, stat=stat_pb2.Stat(
                    pod_name=f"{n}-0", average_concurrent_requests=3.0, request_count=30.0))
                for n in names[i:i + 100]]))
        while time.time() < until:
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.3)
            for b in batches:
                await call.write(b)
        await call.done_writing()
        await call


async def trial(address: str, args: argparse.Namespace, seed: int) -> list[dict]:
    rng = random.Random(seed)
    revs = [(f"burst-{seed}-{i:03d}", rng.randint(1, args.max_pods)) for i in range(args.revisions)]
    bg = [f"bg-{seed}-{i:05d}" for i in range(args.background)]
    await register(address, [(n, p, 10) for n, p in revs] + [(n, 1, 10) for n in bg],
                   namespace=NAMESPACE)
    decisions: dict[str, list[tuple[float, int, bool]]] = {n: [] for n, _ in revs}

    async def watch() -> None:
        async with grpc.aio.insecure_channel(address) as ch:
            async for d in kdp_pb2_grpc.DecisionFeedStub(ch).Watch(
                    kdp_pb2.WatchRequest(subscriber="bench")):
                if d.revision in decisions:
                    decisions[d.revision].append((time.time(), d.desired_pods, d.in_panic))

    watcher = asyncio.ensure_future(watch())
    start = time.time()
    steps = {n: start + args.warmup + rng.uniform(0, args.spread) for n, _ in revs}
    until = start + args.warmup + args.spread + args.after
    await asyncio.gather(background(address, bg, until),
                         *(run_pods(address, n, p, steps[n], args.step, until, rng)
                           for n, p in revs))
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    out = []
    for n, p in revs:
        step_at = steps[n]
        before = [d for t, d, _ in decisions[n] if t < step_at]
        base = before[-1] if before else -1
        later = [(t, d, panic) for t, d, panic in decisions[n] if t >= step_at and d > base]
        out.append({"revision": n, "pods": p, "step_at": step_at, "desired_before": base,
                    "latency": later[0][0] - step_at if later else None,
                    "desired_after": later[0][1] if later else None,
                    "phase_in_second": step_at % 1.0})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=20)
    ap.add_argument("--max-pods", type=int, default=6)
    ap.add_argument("--step", type=float, default=10.0)
    ap.add_argument("--background", type=int, default=1000)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--spread", type=float, default=8.0)
    ap.add_argument("--after", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=2, help="trials per mode")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {}
    for mode, flags in (("burst decisions (default)", ()),
                        ("tick only (--no-burst-decisions)", ("--no-burst-decisions",))):
        a = start_autoscaler(*flags)
        try:
            rows: list[dict] = []
            for k in range(args.rounds):
                import uvloop
                rows += uvloop.run(trial(a.address, args, seed=k * 7 + len(results)))
            results[mode] = rows
        finally:
            a.stop()
    lines = ["| mode | trials | decided | latency p50 s | p90 s | max s | under 1.2 s |",
             "|---|---|---|---|---|---|---|"]
    summary = {}
    for mode, rows in results.items():
        lat = [r["latency"] for r in rows if r["latency"] is not None]
        under = sum(1 for x in lat if x < 1.2)
        summary[mode] = {"trials": len(rows), "decided": len(lat),
                         "p50": statistics.median(lat) if lat else None,
                         "p90": percentile(lat, 90), "max": max(lat, default=None),
                         "under_1_2s": under}
        lines.append(f"| {mode} | {len(rows)} | {len(lat)} | {summary[mode]['p50']:.2f} | "
                     f"{summary[mode]['p90']:.2f} | {summary[mode]['max']:.2f} | "
                     f"{under}/{len(rows)} |")
    table = "\n".join(lines)
    print(table)
    out = pathlib.Path(args.out)
    write_outputs(out, "autoscaler_burst", table, {"summary": summary, "trials": results})
    plot(out / "autoscaler_burst.png", results)
    return 0


def plot(path: pathlib.Path, results: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (mode, rows) in enumerate(results.items()):
        lat = sorted(r["latency"] for r in rows if r["latency"] is not None)
        if lat:
            ax1.plot(lat, [(k + 1) / len(rows) for k in range(len(lat))], drawstyle="steps-post",
                     label=mode, color=f"C{i}")
        ax2.scatter([r["phase_in_second"] for r in rows if r["latency"] is not None],
                    [r["latency"] for r in rows if r["latency"] is not None], s=12,
                    color=f"C{i}", label=mode)
    for ax in (ax1, ax2):
        ax.axvline(1.2, color="grey", ls=":") if ax is ax1 else ax.axhline(1.2, color="grey",
                                                                         ls=":")
    ax1.set_xlabel("seconds from the load step to the scale-up decision")
    ax1.set_ylabel("fraction of trials")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("phase of the step within its second")
    ax2.set_ylabel("latency (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
