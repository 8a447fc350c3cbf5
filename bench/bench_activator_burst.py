"""Scale from zero under a burst: N concurrent requests hit a revision with no pods.

One activator process (gRPC stats to a fake autoscaler, endpoints from a fake runtime, both in
this process). The revision (containerConcurrency 0, autoscaling target ``--target``) starts
with no pod. The fake autoscaler decides ``ceil(reported concurrency / target)`` pods (at
least 1 on the poke, at most ``--max-pods``); the fake runtime starts each pod ``--start-delay``
seconds after it is asked (a slow image pull, say), then runs our queue-proxy in front of
``examples/hello/app.py``, lists it not ready at once and ready once its queue-proxy says so.
The burst: ``--requests`` connections opened at once, one request each (``?sleep=`` app time
``--app-sleep``), sent by a separate client process (so the driver starting pod processes
never stalls the client). Reported: every request's status, time to first byte and the
activator's ``Server-Timing`` wait; pods over time. Target (issue 4): zero 5xx, every request
answered.
Writes ``bench/out/activator_burst.{md,json,png}``.

    python -m bench.bench_activator_burst [--requests 1000] [--start-delay 1.0] [--target 100] [--max-pods 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from proto import kdp_pb2  # noqa: E402
from tests.activator.harness import (  # noqa: E402
    NS,
    ActivatorProcess,
    FakeAutoscaler,
    FakeRuntime,
    Pod,
    activator_env,
    eventually,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
REV = "burst-00001"


@dataclass
class Result:
    status: int
    ttfb_s: float
    done_s: float
    wait_ms: float
    error: str = ""


@dataclass
class PodEvent:
    asked_s: float
    spawned_s: float = math.nan
    ready_s: float = math.nan


@dataclass
class Summary:
    requests: int
    answered: int
    statuses: dict[str, int]
    errors: dict[str, int]
    ttfb_ms: dict[str, float]
    wait_ms: dict[str, float]
    pods: list[PodEvent] = field(default_factory=list)


class Runtime:
    """The fake runtime's pods for the revision, started on the fake autoscaler's word."""

    def __init__(self, runtime: FakeRuntime, start_delay: float, target: float, max_pods: int) -> None:
        self.runtime = runtime
        self.start_delay = start_delay
        self.target = target
        self.max_pods = max_pods
        self.pods: list[Pod] = []
        self.ready: list[Pod] = []
        self.events: list[PodEvent] = []
        self.tasks: list[asyncio.Task[None]] = []

    def on_batch(self, batch: kdp_pb2.StatBatch) -> None:
        for m in batch.messages:
            if m.name != REV:
                continue
            want = max(1, math.ceil(m.stat.average_concurrent_requests / self.target))
            for _ in range(min(want, self.max_pods) - len(self.events)):
                ev = PodEvent(time.monotonic())
                self.events.append(ev)
                self.tasks.append(asyncio.ensure_future(self._start(ev)))

    async def _start(self, ev: PodEvent) -> None:
        await asyncio.sleep(self.start_delay)
        pod = Pod(REV)
        self.pods.append(pod)
        await pod.spawn()
        ev.spawned_s = time.monotonic()
        self._publish()
        await pod.wait_ready(timeout=30)
        ev.ready_s = time.monotonic()
        self.ready.append(pod)
        self._publish()

    def _publish(self) -> None:
        ready = [p.address for p in self.ready]
        starting = [p.address for p in self.pods if p not in self.ready and p.serving_port]
        self.runtime.publish(REV, ready=ready, not_ready=starting, target=self.target, timeout=120)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for p in self.pods:
            await p.stop()


async def one_request(port: int, t0: float, target: str) -> Result:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return Result(0, math.nan, time.monotonic() - t0, math.nan, f"connect: {e.__class__.__name__}")
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: hello.example.com\r\nKnative-Serving-Namespace: {NS}\r\n"
                     f"Knative-Serving-Revision: {REV}\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(120):
            first = await reader.readexactly(1)
            ttfb = time.monotonic() - t0
            rest = await reader.read()
        data = first + rest
        head, _, _ = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        wait = math.nan
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"server-timing:"):
                wait = float(line.split(b"dur=")[1])
        return Result(status, ttfb, time.monotonic() - t0, wait)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as e:
        return Result(0, math.nan, time.monotonic() - t0, math.nan, e.__class__.__name__)
    finally:
        writer.close()


async def client(port: int, requests: int, target: str) -> None:
    """The burst, in its own process: prints the start time, then every result as JSON."""
    t0 = time.monotonic()
    print(json.dumps({"t0": t0}), flush=True)
    results = await asyncio.gather(*(one_request(port, t0, target) for _ in range(requests)))
    print(json.dumps([asdict(r) for r in results]), flush=True)


async def burst(port: int, requests: int, target: str) -> tuple[float, list[Result]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_activator_burst", "--client", str(port), "--requests", str(requests),
        "--target-path", target, cwd=ROOT, stdout=asyncio.subprocess.PIPE, limit=64 << 20)
    assert proc.stdout is not None
    t0 = json.loads(await proc.stdout.readline())["t0"]
    results = [Result(**r) for r in json.loads(await proc.stdout.readline())]
    await proc.wait()
    return t0, results


def pcts(values: list[float]) -> dict[str, float]:
    v = sorted(x for x in values if not math.isnan(x))
    if not v:
        return {}
    at = lambda q: v[min(len(v) - 1, round(q * (len(v) - 1)))]  # noqa: E731
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": v[-1], "min": v[0],
            "mean": statistics.fmean(v)}


async def run(args: argparse.Namespace) -> tuple[Summary, list[Result]]:
    autoscaler = await FakeAutoscaler().start()
    runtime = await FakeRuntime().start()
    act = ActivatorProcess(activator_env(autoscaler=f"127.0.0.1:{autoscaler.port}",
                                         backends=f"grpc://{runtime.address}", KDP_LOG_LEVEL="WARNING",
                                         **dict(kv.split("=", 1) for kv in args.env)))
    pods: Runtime | None = None
    try:
        await act.start()
        await runtime.wait_watchers()
        runtime.publish(REV, target=args.target, timeout=120)

        async def healthy() -> bool:
            return (await act.health()).status == 200
        await eventually(healthy, what="activator healthy")
        await asyncio.sleep(0.3)  # the revision known
        pods = Runtime(runtime, args.start_delay, args.target, args.max_pods)
        autoscaler.on_batch = pods.on_batch
        target = f"/?sleep={args.app_sleep}" if args.app_sleep else "/"
        t0, results = await burst(act.port, args.requests, target)
        for ev in pods.events:
            ev.asked_s, ev.spawned_s, ev.ready_s = ev.asked_s - t0, ev.spawned_s - t0, ev.ready_s - t0
        statuses = Counter(str(r.status) for r in results)
        errors = Counter(r.error for r in results if r.error)
        summary = Summary(args.requests, sum(1 for r in results if r.status), dict(statuses), dict(errors),
                          {k: v * 1e3 for k, v in pcts([r.ttfb_s for r in results]).items()},
                          pcts([r.wait_ms for r in results]), list(pods.events))
        return summary, list(results)
    finally:
        autoscaler.on_batch = None
        if pods is not None:
            await pods.stop()
        await act.stop()
        await runtime.stop()
        await autoscaler.stop()


def report(s: Summary, args: argparse.Namespace) -> str:
    fivexx = sum(n for k, n in s.statuses.items() if k.startswith("5"))
    lines = [f"burst of {s.requests} concurrent requests to a revision at zero; pods start "
             f"{args.start_delay:.1f} s after they are asked for, then run queue-proxy + hello app; "
             f"target {args.target:g}, at most {args.max_pods} pods, app time {args.app_sleep:g} s", "",
             "| requests | answered | 2xx | 5xx | no answer | TTFB p50 ms | p90 | p99 | max |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {s.requests} | {s.answered} | {sum(n for k, n in s.statuses.items() if k.startswith('2'))} | "
             f"{fivexx} | {s.statuses.get('0', 0)} | {s.ttfb_ms.get('p50', math.nan):.0f} | "
             f"{s.ttfb_ms.get('p90', math.nan):.0f} | {s.ttfb_ms.get('p99', math.nan):.0f} | "
             f"{s.ttfb_ms.get('max', math.nan):.0f} |", "",
             "| pod | asked at s | spawned at s | ready at s |", "|---|---|---|---|"]
    for i, p in enumerate(s.pods):
        spawned = f"{p.spawned_s:.3f}" if not math.isnan(p.spawned_s) else "-"
        ready = f"{p.ready_s:.3f}" if not math.isnan(p.ready_s) else "not before the last answer"
        lines.append(f"| {i} | {p.asked_s:.3f} | {spawned} | {ready} |")
    if s.errors:
        lines += ["", "errors: " + ", ".join(f"{k} x{n}" for k, n in s.errors.items())]
    return "\n".join(lines)


def plot(s: Summary, results: list[Result], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    ttfb = sorted(r.ttfb_s * 1e3 for r in results if not math.isnan(r.ttfb_s))
    ax1.plot(ttfb, [i / len(results) for i in range(1, len(ttfb) + 1)], color="C0")
    ax1.set_xlabel("time to first byte (ms)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title(f"{s.requests} concurrent requests from zero")
    for i, p in enumerate(s.pods):
        if not math.isnan(p.ready_s):
            ax1.axvline(p.ready_s * 1e3, color="C1", alpha=0.5, linestyle="--", label="pod ready" if i == 0 else None)
    ax1.legend(fontsize=8)
    done = sorted(r.done_s for r in results if r.status)
    ax2.plot(done, range(1, len(done) + 1), label="responses completed", color="C0")
    ready = sorted(p.ready_s for p in s.pods if not math.isnan(p.ready_s))
    ax2b = ax2.twinx()
    ax2b.step([0.0, *ready], range(len(ready) + 1), where="post", color="C1", label="ready pods")
    ax2b.set_ylabel("ready pods")
    ax2.set_xlabel("seconds since the burst")
    ax2.set_ylabel("responses")
    ax2.set_title("completions and pods over time")
    ax2.legend(loc="upper left", fontsize=8)
    ax2b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--start-delay", type=float, default=1.0)
    ap.add_argument("--target", type=float, default=100.0)
    ap.add_argument("--max-pods", type=int, default=5)
    ap.add_argument("--app-sleep", type=float, default=0.0)
    ap.add_argument("--name", default="activator_burst", help="output file stem under bench/out")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra activator env")
    ap.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the burst's own process
    ap.add_argument("--target-path", default="/", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        asyncio.run(client(args.client, args.requests, args.target_path))
        return 0
    summary, results = asyncio.run(run(args))  # the driver; the services use uvloop
    table = report(summary, args)
    print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.md").write_text(table + "\n")
    (OUT / f"{args.name}.json").write_text(json.dumps({"summary": asdict(summary),
                                                       "results": [asdict(r) for r in results]}, indent=1))
    plot(summary, results, OUT / f"{args.name}.png")
    print(f"\nwrote {OUT / args.name}.md, .json, .png")
    fivexx = sum(n for k, n in summary.statuses.items() if k.startswith("5"))
    return 0 if summary.answered == summary.requests and fivexx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
