"""Helpers every benchmark shares: free ports, CPU pinning, /proc readings, wrk runs and
percentiles. Benchmarks report; tests never assert speed."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import urllib.request

__all__ = ["free_port", "parse_latency", "percentile", "pin", "proc_cpu_seconds", "rss_mb", "wait_http", "wrk"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int | None) -> list[str]:
    """``taskset`` for ``cpu`` when the machine has two CPUs or more (load generator on one,
    system under test on the other), else nothing."""
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def wait_http(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            time.sleep(0.05)


def qp_env(user_port: int, serving_port: int, cc: int, **extra: str) -> dict[str, str]:
    """The env of a benchmarked queue-proxy (ours or upstream's) in front of ``user_port``."""
    return {
        **os.environ,
        "SERVING_NAMESPACE": "default", "SERVING_CONFIGURATION": "bench", "SERVING_REVISION": "bench-00001",
        "SERVING_SERVICE": "bench", "SERVING_POD": "bench-pod", "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(serving_port), "QUEUE_SERVING_TLS_PORT": str(free_port()),
        "USER_PORT": str(user_port), "CONTAINER_CONCURRENCY": str(cc), "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "", "SERVING_LOGGING_LEVEL": "", "SERVING_READINESS_PROBE": "",
        "OBSERVABILITY_CONFIG": '{"requestMetrics":{"protocol":"prometheus"}}',
        "KDP_BIND_HOST": "127.0.0.1", "KDP_ADMIN_PORT": str(free_port()), "KDP_STAT_PORT": str(free_port()),
        "METRICS_PROMETHEUS_PORT": str(free_port()), "KDP_DRAIN_QUIET_PERIOD": "0",
        **extra,
    }


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse_latency(text: str) -> float:
    """wrk's ``123.45us`` / ``1.2ms`` / ``2s`` in µs."""
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def wrk(url: str, concurrency: int, duration: float, *, headers: dict[str, str] | None = None,
        cpu: int | None = 0) -> dict[str, float]:
    """One wrk run (1 thread, pinned to ``cpu``): requests, rps, p50_us, p99_us, non2xx,
    socket_errors."""
    argv = [*pin(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout

    def grab(pattern: str, default: str = "0") -> str:
        m = re.search(pattern, out)
        return m.group(1) if m else default

    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", grab(r"Socket errors: (.*)", "")))
    return {"requests": float(grab(r"(\d+) requests in")), "rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
            "p50_us": parse_latency(grab(r"\s50%\s+(\S+)", "nan")),
            "p99_us": parse_latency(grab(r"\s99%\s+(\S+)", "nan")),
            "non2xx": float(grab(r"Non-2xx or 3xx responses: (\d+)")), "socket_errors": float(errors)}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[max(0, min(len(xs) - 1, int(-(-q * len(xs) // 100)) - 1))]


def plot_by_concurrency(cells: list, panels: list[tuple[str, str, bool, bool]], path: pathlib.Path,
                        width_per_panel: float = 5.0) -> None:
    """One grouped bar chart per panel: a group per concurrency, a bar per target. ``cells``
    have ``target`` and ``concurrency``; a panel is (title, attribute, skip "direct", log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(c.target for c in cells))
    concs = sorted({c.concurrency for c in cells})
    fig = Figure(figsize=(width_per_panel * len(panels), 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    width = 0.8 / len(targets)
    for ax, (title, attr, skip_direct, log) in zip(axes, panels):
        for i, t in enumerate(targets):
            if skip_direct and t == "direct":
                continue
            by = {c.concurrency: c for c in cells if c.target == t}
            ax.bar([j + i * width for j in range(len(concs))],
                   [getattr(by[c], attr) if c in by else 0 for c in concs], width, label=t, color=f"C{i}")
        if log:
            ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(concs))], [f"c={c}" for c in concs])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
