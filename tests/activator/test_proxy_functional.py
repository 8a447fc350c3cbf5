"""The activator process proxying to pods: what the pod sees, throttling by
containerConcurrency, retries only for what never reached a pod, websockets and streaming."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.activator.harness import (
    NS,
    ActivatorProcess,
    BackendRequest,
    Client,
    FakeRuntime,
    Pod,
    Reply,
    activator,  # noqa: F401 (fixture)
    build_request,
    eventually,
    fake_pods,
    fetch,
    ingest,  # noqa: F401 (fixture)
    runtime,  # noqa: F401 (fixture)
    unique_rev,
)
from tests.queueproxy.test_h2_harness import grpc_channel, running_grpc_backend

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

REV_HEADERS = lambda rev: [("Knative-Serving-Namespace", NS), ("Knative-Serving-Revision", rev)]  # noqa: E731


async def served(act: ActivatorProcess, rev: str) -> None:
    """Wait until requests for ``rev`` reach a pod (its pods were probed)."""
    async def ok() -> bool:
        return (await act.request(rev, "/warm-up")).status == 200
    await eventually(ok, what=f"{rev} served")


async def test_the_pod_gets_the_original_host_the_proxy_mark_and_no_revision_headers(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(1) as (pod,):
        runtime.publish(rev, ready=[pod.address])
        await served(activator, rev)
        r = await fetch(activator.port, "GET", "/path?q=1", [
            *REV_HEADERS(rev), ("X-Forwarded-For", "203.0.113.7"), ("K-Network-Hash", "h"),
            ("Connection", "keep-alive, X-Hop"), ("X-Hop", "dropped"), ("X-Custom", "kept")], host="app.example.com")
        assert r.status == 200
        assert r.header("Server-Timing") == "activator-wait;dur=0"
        req = pod.served[-1]
        assert req.target == "/path?q=1"
        assert req.header("host") == pod.address
        assert req.header("k-original-host") == "app.example.com"
        assert req.header("k-proxy-request") == "activator"
        assert req.header("x-forwarded-for") == "203.0.113.7, 127.0.0.1"
        assert req.header("x-custom") == "kept"
        names = req.names()
        assert not names & {"knative-serving-namespace", "knative-serving-revision", "k-network-hash", "x-hop"}
        # a K-Original-Host set by an earlier hop is kept as it is
        r = await fetch(activator.port, "GET", "/", [*REV_HEADERS(rev), ("K-Original-Host", "first.example.com")],
                        host="second.example.com")
        assert pod.served[-1].all("k-original-host") == ["first.example.com"]
        runtime.publish(rev, deleted=True)


async def test_a_real_queue_proxy_restores_the_host_for_the_app(activator: ActivatorProcess,
                                                                  runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with Pod(rev, app_env={"TARGET": "activator"}) as pod:
        runtime.publish(rev, ready=[pod.address])
        await served(activator, rev)
        r = await activator.request(rev, "/", host="hello.example.com")
        assert (r.status, r.body) == (200, b"Hello activator!\n")
        assert r.header("Server-Timing", ) is not None
        runtime.publish(rev, deleted=True)


async def test_with_container_concurrency_1_no_pod_ever_holds_two_requests(activator: ActivatorProcess,
                                                                            runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(2) as pods:
        for p in pods:
            p.pod_script = lambda req: Reply(body=b"slow", delay=0.05)
        runtime.publish(rev, ready=[p.address for p in pods], cc=1)
        await served(activator, rev)
        for p in pods:
            p.max_in_flight = 0
            p.served.clear()
        results = await asyncio.gather(*(activator.request(rev, f"/{i}") for i in range(12)))
        assert [r.status for r in results] == [200] * 12
        assert [p.max_in_flight for p in pods] == [1, 1]
        assert sum(len(p.served) for p in pods) == 12
        assert all(p.served for p in pods)
        # the ones that had to wait say how long they waited
        waits = [float(r.header("Server-Timing").split("dur=")[1]) for r in results]  # type: ignore[union-attr]
        assert sum(1 for w in waits if w > 0) >= 10
        runtime.publish(rev, deleted=True)


async def test_a_pod_that_refuses_connections_is_skipped_and_the_request_retried_on_another(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(2) as (good, gone):
        runtime.publish(rev, ready=[good.address, gone.address])
        async def both_used() -> bool:
            await activator.request(rev, "/warm-up")
            return bool(gone.served and good.served)
        await eventually(both_used, what="both pods in rotation")
        await gone.stop()  # its port now refuses connections
        gone.healthy = False
        good.served.clear()
        results = await asyncio.gather(*(activator.request(rev, f"/{i}") for i in range(20)))
        assert [r.status for r in results] == [200] * 20
        assert len(good.served) == 20
        runtime.publish(rev, deleted=True)


async def test_a_pod_dying_mid_request_is_a_502_and_the_request_is_not_retried(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(2) as (first, second):
        # containerConcurrency 1: first-available, so every request goes to the first pod
        runtime.publish(rev, ready=[first.address, second.address], cc=1)
        await served(activator, rev)
        assert not second.served

        async def die(req: BackendRequest) -> None:
            await first.stop()  # the process is gone: connections cut, port closed
        first.pod_script = die
        r = await activator.request(rev, "/dies")
        assert r.status == 502
        assert not second.served
        runtime.publish(rev, deleted=True)


async def test_a_dropped_connection_on_a_fresh_connection_is_a_502_without_retry(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(2) as (first, second):
        runtime.publish(rev, ready=[first.address, second.address], cc=1)
        await served(activator, rev)
        first.pod_script = lambda req: Reply(drop=True)
        async with await Client.connect(activator.port) as c:
            r = await c.request("POST", "/once", REV_HEADERS(rev), body=b"payload")
        assert r.status == 502
        assert [q.target for q in first.served].count("/once") == 1
        assert not second.served
        runtime.publish(rev, deleted=True)


async def test_responses_stream_through_as_the_pod_writes_them(activator: ActivatorProcess,
                                                                runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(1) as (pod,):
        runtime.publish(rev, ready=[pod.address])
        await served(activator, rev)
        release = asyncio.Event()

        async def stream(req: BackendRequest) -> None:
            await req.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await release.wait()
            await req.write(b"4\r\nlast\r\n0\r\n\r\n")
        pod.pod_script = stream
        async with await Client.connect(activator.port) as c:
            await c.send(build_request("GET", "/stream", REV_HEADERS(rev)))
            head = await c.head()
            assert head.status == 200
            chunks = c.body_chunks(head)
            assert await anext(chunks) == b"first"  # before the pod wrote the rest
            release.set()
            assert [x async for x in chunks] == [b"last"]
        runtime.publish(rev, deleted=True)


async def test_request_bodies_stream_to_the_pod(activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(1) as (pod,):
        runtime.publish(rev, ready=[pod.address])
        await served(activator, rev)
        got_first = asyncio.Event()

        async def echo(req: BackendRequest) -> Reply:
            first = await req.read()
            got_first.set()
            rest = await req.read_all()
            return Reply(body=first + rest)
        pod.pod_script = echo
        async with await Client.connect(activator.port) as c:
            await c.send(build_request("POST", "/upload", [*REV_HEADERS(rev), ("Transfer-Encoding", "chunked")]))
            await c.send(b"5\r\nhello\r\n")
            async with asyncio.timeout(5):
                await got_first.wait()  # the pod has the first piece while the client still sends
            await c.send(b"6\r\n world\r\n0\r\n\r\n")
            r = await c.response()
        assert (r.status, r.body) == (200, b"hello world")
        runtime.publish(rev, deleted=True)


async def test_websockets_are_tunnelled_to_the_pod(activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with fake_pods(1) as (pod,):
        runtime.publish(rev, ready=[pod.address])
        await served(activator, rev)

        async def upgrade(req: BackendRequest) -> None:
            assert req.header("upgrade") == "websocket"
            await req.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            while data := await req.reader.read(1024):
                await req.write(b"echo:" + data)
        pod.pod_script = upgrade
        async with await Client.connect(activator.port) as c:
            await c.send(build_request("GET", "/ws", [*REV_HEADERS(rev), ("Connection", "Upgrade"),
                                                      ("Upgrade", "websocket"),
                                                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                      ("Sec-WebSocket-Version", "13")]))
            head = await c.head()
            assert head.status == 101
            assert head.header("upgrade") == "websocket"
            for msg in (b"one", b"two"):
                await c.send(msg)
                async with asyncio.timeout(5):
                    assert await c.reader.read(1024) == b"echo:" + msg
        runtime.publish(rev, deleted=True)


@pytest.mark.parametrize("timeouts", [
    pytest.param({"timeout": 0.5}, id="total"),
    pytest.param({"timeout": 60, "response_start_timeout": 0.5}, id="response-start"),
    pytest.param({"timeout": 60, "idle_timeout": 0.5}, id="idle"),
])
async def test_a_slow_pod_gets_the_revision_timeout_as_a_504(activator: ActivatorProcess, runtime: FakeRuntime,
                                                              timeouts: dict[str, float]) -> None:
    rev = unique_rev()
    async with fake_pods(1) as (pod,):
        runtime.publish(rev, ready=[pod.address], **timeouts)
        await served(activator, rev)
        pod.pod_script = lambda req: Reply(delay=3.0)
        r = await activator.request(rev, "/slow")
        assert (r.status, r.body) == (504, b"activator request timeout")
        runtime.publish(rev, deleted=True)


async def test_grpc_goes_through_the_activator_over_h2c(activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    async with running_grpc_backend() as app, Pod(rev, run_app=False, user_port=app.port) as pod:
        # containerConcurrency 1: each call holds the pod's one slot, so a slot not given back
        # would stall the next call
        runtime.publish(rev, ready=[pod.address], cc=1)
        metadata = (("knative-serving-namespace", NS), ("knative-serving-revision", rev))
        for port in (activator.h2c_port, activator.port):
            async with grpc_channel(port) as ch:
                unary = ch.unary_unary("/t.S/Unary")

                async def answered() -> bool:
                    try:
                        return await unary(b"", metadata=metadata, timeout=5) == b"echo:"
                    except grpc.aio.AioRpcError:
                        return False
                await eventually(answered, what="the revision known to the activator")
                assert await unary(b"hi", metadata=metadata, timeout=5) == b"echo:hi"
                bidi = ch.stream_stream("/t.S/Bidi")
                call = bidi(metadata=metadata, timeout=5)
                await call.write(b"a")
                assert await call.read() == b"A"
                await call.write(b"b")
                assert await call.read() == b"B"
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
        seen = dict(app.metadata)
        assert seen["k-proxy-request"] == "activator"
        assert "knative-serving-revision" not in seen
        runtime.publish(rev, deleted=True)
