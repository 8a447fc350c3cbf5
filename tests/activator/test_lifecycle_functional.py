"""The activator process's life: not ready until its stats connection is up and its feeds have
synced, draining on
SIGTERM, reporting to an upstream autoscaler over its websocket protocol, and memory that stays
bounded while thousands of requests wait."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from proto import stat_pb2
from tests.activator.harness import (
    ActivatorProcess,
    FakeRuntime,
    FakeStatIngest,
    Reply,
    activator_env,
    eventually,
    fake_pods,
    fetch,
    free_port,
    runtime,  # noqa: F401 (fixture)
    unique_rev,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


async def health(act: ActivatorProcess) -> tuple[int, bytes]:
    r = await act.health()
    return r.status, r.body


async def test_kubelet_health_fails_until_the_autoscaler_connection_is_up_and_when_it_is_lost(
        runtime: FakeRuntime) -> None:
    port = free_port()
    env = activator_env(autoscaler=f"127.0.0.1:{port}", backends=f"grpc://{runtime.address}")
    async with ActivatorProcess(env) as act:
        assert await health(act) == (500, b"connection to the autoscaler is not established\n")
        # meanwhile it answers the other probes
        r = await fetch(act.port, "GET", "/", [("K-Network-Probe", "activator")])
        assert (r.status, r.body) == (200, b"activator")
        ingest = await FakeStatIngest().start(port)
        try:
            await eventually(lambda: _status(act, 200), what="healthy once the autoscaler is up")
            families = await act.metrics()
            reachable = {s.labels["peer"]: s.value for s in families["kn_activator_stats_conn_reachable"].samples}
            assert reachable == {"autoscaler": 1.0}
        finally:
            await ingest.stop()
        await eventually(lambda: _status(act, 500), what="unhealthy once the autoscaler is gone")
        families = await act.metrics()
        errors = [s.value for s in families["kn_activator_stats_conn_errors"].samples if s.name.endswith("_total")]
        assert errors and errors[0] >= 1


async def test_kubelet_health_fails_until_every_revision_and_route_has_been_received() -> None:
    ingest = await FakeStatIngest().start()
    late = FakeRuntime()  # the feeds come up after the activator
    late.port = free_port()
    rev = unique_rev()
    env = activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{late.address}")
    try:
        async with ActivatorProcess(env) as act, fake_pods(1) as (pod,):
            late.publish(rev, ready=[pod.address])
            await eventually(lambda: _body(act, b"revisions and routes are not synced yet\n"),
                             what="unhealthy while the feeds are away")
            await late.start()
            await eventually(lambda: _status(act, 200), what="healthy once the feeds have synced")
            r = await act.request(rev, "/")  # the snapshot's revision is known by then
            assert r.status == 200, r
    finally:
        await late.stop()
        await ingest.stop()


async def _body(act: ActivatorProcess, want: bytes) -> bool:
    r = await act.health()
    return (r.status, r.body) == (500, want)


async def _status(act: ActivatorProcess, want: int) -> bool:
    return (await act.health()).status == want


async def test_sigterm_fails_health_at_once_keeps_serving_through_the_drain_and_exits_0(
        runtime: FakeRuntime) -> None:
    ingest = await FakeStatIngest().start()
    rev = unique_rev()
    env = activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{runtime.address}",
                        KDP_DRAIN_TIMEOUT="1s")
    try:
        async with ActivatorProcess(env) as act, fake_pods(1) as (pod,):
            runtime.publish(rev, ready=[pod.address])
            await eventually(lambda: _status(act, 200), what="healthy")
            await eventually(lambda: _served(act, rev), what="revision served")
            pod.pod_script = lambda req: Reply(body=b"slow", delay=1.5)
            in_flight = asyncio.ensure_future(act.request(rev, "/in-flight", timeout=10))
            await pod.wait_served(2)  # the warm-up and this one
            act.signal(signal.SIGTERM)
            await eventually(lambda: _status(act, 500), what="health failing after SIGTERM")
            r = await act.health()
            assert r.body == b"received SIGTERM from kubelet\n"
            # during the drain sleep the probes still pass and requests are still served
            r = await fetch(act.port, "GET", "/", [("K-Network-Probe", "activator")])
            assert (r.status, r.body) == (200, b"activator")
            r = await fetch(act.port, "GET", "/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "x")])
            assert r.status == 200
            pod.pod_script = lambda req: Reply(body=b"quick")
            r = await act.request(rev, "/during-drain")
            assert (r.status, r.body) == (200, b"quick")
            # the request in flight when SIGTERM came is finished, then the process exits 0
            r = await in_flight
            assert (r.status, r.body) == (200, b"slow")
            assert await act.wait_exit(10) == 0
            assert "Traceback" not in act.output()
    finally:
        runtime.publish(rev, deleted=True)
        await ingest.stop()


async def _served(act: ActivatorProcess, rev: str) -> bool:
    return (await act.request(rev, "/warm-up")).status == 200


# ---- stats to an upstream autoscaler over its websocket ------------------------------------


class WebsocketAutoscaler:
    """Upstream's stat server as the activator sees it: any path, binary frames of
    ``WireStatMessages``; text frames ignored."""

    def __init__(self) -> None:
        self.frames: list[stat_pb2.WireStatMessages] = []
        self.connections = 0
        self.paths: list[str] = []
        self.sockets: set[web.WebSocketResponse] = set()
        self.port = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.paths.append(request.path)
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    m = stat_pb2.WireStatMessages()
                    m.ParseFromString(msg.data)
                    self.frames.append(m)
        finally:
            self.sockets.discard(ws)
        return ws

    def stats(self, rev: str) -> list[stat_pb2.WireStatMessage]:
        return [m for f in self.frames for m in f.messages if m.name == rev]


@contextlib.asynccontextmanager
async def websocket_autoscaler() -> AsyncIterator[WebsocketAutoscaler]:
    server = WebsocketAutoscaler()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        for ws in list(server.sockets):
            await ws.close()
        await runner.cleanup()


async def test_stats_go_to_an_upstream_autoscaler_as_binary_wire_stat_messages(runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with websocket_autoscaler() as autoscaler:
        env = activator_env(autoscaler=f"ws://127.0.0.1:{autoscaler.port}", protocol="websocket",
                            backends=f"grpc://{runtime.address}")
        async with ActivatorProcess(env) as act, fake_pods(1) as (pod,):
            await eventually(lambda: _status(act, 200), what="healthy once the websocket is up")
            assert autoscaler.paths == ["/"]
            runtime.publish(rev, ready=[pod.address])
            await eventually(lambda: _served(act, rev), what="revision served")
            # the poke, then the periodic reports: always with a stat, from this activator
            await eventually(lambda: len(autoscaler.stats(rev)) >= 3, what="poke and reports")
            stats = autoscaler.stats(rev)
            assert all(m.HasField("stat") and m.namespace == "ns" for m in stats)
            assert all(m.stat.pod_name == "activator-test-pod" for m in stats)
            assert (stats[0].stat.average_concurrent_requests, stats[0].stat.request_count) == (1.0, 1.0)
            assert all(m.stat.average_proxied_concurrent_requests == 0 and m.stat.timestamp == 0 for m in stats)
            # upstream's autoscaler restarting (close 1012): the activator reconnects
            for ws in list(autoscaler.sockets):
                await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"Restarting")
            await eventually(lambda: autoscaler.connections >= 2, what="reconnected")
            await eventually(lambda: _status(act, 200), what="healthy again")
            n = len(autoscaler.frames)
            await act.request(rev, "/after-reconnect")
            await eventually(lambda: len(autoscaler.frames) > n, what="reports on the new connection")
    runtime.publish(rev, deleted=True)


# ---- bounded memory -------------------------------------------------------------------------


class _Waiting(asyncio.Protocol):
    """A client connection that sent one request and only counts what comes back."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answers.append(data)


async def test_memory_stays_bounded_while_ten_thousand_requests_wait_and_the_next_is_refused(
        runtime: FakeRuntime) -> None:
    n = 10_000
    ingest = await FakeStatIngest().start()
    rev = unique_rev()
    env = activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{runtime.address}",
                        KDP_MAX_WAITING_PER_REVISION=str(n), KDP_MAX_WAITING=str(n))
    loop = asyncio.get_running_loop()
    conns: list[_Waiting] = []
    answers: list[bytes] = []
    try:
        async with ActivatorProcess(env) as act:
            runtime.publish(rev, timeout=600)
            await eventually(lambda: _status(act, 200), what="healthy")
            request = (f"GET / HTTP/1.1\r\nHost: a\r\nKnative-Serving-Namespace: ns\r\n"
                       f"Knative-Serving-Revision: {rev}\r\n\r\n").encode()
            # warm up: the revision known, one request waiting
            r = await eventually(lambda: _waiting_or_404(act, rev), what="revision known")
            assert r
            before = act.rss_kib()
            for start in range(0, n, 500):
                batch = await asyncio.gather(*(loop.create_connection(lambda: _Waiting(answers), "127.0.0.1", act.port)
                                               for _ in range(start, min(n, start + 500))))
                for _, proto in batch:
                    assert proto.transport is not None
                    proto.transport.write(request)
                    conns.append(proto)

            async def all_waiting() -> bool:
                families = await act.metrics()
                return any(s.value == n for s in families["kn_revision_request_queued"].samples
                           if s.labels.get("kn_revision_name") == rev)
            await eventually(all_waiting, timeout=30, what=f"{n} requests waiting")
            during = act.rss_kib()
            assert not answers  # nobody was answered
            # one more is refused at once, with a reason and Retry-After
            r = await act.request(rev, "/one-too-many")
            assert r.status == 503 and r.header("Retry-After") == "1"
            assert b"queue full" in r.body
            grown_mib = (during - before) / 1024
            print(f"RSS before {before / 1024:.1f} MiB, with {n} waiting {during / 1024:.1f} MiB")
            # generous: ~10 KiB per waiting request would be 100 MiB; we ask for less than that
            assert grown_mib < 100, f"RSS grew {grown_mib:.1f} MiB for {n} waiting requests"
            # the clients leave: their places are given back
            for c in conns:
                assert c.transport is not None
                c.transport.close()
            conns.clear()

            async def none_waiting() -> bool:
                families = await act.metrics()
                return all(s.value == 0 for s in families["kn_revision_request_queued"].samples
                           if s.labels.get("kn_revision_name") == rev)
            await eventually(none_waiting, timeout=30, what="the waiting requests gone")
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        runtime.publish(rev, deleted=True)
        await ingest.stop()


async def _waiting_or_404(act: ActivatorProcess, rev: str) -> bool:
    try:
        r = await act.request(rev, "/", timeout=0.3)
    except TimeoutError:
        return True
    return r.status != 404
