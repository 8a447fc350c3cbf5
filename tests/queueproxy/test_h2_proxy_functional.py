"""The HTTP/2 engine through the queue-proxy's app, with a raw HTTP/2 client and a scripted h2c
user container on 127.0.0.1: headers, bodies and flow control, trailers, resets both ways,
GOAWAY, Upgrade: h2c, probes, revision timeouts (driven with an explicit ``now``), drain."""
from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from queueproxy.h2 import H2ServerConnection

from tests.queueproxy.test_h2_harness import (
    H2Backend, H2Client, Proxy, running_h2_backend, running_proxy, until,
)

pytestmark = pytest.mark.functional

CANCEL, INTERNAL_ERROR, NO_ERROR, REFUSED_STREAM = 0x8, 0x2, 0x0, 0x7
KIB = 1024


@pytest.fixture
async def backend() -> AsyncIterator[H2Backend]:
    async with running_h2_backend() as b:
        yield b


@pytest.fixture
async def proxy(backend: H2Backend) -> AsyncIterator[Proxy]:
    async with running_proxy(backend.port, timeout=1000.0) as p:
        yield p


@pytest.fixture
async def client(proxy: Proxy) -> AsyncIterator[H2Client]:
    c = await H2Client.connect(proxy.port)
    yield c
    await c.close()


def seen_headers(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["headers"])


def only_connection(proxy: Proxy) -> H2ServerConnection:
    (conn,) = proxy.h2_connections()
    return conn


# ---- requests and responses -------------------------------------------------------------------

async def test_a_prior_knowledge_request_reaches_the_user_container_over_h2c_with_upstreams_header_rewrites(
        client: H2Client, backend: H2Backend) -> None:
    r = await client.get(b"/echo?q=1", [
        (b"k-original-host", b"orig.example.com"), (b"knative-serving-revision", b"rev-1"),
        (b"knative-serving-namespace", b"ns"), (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"https"), (b"te", b"trailers"), (b"x-custom", b"kept")])
    assert r.status == 200 and r.ended and r.headers[b"x-backend"] == b"h2"
    seen = seen_headers(r.body)
    assert seen[":authority"] == "orig.example.com"
    assert seen[":path"] == "/echo?q=1" and seen[":method"] == "GET" and seen[":scheme"] == "http"
    assert "k-original-host" not in seen and "knative-serving-revision" not in seen
    assert "knative-serving-namespace" not in seen
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["forwarded"] == "for=10.0.0.1;proto=https"
    assert seen["te"] == "trailers"
    assert seen["x-custom"] == "kept"


async def test_authority_is_kept_when_there_is_no_original_host(client: H2Client) -> None:
    r = await client.get(b"/echo", authority=b"hello.default.example.com")
    assert seen_headers(r.body)[":authority"] == "hello.default.example.com"


async def test_a_request_body_larger_than_every_window_streams_through(client: H2Client) -> None:
    body = bytes(range(256)) * (12 * KIB)  # 3 MiB
    sid = client.request(b"POST", b"/echo", end=False)
    await client.send_all(sid, body)
    r = await client.wait(sid)
    assert r.status == 200 and json.loads(r.body)["length"] == len(body)


async def test_a_response_larger_than_every_window_streams_back(client: H2Client) -> None:
    r = await client.get(b"/big?n=3000000")
    assert r.status == 200 and len(r.body) == 3_000_000 and r.ended


async def test_bodies_stream_both_ways_at_once_without_waiting_for_the_end(client: H2Client) -> None:
    sid = client.request(b"POST", b"/mirror", end=False)
    await client.wait(sid, lambda r: r.status == 200)
    for i in range(5):
        piece = b"piece %d;" % i
        client.send(sid, piece)
        await client.wait(sid, lambda r, n=len(piece): r.body.endswith(piece))
    client.send(sid, b"", end=True)
    r = await client.wait(sid)
    assert bytes(r.body) == b"".join(b"piece %d;" % i for i in range(5))


async def test_response_trailers_pass_through(client: H2Client) -> None:
    r = await client.get(b"/trailers", [(b"te", b"trailers")])
    assert r.status == 200 and bytes(r.body) == b"partial"
    assert r.trailers == {b"grpc-status": b"7", b"grpc-message": b"denied"}


async def test_request_trailers_reach_the_user_container(client: H2Client) -> None:
    sid = client.request(b"POST", b"/echo", [(b"te", b"trailers")], end=False)
    client.send(sid, b"body")
    client.send_trailers(sid, [(b"x-checksum", b"abc")])
    r = await client.wait(sid)
    assert r.status == 200
    assert json.loads(r.body)["length"] == 4 and json.loads(r.body)["trailers"] == [["x-checksum", "abc"]]


async def test_a_client_expecting_100_continue_gets_it_when_the_request_goes_upstream(
        client: H2Client) -> None:
    sid = client.request(b"POST", b"/echo", [(b"expect", b"100-continue")], end=False)
    r = await client.wait(sid, lambda r: r.informational == [100])
    client.send(sid, b"the body", end=True)
    r = await client.wait(sid)
    assert r.status == 200 and json.loads(r.body)["length"] == len(b"the body")


async def test_streams_from_several_clients_share_one_upstream_connection(
        proxy: Proxy, backend: H2Backend) -> None:
    clients = [await H2Client.connect(proxy.port) for _ in range(3)]
    try:
        sids = [c.request(b"GET", b"/hold") for c in clients]
        for c, sid in zip(clients, sids):
            await c.wait(sid, lambda r: bytes(r.body) == b"started")
        assert len(backend.conns) == 1 and len(proxy.h2_connections()) == 3
        backend.release.set()
        for c, sid in zip(clients, sids):
            assert (await c.wait(sid)).status == 200
    finally:
        for c in clients:
            await c.close()


async def test_many_streams_on_one_connection_are_answered_independently(client: H2Client) -> None:
    sids = [client.request(b"GET", b"/echo?i=%d" % i) for i in range(20)]
    for i, sid in enumerate(sids):
        r = await client.wait(sid)
        assert r.status == 200 and seen_headers(r.body)[":path"] == "/echo?i=%d" % i


# ---- failures -----------------------------------------------------------------------------------

async def test_the_user_container_resetting_before_answering_gives_502(client: H2Client) -> None:
    r = await client.get(b"/rst-before")
    assert r.status == 502 and b"upstream reset the stream (error code 2)" in r.body


async def test_the_user_container_resetting_mid_response_resets_the_clients_stream(
        client: H2Client, backend: H2Backend) -> None:
    sid = client.request(b"GET", b"/rst-after")
    await client.wait(sid, lambda r: len(r.body) == len(b"some bytes"))
    backend.release.set()
    r = await client.wait(sid)
    assert r.status == 200 and r.reset == INTERNAL_ERROR


async def test_a_client_reset_reaches_the_user_container_and_ends_the_request(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    sid = client.request(b"GET", b"/hold")
    await client.wait(sid, lambda r: bytes(r.body) == b"started")
    assert proxy.stats.concurrency == 1
    client.reset(sid, CANCEL)
    await until(lambda: backend.resets, "the reset to reach the user container")
    assert backend.resets[0][1] == CANCEL
    await until(lambda: proxy.stats.concurrency == 0, "the request to end")


async def test_an_unreachable_user_container_gives_502_with_the_dial_error() -> None:
    async with running_h2_backend() as b:
        port = b.port
    async with running_proxy(port) as p:  # nothing listens there any more
        c = await H2Client.connect(p.port)
        r = await c.get(b"/echo")
        await c.close()
    assert r.status == 502 and r.body.startswith(b"dial tcp 127.0.0.1:%d" % port)


async def test_the_user_container_dropping_the_connection_gives_502(client: H2Client) -> None:
    r = await client.get(b"/drop")
    assert r.status == 502 and b"upstream closed the connection" in r.body


async def test_the_user_container_dropping_the_connection_mid_response_resets_the_clients_stream(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    sid = client.request(b"GET", b"/drop-after")
    await client.wait(sid, lambda r: bytes(r.body) == b"some bytes")
    backend.release.set()
    r = await client.wait(sid)
    assert r.status == 200 and r.reset == INTERNAL_ERROR
    await until(lambda: proxy.stats.concurrency == 0)
    assert (await client.get(b"/echo")).status == 200  # a new upstream connection serves the next


async def test_a_refused_stream_is_retried_once(client: H2Client, backend: H2Backend) -> None:
    r = await client.get(b"/refuse-once")
    assert r.status == 200
    assert [s.headers[b":path"] for s in backend.requests] == [b"/refuse-once", b"/refuse-once"]


async def test_a_graceful_goaway_from_the_user_container_lets_its_stream_finish_and_moves_new_ones(
        client: H2Client, backend: H2Backend) -> None:
    held = client.request(b"GET", b"/goaway")
    await until(lambda: backend.requests, "the request to arrive")
    await until(lambda: not backend.conns[0].transport.is_closing() and len(backend.requests) == 1)
    # the proxy saw GOAWAY once this request goes over a second connection
    r2 = await client.get(b"/echo")
    assert r2.status == 200 and len(backend.conns) == 2
    backend.release.set()
    r1 = await client.wait(held)
    assert r1.status == 200


# ---- flow control keeps memory bounded --------------------------------------------------------

async def test_a_client_not_reading_stops_the_user_container_after_the_windows(
        backend: H2Backend, proxy: Proxy) -> None:
    c = await H2Client.connect(proxy.port, auto_ack=False)
    other = await H2Client.connect(proxy.port)
    try:
        sid = c.request(b"GET", b"/big?n=10000000")
        await c.wait(sid, lambda r: len(r.body) >= 65535)
        # a round trip through the same upstream connection: nothing else is moving
        assert (await other.get(b"/echo")).status == 200
        (stream,) = [s for s in proxy.streams() if s.target.startswith(b"/big")]
        held = sum(len(b) for b in stream._resp_buf)
        assert held <= 256 * KIB
        assert backend.sent <= 65535 + 256 * KIB
        while not c.responses[sid].done:
            c.ack(sid)
            await c.wait(sid, lambda r: r.unacked > 0 or r.done)
        assert len(c.responses[sid].body) == 10_000_000
    finally:
        await c.close()
        await other.close()


async def test_a_user_container_not_reading_stops_the_client_after_the_windows(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    backend.ack_uploads = False
    body = b"u" * 8_000_000
    sid = client.request(b"POST", b"/echo", end=False)
    sent = client.send(sid, body)
    while True:
        await client.get(b"/echo")  # let window updates, if any, arrive
        more = client.send(sid, body[sent:])
        if not more:
            break
        sent += more
    (stream,) = [s for s in proxy.streams() if s.method == b"POST"]
    assert sum(len(b) for b in stream._req_buf) <= 256 * KIB
    assert sent <= 65535 + 256 * KIB
    backend.ack_uploads = True
    backend.ack_all()
    await client.send_all(sid, body[sent:])
    r = await client.wait(sid)
    assert r.status == 200 and json.loads(r.body)["length"] == len(body)


# ---- Upgrade: h2c --------------------------------------------------------------------------------

async def test_upgrade_h2c_answers_101_and_serves_the_original_request_as_stream_1(proxy: Proxy) -> None:
    c, head = await H2Client.upgrade(proxy.port, b"GET", b"/echo?up=1", [(b"X-Up", b"yes")])
    try:
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        r = await c.wait(1)
        assert r.status == 200
        seen = seen_headers(r.body)
        assert seen[":path"] == "/echo?up=1" and seen[":authority"] == "upgrade.example.com"
        assert seen["x-up"] == "yes"
        assert "http2-settings" not in seen and "upgrade" not in seen and "connection" not in seen
        r3 = await c.get(b"/echo?next")
        assert r3.status == 200 and seen_headers(r3.body)[":path"] == "/echo?next"
    finally:
        await c.close()


async def test_upgrade_h2c_carries_the_original_request_body(proxy: Proxy) -> None:
    c, head = await H2Client.upgrade(proxy.port, b"POST", b"/echo", body=b"b" * 5000)
    try:
        assert head.startswith(b"HTTP/1.1 101")
        r = await c.wait(1)
        assert r.status == 200 and json.loads(r.body)["length"] == 5000
    finally:
        await c.close()


async def test_upgrade_h2c_without_http2_settings_is_refused_with_400(proxy: Proxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 ") and b"HTTP2-Settings" in data


# ---- the app's decisions per stream ------------------------------------------------------------

async def test_probes_over_h2_are_answered_by_the_queue_proxy(client: H2Client, backend: H2Backend) -> None:
    r = await client.get(b"/", [(b"user-agent", b"kube-probe/1.30"), (b"k-network-probe", b"queue")])
    assert (r.status, bytes(r.body)) == (200, b"queue")
    r = await client.get(b"/", [(b"k-network-probe", b"probe"), (b"k-network-hash", b"abc")])
    assert r.status == 200 and r.headers[b"k-network-hash"] == b"abc"
    r = await client.get(b"/", [(b"user-agent", b"kube-probe/1.30"), (b"k-network-probe", b"activator")])
    assert r.status == 400
    assert backend.requests == []


async def test_a_client_still_sending_after_a_local_answer_is_told_to_stop_without_error(
        client: H2Client) -> None:
    sid = client.request(b"POST", b"/", [(b"user-agent", b"kube-probe/1.30"), (b"k-network-probe", b"queue")],
                         body=b"", end=False)
    r = await client.wait(sid, lambda r: r.reset is not None)
    assert (r.status, bytes(r.body), r.ended, r.reset) == (200, b"queue", True, NO_ERROR)


async def test_concurrent_streams_on_one_connection_each_count_as_a_request(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    sids = [client.request(b"GET", b"/hold") for _ in range(5)]
    for sid in sids:
        await client.wait(sid, lambda r: bytes(r.body) == b"started")
    conn = only_connection(proxy)
    assert conn.active_streams == 5
    assert proxy.server.in_flight() == 5
    assert proxy.stats.concurrency == 5
    backend.release.set()
    for sid in sids:
        assert (await client.wait(sid)).status == 200
    await until(lambda: proxy.stats.concurrency == 0)
    assert proxy.server.in_flight() == 0
    report = proxy.stats.report(proxy.server.loop.time())
    assert report.request_count == 5


# ---- revision timeouts, per stream, with an explicit clock ------------------------------------

@pytest.mark.parametrize("kind", ["total", "response_start", "idle"])
async def test_a_timeout_before_the_response_starts_gives_504_and_cancels_upstream(
        backend: H2Backend, kind: str) -> None:
    timeouts = {"total": {"timeout": 10.0}, "response_start": {"timeout": 1000.0, "response_start_timeout": 10.0},
                "idle": {"timeout": 1000.0, "idle_timeout": 10.0}}[kind]
    async with running_proxy(backend.port, **timeouts) as proxy:
        c = await H2Client.connect(proxy.port)
        try:
            sid = c.request(b"GET", b"/hold-before")
            await until(lambda: backend.requests, "the request to reach the user container")
            conn = only_connection(proxy)
            (stream,) = conn.streams.values()
            conn.check_deadlines(stream.started_at + 9.9)
            assert not c.responses[sid].done and stream.state == 1
            conn.check_deadlines(stream.started_at + 10.0)
            r = await c.wait(sid)
            assert (r.status, bytes(r.body)) == (504, b"request timeout")
            await until(lambda: backend.resets, "the upstream stream to be cancelled")
            assert backend.resets[0][1] == CANCEL
            assert proxy.stats.concurrency == 0
        finally:
            await c.close()


async def test_a_timeout_after_the_response_started_resets_the_stream(backend: H2Backend) -> None:
    async with running_proxy(backend.port, timeout=10.0) as proxy:
        c = await H2Client.connect(proxy.port)
        try:
            sid = c.request(b"GET", b"/hold")
            await c.wait(sid, lambda r: bytes(r.body) == b"started")
            conn = only_connection(proxy)
            (stream,) = conn.streams.values()
            conn.check_deadlines(stream.started_at + 10.0)
            r = await c.wait(sid)
            assert r.status == 200 and r.reset == CANCEL
            assert stream.status == 200
            await until(lambda: backend.resets, "the upstream stream to be cancelled")
        finally:
            await c.close()


async def test_the_response_start_timeout_no_longer_applies_once_the_response_started(
        backend: H2Backend) -> None:
    async with running_proxy(backend.port, timeout=1000.0, response_start_timeout=10.0) as proxy:
        c = await H2Client.connect(proxy.port)
        try:
            sid = c.request(b"GET", b"/hold")
            await c.wait(sid, lambda r: bytes(r.body) == b"started")
            conn = only_connection(proxy)
            (stream,) = conn.streams.values()
            conn.check_deadlines(stream.started_at + 500.0)
            assert stream.state == 1
            backend.release.set()
            r = await c.wait(sid)
            assert r.status == 200 and r.reset is None and bytes(r.body) == b"starteddone"
        finally:
            await c.close()


# ---- connection lifetime: drain and idle sweep -------------------------------------------------

async def test_drain_sends_goaway_refuses_new_streams_and_closes_after_the_last_one(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    held = client.request(b"GET", b"/hold")
    await client.wait(held, lambda r: bytes(r.body) == b"started")
    assert proxy.server.close_idle_connections() == 0
    await until(lambda: client.goaway is not None, "GOAWAY")
    assert client.goaway == held
    late = client.request(b"GET", b"/echo")
    assert (await client.wait(late)).reset == REFUSED_STREAM
    assert proxy.server.in_flight() == 1
    backend.release.set()
    assert (await client.wait(held)).status == 200
    await asyncio.wait_for(client.closed.wait(), 10)
    assert proxy.server.in_flight() == 0 and proxy.h2_connections() == []


async def test_drain_closes_an_idle_h2_connection_at_once(client: H2Client, proxy: Proxy) -> None:
    await client.get(b"/echo")
    assert proxy.server.close_idle_connections() == 1
    await asyncio.wait_for(client.closed.wait(), 10)


async def test_an_idle_connection_is_swept_after_the_keepalive_limit_but_not_while_streams_run(
        client: H2Client, backend: H2Backend, proxy: Proxy) -> None:
    sid = client.request(b"GET", b"/hold")
    await client.wait(sid, lambda r: bytes(r.body) == b"started")
    conn = only_connection(proxy)
    limit = proxy.server.limits.idle_keepalive
    conn.sweep(conn.last_active + limit + 1000)
    assert not conn.closed
    backend.release.set()
    await client.wait(sid)
    await until(lambda: not conn.streams)
    conn.sweep(conn.last_active + limit - 1)
    assert not conn.closed
    conn.sweep(conn.last_active + limit + 1)
    await asyncio.wait_for(client.closed.wait(), 10)


async def test_a_connection_that_never_sends_its_preface_is_cut_after_the_header_timeout(proxy: Proxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
    await until(lambda: proxy.h2_connections(), "the switch to HTTP/2")
    conn = only_connection(proxy)
    conn.sweep(conn.last_active + proxy.server.limits.header_timeout + 1)
    await asyncio.wait_for(reader.read(), 10)
    writer.close()


async def test_garbage_after_the_preface_closes_only_that_connection(proxy: Proxy, client: H2Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x09\x00\x00\x00\x00\x01garb")
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert (await client.get(b"/echo")).status == 200


# ---- HTTP/1.1 on the same port ------------------------------------------------------------------

async def test_http1_keeps_working_on_the_port_that_serves_h2() -> None:
    async def http1_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhttp1")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(http1_app, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        async with running_proxy(port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            body = await asyncio.wait_for(reader.readexactly(5), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 200") and body == b"http1"
            c = await H2Client.connect(proxy.port)
            r = await c.get(b"/", [(b"k-network-probe", b"probe"), (b"k-network-hash", b"h")])
            await c.close()
            assert r.status == 200
    finally:
        srv.close()
        await srv.wait_closed()


async def test_upgrade_h2c_takes_a_body_that_arrives_after_the_head(proxy: Proxy) -> None:
    c, head = await H2Client.upgrade(proxy.port, b"POST", b"/echo", body=b"", extra_h1=b"Content-Length: 6\r\n",
                                     after=[b"abc", b"def"])
    try:
        assert head.startswith(b"HTTP/1.1 101")
        r = await c.wait(1)
        assert r.status == 200 and json.loads(r.body)["length"] == 6
    finally:
        await c.close()


async def test_upgrade_h2c_with_a_body_beyond_the_stream_window_is_refused_with_413(proxy: Proxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                 b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 10000000\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 413 ")


# ---- the same scenarios on uvloop, which production runs ---------------------------------------

_FIXTURES = {"backend", "proxy", "client"}
_UVLOOP_CASES = sorted(
    name for name, fn in dict(globals()).items()
    if name.startswith("test_") and inspect.iscoroutinefunction(fn)
    and set(inspect.signature(fn).parameters) <= _FIXTURES and set(inspect.signature(fn).parameters)
)


async def _with_fixtures(fn: Callable[..., Awaitable[None]]) -> None:
    wanted = set(inspect.signature(fn).parameters)
    async with running_h2_backend() as b, running_proxy(b.port, timeout=1000.0) as p:
        c = await H2Client.connect(p.port) if "client" in wanted else None
        try:
            await fn(**{k: v for k, v in {"backend": b, "proxy": p, "client": c}.items() if k in wanted})
        finally:
            if c is not None:
                await c.close()


@pytest.mark.parametrize("name", _UVLOOP_CASES)
def test_the_scenario_also_holds_on_uvloop(name: str) -> None:
    import uvloop
    uvloop.run(asyncio.wait_for(_with_fixtures(globals()[name]), 60))
