"""The local demo: ``kdp up`` with the hello example, driven through idle, burst, steady and
idle phases, with the scaling shown live and drawn as a plot.

Everything runs on 127.0.0.1: the autoscaler, the activator (the ingress) and the pods (the
hello app plus a queue-proxy each) are real processes talking over their real protocols. The
autoscaler gets short windows (10 s stable, 2 s scale-to-zero grace) so the whole story —
scale from zero, panic under the burst, steady state, back to zero — fits in about two minutes.
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "examples" / "hello" / "service.yaml"
AUTOSCALER_CONFIG = """\
stable-window: "10s"
panic-window-percentage: "20"
scale-to-zero-grace-period: "2s"
"""
# (name, seconds, concurrent clients, per-request delay in the app)
PHASES = [
    ("idle", 14, 0, 0.0),
    ("burst", 16, 60, 0.2),
    ("steady", 22, 8, 0.2),
    ("idle", 30, 0, 0.0),
]


@dataclass
class Sample:
    t: float
    phase: str
    clients: int
    completed: int
    errors: int
    in_flight: int
    desired: int
    ready: int
    panic: bool
    mode: str
    observed_concurrency: float


@dataclass
class Load:
    in_flight: int = 0
    completed: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ttfb: list[float] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _client(session: aiohttp.ClientSession, url: str, delay: float, load: Load, stop: asyncio.Event) -> None:
    headers = {"Host": "hello.default.example.com"}
    while not stop.is_set():
        load.in_flight += 1
        t0 = time.monotonic()
        try:
            async with session.get(url, params={"sleep": str(delay)}, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                load.statuses[r.status] = load.statuses.get(r.status, 0) + 1
                if r.status == 200:
                    load.completed += 1
                    load.ttfb.append(time.monotonic() - t0)
                else:
                    load.errors += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            load.errors += 1
        finally:
            load.in_flight -= 1


def _revision(status: dict) -> dict:
    for svc in status.get("services", []):
        for rev in svc.get("revisions", []):
            return rev
    return {}


async def _drive(port: int, state_dir: pathlib.Path) -> list[Sample]:
    from kdp.statusapi import get_status

    url = f"http://127.0.0.1:{port}/"
    load = Load()
    samples: list[Sample] = []
    t_start = time.monotonic()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        print(f"\n{'t':>5} {'phase':<7} {'clients':>7} {'req/s':>6} {'in flight':>9} {'pods':>9} "
              f"{'mode':<6} {'panic':<5} {'observed':>8}")
        for name, seconds, clients, delay in PHASES:
            stop = asyncio.Event()
            tasks = [loop.create_task(_client(session, url, delay, load, stop)) for _ in range(clients)]
            phase_end = time.monotonic() + seconds
            while time.monotonic() < phase_end:
                done_before = load.completed
                errors_before = load.errors
                await asyncio.sleep(1.0)
                try:
                    rev = _revision(await asyncio.to_thread(get_status, str(state_dir)))
                except Exception:
                    rev = {}
                a = rev.get("autoscaler") or {}
                s = Sample(round(time.monotonic() - t_start, 1), name, clients, load.completed - done_before,
                           load.errors - errors_before, load.in_flight, int(a.get("desired", rev.get("desired", 0)) or 0),
                           int(rev.get("ready", 0)), bool(a.get("in_panic")), str(a.get("mode", "")),
                           float(a.get("stable_concurrency", 0.0)))
                samples.append(s)
                desired = str(s.desired) if s.desired >= 0 else "-"  # -1: no decision yet
                print(f"{s.t:>5.0f} {s.phase:<7} {s.clients:>7} {s.completed:>6} {s.in_flight:>9} "
                      f"{s.ready:>4}/{desired:<4} {s.mode:<6} {'yes' if s.panic else '-':<5} "
                      f"{s.observed_concurrency:>8.1f}", flush=True)
            stop.set()
            await asyncio.gather(*tasks)
    ok = load.statuses.get(200, 0)
    print(f"\n{ok} requests answered 200, {load.errors} failed "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(load.statuses.items()) if k != 200) or 'none'})")
    if load.ttfb:
        ttfb = sorted(load.ttfb)
        print(f"latency p50 {ttfb[len(ttfb) // 2] * 1000:.0f} ms, p99 {ttfb[int(len(ttfb) * 0.99)] * 1000:.0f} ms "
              "(the app sleeps 200 ms per request)")
    return samples


def plot(samples: list[Sample], path: pathlib.Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = [s.t for s in samples]
    fig = Figure(figsize=(11, 7))
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
    ax1.plot(t, [s.completed for s in samples], color="black", label="requests/s answered")
    ax1.set_ylabel("requests / s")
    ax2.plot(t, [s.in_flight for s in samples], color="tab:purple", label="in flight (client side)")
    ax2.plot(t, [s.observed_concurrency for s in samples], color="tab:blue", label="stable window (autoscaler)")
    ax2.set_ylabel("concurrency")
    ax3.step(t, [s.desired if s.desired >= 0 else float("nan") for s in samples], where="post",
             color="tab:orange", label="desired pods")
    ax3.step(t, [s.ready for s in samples], where="post", color="tab:blue", label="ready pods")
    ax3.set_ylabel("pods")
    ax3.set_xlabel("seconds")
    for ax in (ax1, ax2, ax3):
        start = None
        for s in samples + [Sample(t[-1] + 1 if t else 0, "", 0, 0, 0, 0, 0, 0, False, "", 0.0)]:
            if s.panic and start is None:
                start = s.t
            elif not s.panic and start is not None:
                ax.axvspan(start, s.t, color="tab:orange", alpha=0.15, lw=0)
                start = None
        last = None
        for s in samples:
            if s.phase != last and last is not None:
                ax.axvline(s.t, color="grey", lw=0.6, ls=":")
            last = s.phase
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    ax1.set_title("kdp up, hello example: idle - burst - steady - idle (panic shaded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run(out: str = "demo-out") -> int:
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kdp-demo-") as tmp:
        state = pathlib.Path(tmp) / "state"
        cfg = pathlib.Path(tmp) / "autoscaler.yaml"
        cfg.write_text(AUTOSCALER_CONFIG)
        cmd = [sys.executable, "-m", "kdp", "up", "-f", str(MANIFEST), "--port", str(port), "--view", "none",
               "--state-dir", str(state), "--log-file", str(out_dir / "kdp.log"), "--autoscaler-config", str(cfg)]
        print("starting:", " ".join(cmd[2:]))
        up = subprocess.Popen(cmd, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not (state / "up.json").exists():
                if up.poll() is not None or time.monotonic() > deadline:
                    print("kdp up did not start; see", out_dir / "kdp.log", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            print(f"kdp up is running: ingress http://127.0.0.1:{port}, Host hello.default.example.com")
            print("phases: " + ", ".join(f"{n} {s}s ({c} clients)" for n, s, c, _ in PHASES))
            samples = asyncio.run(_drive(port, state))
        finally:
            up.send_signal(signal.SIGINT)
            try:
                code = up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                code = up.wait()
    (out_dir / "timeline.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))
    plot(samples, out_dir / "demo.png")
    print(f"\nkdp up stopped (exit {code}); wrote {out_dir / 'demo.png'} and {out_dir / 'timeline.json'}")
    return 0
