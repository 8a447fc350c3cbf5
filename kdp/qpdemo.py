"""The queue-proxy demo: the hello example behind a real queue-proxy process, on 127.0.0.1.

Shows what the sidecar does for every request: proxying, the probe contract, the
containerConcurrency breaker (a burst against CC=2 queues, the overflow gets 503), the
per-second Stat the autoscaler scrapes from :9090, and the Prometheus metrics on :9091.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def run() -> int:
    from proto import stat_pb2

    app_port, qp_port = _free_port(), _free_port()
    stat_port, metrics_port, admin_port = _free_port(), _free_port(), _free_port()
    app = subprocess.Popen([sys.executable, str(ROOT / "examples" / "hello" / "app.py")],
                           env={**os.environ, "PORT": str(app_port), "TARGET": "kdp"})
    env = {
        **os.environ,
        "SERVING_NAMESPACE": "default", "SERVING_CONFIGURATION": "hello", "SERVING_REVISION": "hello-00001",
        "SERVING_SERVICE": "hello", "SERVING_POD": "hello-00001-deployment-demo", "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(qp_port), "QUEUE_SERVING_TLS_PORT": str(_free_port()),
        "USER_PORT": str(app_port), "CONTAINER_CONCURRENCY": "2", "REVISION_TIMEOUT_SECONDS": "30",
        "SERVING_LOGGING_CONFIG": "", "SERVING_LOGGING_LEVEL": "info",
        "SERVING_READINESS_PROBE": f'{{"tcpSocket":{{"port":{app_port},"host":"127.0.0.1"}},"successThreshold":1}}',
        "OBSERVABILITY_CONFIG": '{"requestMetrics":{"protocol":"prometheus"}}',
        "KDP_BIND_HOST": "127.0.0.1", "KDP_ADMIN_PORT": str(admin_port), "KDP_STAT_PORT": str(stat_port),
        "METRICS_PROMETHEUS_PORT": str(metrics_port), "KDP_DRAIN_QUIET_PERIOD": "1",
    }
    qp = subprocess.Popen([sys.executable, "-m", "queueproxy"], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{qp_port}"
    try:
        probe = {"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"}
        for _ in range(200):
            try:
                if _get(base + "/healthz", probe, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        print(f"queue-proxy on {base} in front of examples/hello on :{app_port} (containerConcurrency=2)\n")
        status, body, _ = _get(base + "/healthz", probe)
        print(f"activator probe            -> {status} {body.decode()!r}")
        status, body, hdrs = _get(base + "/", {"K-Network-Probe": "probe", "K-Network-Hash": "abc"})
        print(f"ingress KProbe             -> {status} K-Network-Hash={hdrs.get('K-Network-Hash')}")
        status, body, _ = _get(base + "/", {"User-Agent": "Knative-Autoscaling-Probe", "K-Network-Probe": "activator"})
        print(f"autoscaler 'activator?'    -> {status} (a queue-proxy must not claim to be the activator)")
        status, body, _ = _get(base + "/hello")
        print(f"GET /hello                 -> {status} {body.decode().strip()!r}")

        print("\nburst of 30 requests of 0.3 s each against 2 slots + a queue of 20:")
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(lambda _: _get(base + "/?sleep=0.3")[0], range(30)))
        print(f"  {codes.count(200)} x 200, {codes.count(503)} x 503 (queue full) in {time.monotonic() - t0:.1f}s")

        time.sleep(1.2)
        _, raw, hdrs = _get(f"http://127.0.0.1:{stat_port}/metrics")
        stat = stat_pb2.Stat.FromString(raw)
        print(f"\n:9090/metrics ({hdrs.get('Content-Type')}), the Stat the autoscaler scrapes:")
        print("  " + str(stat).replace("\n", "\n  ").rstrip())
        _, text, _ = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        lines = [ln for ln in text.decode().splitlines()
                 if ln.startswith(("kn_serving_invocation_duration_seconds_count", "kn_serving_queue_depth",
                                   "kdp_queue_rejected_requests_total"))]
        print("\n:9091/metrics (Prometheus):\n  " + "\n  ".join(lines))
        print("\nSIGTERM: the queue-proxy drains (probes fail, quiet period, in-flight finish) and exits 0")
        qp.terminate()
        print(f"  exit code {qp.wait(30)}")
        return 0
    finally:
        for p in (qp, app):
            if p.poll() is None:
                p.kill()
                p.wait()
