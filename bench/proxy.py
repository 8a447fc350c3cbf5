"""Proxy benchmark: direct to a fast backend vs through queue-proxies, in one run.

Starts nginx answering a fixed 12-byte body, then for each target (direct, our
queue-proxy with containerConcurrency 0 and 10, and any ``--proxy NAME=COMMAND`` such as
upstream's Go queue-proxy) drives wrk at each concurrency and records requests/s, p50/p99
latency, CPU time per request of the proxy process (all threads, from /proc), and RSS idle
and under load. Load generator pinned to CPU 0, proxy and backend to CPU 1 (when the
machine has two). Every cell is the median of ``--repeat`` runs. Writes
``bench/out/proxy.{md,json,png}``.

    python -m bench.proxy [--proxy upstream=/path/to/upstream-queue] [--bare] [--duration 5] [--repeat 3]

``--bare`` adds ``bench/bare_proxy.py``, a featureless relay on the same engine (uvloop, raw
protocols, httptools): the floor of a Python proxy, measured in the same run, which tells how fast
the machine was that hour.

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

from bench.common import free_port, pin, plot_by_concurrency, proc_cpu_seconds, qp_env, rss_mb, wait_http, wrk

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


@dataclass
class Cell:
    target: str
    concurrency: int
    rps: float
    p50_us: float
    p99_us: float
    cpu_us_per_req: float
    rss_idle_mb: float
    rss_load_mb: float


def run_wrk(url: str, concurrency: int, duration: float) -> tuple[int, float, float, float]:
    r = wrk(url, concurrency, duration)
    return int(r["requests"]), r["rps"], r["p50_us"], r["p99_us"]


class Nginx:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    keepalive_requests 100000000;
    location / {{ return 200 "hello world\\n"; }}
  }}
}}
""")
        self.proc = subprocess.Popen([*pin(1), "nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure(targets: list[tuple[str, str, int | None]], concurrencies: list[int], duration: float,
            repeat: int) -> list[Cell]:
    """Round-robin over targets inside each repeat, so slow drifts of the machine hit every
    target alike; each cell is the median of its repeats."""
    for _, url, _ in targets:
        run_wrk(url, 10, 1.0)  # warm up: connections, caches, inline caches
    runs: dict[tuple[str, int], list[Cell]] = {}
    for r in range(repeat):
        for c in concurrencies:
            for name, url, pid in targets:
                idle = rss_mb(pid) if pid else 0.0
                t0 = proc_cpu_seconds(pid) if pid else 0.0
                reqs, rps, p50, p99 = run_wrk(url, c, duration)
                cpu = (proc_cpu_seconds(pid) - t0) if pid else 0.0
                cell = Cell(name, c, rps, p50, p99, cpu / max(reqs, 1) * 1e6, idle, rss_mb(pid) if pid else 0.0)
                runs.setdefault((name, c), []).append(cell)
                print(f"  [{r + 1}/{repeat}] {name:>12} c={c:<4} {rps:>9.0f} req/s  p50 {p50:>7.0f} µs  "
                      f"p99 {p99:>7.0f} µs  cpu {cell.cpu_us_per_req:>6.1f} µs/req", flush=True)
    cells = []
    for name, _, _ in targets:
        for c in concurrencies:
            rs = runs[(name, c)]
            med = lambda f: statistics.median(getattr(x, f) for x in rs)  # noqa: E731
            cells.append(Cell(name, c, med("rps"), med("p50_us"), med("p99_us"), med("cpu_us_per_req"),
                              min(x.rss_idle_mb for x in rs), max(x.rss_load_mb for x in rs)))
    return cells


def start_proxy(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*pin(1), *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return proc


def report(cells: list[Cell], baseline: str | None) -> str:
    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    base = {c.concurrency: c for c in cells if c.target == baseline} if baseline else {}
    lines = ["| target | conc. | req/s | p50 µs | p99 µs | added p50 µs | CPU µs/req | CPU vs "
             f"{baseline or '-'} | RSS idle MB | RSS load MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        d = direct.get(c.concurrency)
        added = c.p50_us - d.p50_us if d and c.target != "direct" else 0.0
        b = base.get(c.concurrency)
        ratio = f"{c.cpu_us_per_req / b.cpu_us_per_req:.2f}x" if b and b.cpu_us_per_req and c.target != "direct" else "-"
        lines.append(f"| {c.target} | {c.concurrency} | {c.rps:.0f} | {c.p50_us:.0f} | {c.p99_us:.0f} | "
                     f"{added:.0f} | {c.cpu_us_per_req:.1f} | {ratio} | {c.rss_idle_mb:.1f} | {c.rss_load_mb:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", action="append", default=[], metavar="NAME=COMMAND",
                    help="another queue-proxy command to measure with the same env (repeatable)")
    ap.add_argument("--bare", action="store_true", help="also measure the featureless relay (bench/bare_proxy.py)")
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", default=None, help="target the CPU ratio is taken against "
                    "(default: the first --proxy, if any)")
    args = ap.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not installed (Debian: apt-get install wrk nginx-light)", file=sys.stderr)
            return 2
    concs = [int(c) for c in args.concurrency.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    extra = [p.split("=", 1) for p in args.proxy]
    baseline = args.baseline or (extra[0][0] if extra else None)
    with tempfile.TemporaryDirectory() as tmp:
        nginx = Nginx(pathlib.Path(tmp))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            targets: list[tuple[str, str, int | None]] = [("direct", f"http://127.0.0.1:{nginx.port}/", None)]
            commands = [("kdp cc=0", [sys.executable, "-m", "queueproxy"], 0),
                        ("kdp cc=10", [sys.executable, "-m", "queueproxy"], 10)]
            commands += [(name, cmd.split(), 0) for name, cmd in extra]
            if args.bare:
                commands.append(("bare relay", [sys.executable, "-m", "bench.bare_proxy"], 0))
            for name, cmd, cc in commands:
                port = free_port()
                procs.append(start_proxy(cmd, qp_env(nginx.port, port, cc), port))
                targets.append((name, f"http://127.0.0.1:{port}/", procs[-1].pid))
            cells = measure(targets, concs, args.duration, args.repeat)
        finally:
            for p in procs:
                p.kill()
                p.wait(10)
            nginx.stop()
    table = report(cells, baseline)
    print()
    print(table)
    (OUT / "proxy.md").write_text(table + "\n")
    (OUT / "proxy.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    plot_by_concurrency(cells, [("requests/s", "rps", False, False), ("p50 latency (µs)", "p50_us", False, True),
                                ("proxy CPU per request (µs)", "cpu_us_per_req", True, False)], OUT / "proxy.png")
    print(f"\nwrote {OUT / 'proxy.md'}, proxy.json, proxy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
