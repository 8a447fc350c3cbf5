"""Scale-from-zero time to first byte through ``kdp up``'s ingress, for the hello example.

``kdp up`` runs the hello example with a short stable window and scale-to-zero grace (6 s and
1 s, so a revision is back at zero about 8 s after its last request). Each run waits until the
revision has no pod at all (desired 0, nothing starting or terminating), sends one request on a
fresh connection and times the first response byte. Then it splits that time with kdp's log
(wall-clock timestamps of the same machine) and the activator's ``Server-Timing``::

    ttfb       request sent -> first response byte (client side)
    to scale   request sent -> the runtime's "scale 0 -> 1" (activator poke, autoscaler
               decision, scale call)
    spawn      "scale 0 -> 1" -> "starting pod" (the supervisor creating the pod)
    pod start  pod created -> queue-proxy ready (the runtime's own "ready N s after it was
               created": both processes spawned, app listening, queue-proxy probe passed),
               itself split by the queue-proxy's log: created -> "queue-proxy serving"
               (its interpreter and imports), -> "user container is ready" (its probe of the
               app's port), -> the runtime's probe of the queue-proxy passing
    after      queue-proxy ready -> first byte (endpoints to the activator, proxying, the app)
    wait       the activator's Server-Timing activator-wait

Writes ``bench/out/kdp_coldstart.{md,json,png}``.

    python -m bench.bench_kdp_coldstart [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from bench.kdp_harness import (HOST, OUT, KdpUp, hello_manifest, percentile, record_text, record_time, revision,
                               wait_until)

CONFIG = {"stable-window": "6s", "scale-to-zero-grace-period": "1s"}


@dataclass
class Run:
    ttfb_ms: float
    to_scale_ms: float
    spawn_ms: float
    pod_start_ms: float
    qp_up_ms: float
    app_wait_ms: float
    qp_ready_ms: float
    after_ready_ms: float
    activator_wait_ms: float
    status: int


def one_request(port: int, timeout: float = 30.0) -> tuple[float, float, float, int, float]:
    """(sent at, first byte at, done at) in time.time(), HTTP status, Server-Timing wait (ms)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        sent = time.time()
        s.sendall(req)
        data = s.recv(65536)
        first = time.time()
        while chunk := s.recv(65536):
            data += chunk
        done = time.time()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1])
    m = re.search(r"activator-wait;dur=([\d.]+)", head)
    return sent, first, done, status, float(m.group(1)) if m else float("nan")


def at_zero(up: KdpUp) -> bool:
    rev = revision(up.status())
    a = rev.get("autoscaler") or {}
    return rev.get("desired") == 0 and not rev.get("pods") and a.get("desired") == 0


def split(up: KdpUp, sent: float, first: float, timeout: float = 10.0) -> dict[str, float]:
    """The parts of one cold start in ms, from the log records written after ``sent``."""
    deadline = time.monotonic() + timeout
    at: dict[str, float] = {}
    pod = ""
    duration = 0.0
    records: list[dict] = []
    while time.monotonic() < deadline:
        records += up.log(new_only=True)
        for r in records:
            ts, msg = record_time(r), record_text(r)
            if ts < sent - 0.001:
                continue
            if "scale" not in at and re.search(r": scale 0 -> [1-9]", msg):
                at["scale"] = ts
            m = re.search(r"starting pod (\S+)", msg)
            if "start" not in at and m:
                at["start"], pod = ts, m.group(1)
            if pod and r.get("source") == f"{pod}/queue-proxy":
                if msg.startswith("queue-proxy serving on"):
                    at.setdefault("qp_serving", ts)
                elif msg.startswith("user container is ready"):
                    at.setdefault("app_ready", ts)
            m = re.match(r"pod (\S+) ready ([\d.]+)s after it was created", msg)
            if "ready" not in at and m and m.group(1) == pod:
                at["ready"], duration = ts, float(m.group(2))
        if all(k in at for k in ("scale", "start", "ready", "qp_serving", "app_ready")):
            created = at["ready"] - duration
            return {"to_scale_ms": (at["scale"] - sent) * 1e3, "spawn_ms": (at["start"] - at["scale"]) * 1e3,
                    "pod_start_ms": duration * 1e3, "qp_up_ms": (at["qp_serving"] - created) * 1e3,
                    "app_wait_ms": (at["app_ready"] - at["qp_serving"]) * 1e3,
                    "qp_ready_ms": (at["ready"] - at["app_ready"]) * 1e3,
                    "after_ready_ms": (first - at["ready"]) * 1e3}
        time.sleep(0.05)
    raise TimeoutError(f"the log did not show every step of this cold start (saw {sorted(at)})")


def measure(runs: int) -> tuple[list[Run], str, int | None]:
    up = KdpUp(hello_manifest(), CONFIG, name="kdp-coldstart")
    print("starting:", up.command, flush=True)
    up.start()
    out: list[Run] = []
    try:
        for i in range(runs):
            waited = wait_until(lambda: at_zero(up), 90.0, 0.1, "revision at zero pods")
            time.sleep(0.3)  # let the zero settle everywhere (endpoints, activator, decider)
            up.log(new_only=True)
            sent, first, _, status, wait = one_request(up.port)
            r = Run(ttfb_ms=(first - sent) * 1e3, activator_wait_ms=wait, status=status, **split(up, sent, first))
            out.append(r)
            print(f"  [{i + 1}/{runs}] waited {waited:4.1f} s for zero; HTTP {status} ttfb {r.ttfb_ms:6.1f} ms "
                  f"= to scale {r.to_scale_ms:5.1f} + spawn {r.spawn_ms:4.1f} + pod start {r.pod_start_ms:6.1f} "
                  f"(queue-proxy up {r.qp_up_ms:5.1f}, app {r.app_wait_ms:5.1f}, probe {r.qp_ready_ms:4.1f}) "
                  f"+ after ready {r.after_ready_ms:5.1f} (activator-wait {wait:.0f})", flush=True)
    finally:
        code = up.stop()
        print(f"kdp up stopped (exit {code}); leftover pod processes: {up.leftovers or 'none'}", flush=True)
    return out, up.command, code


ROWS = [("ttfb_ms", "**time to first byte** (client)"),
        ("to_scale_ms", "request -> scale 0 -> 1 (poke, decision, scale call)"),
        ("spawn_ms", "scale call -> pod created"),
        ("pod_start_ms", "pod start (created -> queue-proxy ready)"),
        ("qp_up_ms", "- created -> queue-proxy serving"),
        ("app_wait_ms", "- queue-proxy serving -> its probe of the app passes"),
        ("qp_ready_ms", "- app ready -> the runtime's probe of the queue-proxy passes"),
        ("after_ready_ms", "queue-proxy ready -> first byte"),
        ("activator_wait_ms", "Server-Timing activator-wait")]


def report(runs: list[Run]) -> str:
    lines = [f"{len(runs)} cold starts of the hello example through kdp up's ingress "
             f"({sum(r.status == 200 for r in runs)} answered 200)", "",
             "| measure (ms) | p50 | p90 | p99 | max | min | mean |", "|---|---|---|---|---|---|---|"]
    for key, label in ROWS:
        xs = [getattr(r, key) for r in runs]
        lines.append(f"| {label} | {percentile(xs, 50):.1f} | {percentile(xs, 90):.1f} | {percentile(xs, 99):.1f} | "
                     f"{max(xs):.1f} | {min(xs):.1f} | {statistics.fmean(xs):.1f} |")
    return "\n".join(lines)


def plot(runs: list[Run], path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    order = sorted(range(len(runs)), key=lambda i: runs[i].ttfb_ms)
    bottom = [0.0] * len(runs)
    parts = [("to_scale_ms", "request -> scale call"), ("spawn_ms", "scale call -> pod created"),
             ("pod_start_ms", "pod start (-> queue-proxy ready)"), ("after_ready_ms", "ready -> first byte")]
    for key, label in parts:
        vals = [max(getattr(runs[i], key), 0.0) for i in order]
        ax1.bar(range(len(runs)), vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax1.plot(range(len(runs)), [runs[i].ttfb_ms for i in order], "k.", label="time to first byte")
    ax1.set_xlabel("run (sorted by time to first byte)")
    ax1.set_ylabel("ms")
    ax1.set_title("scale from zero: where the time goes")
    ax1.legend(fontsize=8)
    xs = sorted(r.ttfb_ms for r in runs)
    ax2.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label="time to first byte")
    ps = sorted(r.pod_start_ms for r in runs)
    ax2.step(ps, [(i + 1) / len(ps) for i in range(len(ps))], where="post", label="pod start")
    for q in (50, 90, 99):
        ax2.axvline(percentile(xs, q), color="grey", lw=0.6, ls=":")
        ax2.text(percentile(xs, q), 0.02, f"p{q}", fontsize=7, rotation=90)
    ax2.set_xlabel("ms")
    ax2.set_ylabel("fraction of runs")
    ax2.set_title("distribution (CDF)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    runs, command, code = measure(args.runs)
    table = report(runs)
    print()
    print(table)
    (OUT / "kdp_coldstart.md").write_text(table + "\n")
    (OUT / "kdp_coldstart.json").write_text(json.dumps(
        {"command": command, "autoscaler_config": CONFIG, "exit_code": code, "runs": [asdict(r) for r in runs]},
        indent=1))
    plot(runs, OUT / "kdp_coldstart.png")
    print(f"\nwrote {OUT / 'kdp_coldstart.md'}, kdp_coldstart.json, kdp_coldstart.png")
    return 0 if runs and all(r.status == 200 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
