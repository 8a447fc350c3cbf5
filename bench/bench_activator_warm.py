"""Warm path through the activator: what it adds over calling the queue-proxy directly.

nginx answers a fixed 12-byte body (a fast user container); our queue-proxy
(containerConcurrency 0) sits in front of it; the activator (``python -m activator``, static
backends file listing that queue-proxy, stats pushed to a fake autoscaler) sits in front of
the queue-proxy. wrk drives, at each concurrency, (a) the queue-proxy directly and (b) the
activator (``Knative-Serving-*`` headers naming the revision). Reported per cell: requests/s,
p50/p99 latency, the p50 the activator adds over (a), and CPU time per request of the activator
and of the queue-proxy (all threads, from /proc) in the same run, with their ratio. wrk on CPU
0, nginx, queue-proxy and activator on CPU 1 (when the machine has two), as ``bench/proxy.py``.
Every cell is the median of ``--repeat`` runs, the targets taken in turn inside each repeat.
Writes ``bench/out/activator_warm.{md,json,png}``.

    python -m bench.bench_activator_warm [--duration 5] [--repeat 3] [--concurrency 1,10,100]

Targets (issue 4): added p50 < 150 µs; activator CPU per request <= 1.5 x the queue-proxy's.
Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from bench.common import free_port, pin, proc_cpu_seconds, rss_mb, wait_http, wrk
from bench.proxy import Nginx, qp_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NS, REV = "default", "bench-00001"
REV_HEADERS = {"Knative-Serving-Namespace": NS, "Knative-Serving-Revision": REV}


@dataclass
class Cell:
    target: str
    concurrency: int
    rps: float
    p50_us: float
    p99_us: float
    activator_cpu_us: float
    qp_cpu_us: float
    activator_rss_mb: float


def run_wrk(url: str, concurrency: int, duration: float, headers: dict[str, str]) -> tuple[int, float, float, float]:
    r = wrk(url, concurrency, duration, headers=headers)
    if r["non2xx"]:
        raise RuntimeError(f"wrk saw {r['non2xx']:.0f} error responses from {url}")
    return int(r["requests"]), r["rps"], r["p50_us"], r["p99_us"]


class StatIngestThread:
    """A fake autoscaler (gRPC StatIngest that accepts and drops) on its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _main(self) -> None:
        import grpc

        from proto import kdp_pb2, kdp_pb2_grpc

        class Ingest(kdp_pb2_grpc.StatIngestServicer):
            async def Push(self, it, context):  # type: ignore[no-untyped-def]  # noqa: N802
                async for _ in it:
                    pass
                return kdp_pb2.PushSummary()

        server = grpc.aio.server()
        kdp_pb2_grpc.add_StatIngestServicer_to_server(Ingest(), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def activator_env(backends: pathlib.Path, autoscaler_port: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "POD_NAME": "activator-bench", "POD_IP": "127.0.0.1", "CLUSTER_DOMAIN": "cluster.local",
        "KDP_AUTOSCALER_PROTOCOL": "grpc", "KDP_AUTOSCALER_ADDRESS": f"127.0.0.1:{autoscaler_port}",
        "KDP_BACKENDS": str(backends), "KDP_BIND_HOST": "127.0.0.1", "KDP_HTTP_PORT": str(port),
        "KDP_H2C_PORT": str(free_port()), "METRICS_PROMETHEUS_PORT": str(free_port()),
        # steady state: a pod listed at start-up is not paced as a fresh one
        "KDP_FRESH_POD_WARMUP": "0",
    }


def measure(direct_url: str, act_url: str, qp_pid: int, act_pid: int, concurrencies: list[int],
            duration: float, repeat: int) -> list[Cell]:
    targets = [("queue-proxy", direct_url, {}), ("activator", act_url, REV_HEADERS)]
    for _, url, hs in targets:
        run_wrk(url, 10, 2.0, hs)  # warm up: connections, pools, caches
    runs: dict[tuple[str, int], list[Cell]] = {}
    for r in range(repeat):
        for c in concurrencies:
            for name, url, hs in targets:
                a0, q0 = proc_cpu_seconds(act_pid), proc_cpu_seconds(qp_pid)
                reqs, rps, p50, p99 = run_wrk(url, c, duration, hs)
                a1, q1 = proc_cpu_seconds(act_pid), proc_cpu_seconds(qp_pid)
                per = lambda d: d / max(reqs, 1) * 1e6  # noqa: E731
                cell = Cell(name, c, rps, p50, p99, per(a1 - a0) if name == "activator" else 0.0, per(q1 - q0),
                            rss_mb(act_pid))
                runs.setdefault((name, c), []).append(cell)
                print(f"  [{r + 1}/{repeat}] {name:>11} c={c:<4} {rps:>8.0f} req/s  p50 {p50:>7.0f} µs  "
                      f"p99 {p99:>7.0f} µs  cpu act {cell.activator_cpu_us:>6.1f} qp {cell.qp_cpu_us:>6.1f} µs/req",
                      flush=True)
    cells = []
    for name, _, _ in targets:
        for c in concurrencies:
            rs = runs[(name, c)]
            med = lambda f: statistics.median(getattr(x, f) for x in rs)  # noqa: E731
            cells.append(Cell(name, c, med("rps"), med("p50_us"), med("p99_us"), med("activator_cpu_us"),
                              med("qp_cpu_us"), max(x.activator_rss_mb for x in rs)))
    return cells


def report(cells: list[Cell]) -> str:
    direct = {c.concurrency: c for c in cells if c.target == "queue-proxy"}
    lines = ["| path | conc. | req/s | p50 µs | p99 µs | added p50 µs | activator CPU µs/req | "
             "queue-proxy CPU µs/req | activator / queue-proxy CPU | activator RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        d = direct[c.concurrency]
        act = c.target == "activator"
        lines.append(
            f"| {'client → activator → qp → nginx' if act else 'client → qp → nginx'} | {c.concurrency} | "
            f"{c.rps:.0f} | {c.p50_us:.0f} | {c.p99_us:.0f} | {c.p50_us - d.p50_us if act else 0:.0f} | "
            f"{c.activator_cpu_us if act else 0:.1f} | {c.qp_cpu_us:.1f} | "
            f"{(c.activator_cpu_us / c.qp_cpu_us if act and c.qp_cpu_us else 0):.2f}x | "
            f"{c.activator_rss_mb if act else 0:.1f} |")
    return "\n".join(lines)


def plot(cells: list[Cell], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concs = sorted({c.concurrency for c in cells})
    by = {(c.target, c.concurrency): c for c in cells}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    xs = range(len(concs))
    w = 0.38
    for i, (t, color) in enumerate((("queue-proxy", "C0"), ("activator", "C1"))):
        axes[0].bar([x + i * w for x in xs], [by[(t, c)].rps for c in concs], w, label=t, color=color)
        axes[1].bar([x + i * w for x in xs], [by[(t, c)].p50_us for c in concs], w, label=t, color=color)
    axes[2].bar([x for x in xs], [by[("activator", c)].activator_cpu_us for c in concs], w, label="activator",
                color="C1")
    axes[2].bar([x + w for x in xs], [by[("activator", c)].qp_cpu_us for c in concs], w,
                label="queue-proxy (same requests)", color="C0")
    for ax, title in zip(axes, ("requests/s", "p50 latency (µs)", "CPU per request (µs)")):
        ax.set_xticks([x + w / 2 for x in xs], [f"c={c}" for c in concs])
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("warm path: client → activator → queue-proxy → nginx vs client → queue-proxy → nginx")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="activator_warm", help="output file stem under bench/out")
    args = ap.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not installed (Debian: apt-get install wrk nginx-light)", file=sys.stderr)
            return 2
    concs = [int(c) for c in args.concurrency.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    ingest = StatIngestThread()
    with tempfile.TemporaryDirectory() as tmp:
        nginx = Nginx(pathlib.Path(tmp))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            qp_port = free_port()
            env = qp_env(nginx.port, qp_port, 0)
            env.update({"SERVING_NAMESPACE": NS, "SERVING_REVISION": REV})
            procs.append(subprocess.Popen([*pin(1), sys.executable, "-m", "queueproxy"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{qp_port}/")
            backends = pathlib.Path(tmp) / "backends.json"
            backends.write_text(json.dumps({"revisions": [{"namespace": NS, "name": REV, "container_concurrency": 0,
                                                           "ready": [f"127.0.0.1:{qp_port}"]}]}))
            act_port = free_port()
            procs.append(subprocess.Popen([*pin(1), sys.executable, "-m", "activator"],
                                          env=activator_env(backends, ingest.port, act_port),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{act_port}/", headers=REV_HEADERS)
            time.sleep(0.5)
            cells = measure(f"http://127.0.0.1:{qp_port}/", f"http://127.0.0.1:{act_port}/", procs[0].pid,
                            procs[1].pid, concs, args.duration, args.repeat)
        finally:
            for p in procs:
                p.kill()
                p.wait(10)
            nginx.stop()
            ingest.stop()
    table = report(cells)
    print()
    print(table)
    (OUT / f"{args.name}.md").write_text(table + "\n")
    (OUT / f"{args.name}.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    plot(cells, OUT / f"{args.name}.png")
    print(f"\nwrote {OUT / args.name}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
