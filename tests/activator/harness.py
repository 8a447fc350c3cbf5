"""Process-level harness for the activator: the process itself and the world around it, all on
127.0.0.1.

* :class:`ActivatorProcess` — ``python -m activator`` with upstream's env plus our ``KDP_*`` knobs;
* :class:`FakeRuntime` — the local runtime's ``EndpointsFeed`` and ``RouteFeed`` and the
  autoscaler's ``DecisionFeed`` (the runtime's own feed server), whose content the test drives
  with :meth:`FakeRuntime.publish`, :meth:`FakeRuntime.decide` and :meth:`FakeRuntime.set_routes`;
* ``FakeStatIngest`` (from the queue-proxy harness) — our autoscaler's stat ingest, recording
  every batch the activator pushes;
* :class:`Pod` — a real pod: ``python -m queueproxy`` in front of ``examples/hello/app.py``;
* :class:`FakePod` — a scripted pod (the queue-proxy harness's ``FakeBackend``) that answers
  the activator's probe like a queue-proxy, records what reaches it and how many requests it
  held at once.

Everything is bounded: each read has a timeout, each poll a deadline, and every process and
server started here is stopped by whoever started it (fixtures, or ``async with``).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Processes are started from a process that runs gRPC servers and clients. A child forked
# (not vforked: uvloop's subprocesses fork) while gRPC's threads run can crash in gRPC's
# at-fork handlers before it reaches exec; this process never uses gRPC in a forked child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import pytest_asyncio  # noqa: E402

from kdp.feeds import FeedServer, Hub
from proto import kdp_pb2, stat_pb2
from tests.queueproxy.harness import (
    IO_TIMEOUT,
    BackendRequest,
    Client,
    FakeBackend,
    FakeStatIngest,
    QueueProxyProcess,
    Reply,
    Response,
    base_env,
    build_request,
    eventually,
    fetch,
    free_port,
)

__all__ = [
    "IO_TIMEOUT", "ActivatorProcess", "BackendRequest", "Client", "FakeAutoscaler", "FakePod", "FakeRuntime", "FakeStatIngest",
    "Pod", "Reply", "Response", "activator_env", "build_request", "eventually", "fetch", "free_port", "free_ports", "kubelet_probe",
    "poke_batches", "revision_stats", "spawn_logged",
]

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
NS = "ns"

_LIVE: set[asyncio.subprocess.Process] = set()


async def spawn_logged(argv: Sequence[str], env: dict[str, str], prefix: str) -> tuple[asyncio.subprocess.Process, Path]:
    """Start ``argv`` with stdout and stderr going to a temporary log file."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    try:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=REPO, env=full_env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=fd, stderr=fd)
    finally:
        os.close(fd)
    _LIVE.add(proc)
    return proc, Path(name)


async def reap(proc: asyncio.subprocess.Process | None, timeout: float = 5.0) -> None:
    """Kill (if still running) and wait for ``proc``."""
    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await proc.wait()
    _LIVE.discard(proc)


async def wait_listening(port: int, proc: asyncio.subprocess.Process, what: str, log: Path | None,
                         timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at startup:\n{_read(log)}")
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port}:\n{_read(log)}")
        await asyncio.sleep(0.01)


def _read(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-4000:]


_given_ports: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, none handed out before by this process (processes started
    from here bind them later, so two of them must never be given the same one)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _given_ports:
                _given_ports.add(port)
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/{pid}/status")


# ---- the activator -------------------------------------------------------------------------------


def activator_env(*, autoscaler: str, backends: str, protocol: str = "grpc", **overrides: str | None) -> dict[str, str]:
    """The activator's env: upstream's variables as its deployment sets them, our knobs for
    ports on 127.0.0.1. ``overrides`` change the env (None removes a variable)."""
    http, h2c, metrics = free_ports(3)
    env = {
        "POD_NAME": "activator-test-pod",
        "POD_IP": "127.0.0.1",
        "SYSTEM_NAMESPACE": "knative-serving",
        "CLUSTER_DOMAIN": "cluster.local",
        "KDP_AUTOSCALER_PROTOCOL": protocol,
        "KDP_AUTOSCALER_ADDRESS": autoscaler,
        "KDP_BACKENDS": backends,
        "KDP_BIND_HOST": "127.0.0.1",
        "KDP_HTTP_PORT": str(http),
        "KDP_H2C_PORT": str(h2c),
        "METRICS_PROMETHEUS_PORT": str(metrics),
        "KDP_DRAIN_TIMEOUT": "100ms",
        "KDP_LOG_LEVEL": "INFO",
    }
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@dataclass
class ActivatorProcess:
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def port(self) -> int:
        return int(self.env["KDP_HTTP_PORT"])

    @property
    def h2c_port(self) -> int:
        return int(self.env["KDP_H2C_PORT"])

    @property
    def metrics_port(self) -> int:
        return int(self.env["METRICS_PROMETHEUS_PORT"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def start(self) -> ActivatorProcess:
        self.proc, self.log_path = await spawn_logged([sys.executable, "-m", "activator"], self.env, "activator-")
        await wait_listening(self.port, self.proc, "activator", self.log_path)
        await wait_listening(self.h2c_port, self.proc, "activator", self.log_path)
        return self

    async def __aenter__(self) -> ActivatorProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def stop(self) -> None:
        await reap(self.proc)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def output(self) -> str:
        return _read(self.log_path)

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        return rss_kib(self.pid, field_name)

    async def health(self) -> Response:
        return await kubelet_probe(self.port)

    async def request(self, rev: str = "rev", target: str = "/", *, ns: str = NS, headers: Sequence[tuple[str, str]] = (),
                      host: str = "app.example.com", timeout: float = IO_TIMEOUT, method: str = "GET",
                      body: bytes | None = None) -> Response:
        """One request for ``ns/rev`` (by the Knative-Serving-* headers) on a fresh connection."""
        hs = [("Knative-Serving-Namespace", ns), ("Knative-Serving-Revision", rev), *headers]
        return await fetch(self.port, method, target, hs, body=body, host=host, timeout=timeout)

    async def metrics(self) -> dict[str, Any]:
        from prometheus_client.parser import text_string_to_metric_families

        resp = await fetch(self.metrics_port, "GET", "/metrics", host="activator")
        assert resp.status == 200, resp
        return {f.name: f for f in text_string_to_metric_families(resp.text)}


async def kubelet_probe(port: int) -> Response:
    return await fetch(port, "GET", "/", [("User-Agent", "kube-probe/1.31")], host="10.0.0.1:8012")


# ---- the fake runtime: endpoints and decisions ------------------------------------------------


def endpoints(rev: str, *, ns: str = NS, ready: Iterable[str] = (), not_ready: Iterable[str] = (), cc: int = 0,
              timeout: float = 300.0, response_start_timeout: float = 0.0, idle_timeout: float = 0.0,
              target: float = 0.0, failure: str = "", deleted: bool = False) -> kdp_pb2.RevisionEndpoints:
    return kdp_pb2.RevisionEndpoints(
        namespace=ns, revision=rev, ready=list(ready), not_ready=list(not_ready), container_concurrency=cc,
        timeout_seconds=timeout, response_start_timeout_seconds=response_start_timeout,
        idle_timeout_seconds=idle_timeout, protocol="http1", target=target, failure=failure, deleted=deleted)


class FakeRuntime:
    """The local runtime's endpoints and route feeds and the autoscaler's decision feed, on
    one gRPC server: the runtime's own :class:`kdp.feeds.FeedServer`, with content the test
    sets instead of a supervisor's."""

    def __init__(self) -> None:
        self.state: dict[str, dict[tuple[str, str], Any]] = {"endpoints": {}, "decisions": {}}
        self.table = kdp_pb2.RouteTable()  # the runtime always has a table, if only an empty one
        self.endpoints: Hub[Any] = Hub(lambda: list(self.state["endpoints"].values()),
                                       bookmark=lambda: kdp_pb2.RevisionEndpoints(snapshot_end=True))
        self.decisions: Hub[Any] = Hub(lambda: list(self.state["decisions"].values()))
        self.routes: Hub[Any] = Hub(lambda: [self.table])
        self.port = 0
        self._server: FeedServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeRuntime:
        def no_scaling(namespace: str, revision: str, replicas: int) -> int:
            raise KeyError(revision)

        server = FeedServer(endpoints=self.endpoints, decisions=self.decisions, routes=self.routes,
                            scale=no_scaling, port=self.port)
        await server.start()
        self.port = server.port
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None

    def publish(self, rev: str, **kwargs: Any) -> kdp_pb2.RevisionEndpoints:
        """Publish (or replace) a revision's endpoints; see :func:`endpoints` for the fields."""
        m = endpoints(rev, **kwargs)
        self.state["endpoints"][(m.namespace, m.revision)] = m
        self.endpoints.publish(m)
        return m

    def decide(self, rev: str, *, ns: str = NS, failure: str = "", desired: int = 0) -> None:
        m = kdp_pb2.Decision(namespace=ns, revision=rev, desired_pods=desired, failure=failure,
                             mode=kdp_pb2.MODE_PROXY)
        self.state["decisions"][(ns, rev)] = m
        self.decisions.publish(m)

    def set_routes(self, routes: dict[tuple[str, str], Sequence[tuple[str, float]]]) -> None:
        """Replace the whole route table: ``{(namespace, service): [(revision, percent), ...]}``."""
        m = kdp_pb2.RouteTable(routes=[
            kdp_pb2.Route(namespace=ns, service=svc,
                          traffic=[kdp_pb2.TrafficTarget(revision=r, percent=p) for r, p in traffic])
            for (ns, svc), traffic in routes.items()])
        self.table = m
        self.routes.publish(m)

    async def wait_watchers(self, n: int = 1, timeout: float = IO_TIMEOUT) -> None:
        await eventually(lambda: all(h.subscribers >= n for h in (self.endpoints, self.decisions, self.routes)),
                         timeout=timeout, what="the activator watching every feed")


# ---- stats seen by the fake autoscaler ------------------------------------------------------


class FakeAutoscaler(FakeStatIngest):
    """A ``FakeStatIngest`` that also calls ``on_batch(batch)`` for every batch as it arrives
    (benchmarks scale pods from it), stamping its arrival in ``arrived`` (monotonic seconds)."""

    def __init__(self, on_batch: Callable[[kdp_pb2.StatBatch], object] | None = None) -> None:
        super().__init__()
        self.on_batch = on_batch
        self.arrived: list[float] = []

    async def Push(self, request_iterator: AsyncIterator[kdp_pb2.StatBatch],  # noqa: N802 (gRPC name)
                   context: grpc.aio.ServicerContext) -> kdp_pb2.PushSummary:
        n = 0
        self.streams += 1
        async for batch in request_iterator:
            n += 1
            self.arrived.append(time.monotonic())
            self.batches.append(batch)
            if self.on_batch is not None:
                self.on_batch(batch)
        return kdp_pb2.PushSummary(accepted=n)



def poke_batches(ingest: FakeStatIngest) -> list[kdp_pb2.StatBatch]:
    return [b for b in ingest.batches if b.poke]


def revision_stats(ingest: FakeStatIngest, rev: str, *, ns: str = NS, pokes: bool = False) -> list[stat_pb2.Stat]:
    """Every stat pushed for ``ns/rev`` in order (periodic reports only unless ``pokes``)."""
    return [m.stat for b in ingest.batches if pokes or not b.poke for m in b.messages
            if m.namespace == ns and m.name == rev]


# ---- pods ------------------------------------------------------------------------------------------


class _QueueProxy(QueueProxyProcess):
    def command(self) -> list[str]:  # always ours: upstream's binary binds fixed ports
        return [sys.executable, "-m", "queueproxy"]


HELLO_WITH_BACKLOG = (
    "import runpy, socketserver, sys; socketserver.TCPServer.request_queue_size = 1024; "
    "runpy.run_path(sys.argv[1], run_name='__main__')")
"""The hello app with a listen backlog of 1024 instead of http.server's 5: a burst of
connections from its queue-proxy (containerConcurrency 0) would overflow 5, and the
connections dropped there are retried by TCP for tens of seconds."""


@dataclass
class Pod:
    """A pod as the local runtime runs it: the hello app on ``user_port`` and our queue-proxy
    in front of it; ``address`` is what the runtime publishes."""

    rev: str = "rev"
    cc: int = 0
    run_app: bool = True
    """False: the user container is already listening on ``user_port`` (e.g. in the test)."""
    app_env: dict[str, str] = field(default_factory=dict)
    qp_env: dict[str, str] = field(default_factory=dict)
    user_port: int = 0
    serving_port: int = 0
    app: asyncio.subprocess.Process | None = None
    app_log: Path | None = None
    qp: _QueueProxy | None = None
    spawned_at: float = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.serving_port}"

    def _qp_env(self) -> dict[str, str]:
        env = base_env(self.user_port)
        tls, admin, stat, metrics = free_ports(4)
        env.update({
            "SERVING_NAMESPACE": NS, "SERVING_REVISION": self.rev, "SERVING_POD": f"{self.rev}-pod-{self.serving_port}",
            "QUEUE_SERVING_PORT": str(self.serving_port), "QUEUE_SERVING_TLS_PORT": str(tls),
            "CONTAINER_CONCURRENCY": str(self.cc), "KDP_BIND_HOST": "127.0.0.1",
            "KDP_ADMIN_PORT": str(admin), "KDP_STAT_PORT": str(stat),
            "METRICS_PROMETHEUS_PORT": str(metrics), "KDP_DRAIN_QUIET_PERIOD": "0.2",
            "KDP_CERT_DIR": "/nonexistent/kdp-test-certs", "OBSERVABILITY_CONFIG": "{}",
        })
        env.update(self.qp_env)
        return env

    async def spawn(self) -> Pod:
        """Start both processes without waiting for them (as a supervisor would)."""
        if not self.user_port:
            self.user_port = free_ports(1)[0]
        if not self.serving_port:
            self.serving_port = free_ports(1)[0]
        self.spawned_at = time.monotonic()
        if self.run_app:
            self.app, self.app_log = await spawn_logged(
                [sys.executable, "-c", HELLO_WITH_BACKLOG, str(REPO / "examples" / "hello" / "app.py")],
                {"PORT": str(self.user_port), **self.app_env}, "hello-")
        env = self._qp_env()
        self.qp = _QueueProxy(env=env, serving_port=self.serving_port, admin_port=int(env["KDP_ADMIN_PORT"]),
                              stat_port=int(env["KDP_STAT_PORT"]), metrics_port=int(env["METRICS_PROMETHEUS_PORT"]))
        await self.qp.spawn()
        assert self.qp.proc is not None
        _LIVE.add(self.qp.proc)
        return self

    async def start(self) -> Pod:
        """Spawn and wait until the queue-proxy answers the activator's probe."""
        await self.spawn()
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Poll the queue-proxy as kubelet does until it says ``queue``; returns the monotonic
        time it first did."""
        async def ready() -> float | None:
            try:
                r = await fetch(self.serving_port, "GET", "/", [("User-Agent", "kube-probe/1.31"),
                                                                ("K-Network-Probe", "queue")], timeout=2.0)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                return None
            return time.monotonic() if r.status == 200 and r.body == b"queue" else None

        return float(await eventually(ready, timeout=timeout, interval=0.005, what=f"pod {self.address} ready"))

    async def stop(self) -> None:
        if self.qp is not None:
            await self.qp.stop()
            self.qp.cleanup()
        await reap(self.app)
        if self.app_log is not None:
            with contextlib.suppress(OSError):
                self.app_log.unlink()

    async def __aenter__(self) -> Pod:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def is_activator_probe(req: BackendRequest) -> bool:
    return req.header("k-network-probe") == "queue"


class FakePod(FakeBackend):
    """A scripted "pod": answers the activator's probe as a queue-proxy does (200 ``queue``)
    while ``healthy``, hands every other request to ``script`` and keeps them in ``served``;
    ``max_in_flight`` is the most requests it held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy = True
        self.served: list[BackendRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.pod_script: Callable[[BackendRequest], Reply | None | Awaitable[Reply | None]] = lambda req: Reply()
        self.script = self._dispatch
        self._served_cond = asyncio.Condition()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _dispatch(self, req: BackendRequest) -> Reply | None:
        if is_activator_probe(req):
            return Reply(body=b"queue") if self.healthy else Reply(status=503, body=b"")
        async with self._served_cond:
            self.served.append(req)
            self._served_cond.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = self.pod_script(req)
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, Reply) and result.delay:  # hold the slot for the delay
                await req.read_all()
                await asyncio.sleep(result.delay)
                result = dataclasses.replace(result, delay=0.0)
            return result  # type: ignore[return-value]
        finally:
            self.in_flight -= 1

    async def wait_served(self, n: int, timeout: float = IO_TIMEOUT) -> list[BackendRequest]:
        async with asyncio.timeout(timeout):
            async with self._served_cond:
                await self._served_cond.wait_for(lambda: len(self.served) >= n)
        return self.served


@contextlib.asynccontextmanager
async def fake_pods(n: int) -> AsyncIterator[list[FakePod]]:
    pods = [await FakePod().start() for _ in range(n)]
    try:
        yield sorted(pods, key=lambda p: p.address)
    finally:
        for p in pods:
            await p.stop()


@atexit.register
def kill_leftovers() -> None:
    for p in list(_LIVE):
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)




# ---- fixtures (import them into a test module; they share the module's event loop) ----------
#
#     pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

_rev_numbers = iter(range(1, 1_000_000))


def unique_rev(prefix: str = "rev") -> str:
    """A revision name no other test of the session uses (the runtime's snapshot is shared)."""
    return f"{prefix}-{next(_rev_numbers):05d}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ingest() -> AsyncIterator[FakeStatIngest]:
    s = await FakeStatIngest().start()
    yield s
    await s.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def runtime() -> AsyncIterator[FakeRuntime]:
    rt = await FakeRuntime().start()
    yield rt
    await rt.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def activator(ingest: FakeStatIngest, runtime: FakeRuntime) -> AsyncIterator[ActivatorProcess]:
    """One activator for the module, fed by ``runtime`` and reporting to ``ingest``; up (its
    kubelet health passes) before the first test."""
    act = ActivatorProcess(activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{runtime.address}"))
    async with act:
        await runtime.wait_watchers()
        await eventually(lambda: _healthy(act), what="activator healthy")
        yield act


async def _healthy(act: ActivatorProcess) -> bool:
    return (await act.health()).status == 200
