"""The activator handler's Python cost per request, with no sockets, next to the queue-proxy's.

A request is fed to a ``ServerConnection`` serving the activator's handler (revision lookup by
headers, throttler, lease, stats for the autoscaler, metrics, Server-Timing), the head it sends
to the pod is answered by feeding a response to the pooled ``UpstreamConnection``, all through
fake transports (``bench.bench_engine``). The same for the queue-proxy's handler. Reports µs
per request; ``--profile`` prints the top of a cProfile of the activator run.

    python -m bench.bench_activator_engine [--n 20000] [--cc 0] [--profile]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from prometheus_client import CollectorRegistry

from activator.buffer import RequestBuffer
from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.reporter import StatReporter, StatSink
from activator.revisions import RevisionInfo, RevisionResolver
from activator.throttler import PacingParams, Throttler, ThrottlerParams
from bench.bench_engine import REQUEST, RESPONSE, FakeTransport
from bench.bench_engine import run as run_queue_proxy
from queueproxy.http1 import HttpServer
from queueproxy.upstream import UpstreamConnection

ACT_REQUEST = REQUEST.replace(b"\r\n\r\n", b"\r\nKnative-Serving-Namespace: default\r\n"
                                            b"Knative-Serving-Revision: hello-00001\r\n\r\n")
DEST = "127.0.0.1:8012"


class NullSink(StatSink):
    """Queues like the real sinks; never connects (no task is started)."""

    async def _session(self) -> None:  # pragma: no cover - never run here
        raise ConnectionError


async def build(cc: int) -> tuple[object, UpstreamConnection, FakeTransport]:
    loop = asyncio.get_running_loop()
    throttler = Throttler(ThrottlerParams(pacing=PacingParams(warmup=0)))
    metrics = ActivatorMetrics(CollectorRegistry(), load=throttler.load)  # as activator.server builds it
    buffer = RequestBuffer(throttler, metrics=metrics)
    info = RevisionInfo("default", "hello-00001", container_concurrency=cc)
    buffer.upsert_revision(info)
    buffer.set_pods(info.key, [DEST])
    reporter = StatReporter(NullSink(pod_name="bench"), metrics=metrics)
    handler = ActivatorHandler(loop=loop, buffer=buffer, resolver=RevisionResolver(), reporter=reporter,
                               metrics=metrics)
    pool, _ = handler._new_target(DEST)
    up = UpstreamConnection(pool)
    up_t = FakeTransport()
    up.connection_made(up_t)
    pool.put_idle(up)
    server = HttpServer(handler, loop=loop)
    conn = server.protocol()
    t = FakeTransport()
    conn.connection_made(t)
    return conn, up, t


async def run_activator(cc: int, n: int, profile: cProfile.Profile | None = None) -> float:
    conn, up, t = await build(cc)
    if profile is not None:
        profile.enable()
    t0 = time.perf_counter()
    for _ in range(n):
        conn.data_received(ACT_REQUEST)  # type: ignore[attr-defined]
        up.data_received(RESPONSE)
    dt = time.perf_counter() - t0
    if profile is not None:
        profile.disable()
    assert len(t.out) == n and t.out[-1].endswith(b"hello world\n"), t.out[-1:]
    return dt / n * 1e6


def main(argv: list[str] | None = None) -> None:
    import uvloop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--cc", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    act = min(uvloop.run(run_activator(args.cc, args.n)) for _ in range(5))
    qp = min(uvloop.run(run_queue_proxy(args.cc, args.n)) for _ in range(5))
    print(f"containerConcurrency={args.cc}: activator {act:.1f} µs, queue-proxy {qp:.1f} µs of Python per "
          f"proxied request (no I/O); ratio {act / qp:.2f}x")
    if args.profile:
        prof = cProfile.Profile()
        uvloop.run(run_activator(args.cc, args.n, prof))
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
