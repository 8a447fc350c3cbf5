"""gRPC through the queue-proxy's HTTP/2 engine: calls per second and CPU per call, direct vs proxied.

Two parts:

``engine`` (no sockets): a gRPC unary call is made by an ``h2`` client, fed to an
``H2ServerConnection`` through fake transports, answered by an ``h2`` server behind the
``H2UpstreamConnection``; the same exchange without the proxy is timed too and subtracted, so
the result is the proxy's own Python cost per call (queue-proxy handler on: stats, timeouts,
breaker when containerConcurrency > 0).

``loopback`` (default): nginx answers gRPC over h2c (a fixed reply and ``grpc-status: 0``
trailer: a fast user container; it sends ``server``, ``date`` and ``content-type`` as literals
on every response, which a gRPC server would index, so the proxy's cost here is a little
higher than behind a real gRPC server), a grpc.aio client drives unary calls at each concurrency,
directly and through ``python -m queueproxy`` (and any ``--proxy NAME=COMMAND``); it reports
calls/s, p50/p99 latency and the proxy process's CPU per call (all threads, from /proc). Load
generator on CPU 0, proxy and nginx on CPU 1 (when there are two). Writes
``bench/out/h2.{md,json,png}``.

    python -m bench.bench_h2 [engine|loopback] [--duration 5] [--concurrency 1,10,50] [--repeat 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.bench_engine import FakeTransport
from bench.common import free_port, pin, plot_by_concurrency, proc_cpu_seconds, qp_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
MESSAGE = b"\x0a\x05hello"  # a small protobuf-like payload
REPLY = b"\x0a\x0bhello world"


def grpc_frame(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


# ---- engine: the proxy's Python cost per call, no I/O --------------------------------------------

REQUEST_HEADERS = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/helloworld.Greeter/SayHello"),
    (b":authority", b"hello.default.example.com"), (b"te", b"trailers"),
    (b"content-type", b"application/grpc"), (b"user-agent", b"grpc-python/1.85.1 grpc-c/51.0.0 (linux; chttp2)"),
    (b"grpc-accept-encoding", b"identity, deflate, gzip"), (b"grpc-timeout", b"9999843u"),
]


def _h2pair_side(client_side: bool) -> Any:
    import h2.config
    import h2.connection
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding=None))


def _client_call(client: Any, sid: int) -> None:
    client.send_headers(sid, REQUEST_HEADERS)
    client.send_data(sid, grpc_frame(MESSAGE), end_stream=True)


def _backend_answer(backend: Any, events: list[Any]) -> None:
    import h2.events
    for ev in events:
        if isinstance(ev, h2.events.DataReceived):
            backend.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            sid = ev.stream_id
            backend.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            backend.send_data(sid, grpc_frame(REPLY))
            backend.send_headers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")], end_stream=True)


def _client_read(client: Any, data: bytes) -> int:
    import h2.events
    done = 0
    for ev in client.receive_data(data):
        if isinstance(ev, h2.events.DataReceived):
            client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            done += 1
    return done


def _direct(n: int) -> float:
    client, backend = _h2pair_side(True), _h2pair_side(False)
    client.initiate_connection()
    backend.initiate_connection()
    backend.receive_data(client.data_to_send())
    client.receive_data(backend.data_to_send())
    t0 = time.process_time()
    for i in range(n):
        sid = 1 + 2 * i
        _client_call(client, sid)
        _backend_answer(backend, backend.receive_data(client.data_to_send()))
        assert _client_read(client, backend.data_to_send()) == 1
    return time.process_time() - t0


async def _proxied(n: int, cc: int) -> float:
    from queueproxy.drain import Drainer
    from queueproxy.h2 import H2ServerConnection
    from queueproxy.h2upstream import H2UpstreamConnection, registry_for
    from queueproxy.handler import QueueHandler
    from queueproxy.http1 import HttpServer
    from queueproxy.stats import RequestStats
    from queueproxy.upstream import UpstreamPool

    loop = asyncio.get_running_loop()
    pool = UpstreamPool("127.0.0.1", 1, loop=loop)

    async def ready() -> bool:
        return True

    handler = QueueHandler(loop=loop, pool=pool, stats=RequestStats(loop.time()), drainer=Drainer(30, loop),
                           readiness=ready, container_concurrency=cc, timeout=300)
    server = HttpServer(handler, loop=loop, h2_factory=H2ServerConnection)
    h2pool = registry_for(server).pool("127.0.0.1", 1)
    up = H2UpstreamConnection(h2pool)
    up_t = FakeTransport()
    up.connection_made(up_t)  # type: ignore[arg-type]
    h2pool.conns.append(up)
    conn = H2ServerConnection(server)
    t = FakeTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    client, backend = _h2pair_side(True), _h2pair_side(False)
    client.initiate_connection()
    backend.initiate_connection()
    conn.data_received(client.data_to_send())
    client.receive_data(t.take())
    conn.data_received(client.data_to_send())
    backend.receive_data(up_t.take())
    up.data_received(backend.data_to_send())
    backend.receive_data(up_t.take())
    t0 = time.process_time()
    for i in range(n):
        sid = 1 + 2 * i
        _client_call(client, sid)
        conn.data_received(client.data_to_send())
        _backend_answer(backend, backend.receive_data(up_t.take()))
        up.data_received(backend.data_to_send())
        assert _client_read(client, t.take()) == 1, i
        conn.data_received(client.data_to_send())  # window updates
        backend.receive_data(up_t.take())
    dt = time.process_time() - t0
    assert handler.stats.concurrency == 0
    return dt


def engine(n: int = 5000) -> None:
    import uvloop

    base = min(_direct(n) for _ in range(3)) / n * 1e6
    print(f"h2 client <-> h2 server, no proxy: {base:.1f} µs per call (subtracted below)")
    for cc in (0, 10):
        total = min(uvloop.run(_proxied(n, cc)) for _ in range(3)) / n * 1e6
        print(f"containerConcurrency={cc}: {total - base:.1f} µs of Python per proxied gRPC unary call (no I/O)")


# ---- loopback: processes, a real gRPC client, CPU from /proc ---------------------------------

@dataclass
class Cell:
    target: str
    concurrency: int
    calls_per_s: float
    p50_us: float
    p99_us: float
    cpu_us_per_call: float


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


class GrpcNginx:
    """nginx as an h2c gRPC server: every call gets ``REPLY`` and ``grpc-status: 0``."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.port = free_port()
        (tmp / "reply").write_bytes(grpc_frame(REPLY))
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{self.port} http2 backlog=4096;
    keepalive_requests 100000000;
    location / {{
      root {tmp};
      default_type application/grpc;
      error_page 405 =200 /reply;
      try_files /reply =404;
      add_trailer grpc-status 0 always;
      # only the headers a gRPC server sends: nginx does not index its response headers in
      # HPACK's dynamic table, so each one would be Huffman-decoded again on every call
      ssi on; ssi_types *; max_ranges 0; etag off;
    }}
  }}
}}
""")
        self.proc = subprocess.Popen([*pin(1), "nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _load(port: int, concurrency: int, duration: float) -> dict[str, float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/helloworld.Greeter/SayHello")
        for _ in range(50):
            assert await call(MESSAGE, timeout=10) == REPLY
        latencies: list[float] = []
        end = time.perf_counter() + duration

        async def worker() -> None:
            while True:
                t = time.perf_counter()
                if t >= end:
                    return
                await call(MESSAGE, timeout=10)
                latencies.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)
    return {"calls": n, "calls_per_s": n / elapsed, "p50_us": latencies[n // 2] * 1e6,
            "p99_us": latencies[min(n - 1, int(n * 0.99))] * 1e6}


def run_load(port: int, concurrency: int, duration: float) -> dict[str, float]:
    out = subprocess.run([*pin(0), sys.executable, "-m", "bench.bench_h2", "_load", str(port), str(concurrency),
                          str(duration)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(targets: list[tuple[str, int, int | None]], concurrencies: list[int], duration: float,
            repeat: int) -> list[Cell]:
    runs: dict[tuple[str, int], list[Cell]] = {}
    for r in range(repeat):
        for c in concurrencies:
            for name, port, pid in targets:
                t0 = proc_cpu_seconds(pid) if pid else 0.0
                res = run_load(port, c, duration)
                cpu = (proc_cpu_seconds(pid) - t0) if pid else 0.0
                cell = Cell(name, c, res["calls_per_s"], res["p50_us"], res["p99_us"],
                            cpu / max(res["calls"], 1) * 1e6)
                runs.setdefault((name, c), []).append(cell)
                print(f"  [{r + 1}/{repeat}] {name:>12} c={c:<4} {cell.calls_per_s:>8.0f} calls/s  "
                      f"p50 {cell.p50_us:>7.0f} µs  p99 {cell.p99_us:>7.0f} µs  "
                      f"cpu {cell.cpu_us_per_call:>6.1f} µs/call", flush=True)
    cells = []
    for name, _, _ in targets:
        for c in concurrencies:
            rs = runs[(name, c)]
            med = lambda f: statistics.median(getattr(x, f) for x in rs)  # noqa: E731
            cells.append(Cell(name, c, med("calls_per_s"), med("p50_us"), med("p99_us"), med("cpu_us_per_call")))
    return cells


def report(cells: list[Cell]) -> str:
    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    lines = ["| target | conc. | calls/s | vs direct | p50 µs | p99 µs | added p50 µs | proxy CPU µs/call |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        d = direct.get(c.concurrency)
        ratio = f"{c.calls_per_s / d.calls_per_s:.2f}x" if d and d.calls_per_s else "-"
        added = c.p50_us - d.p50_us if d and c.target != "direct" else 0.0
        cpu = f"{c.cpu_us_per_call:.0f}" if c.target != "direct" else "-"
        lines.append(f"| {c.target} | {c.concurrency} | {c.calls_per_s:.0f} | {ratio} | {c.p50_us:.0f} | "
                     f"{c.p99_us:.0f} | {added:.0f} | {cpu} |")
    return "\n".join(lines)


def loopback(args: argparse.Namespace) -> int:
    if not shutil.which("nginx"):
        print("bench: nginx is not installed (Debian: apt-get install nginx-light)", file=sys.stderr)
        return 2
    concs = [int(c) for c in args.concurrency.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    extra = [p.split("=", 1) for p in args.proxy]
    with tempfile.TemporaryDirectory() as tmp:
        backend = GrpcNginx(pathlib.Path(tmp))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            targets: list[tuple[str, int, int | None]] = [("direct", backend.port, None)]
            commands = [("kdp cc=0", [sys.executable, "-m", "queueproxy"], 0),
                        ("kdp cc=10", [sys.executable, "-m", "queueproxy"], 10)]
            commands += [(name, cmd.split(), 0) for name, cmd in extra]
            for name, cmd, cc in commands:
                port = free_port()
                procs.append(subprocess.Popen([*pin(1), *cmd], env=qp_env(backend.port, port, cc, PYTHONPATH=str(ROOT)), cwd=ROOT,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_port(port)
                targets.append((name, port, procs[-1].pid))
            cells = measure(targets, concs, args.duration, args.repeat)
        finally:
            for p in procs:
                p.kill()
                p.wait(10)
            backend.stop()
    table = report(cells)
    print()
    print(table)
    (OUT / "h2.md").write_text(table + "\n")
    (OUT / "h2.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    plot_by_concurrency(cells, [("gRPC unary calls/s", "calls_per_s", False, False),
                                ("proxy CPU per call (µs)", "cpu_us_per_call", True, False)], OUT / "h2.png")
    print(f"\nwrote {OUT / 'h2.md'}, h2.json, h2.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_load":  # the load generator's own process
        import uvloop
        port, conc, duration = int(argv[1]), int(argv[2]), float(argv[3])
        print(json.dumps(uvloop.run(_load(port, conc, duration))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="loopback", choices=["loopback", "engine"])
    ap.add_argument("--proxy", action="append", default=[], metavar="NAME=COMMAND",
                    help="another queue-proxy command to measure with the same env (repeatable)")
    ap.add_argument("--concurrency", default="1,10,50")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.mode == "engine":
        engine()
        return 0
    return loopback(args)


if __name__ == "__main__":
    sys.exit(main())
