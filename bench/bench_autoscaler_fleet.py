"""Benchmark (a): one autoscaler process, 10,000 revisions, stats from 1-10 pods each, every second,
over gRPC; the autoscaler's CPU (cores on average) and its tick time for all revisions.

    python -m bench.bench_autoscaler_fleet [--revisions 10000] [--clients 3] [--batch 100]
                                           [--warmup 15] [--duration 40] [--out bench/out]

The autoscaler runs as ``python -m autoscaler`` (uvloop, WARNING logs, dry-run scale target).
Each revision gets 1-10 pods (uniform) and containerConcurrency 0, 10 or 100. Client processes
play the pods: every second each pod reports a Stat (concurrency and rps around its target,
varying slowly per revision, with occasional 3x bursts so panics and scale changes happen) on
one of ``--streams`` ``StatIngest.Push`` streams per client, ``--batch`` stats per ``StatBatch``
(pods of one node reporting together; ``--batch 1`` is one message per pod);
``--transport websocket`` sends binary ``WireStatMessages`` frames instead. After
``--warmup`` seconds, the autoscaler's CPU time is read from /proc over ``--duration`` seconds
and its tick phases from ``/debug/status``. Writes ``autoscaler_fleet.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import pathlib
import random
import statistics
import time

from bench.bench_autoscaler_common import (percentile, proc_cpu_seconds, register, rss_mb,
                                           start_autoscaler, write_outputs)

NAMESPACE = "bench"


def fleet(n: int, rng: random.Random, max_pods: int) -> list[tuple[str, int, int]]:
    return [(f"rev-{i:05d}", rng.randint(1, max_pods), rng.choice([0, 10, 100])) for i in range(n)]


def client_main(address: str, revisions: list[tuple[str, int, int]], streams: int, batch: int,
                until: float, seed: int, result: "mp.Queue[tuple[float, int, float]]",
                transport: str = "grpc") -> None:
    import uvloop
    uvloop.run(_client(address, revisions, streams, batch, until, seed, result, transport))


async def _client(address: str, revisions: list[tuple[str, int, int]], streams: int, batch: int,
                  until: float, seed: int, result: "mp.Queue[tuple[float, int, float]]",
                  transport: str) -> None:
    import aiohttp
    import grpc

    from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

    rng = random.Random(seed)
    # One pre-built StatBatch per chunk of pods; every second only the numbers change.
    pods = []  # (batch index, message index, revision index, pods of the revision)
    per_rev = []
    for name, n, cc in revisions:
        target = 7.0 if cc == 10 else 70.0
        per_rev.append((target, rng.uniform(20, 120), rng.uniform(0, 6.3), rng.uniform(0.3, 1.2)))
    batches: list[kdp_pb2.StatBatch] = []
    for r, (name, n, _) in enumerate(revisions):
        for p in range(n):
            if not batches or len(batches[-1].messages) >= batch:
                batches.append(kdp_pb2.StatBatch(sender=f"node-{seed}-{len(batches)}"))
            batches[-1].messages.append(stat_pb2.WireStatMessage(
                namespace=NAMESPACE, name=name, stat=stat_pb2.Stat(pod_name=f"{name}-{p}")))
            pods.append((len(batches) - 1, len(batches[-1].messages) - 1, r, n))
    async with grpc.aio.insecure_channel(address) as ch, aiohttp.ClientSession() as http:
        if transport == "grpc":
            calls = [kdp_pb2_grpc.StatIngestStub(ch).Push() for _ in range(streams)]

            async def write(i: int, b: kdp_pb2.StatBatch) -> None:
                await calls[i % streams].write(b)
        else:  # upstream's websocket: binary WireStatMessages frames
            sockets = [await http.ws_connect(address) for _ in range(streams)]

            async def write(i: int, b: kdp_pb2.StatBatch) -> None:
                await sockets[i % streams].send_bytes(
                    stat_pb2.WireStatMessages(messages=b.messages).SerializeToString())
        sent = 0
        started = time.process_time()
        phase = rng.random() * 0.8 + 0.1
        bursts: dict[int, float] = {}
        while True:
            now = time.time()
            nxt = math.floor(now) + 1 + phase
            if nxt > until:
                break
            await asyncio.sleep(nxt - now)
            now = time.time()
            sec = int(now)
            if rng.random() < 0.5:  # a few revisions burst 3x for 10 s
                bursts[rng.randrange(len(revisions))] = now + 10
            levels = []
            for r, (target, period, ph, level) in enumerate(per_rev):
                x = target * level * (1 + 0.3 * math.sin(now / period + ph))
                if bursts.get(r, 0) > now:
                    x *= 3
                levels.append(x)
            for b, m, r, n in pods:
                st = batches[b].messages[m].stat
                c = levels[r] * rng.uniform(0.8, 1.2)
                st.average_concurrent_requests = c
                st.request_count = c * 10
                st.timestamp = sec
            for i, b in enumerate(batches):
                await write(i, b)
            sent += len(pods)
        if transport == "grpc":
            for c in calls:
                await c.done_writing()
            await asyncio.gather(*calls, return_exceptions=True)
        else:
            for ws in sockets:
                await ws.close()
    result.put((time.process_time() - started, sent, 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=10_000)
    ap.add_argument("--max-pods", type=int, default=10)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--streams", type=int, default=4, help="Push streams per client")
    ap.add_argument("--batch", type=int, default=100, help="stats per StatBatch")
    ap.add_argument("--transport", choices=["grpc", "websocket"], default="grpc")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--name", default="autoscaler_fleet")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    revs = fleet(args.revisions, rng, args.max_pods)
    n_pods = sum(n for _, n, _ in revs)
    print(f"{len(revs)} revisions, {n_pods} pods -> {n_pods} stats/s, batch {args.batch}, "
          f"{args.clients} client processes x {args.streams} {args.transport} streams")
    a = start_autoscaler()
    procs: list[mp.Process] = []
    try:
        t = time.perf_counter()
        asyncio.run(register(a.address, revs, namespace=NAMESPACE))
        print(f"registered in {time.perf_counter() - t:.1f}s")
        until = time.time() + args.warmup + args.duration + 2
        q: mp.Queue = mp.get_context("spawn").Queue()
        ctx = mp.get_context("spawn")
        for i in range(args.clients):
            part = revs[i::args.clients]
            target = a.address if args.transport == "grpc" else f"ws://127.0.0.1:{a.ws_port}/"
            p = ctx.Process(target=client_main, args=(target, part, args.streams, args.batch,
                                                      until, args.seed * 100 + i, q,
                                                      args.transport))
            p.start()
            procs.append(p)
        time.sleep(args.warmup)
        s0, c0, t0 = a.status(), a.cpu(), time.monotonic()
        client_cpu0 = sum(proc_cpu_seconds(p.pid) for p in procs)  # type: ignore[arg-type]
        timeline = []
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            timeline.append((time.monotonic() - t0, a.cpu()))
        s1, c1, t1 = a.status(), a.cpu(), time.monotonic()
        client_cpu = sum(proc_cpu_seconds(p.pid) for p in procs) - client_cpu0  # type: ignore[arg-type]
        rss = rss_mb(a.proc.pid)
    finally:
        for p in procs:
            p.join(timeout=args.duration + 30)
        a.stop()
    span = t1 - t0
    cores = (c1 - c0) / span
    accepted = (sum(s1["stats_accepted"].values()) - sum(s0["stats_accepted"].values())) / span
    rejected = sum(s1["stats_rejected"].values()) - sum(s0["stats_rejected"].values())
    ticks = [x for x in s1["recent_ticks"] if x not in s0["recent_ticks"]]
    total = [x["total"] * 1e3 for x in ticks]
    decide = [x["decide"] * 1e3 for x in ticks]
    reconciled = [x["reconciled"] for x in ticks]
    row = {
        "revisions": len(revs), "pods": n_pods, "batch": args.batch,
        "transport": args.transport,
        "stats_per_s": accepted, "rejected": rejected, "cores": cores,
        "client_cores": client_cpu / span, "rss_mb": rss, "ticks": len(ticks),
        "tick_ms_p50": statistics.median(total) if total else None,
        "tick_ms_p95": percentile(total, 95), "tick_ms_max": max(total, default=None),
        "decide_ms_p50": statistics.median(decide) if decide else None,
        "decide_ms_max": max(decide, default=None),
        "reconciled_per_tick_p50": statistics.median(reconciled) if reconciled else None,
        "reconciled_per_tick_max": max(reconciled, default=None),
        "decisions_published": s1["decisions_published"] - s0["decisions_published"],
        "bursts": s1["bursts"] - s0["bursts"],
    }
    table = "\n".join([
        "| revisions | pods (stats/s sent) | stats/s accepted | transport, stats per message "
        "| autoscaler CPU (cores) "
        "| RSS MB | tick ms p50 / p95 / max | of which decide ms p50 / max | reconciled per tick "
        "p50 / max | decisions published | burst decisions |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {row['revisions']} | {n_pods} | {accepted:.0f} | {args.transport}, {args.batch} "
        f"| {cores:.2f} "
        f"| {rss:.0f} | {row['tick_ms_p50']:.1f} / {row['tick_ms_p95']:.1f} / "
        f"{row['tick_ms_max']:.1f} | {row['decide_ms_p50']:.1f} / {row['decide_ms_max']:.1f} | "
        f"{row['reconciled_per_tick_p50']:.0f} / {row['reconciled_per_tick_max']:.0f} | "
        f"{row['decisions_published']} | {row['bursts']} |"])
    print(table)
    print(f"(client processes used {row['client_cores']:.2f} cores; rejected {rejected})")
    out = pathlib.Path(args.out)
    write_outputs(out, args.name, table, {"row": row, "ticks": ticks, "timeline": timeline})
    plot(out / f"{args.name}.png", timeline, ticks, row)
    return 0


def plot(path: pathlib.Path, timeline: list[tuple[float, float]], ticks: list[dict],
         row: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [t for t, _ in timeline[1:]]
    ys = [(c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in zip(timeline, timeline[1:])]
    ax1.plot(xs, ys, "-", label="autoscaler CPU (cores, 1 s)")
    ax1.axhline(row["cores"], color="C1", ls="--", label=f"average {row['cores']:.2f}")
    ax1.axhline(1.0, color="grey", ls=":", label="1 core budget")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("cores")
    ax1.set_title(f"{row['revisions']} revisions, {row['stats_per_s']:.0f} stats/s")
    ax1.legend(fontsize=8)
    ax1.set_ylim(0, max(1.1, max(ys, default=0) * 1.1))
    parts = ["record", "decide", "reconcile", "publish"]
    bottom = [0.0] * len(ticks)
    for p in parts:
        vals = [t.get(p, 0.0) * 1e3 for t in ticks]
        ax2.bar(range(len(ticks)), vals, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax2.axhline(100, color="grey", ls=":", label="100 ms budget")
    ax2.set_xlabel("tick")
    ax2.set_ylabel("ms")
    ax2.set_title("tick time for all revisions, by phase")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
