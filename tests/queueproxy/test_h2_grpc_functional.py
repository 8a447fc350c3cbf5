"""gRPC through the queue-proxy: a grpc.aio client on the queue-proxy's serving port, a grpc.aio
user container behind it (generic bytes handlers, no generated code), all on 127.0.0.1.
Unary, server-streaming, client-streaming and bidi calls; large messages; status codes and
trailing metadata; per-stream concurrency, containerConcurrency queueing; timeouts and a
dead user container; and once through ``python -m queueproxy`` as a process."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.queueproxy.test_h2_harness import (
    GrpcBackend, Proxy, grpc_channel, running_grpc_backend, running_proxy, until,
)

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@pytest.fixture
async def backend() -> AsyncIterator[GrpcBackend]:
    async with running_grpc_backend() as b:
        yield b


@pytest.fixture
async def proxy(backend: GrpcBackend) -> AsyncIterator[Proxy]:
    async with running_proxy(backend.port, timeout=1000.0) as p:
        yield p


@pytest.fixture
async def channel(proxy: Proxy) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc_channel(proxy.port) as ch:
        yield ch


async def test_a_unary_call_passes_through_with_its_metadata(
        channel: grpc.aio.Channel, backend: GrpcBackend, proxy: Proxy) -> None:
    reply = await channel.unary_unary("/t.S/Unary")(b"hello", metadata=(("x-meta", "v1"),), timeout=10)
    assert reply == b"echo:hello"
    md = dict(backend.metadata)
    assert md["x-meta"] == "v1" and md["x-forwarded-for"] == "127.0.0.1"
    assert proxy.stats.report(proxy.server.loop.time()).request_count == 1


async def test_server_streaming_messages_arrive_as_they_are_sent(
        channel: grpc.aio.Channel, backend: GrpcBackend) -> None:
    call = channel.unary_stream("/t.S/ServerStream")(b"3", timeout=10)
    for i in range(3):
        # the user container sends message i, then waits for a permit: it must already be here
        assert await asyncio.wait_for(call.read(), 10) == b"message %d" % i
        backend.stream_gate.release()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_client_streaming_sends_every_message(channel: grpc.aio.Channel) -> None:
    async def messages() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"m" * 10_000
    reply = await channel.stream_unary("/t.S/ClientStream")(messages(), timeout=10)
    assert reply == b"500000 bytes in 50 messages"


async def test_bidi_streaming_interleaves_requests_and_replies(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream("/t.S/Bidi")(timeout=10)
    for word in (b"alpha", b"beta", b"gamma"):
        await call.write(word)
        assert await asyncio.wait_for(call.read(), 10) == word.upper()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_large_messages_cross_many_flow_control_windows_both_ways(channel: grpc.aio.Channel) -> None:
    big = bytes(range(256)) * (8 * MIB // 256)
    assert await channel.unary_unary("/t.S/Unary")(big, timeout=30) == b"echo:" + big
    assert len(await channel.unary_unary("/t.S/Big")(b"%d" % (8 * MIB), timeout=30)) == 8 * MIB


@pytest.mark.parametrize("code", ["NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "INTERNAL"])
async def test_error_statuses_and_trailing_metadata_pass_through(channel: grpc.aio.Channel, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/t.S/Fail")(f"{code}:it went wrong".encode(), timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode[code]
    assert err.details() == "it went wrong"
    assert ("x-why", "because") in tuple(err.trailing_metadata())


async def test_each_open_stream_counts_as_one_request_in_flight(
        channel: grpc.aio.Channel, backend: GrpcBackend, proxy: Proxy) -> None:
    hold = channel.unary_unary("/t.S/Hold")
    calls = [asyncio.ensure_future(hold(b"%d" % i, timeout=10)) for i in range(6)]
    await until(lambda: backend.active == 6, "six calls in the user container")
    assert proxy.stats.concurrency == 6
    (conn,) = proxy.h2_connections()  # one channel, one connection, six streams
    assert conn.active_streams == 6 and proxy.server.in_flight() == 6
    for _ in calls:
        backend.gate.release()
    assert sorted(await asyncio.gather(*calls)) == sorted(b"%d" % i for i in range(6))
    await until(lambda: proxy.stats.concurrency == 0)
    assert proxy.stats.report(proxy.server.loop.time()).request_count == 6


async def test_container_concurrency_1_queues_streams_and_passes_them_one_at_a_time(
        backend: GrpcBackend) -> None:
    async with running_proxy(backend.port, cc=1) as proxy, grpc_channel(proxy.port) as channel:
        hold = channel.unary_unary("/t.S/Hold")
        calls = [asyncio.ensure_future(hold(b"%d" % i, timeout=10)) for i in range(3)]
        await until(lambda: proxy.stats.concurrency == 3, "three streams counted")
        await until(lambda: backend.active == 1, "one call in the user container")
        assert proxy.handler.breaker is not None and proxy.handler.breaker.waiting == 2
        for done in range(1, 4):
            backend.gate.release()
            await until(lambda d=done: sum(c.done() for c in calls) == d, f"{done} calls done")
            assert backend.active <= 1
        assert backend.max_active == 1
        assert all(c.result() for c in calls)


async def test_container_concurrency_1_rejects_streams_beyond_the_queue_with_unavailable(
        backend: GrpcBackend) -> None:
    async with running_proxy(backend.port, cc=1) as proxy, grpc_channel(proxy.port) as channel:
        hold = channel.unary_unary("/t.S/Hold")
        calls = [asyncio.ensure_future(hold(b"x", timeout=10)) for _ in range(11)]  # 1 slot + 10 queued
        await until(lambda: proxy.stats.concurrency == 11, "eleven streams admitted")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hold(b"one too many", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "503" in info.value.details()
        for _ in calls:
            backend.gate.release()
        await asyncio.gather(*calls)


async def test_a_revision_timeout_before_the_answer_fails_the_call_with_504(
        backend: GrpcBackend) -> None:
    async with running_proxy(backend.port, timeout=30.0) as proxy, grpc_channel(proxy.port) as channel:
        call = asyncio.ensure_future(channel.unary_unary("/t.S/Hold")(b"x", timeout=10))
        await until(lambda: backend.active == 1, "the call in the user container")
        (conn,) = proxy.h2_connections()
        (stream,) = conn.streams.values()
        conn.check_deadlines(stream.started_at + 30.0)  # explicit clock: the deadline has come
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "504" in info.value.details()
        await until(lambda: backend.active == 0, "the user container to see the cancellation")


async def test_a_dead_user_container_fails_calls_with_502() -> None:
    async with running_grpc_backend() as b:
        port = b.port
    async with running_proxy(port) as proxy, grpc_channel(proxy.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/t.S/Unary")(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "502" in info.value.details()


# ---- the real process ------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def test_grpc_through_python_m_queueproxy_and_a_clean_sigterm(backend: GrpcBackend) -> None:
    serving, tls, admin, stat = _free_ports(4)
    env = dict(os.environ, SERVING_NAMESPACE="ns", SERVING_CONFIGURATION="cfg", SERVING_REVISION="rev",
               SERVING_POD="pod-1", SERVING_POD_IP="127.0.0.1", QUEUE_SERVING_PORT=str(serving),
               QUEUE_SERVING_TLS_PORT=str(tls), USER_PORT=str(backend.port), CONTAINER_CONCURRENCY="0",
               REVISION_TIMEOUT_SECONDS="60", SERVING_LOGGING_CONFIG="", SERVING_LOGGING_LEVEL="",
               KDP_BIND_HOST="127.0.0.1", KDP_ADMIN_PORT=str(admin), KDP_STAT_PORT=str(stat),
               KDP_DRAIN_QUIET_PERIOD="0.1", OBSERVABILITY_CONFIG="", PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "queueproxy", env=env, cwd=str(REPO),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with grpc_channel(serving) as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
            assert await channel.unary_unary("/t.S/Unary")(b"via process", timeout=10) == b"echo:via process"
            call = channel.unary_stream("/t.S/ServerStream")(b"2", timeout=10)
            assert await asyncio.wait_for(call.read(), 10) == b"message 0"
            backend.stream_gate.release()
            assert await asyncio.wait_for(call.read(), 10) == b"message 1"
            # SIGTERM while a stream is open: the process finishes it before exiting
            proc.send_signal(signal.SIGTERM)
            backend.stream_gate.release()
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        assert proc.stderr is not None
        err = await proc.stderr.read()
        assert b"Traceback" not in err, err.decode(errors="replace")
