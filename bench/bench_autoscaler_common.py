"""Shared pieces of the autoscaler benchmarks: start ``python -m autoscaler`` on loopback, register
revisions over ``AutoscalerControl``, read its CPU time from /proc and its ``/debug/status``."""
from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import grpc

from bench.common import free_port, percentile, proc_cpu_seconds, rss_mb  # noqa: F401 (used by the autoscaler benches)
from proto import kdp_pb2, kdp_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass
class Autoscaler:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    ws_port: int
    debug_port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.debug_port}/debug/status",
                                    timeout=10) as r:
            return json.loads(r.read())

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_autoscaler(*extra: str, log_level: str = "WARNING") -> Autoscaler:
    ports = [free_port() for _ in range(4)]
    cmd = [sys.executable, "-m", "autoscaler", "--log-level", log_level, "serve",
           "--bind", "127.0.0.1", "--grpc-port", str(ports[0]), "--websocket-port", str(ports[1]),
           "--debug-port", str(ports[2]), "--metrics-port", str(ports[3]), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    a = Autoscaler(proc, *ports)
    deadline = time.monotonic() + 20
    while True:
        try:
            a.status()
            return a
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                a.stop()
                raise RuntimeError("the autoscaler did not start") from None
            time.sleep(0.1)


async def register(address: str, revisions: list[tuple[str, int, int]],
                   annotations: dict[str, str] | None = None, namespace: str = "bench",
                   parallel: int = 64) -> None:
    """SyncRevision + ReportPods for every (name, ready pods, containerConcurrency)."""
    async with grpc.aio.insecure_channel(address) as ch:
        stub = kdp_pb2_grpc.AutoscalerControlStub(ch)
        sem = asyncio.Semaphore(parallel)

        async def one(name: str, ready: int, cc: int) -> None:
            async with sem:
                ack = await stub.SyncRevision(kdp_pb2.RevisionSpec(
                    namespace=namespace, revision=name, service=name, reachable=True,
                    container_concurrency=cc, annotations=annotations or {}))
                assert ack.ok, ack.error
                ack = await stub.ReportPods(kdp_pb2.PodCounts(namespace=namespace,
                                                              revision=name, ready=ready))
                assert ack.ok, ack.error

        await asyncio.gather(*(one(*r) for r in revisions))


def write_outputs(out: pathlib.Path, name: str, table: str, data: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out / name}.md, .json")
