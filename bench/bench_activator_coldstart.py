"""Cold-start overhead of the activator: what a request to a zero-scaled revision waits beyond
the pod's own start-up.

One activator process (gRPC stats to a fake autoscaler, endpoints from a fake runtime, both in
this process). For each run a fresh revision with no pods gets one request; the fake
autoscaler, on the activator's poke, has the fake runtime start a pod at once (our
queue-proxy in front of ``examples/hello/app.py``) and publish its address as *not ready* (as
Kubernetes lists a starting pod); a kubelet-style prober holds a readiness probe on the
queue-proxy and notes when it first answers 200 ``queue``. The runtime publishes the pod as
ready only ``--ready-delay`` seconds after that (default: never within the run), so what is
measured is the activator finding the ready pod by its own probing, not an endpoints update
(``--ready-delay 0`` measures the other path). Per run::

    ttfb      request sent -> first response byte (client side)
    startup   pod processes spawned -> queue-proxy reports ready (the pod's own cold start)
    overhead  ttfb - startup: the poke, discovery of the ready pod, proxying
    poke      request sent -> poke at the autoscaler
    after     queue-proxy ready -> first response byte

Target (issue 4): overhead < 30 ms at p50. Writes ``bench/out/activator_coldstart.{md,json,png}``.

    python -m bench.bench_activator_coldstart [--runs 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import time
from dataclasses import asdict, dataclass

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no fork() notes from gRPC on every pod start

from proto import kdp_pb2  # noqa: E402
from tests.activator.harness import (  # noqa: E402
    NS,
    ActivatorProcess,
    Client,
    FakeAutoscaler,
    FakeRuntime,
    Pod,
    activator_env,
    build_request,
    eventually,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


@dataclass
class Run:
    revision: str
    ttfb_ms: float
    startup_ms: float
    overhead_ms: float
    poke_ms: float
    after_ms: float
    wait_header_ms: float


async def one_run(act: ActivatorProcess, runtime: FakeRuntime, autoscaler: FakeAutoscaler, rev: str,
                  ready_delay: float | None) -> Run:
    loop = asyncio.get_running_loop()
    poked: asyncio.Future[float] = loop.create_future()
    pod = Pod(rev)
    ready_at: asyncio.Future[float] = loop.create_future()

    async def start_pod() -> None:
        await pod.spawn()
        runtime.publish(rev, not_ready=[pod.address])
        ready_at.set_result(await pod.wait_ready())
        if ready_delay is not None:
            await asyncio.sleep(ready_delay)
            runtime.publish(rev, ready=[pod.address])

    starter: list[asyncio.Task[None]] = []

    def on_batch(batch: kdp_pb2.StatBatch) -> None:
        if batch.poke and any(m.name == rev for m in batch.messages) and not poked.done():
            poked.set_result(time.monotonic())
            starter.append(asyncio.ensure_future(start_pod()))

    autoscaler.on_batch = on_batch
    try:
        async with await Client.connect(act.port, timeout=30) as c:
            sent = time.monotonic()
            await c.send(build_request("GET", "/", [("Knative-Serving-Namespace", NS),
                                                    ("Knative-Serving-Revision", rev)], host="hello.example.com"))
            async with asyncio.timeout(30):
                await c.reader.readexactly(1)
            first_byte = time.monotonic()
            resp = await c.head()  # the rest of the head (its first byte is already read)
            resp.body = b"".join([x async for x in c.body_chunks(resp)])
        assert resp.status == 200, resp
        wait_ms = float((resp.header("Server-Timing") or "dur=nan").split("dur=")[1])
        ready = await ready_at
        startup = ready - pod.spawned_at
        return Run(rev, (first_byte - sent) * 1e3, startup * 1e3, (first_byte - sent - startup) * 1e3,
                   (await poked - sent) * 1e3, (first_byte - ready) * 1e3, wait_ms)
    finally:
        autoscaler.on_batch = None
        for t in starter:
            await t
        await pod.stop()
        runtime.publish(rev, deleted=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(runs: list[Run]) -> str:
    lines = ["| measure (ms) | p50 | p90 | min | max |", "|---|---|---|---|---|"]
    for name, field in [("time to first byte", "ttfb_ms"), ("pod start-up (spawn -> queue-proxy ready)", "startup_ms"),
                        ("**overhead** (ttfb - start-up)", "overhead_ms"), ("request -> poke at the autoscaler", "poke_ms"),
                        ("queue-proxy ready -> first byte", "after_ms"), ("Server-Timing activator-wait", "wait_header_ms")]:
        v = [getattr(r, field) for r in runs]
        lines.append(f"| {name} | {statistics.median(v):.1f} | {pct(v, 0.9):.1f} | {min(v):.1f} | {max(v):.1f} |")
    return "\n".join(lines)


def plot(runs: list[Run], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    xs = range(len(runs))
    poke = [r.poke_ms for r in runs]
    startup = [r.startup_ms for r in runs]
    after = [r.after_ms for r in runs]
    ax1.bar(xs, poke, label="request → poke", color="C3")
    ax1.bar(xs, startup, bottom=poke, label="pod start-up (spawn → ready)", color="C0")
    ax1.bar(xs, after, bottom=[p + s for p, s in zip(poke, startup)], label="ready → first byte", color="C1")
    ax1.set_xlabel("run")
    ax1.set_ylabel("ms")
    ax1.set_title("time to first byte from zero, by part")
    ax1.legend(fontsize=8)
    ax2.hist([r.overhead_ms for r in runs], bins=20, color="C2")
    ax2.axvline(30, color="k", linestyle="--", label="target p50 < 30 ms")
    ax2.axvline(statistics.median(r.overhead_ms for r in runs), color="C3", label="p50")
    ax2.set_xlabel("overhead = ttfb - pod start-up (ms)")
    ax2.set_title("activator cold-start overhead")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(runs: int, env: dict[str, str], ready_delay: float | None) -> list[Run]:
    autoscaler = await FakeAutoscaler().start()
    runtime = await FakeRuntime().start()
    act = ActivatorProcess(activator_env(autoscaler=f"127.0.0.1:{autoscaler.port}",
                                         backends=f"grpc://{runtime.address}", KDP_LOG_LEVEL="WARNING", **env))
    results: list[Run] = []
    try:
        await act.start()
        await runtime.wait_watchers()
        revs = [f"cold-{i:03d}" for i in range(runs)]
        for rev in revs:
            runtime.publish(rev)

        async def healthy() -> bool:
            return (await act.health()).status == 200
        await eventually(healthy, what="activator healthy")
        await asyncio.sleep(0.5)  # every revision known
        for rev in revs:
            r = await one_run(act, runtime, autoscaler, rev, ready_delay)
            results.append(r)
            print(f"  {rev}: ttfb {r.ttfb_ms:7.1f} ms = poke {r.poke_ms:5.1f} + start-up {r.startup_ms:6.1f} "
                  f"+ rest; overhead {r.overhead_ms:6.1f} ms (ready -> first byte {r.after_ms:5.1f} ms)", flush=True)
    finally:
        await act.stop()
        await runtime.stop()
        await autoscaler.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--name", default="activator_coldstart", help="output file stem under bench/out")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra activator env")
    ap.add_argument("--ready-delay", type=float, default=None,
                    help="seconds after the queue-proxy is ready before the runtime lists the pod ready "
                         "(default: not within the run)")
    args = ap.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    runs = asyncio.run(main_async(args.runs, env, args.ready_delay))  # the driver; the services use uvloop
    OUT.mkdir(parents=True, exist_ok=True)
    table = report(runs)
    print()
    print(table)
    (OUT / f"{args.name}.md").write_text(table + "\n")
    (OUT / f"{args.name}.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    plot(runs, OUT / f"{args.name}.png")
    print(f"\nwrote {OUT / args.name}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
