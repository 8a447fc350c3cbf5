"""Process-level test harness for the queue-proxy: the process itself, a scriptable fake user
container, a raw HTTP/1.1 client and a fake ``StatIngest`` gRPC server, all on 127.0.0.1.

The queue-proxy under test is ``python -m queueproxy`` unless ``KDP_QP_COMMAND`` names another
command (e.g. upstream's Go binary, to check that the contract tests encode upstream's real
behaviour). Upstream ignores our ``KDP_*`` port variables and always binds 8022 and 9090 on every
interface, so in that mode the harness uses those fixed ports (and 9091), runs one queue-proxy at
a time and refuses to start while the ports are taken; run such a session alone, best in a
private network namespace (it takes about ten minutes: upstream's quiet period is 30 s and its
header timeout a minute)::

    unshare -rn bash -c 'ip link set lo up && KDP_QP_COMMAND=/path/to/queue .venv/bin/python -m pytest -q \\
        tests/queueproxy/test_{proxy,probes,breaker,timeouts,drain,stats,bad_input,config,websocket,requestlog}_functional.py'

Tests of our deliberate improvements over upstream carry ``kdp_only(reason)`` and are skipped
in that mode; tests that pin down what upstream does where we chose differently carry
``upstream_only(reason)`` and run only there.

Everything is bounded: each read has a timeout, each poll a deadline, and every process and
server started here is stopped by the fixture that owns it.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from proto import kdp_pb2, kdp_pb2_grpc, stat_pb2

REPO = Path(__file__).resolve().parents[2]
QP_COMMAND = os.environ.get("KDP_QP_COMMAND", "")
AGAINST_UPSTREAM = bool(QP_COMMAND)
UPSTREAM_FIXED_PORTS = {"admin": 8022, "stat": 9090, "metrics": 9091}

IO_TIMEOUT = 5.0
"""Upper bound for any single network read or write in these tests."""
START_TIMEOUT = 10.0

QUIET_PERIOD = 0.4
"""KDP_DRAIN_QUIET_PERIOD given to our queue-proxy (upstream's is fixed at 30 s)."""
HEADER_TIMEOUT = 1.0
"""KDP_HEADER_TIMEOUT given to our queue-proxy (upstream's ReadHeaderTimeout is 1 min)."""


def kdp_only(reason: str) -> pytest.MarkDecorator:
    """A deliberate difference from upstream: skipped when testing upstream's binary."""
    return pytest.mark.skipif(AGAINST_UPSTREAM, reason=f"kdp differs from upstream on purpose: {reason}")


def upstream_only(reason: str) -> pytest.MarkDecorator:
    """Pins down upstream's behaviour where ours differs on purpose (see the kdp_only twin)."""
    return pytest.mark.skipif(not AGAINST_UPSTREAM, reason=f"upstream-only behaviour: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


async def eventually(check: Callable[[], Awaitable[Any]] | Callable[[], Any], *, timeout: float = IO_TIMEOUT,
                     interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


# ---- the queue-proxy process ---------------------------------------------------------------------


def tcp_probe(port: int) -> str:
    """The controller's default readiness probe for a user container listening on ``port``."""
    return json.dumps({"tcpSocket": {"port": port, "host": "127.0.0.1"}, "successThreshold": 1})


def base_env(user_port: int) -> dict[str, str]:
    """Every variable the upstream controller sets, as it sets them, for a revision whose user
    container listens on ``user_port``."""
    return {
        "SERVING_NAMESPACE": "ns",
        "SERVING_SERVICE": "svc",
        "SERVING_CONFIGURATION": "cfg",
        "SERVING_REVISION": "rev-1",
        "SERVING_POD": "pod-1",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": "0",
        "QUEUE_SERVING_TLS_PORT": "0",
        "USER_PORT": str(user_port),
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "0",
        "REVISION_IDLE_TIMEOUT_SECONDS": "0",
        "SERVING_READINESS_PROBE": tcp_probe(user_port),
        "ENABLE_MULTI_CONTAINER_PROBES": "false",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ENABLE_HTTP_FULL_DUPLEX": "false",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "OBSERVABILITY_CONFIG": json.dumps({"requestMetrics": {"protocol": "prometheus"}}),
        "SYSTEM_NAMESPACE": "knative-serving",
    }


_LIVE: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_leftovers() -> None:  # a safety net; fixtures stop their processes
    for p in list(_LIVE):
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)


@dataclass
class QueueProxyProcess:
    env: dict[str, str]
    serving_port: int = 0
    admin_port: int = 0
    stat_port: int = 0
    metrics_port: int = 0
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    started_at: float = 0.0
    """time.monotonic() when the process was spawned."""
    ready_at: float = 0.0
    """time.monotonic() when all its ports accepted connections."""

    @property
    def quiet_period(self) -> float:
        return 30.0 if AGAINST_UPSTREAM else float(self.env.get("KDP_DRAIN_QUIET_PERIOD", "30"))

    @property
    def header_timeout(self) -> float:
        return 60.0 if AGAINST_UPSTREAM else float(self.env.get("KDP_HEADER_TIMEOUT", "60"))

    @property
    def max_header_bytes(self) -> int:
        # Go's net/http: DefaultMaxHeaderBytes (1 MiB) plus 4096 bytes of slack.
        return (1 << 20) + 4096 if AGAINST_UPSTREAM else int(self.env.get("KDP_MAX_HEADER_BYTES", "65536"))

    @property
    def serves_metrics(self) -> bool:
        """:9091 is served only when OBSERVABILITY_CONFIG asks for Prometheus request metrics."""
        return "prometheus" in self.env.get("OBSERVABILITY_CONFIG", "")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def command(self) -> list[str]:
        return shlex.split(QP_COMMAND) if QP_COMMAND else [sys.executable, "-m", "queueproxy"]

    async def spawn(self) -> None:
        """Start the process without waiting for it to listen (config tests use this)."""
        fd, name = tempfile.mkstemp(prefix="qp-", suffix=".log")
        self.log_path = Path(name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd)
        finally:
            os.close(fd)
        _LIVE.add(self.proc)
        self.started_at = time.monotonic()

    async def start(self) -> QueueProxyProcess:
        if AGAINST_UPSTREAM:
            deadline = time.monotonic() + 3.0
            for port in UPSTREAM_FIXED_PORTS.values():
                while not _port_free(port):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"port {port} is taken: upstream's queue-proxy always binds 8022/9090/9091; "
                            "run against it alone (e.g. in `unshare -rn`)")
                    await asyncio.sleep(0.05)
        await self.spawn()
        ports = [self.serving_port, self.admin_port, self.stat_port]
        if self.serves_metrics:
            ports.append(self.metrics_port)
        deadline = time.monotonic() + START_TIMEOUT
        pending = set(ports)
        while pending:
            if self.returncode is not None:
                raise RuntimeError(f"queue-proxy exited with {self.returncode} at startup:\n{self.output()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"queue-proxy did not listen on {sorted(pending)}:\n{self.output()}")
            for port in list(pending):
                with contextlib.suppress(OSError):
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()
                    pending.discard(port)
            if pending:
                await asyncio.sleep(0.02)
        self.ready_at = time.monotonic()
        return self

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def stop(self) -> None:
        """Kill and reap (tests of the graceful path send SIGTERM themselves)."""
        p = self.proc
        if p is None:
            return
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await p.wait()
        _LIVE.discard(p)

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def memory_kib(self, field_name: str = "VmRSS") -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.pid}/status")


def make_queue_proxy(user_port: int, **overrides: str | None) -> QueueProxyProcess:
    """A queue-proxy for a user container on ``user_port``; ``overrides`` change the env (None
    removes a variable). Ports are free ones, or upstream's fixed ones in upstream mode."""
    env = base_env(user_port)
    serving = free_port()
    env["QUEUE_SERVING_PORT"] = str(serving)
    env["QUEUE_SERVING_TLS_PORT"] = str(free_port())
    if AGAINST_UPSTREAM:
        admin, stat, metrics = (UPSTREAM_FIXED_PORTS[k] for k in ("admin", "stat", "metrics"))
    else:
        admin, stat, metrics = free_port(), free_port(), free_port()
        env.update({
            "KDP_BIND_HOST": "127.0.0.1",
            "KDP_ADMIN_PORT": str(admin),
            "KDP_STAT_PORT": str(stat),
            "KDP_DRAIN_QUIET_PERIOD": str(QUIET_PERIOD),
            "KDP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "KDP_CERT_DIR": "/nonexistent/kdp-test-certs",
        })
    env["METRICS_PROMETHEUS_PORT"] = str(metrics)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return QueueProxyProcess(env=env, serving_port=serving, admin_port=admin, stat_port=stat,
                             metrics_port=metrics)


class QueueProxies:
    """Starts queue-proxies for a test module and stops them all at the end. ``get`` reuses the
    running one when asked for the same configuration again (one process start per config),
    ``fresh`` always starts a new one (for tests that signal or exhaust it). Only one runs at a
    time, since upstream's binary can only run once per network namespace."""

    def __init__(self) -> None:
        self.current: QueueProxyProcess | None = None
        self._key: tuple[Any, ...] | None = None

    async def get(self, user_port: int, **overrides: str | None) -> QueueProxyProcess:
        key = (user_port, tuple(sorted(overrides.items())))
        qp = self.current
        if qp is not None and key == self._key and qp.returncode is None:
            return qp
        qp = await self.fresh(user_port, **overrides)
        self._key = key
        return qp

    async def fresh(self, user_port: int, **overrides: str | None) -> QueueProxyProcess:
        await self.stop()
        for attempt in range(3):
            qp = make_queue_proxy(user_port, **overrides)
            self.current, self._key = qp, None
            try:
                await qp.start()
                return qp
            except RuntimeError:
                # A port free_port() found may be taken before the process binds it (an outgoing
                # connection's source port comes from the same range): new ports, once or twice.
                if attempt == 2 or AGAINST_UPSTREAM or "address already in use" not in qp.output():
                    raise
                await self.stop()
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        qp, self.current, self._key = self.current, None, None
        if qp is not None:
            await qp.stop()
            qp.cleanup()


# ---- a raw HTTP/1.1 client -----------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str = ""
    version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def build_request(method: str = "GET", target: str = "/", headers: Sequence[tuple[str, str]] = (),
                  body: bytes | None = None, host: str | None = "app.example.com",
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(f"{k}: {v}" for k, v in headers)
    names = {k.lower() for k, _ in headers}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Client:
    """One client connection; every read is bounded by ``timeout``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    @classmethod
    async def connect(cls, port: int, *, timeout: float = IO_TIMEOUT) -> Client:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection("127.0.0.1", port, limit=4 << 20)
        return cls(r, w, timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1):
                await self.writer.wait_closed()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()

    async def request(self, method: str = "GET", target: str = "/", headers: Sequence[tuple[str, str]] = (),
                      body: bytes | None = None, host: str | None = "app.example.com") -> Response:
        await self.send(build_request(method, target, headers, body, host))
        return await self.response(method)

    async def head(self) -> Response:
        """The next response head (1xx heads included)."""
        async with asyncio.timeout(self.timeout):
            raw = await self.reader.readuntil(b"\r\n\r\n")
        line, *rest = raw.decode("latin-1").split("\r\n")
        version, _, status_reason = line.partition(" ")
        status, _, reason = status_reason.partition(" ")
        headers = [(k, v.strip()) for k, _, v in (h.partition(":") for h in rest if h)]
        return Response(int(status), reason, version, headers)

    async def response(self, method: str = "GET") -> Response:
        """The next final response (1xx skipped), body read whole."""
        resp = await self.head()
        while resp.status < 200 and resp.status != 101:
            resp = await self.head()
        resp.body = b"".join([c async for c in self.body_chunks(resp, method)])
        return resp

    async def body_chunks(self, resp: Response, method: str = "GET") -> AsyncIterator[bytes]:
        """The body as it arrives: one item per HTTP chunk when chunked, else per read."""
        if method == "HEAD" or resp.status in (101, 204, 304) or 100 <= resp.status < 200:
            return
        r = self.reader
        if resp.chunked:
            while True:
                async with asyncio.timeout(self.timeout):
                    size_line = await r.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await r.readuntil(b"\r\n")) != b"\r\n":  # trailers
                            pass
                        return
                    data = await r.readexactly(size)
                    await r.readexactly(2)
                yield data
        elif resp.header("content-length") is not None:
            left = int(resp.header("content-length") or 0)
            while left:
                async with asyncio.timeout(self.timeout):
                    data = await r.read(min(left, 1 << 20))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
        else:  # delimited by the connection's end
            while True:
                async with asyncio.timeout(self.timeout):
                    data = await r.read(1 << 20)
                if not data:
                    return
                yield data

    async def closed(self, timeout: float | None = None) -> bool:
        """True if the server closes the connection within ``timeout`` (bytes before that are
        discarded), False if it is still open."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while True:
                    try:
                        data = await self.reader.read(65536)
                    except ConnectionError:
                        return True
                    if not data:
                        return True
        except TimeoutError:
            return False

    async def rest(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes (bounded)."""
        out = []
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                out.append(data)
        return b"".join(out)


async def fetch(port: int, method: str = "GET", target: str = "/", headers: Sequence[tuple[str, str]] = (),
                body: bytes | None = None, host: str | None = "app.example.com",
                timeout: float = IO_TIMEOUT) -> Response:
    """One request on a fresh connection."""
    async with await Client.connect(port, timeout=timeout) as c:
        return await c.request(method, target, headers, body, host)


async def fetch_stat(qp: QueueProxyProcess) -> tuple[Response, stat_pb2.Stat]:
    resp = await fetch(qp.stat_port, "GET", "/metrics", [("Accept", "application/protobuf")], host="pod")
    stat = stat_pb2.Stat()
    stat.ParseFromString(resp.body)
    return resp, stat


async def fetch_prometheus(qp: QueueProxyProcess) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    resp = await fetch(qp.metrics_port, "GET", "/metrics", host="pod")
    assert resp.status == 200, resp
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


HEALTH_HEADERS = (("User-Agent", "kube-probe/1.31"), ("K-Network-Probe", "queue"))


async def probe(qp: QueueProxyProcess, target: str = "/", headers: Sequence[tuple[str, str]] = HEALTH_HEADERS,
                timeout: float = 15.0) -> Response:
    """A kubelet-style readiness probe of the queue-proxy."""
    return await fetch(qp.serving_port, "GET", target, headers, timeout=timeout)


# ---- a fake user container -----------------------------------------------------------------------


@dataclass
class Reply:
    """What the fake user container answers."""

    status: int = 200
    body: bytes = b"ok"
    headers: Sequence[tuple[str, str]] = ()
    delay: float = 0.0
    """Seconds before the response head."""
    chunks: Sequence[bytes] | None = None
    """Send a chunked response, one write per item, ``chunk_delay`` apart (``body`` unused)."""
    chunk_delay: float = 0.0
    close_delimited: bool = False
    """No length, no chunking: the body ends when the connection closes."""
    cut_after: int | None = None
    """Announce ``len(body)`` but close the connection after this many body bytes."""
    drop: bool = False
    """Close the connection without answering."""
    reason: str = ""


@dataclass
class BackendRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    connection: int
    """Which accepted connection (0, 1, ...) carried it."""
    body: bytes = b""
    _left: int = 0
    _chunked: bool = False
    _done: bool = False
    _send_continue: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    async def read(self, limit: int = 1 << 20) -> bytes:
        """The next piece of the request body as it arrives (b"" at its end)."""
        if self._done:
            return b""
        if self._send_continue:  # like most servers: the interim answer when the body is wanted
            self._send_continue = False
            await self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        r = self.reader
        async with asyncio.timeout(IO_TIMEOUT):
            if self._chunked:
                if self._left == 0:
                    size = int((await r.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await r.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        self._done = True
                        return b""
                    self._left = size
                data = await r.read(min(limit, self._left))
                if not data:
                    raise ConnectionError("request body cut")
                self._left -= len(data)
                if self._left == 0:
                    await r.readexactly(2)
                return data
            if self._left == 0:
                self._done = True
                return b""
            data = await r.read(min(limit, self._left))
            if not data:
                raise ConnectionError("request body cut")
            self._left -= len(data)
            return data

    async def read_all(self) -> bytes:
        parts = [self.body]
        while data := await self.read():
            parts.append(data)
        self.body = b"".join(parts)
        return self.body

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(IO_TIMEOUT):
            await self.writer.drain()


Script = Callable[[BackendRequest], "Reply | None | Awaitable[Reply | None]"]


def after_body(fn: Callable[[BackendRequest], Reply]) -> Script:
    """A script that reads the whole request body before ``fn`` decides the reply."""
    async def script(req: BackendRequest) -> Reply:
        await req.read_all()
        return fn(req)
    return script


class FakeBackend:
    """An HTTP/1.1 user container on 127.0.0.1 whose answers are scripted per request.

    ``script(request)`` returns a ``Reply`` (written once the rest of the request body has been
    read; wrap the script in ``after_body`` to see the body first), or writes the response itself
    through ``request.write`` and returns None (reading the body as it streams with
    ``request.read``). Requests are recorded in ``requests``."""

    def __init__(self) -> None:
        self.script: Script = lambda req: Reply()
        self.requests: list[BackendRequest] = []
        self.connections = 0
        self.port = 0
        self.honor_expect = True
        """Answer ``Expect: 100-continue`` with a 100 before reading the body, as most servers do."""
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()

    async def start(self, port: int = 0) -> FakeBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port,
                                                  limit=1 << 20, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and cut every connection (the user container died)."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def wait_requests(self, n: int, timeout: float = IO_TIMEOUT) -> list[BackendRequest]:
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= n)
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn_no = self.connections
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *rest = raw.decode("latin-1").split("\r\n")
                method, target, version = line.split(" ", 2)
                headers = [(k, v.strip()) for k, _, v in (h.partition(":") for h in rest if h)]
                req = BackendRequest(method, target, version, headers, reader, writer, conn_no)
                te = (req.header("transfer-encoding") or "").lower()
                req._chunked = "chunked" in te
                req._left = 0 if req._chunked else int(req.header("content-length") or 0)
                req._done = not req._chunked and req._left == 0
                req._send_continue = self.honor_expect and (req.header("expect") or "").lower() == "100-continue"
                async with self._arrived:
                    self.requests.append(req)
                    self._arrived.notify_all()
                result = self.script(req)
                if asyncio.iscoroutine(result):
                    result = await result
                if result is not None:
                    if not await self._answer(req, result):
                        return
                await req.read_all()  # whatever the script left unread
                if (req.header("connection") or "").lower() == "close" or version == "HTTP/1.0":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, req: BackendRequest, reply: Reply) -> bool:
        """Write ``reply``; False if the connection must end."""
        if not reply.drop:
            await req.read_all()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            return False
        head = [f"HTTP/1.1 {reply.status} {reply.reason or 'X'}"]
        head.extend(f"{k}: {v}" for k, v in reply.headers)
        names = {k.lower() for k, _ in reply.headers}
        body = reply.body
        if reply.chunks is not None:
            head.append("Transfer-Encoding: chunked")
        elif reply.close_delimited:
            head.append("Connection: close")
        elif "content-length" not in names and reply.status not in (204, 304):
            head.append(f"Content-Length: {len(body)}")
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if reply.chunks is not None:
            await req.write(out)
            for c in reply.chunks:
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                await req.write(b"%x\r\n%s\r\n" % (len(c), c))
            await req.write(b"0\r\n\r\n")
            return True
        if req.method == "HEAD":
            body = b""
        if reply.cut_after is not None:
            await req.write(out + body[:reply.cut_after])
            req.writer.transport.abort()
            return False
        await req.write(out + body)
        return not reply.close_delimited


# ---- a fake StatIngest server ----------------------------------------------------------------


class FakeStatIngest(kdp_pb2_grpc.StatIngestServicer):
    """Our autoscaler's stat ingest, recording every batch pushed to it."""

    def __init__(self) -> None:
        self.batches: list[kdp_pb2.StatBatch] = []
        self.streams = 0
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()

    async def Push(self, request_iterator: AsyncIterator[kdp_pb2.StatBatch],  # noqa: N802 (gRPC name)
                   context: grpc.aio.ServicerContext) -> kdp_pb2.PushSummary:
        async with self._changed:
            self.streams += 1
            self._changed.notify_all()
        n = 0
        async for batch in request_iterator:
            n += 1
            async with self._changed:
                self.batches.append(batch)
                self._changed.notify_all()
        return kdp_pb2.PushSummary(accepted=n)

    async def start(self, port: int = 0) -> FakeStatIngest:
        server = grpc.aio.server()
        kdp_pb2_grpc.add_StatIngestServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port or self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)


# ---- fixtures (import them into a test module; they share the module's event loop) ----------
#
# Test modules using them run every test on one module-wide loop:
#     pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def _backend_server() -> AsyncIterator[FakeBackend]:
    b = await FakeBackend().start()
    yield b
    await b.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def app(_backend_server: FakeBackend) -> AsyncIterator[FakeBackend]:
    """The module's fake user container, reset for this test (and restarted if a test stopped it)."""
    b = _backend_server
    if b._server is None:
        await b.start(b.port)
    b.script = lambda req: Reply()
    b.requests.clear()
    b.honor_expect = True
    yield b
    for w in list(b._writers):  # connections a test left hanging
        w.transport.abort()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def qps() -> AsyncIterator[QueueProxies]:
    q = QueueProxies()
    yield q
    await q.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def stat_ingest() -> AsyncIterator[FakeStatIngest]:
    s = await FakeStatIngest().start()
    yield s
    await s.stop()
