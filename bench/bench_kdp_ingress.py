"""Requests/s and latency through ``kdp up``'s ingress (the activator) to a warm revision,
against one of its queue-proxies called directly and the app called directly, in one run.

``kdp up`` runs the hello example held at one pod (``min-scale`` = ``max-scale`` = 1 in a
temporary copy of the manifest), pinned with all its processes (activator, autoscaler, the
pod's queue-proxy and app) to CPU 1; wrk (one thread) runs on CPU 0, as in ``bench/proxy.py``.
Three targets, each at every concurrency, round-robin inside each repeat, each cell the median
of ``--repeat`` runs::

    ingress      http://127.0.0.1:<--port>/ with Host: hello.default.example.com
                 (client -> activator -> queue-proxy -> app)
    queue-proxy  the pod's address from the status document (client -> queue-proxy -> app)
    app          the app's port from kdp's log (client -> app)

Also the CPU time per request of the activator, the queue-proxy and the app (from /proc), and
the non-2xx answers and socket errors wrk saw; the autoscaler's and kdp up's own CPU (stats,
decisions, status) per request is shown too, since they share CPU 1. Writes ``bench/out/kdp_ingress.{md,json,png}``.

    python -m bench.bench_kdp_ingress [--concurrency 1,10,100] [--duration 5] [--repeat 3]

Needs ``wrk``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass

from bench.kdp_harness import HOST, OUT, KdpUp, hello_manifest, revision, run_wrk, wait_until
from bench.common import proc_cpu_seconds

ANNOTATIONS = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
PROCS = ("activator", "queue-proxy", "app")
OTHERS = ("autoscaler", "kdp up")


@dataclass
class Cell:
    target: str
    concurrency: int
    rps: float
    p50_us: float
    p99_us: float
    non2xx: float
    socket_errors: float
    cpu_us: dict[str, float]
    """CPU µs per request of each of kdp's processes on the path."""


def find_pod(up: KdpUp) -> tuple[str, int, dict[str, int]]:
    """(queue-proxy host:port, app port, pids by process) of the revision's one ready pod."""
    rev = revision(up.status())
    pods = [p for p in rev.get("pods", []) if p.get("phase") == "ready"]
    if len(pods) != 1:
        raise RuntimeError(f"expected one ready pod, found {rev.get('pods')}")
    pod = pods[0]
    app_port = None
    for rec in up.log():
        m = re.search(rf"starting pod {re.escape(pod['name'])} \(queue-proxy \S+, app port (\d+)\)", str(rec.get("msg", "")))
        if m:
            app_port = int(m.group(1))
    if app_port is None:
        raise RuntimeError(f"no app port for {pod['name']} in the log")
    pids = {"activator": up.service_pid("activator"), "queue-proxy": pod["pids"]["queue-proxy"],
            "app": pod["pids"]["user-container"], "autoscaler": up.service_pid("autoscaler"),
            "kdp up": up.proc.pid if up.proc else None}
    return pod["address"], app_port, {k: v for k, v in pids.items() if v}


def measure(up: KdpUp, concs: list[int], duration: float, repeat: int) -> tuple[list[Cell], dict[str, object]]:
    wait_until(lambda: revision(up.status()).get("ready") == 1, 60.0, 0.2, "one ready pod")
    qp, app_port, pids = find_pod(up)
    targets = [("ingress", up.url), ("queue-proxy", f"http://{qp}/"), ("app", f"http://127.0.0.1:{app_port}/")]
    print(f"targets: {targets}; pids {pids}", flush=True)
    for _, url in targets:
        run_wrk(url, 10, 1.0, HOST)  # warm up: connections, caches
    runs: dict[tuple[str, int], list[Cell]] = {}
    for r in range(repeat):
        for c in concs:
            for name, url in targets:
                before = {k: proc_cpu_seconds(p) for k, p in pids.items()}
                w = run_wrk(url, c, duration, HOST)
                cpu = {k: (proc_cpu_seconds(p) - before[k]) / max(w["requests"], 1) * 1e6 for k, p in pids.items()}
                cell = Cell(name, c, w["rps"], w["p50_us"], w["p99_us"], w["non2xx"], w["socket_errors"], cpu)
                runs.setdefault((name, c), []).append(cell)
                print(f"  [{r + 1}/{repeat}] {name:>11} c={c:<4} {w['rps']:>8.0f} req/s  p50 {w['p50_us']:>7.0f} µs  "
                      f"p99 {w['p99_us']:>7.0f} µs  non-2xx {w['non2xx']:.0f}  cpu µs/req "
                      + " ".join(f"{k} {v:.0f}" for k, v in cpu.items()), flush=True)
    rev = revision(up.status())
    after = {"ready": rev.get("ready"), "desired": rev.get("desired"), "pods": len(rev.get("pods", [])),
             "restarts": rev.get("restarts"), "mode": (rev.get("autoscaler") or {}).get("mode")}
    cells = []
    for name, _ in targets:
        for c in concs:
            rs = runs[(name, c)]
            med = lambda f: statistics.median(getattr(x, f) for x in rs)  # noqa: E731
            cpu = {k: statistics.median(x.cpu_us[k] for x in rs) for k in rs[0].cpu_us}
            cells.append(Cell(name, c, med("rps"), med("p50_us"), med("p99_us"), sum(x.non2xx for x in rs),
                              sum(x.socket_errors for x in rs), cpu))
    return cells, after


def report(cells: list[Cell]) -> str:
    app = {c.concurrency: c for c in cells if c.target == "app"}
    qp = {c.concurrency: c for c in cells if c.target == "queue-proxy"}
    lines = ["| target | conc. | req/s | vs queue-proxy | vs app | p50 µs | p99 µs | added p50 µs vs queue-proxy | "
             "CPU µs/req activator | queue-proxy | app | autoscaler + kdp up | non-2xx | socket errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        q, a = qp[c.concurrency], app[c.concurrency]
        added = f"{c.p50_us - q.p50_us:.0f}" if c.target == "ingress" else "-"
        cpu = [f"{c.cpu_us.get(k, 0.0):.0f}" if (k != "activator" or c.target == "ingress") and
               (k != "queue-proxy" or c.target != "app") else "-" for k in PROCS]
        lines.append(f"| {c.target} | {c.concurrency} | {c.rps:.0f} | {c.rps / q.rps:.2f}x | {c.rps / a.rps:.2f}x | "
                     f"{c.p50_us:.0f} | {c.p99_us:.0f} | {added} | {' | '.join(cpu)} | {sum(c.cpu_us.get(k, 0.0) for k in OTHERS):.1f} | {c.non2xx:.0f} | "
                     f"{c.socket_errors:.0f} |")
    return "\n".join(lines)


def plot(cells: list[Cell], path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(c.target for c in cells))
    concs = sorted({c.concurrency for c in cells})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(targets)
    for i, t in enumerate(targets):
        by = {c.concurrency: c for c in cells if c.target == t}
        xs = [j + i * width for j in range(len(concs))]
        axes[0].bar(xs, [by[c].rps for c in concs], width, label=t, color=f"C{i}")
        axes[1].bar(xs, [by[c].p50_us for c in concs], width, label=t, color=f"C{i}")
        axes[1].scatter(xs, [by[c].p99_us for c in concs], color=f"C{i}", marker="_", s=200)
    ing = {c.concurrency: c for c in cells if c.target == "ingress"}
    bottom = [0.0] * len(concs)
    for k, color in zip((*PROCS, *OTHERS), ("C0", "C1", "C2", "C3", "C4")):
        vals = [ing[c].cpu_us.get(k, 0.0) for c in concs]
        axes[2].bar(range(len(concs)), vals, 0.5, bottom=bottom, label=k, color=color)
        bottom = [b + v for b, v in zip(bottom, vals)]
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("requests/s", "latency µs (bar p50, tick p99)", "CPU µs per request via the ingress")):
        ax.set_title(title)
    for ax in axes[:2]:
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(concs))], [f"c={c}" for c in concs])
    axes[2].set_xticks(range(len(concs)), [f"c={c}" for c in concs])
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle("kdp up, hello example at one warm pod: ingress (activator) vs queue-proxy vs app")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    concs = [int(c) for c in args.concurrency.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    up = KdpUp(hello_manifest(ANNOTATIONS), {}, cpu=1, name="kdp-ingress")
    print("starting:", up.command, flush=True)
    up.start()
    try:
        cells, after = measure(up, concs, args.duration, args.repeat)
    finally:
        code = up.stop()
        print(f"kdp up stopped (exit {code}); leftover pod processes: {up.leftovers or 'none'}", flush=True)
    table = report(cells)
    note = f"revision after the run: {after}"
    print()
    print(table)
    print(note)
    (OUT / "kdp_ingress.md").write_text(table + "\n\n" + note + "\n")
    (OUT / "kdp_ingress.json").write_text(json.dumps(
        {"command": up.command, "annotations": ANNOTATIONS, "exit_code": code, "after": after,
         "cells": [asdict(c) for c in cells]}, indent=1))
    plot(cells, OUT / "kdp_ingress.png")
    print(f"\nwrote {OUT / 'kdp_ingress.md'}, kdp_ingress.json, kdp_ingress.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
