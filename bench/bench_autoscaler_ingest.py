"""Benchmark (b): stat ingestion rate of one autoscaler process, by transport and batch size.

    python -m bench.bench_autoscaler_ingest [--revisions 1000] [--clients 2] [--seconds 5]
                                            [--batches 1,10,100,1000] [--out bench/out]

``python -m autoscaler`` runs on loopback with ``--revisions`` revisions registered; client
processes send pre-serialized stats as fast as the server takes them, for ``--seconds`` per
case: gRPC ``StatIngest.Push`` (``StatBatch`` of N stats, several streams per client) and
upstream's websocket (binary ``WireStatMessages`` frames of N stats). The rate is the
server's accepted-stat counter over wall time; the server's CPU comes from /proc (the clients
share the machine, so stats per server CPU-second is the fairer number on a small VM). The
in-process line is the collector's own cost per stat (validation, buffering, and the recording
of each second in windows), with no transport. Writes ``autoscaler_ingest.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import pathlib
import random
import time

from bench.bench_autoscaler_common import register, start_autoscaler, write_outputs

NAMESPACE = "bench"


def payload(kind: str, batch: int, revisions: int, seed: int) -> bytes:
    from proto import kdp_pb2, stat_pb2

    rng = random.Random(seed)
    msgs = [stat_pb2.WireStatMessage(namespace=NAMESPACE, name=f"rev-{rng.randrange(revisions):05d}",
                                     stat=stat_pb2.Stat(pod_name=f"pod-{i}",
                                                        average_concurrent_requests=0.5,
                                                        request_count=1.0))
            for i in range(batch)]
    if kind == "grpc":
        return kdp_pb2.StatBatch(sender="bench", messages=msgs).SerializeToString()
    return stat_pb2.WireStatMessages(messages=msgs).SerializeToString()


def client_main(kind: str, target: str, data: bytes, until: float, streams: int) -> None:
    import uvloop
    uvloop.run(_client(kind, target, data, until, streams))


async def _client(kind: str, target: str, data: bytes, until: float, streams: int) -> None:
    if kind == "grpc":
        import grpc

        from proto import kdp_pb2
        async with grpc.aio.insecure_channel(target) as ch:
            async def one() -> None:
                call = ch.stream_unary("/kdp.v1.StatIngest/Push", request_serializer=None,
                                       response_deserializer=kdp_pb2.PushSummary.FromString)()
                while time.time() < until:
                    for _ in range(16):
                        await call.write(data)
                await call.done_writing()
                await call
            await asyncio.gather(*(one() for _ in range(streams)))
    else:
        import aiohttp
        async with aiohttp.ClientSession() as http:
            async def one() -> None:
                async with http.ws_connect(target) as ws:
                    while time.time() < until:
                        for _ in range(16):
                            await ws.send_bytes(data)
            await asyncio.gather(*(one() for _ in range(streams)))


def in_process(revisions: int, batch: int, total: int) -> tuple[float, float]:
    """(stats/s of ingest alone, stats/s of ingest + recording) in this process."""
    from autoscaler.collector import PUSH, Collector
    from proto import kdp_pb2

    col = Collector(capacity=revisions)
    for i in range(revisions):
        col.add((NAMESPACE, f"rev-{i:05d}"), 60.0, 6.0)
    raw = payload("grpc", batch, revisions, 7)
    now = time.time()
    n = 0
    ingest = record = 0.0
    while n < total:
        t = time.perf_counter()
        col.ingest(kdp_pb2.StatBatch.FromString(raw).messages, now, PUSH)
        ingest += time.perf_counter() - t
        n += batch
        if n % 50_000 < batch:
            t = time.perf_counter()
            col.flush(now + 2)
            record += time.perf_counter() - t
            now += 1
    t = time.perf_counter()
    col.flush(now + 2)
    record += time.perf_counter() - t
    return n / ingest, n / (ingest + record)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batches", default="1,10,100,1000")
    ap.add_argument("--ws-batches", default="1,100")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    rows = []
    ingest_only, with_record = in_process(args.revisions, 100, 500_000)
    print(f"in process, no transport: {ingest_only:,.0f} stats/s ingest; "
          f"{with_record:,.0f} stats/s with recording")
    a = start_autoscaler()
    ctx = mp.get_context("spawn")
    try:
        asyncio.run(register(a.address, [(f"rev-{i:05d}", 1, 0) for i in range(args.revisions)],
                             namespace=NAMESPACE))
        cases = [("grpc", int(b)) for b in args.batches.split(",")] + \
                [("websocket", int(b)) for b in args.ws_batches.split(",")]
        for kind, batch in cases:
            target = a.address if kind == "grpc" else f"ws://127.0.0.1:{a.ws_port}/"
            data = payload(kind, batch, args.revisions, batch)
            until = time.time() + args.seconds + 1.0
            procs = [ctx.Process(target=client_main, args=(kind, target, data, until,
                                                           args.streams))
                     for _ in range(args.clients)]
            for p in procs:
                p.start()
            time.sleep(1.0)  # connect, warm up
            s0, c0, t0 = a.status(), a.cpu(), time.monotonic()
            time.sleep(args.seconds - 0.5)
            s1, c1, t1 = a.status(), a.cpu(), time.monotonic()
            for p in procs:
                p.join()
            span = t1 - t0
            acc = sum(s1["stats_accepted"].values()) - sum(s0["stats_accepted"].values())
            rej = sum(s1["stats_rejected"].values()) - sum(s0["stats_rejected"].values())
            cpu = c1 - c0
            row = {"transport": kind, "batch": batch, "stats_per_s": acc / span,
                   "messages_per_s": acc / span / batch, "server_cores": cpu / span,
                   "stats_per_cpu_s": acc / cpu if cpu else None, "rejected": rej,
                   "us_per_message": cpu / (acc / batch) * 1e6 if acc else None}
            rows.append(row)
            print(f"{kind:>9} batch {batch:>5}: {row['stats_per_s']:>10,.0f} stats/s "
                  f"({row['messages_per_s']:>8,.0f} msgs/s), server {row['server_cores']:.2f} "
                  f"cores, {row['stats_per_cpu_s']:>10,.0f} stats per CPU-s, rejected {rej}")
    finally:
        a.stop()
    lines = ["| transport | stats per message | stats/s | messages/s | server CPU (cores) | "
             "stats per server CPU-second | µs of server CPU per message |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['transport']} | {r['batch']} | {r['stats_per_s']:,.0f} | "
                     f"{r['messages_per_s']:,.0f} | {r['server_cores']:.2f} | "
                     f"{r['stats_per_cpu_s']:,.0f} | {r['us_per_message']:.1f} |")
    lines.append(f"| in process (no transport) | 100 | {ingest_only:,.0f} (ingest), "
                 f"{with_record:,.0f} (with recording) | – | 1.00 | – | – |")
    table = "\n".join(lines)
    print(table)
    out = pathlib.Path(args.out)
    write_outputs(out, "autoscaler_ingest", table,
                  {"rows": rows, "in_process": {"ingest": ingest_only, "with_record": with_record}})
    plot(out / "autoscaler_ingest.png", rows, with_record)
    return 0


def plot(path: pathlib.Path, rows: list[dict], in_proc: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, marker, color in (("grpc", "o", "C0"), ("websocket", "s", "C3")):
        rs = [r for r in rows if r["transport"] == kind]
        if rs:
            ax.loglog([r["batch"] for r in rs], [r["stats_per_cpu_s"] for r in rs], marker + "-",
                      color=color, label=f"{kind}: stats per server CPU-second")
            ax.loglog([r["batch"] for r in rs], [r["stats_per_s"] for r in rs], marker + ":",
                      color=color, alpha=0.5, label=f"{kind}: stats/s (shared 2-core VM)")
    ax.axhline(in_proc, color="C2", ls="--", label="in process, no transport")
    ax.axhline(100_000, color="grey", ls=":", label="100,000 stats/s target")
    ax.set_xlabel("stats per message (batch)")
    ax.set_ylabel("stats")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
