"""The queue-proxy as an HTTP/1.1 reverse proxy, at the process level: keep-alive, pipelining,
bodies streamed both ways, chunked and SSE responses flushed as they come, the headers on the
way in and out (contract §1.10, §1.11)."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    AGAINST_UPSTREAM,
    BackendRequest,
    Client,
    FakeBackend,
    QueueProxies,
    Reply,
    _backend_server,
    after_body,
    app,
    build_request,
    fetch,
    kdp_only,
    qps,
    upstream_only,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


def echo_target(req: BackendRequest) -> Reply:
    return Reply(body=req.target.encode())


# ---- connections ----------------------------------------------------------------------------


async def test_a_client_connection_is_kept_alive_across_requests(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = echo_target
    async with await Client.connect(qp.serving_port) as c:
        for i in range(5):
            resp = await c.request("GET", f"/n/{i}")
            assert (resp.status, resp.body) == (200, f"/n/{i}".encode())
            assert (resp.header("connection") or "").lower() != "close"
    assert len(app.requests) == 5


async def test_upstream_connections_are_reused_between_requests(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    await fetch(qp.serving_port, "GET", "/warm")
    before = app.connections
    for i in range(6):
        assert (await fetch(qp.serving_port, "GET", f"/{i}")).status == 200
    assert app.connections - before <= 1


async def test_pipelined_requests_are_answered_in_order(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    # The first is the slowest: answers must still come back in request order.
    delays = {"/p/0": 0.3, "/p/1": 0.0, "/p/2": 0.1}
    app.script = lambda req: Reply(body=req.target.encode(), delay=delays[req.target])
    async with await Client.connect(qp.serving_port) as c:
        await c.send(b"".join(build_request("GET", t) for t in delays))
        bodies = [(await c.response()).body for _ in delays]
    assert bodies == [t.encode() for t in delays]


async def test_pipelined_requests_with_bodies_each_reach_the_app_intact(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = after_body(lambda req: Reply(body=req.body[::-1]))
    payloads = [b"first body", b"", b"x" * 70000, b"last"]
    async with await Client.connect(qp.serving_port) as c:
        await c.send(b"".join(build_request("POST", "/rev", body=p) for p in payloads))
        bodies = [(await c.response()).body for _ in payloads]
    assert bodies == [p[::-1] for p in payloads]


async def test_an_http10_client_gets_a_complete_answer_and_the_connection_closes(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(chunks=[b"part1-", b"part2"])
    async with await Client.connect(qp.serving_port) as c:
        await c.send(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
        raw = await c.rest()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert b"chunked" not in head.lower()
    assert body == b"part1-part2"


async def test_an_http10_keep_alive_client_keeps_its_connection(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = echo_target
    async with await Client.connect(qp.serving_port) as c:
        for target in ("/ka1", "/ka2"):
            await c.send(f"GET {target} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n".encode())
            resp = await c.response()
            assert resp.body == target.encode()
            assert (resp.header("connection") or "").lower() == "keep-alive"
            assert resp.header("content-length") == str(len(target))


async def test_connection_close_from_the_client_is_honoured(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    async with await Client.connect(qp.serving_port) as c:
        resp = await c.request("GET", "/bye", [("Connection", "close")])
        assert resp.status == 200 and (resp.header("connection") or "").lower() == "close"
        assert await c.closed(2)


async def test_an_http11_request_without_host_gets_400(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    async with await Client.connect(qp.serving_port) as c:
        await c.send(b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n")
        resp = await c.response()
    assert resp.status == 400
    assert app.requests == []


@kdp_only("upstream holds an early answer back while the client still owes request body bytes")
async def test_an_app_answering_before_reading_an_upload_gets_its_answer_through(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)

    async def refuse(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
        req.writer.close()

    app.script = refuse
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("POST", "/upload", [("Content-Length", str(8 << 20))]) + b"x" * 65536)
        resp = await c.response()
    assert (resp.status, resp.body) == (413, b"too big\n")


async def test_trailers_of_a_chunked_response_reach_the_client(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)

    async def with_trailer(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                        b"4\r\nbody\r\n0\r\nX-Checksum: abc\r\n\r\n")

    app.script = with_trailer
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/t"))
        resp = await c.head()
        assert resp.status == 200 and resp.chunked
        async with asyncio.timeout(5):
            rest = await c.reader.readuntil(b"0\r\n")  # the body's one chunk, then the last chunk
            trailer = await c.reader.readuntil(b"\r\n\r\n")
    assert rest == b"4\r\nbody\r\n0\r\n"
    assert trailer == b"X-Checksum: abc\r\n\r\n"


async def test_head_and_bodiless_answers_keep_the_connection_usable(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)

    def script(req: BackendRequest) -> Reply:
        if req.target == "/204":
            return Reply(status=204, body=b"")
        if req.target == "/304":
            return Reply(status=304, body=b"")
        return Reply(body=b"0123456789")

    app.script = script
    async with await Client.connect(qp.serving_port) as c:
        resp = await c.request("HEAD", "/head")
        assert resp.status == 200 and resp.header("content-length") == "10" and resp.body == b""
        assert (await c.request("GET", "/204")).status == 204
        assert (await c.request("GET", "/304")).status == 304
        last = await c.request("GET", "/after")
        assert (last.status, last.body) == (200, b"0123456789")


async def test_response_headers_and_status_pass_through(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(status=418, body=b"short and stout", headers=[
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-App", "yes"), ("Content-Type", "text/teapot")])
    resp = await fetch(qp.serving_port, "GET", "/tea")
    assert resp.status == 418 and resp.body == b"short and stout"
    assert resp.all("set-cookie") == ["a=1", "b=2"]
    assert resp.header("x-app") == "yes" and resp.header("content-type") == "text/teapot"


async def test_the_request_target_reaches_the_app_unchanged(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = echo_target
    for target in ("/", "/a/b?x=1&y=2", "/sp%20ace/%E2%9C%93?q=%2F&q=2", "/a%2Fb/c"):
        resp = await fetch(qp.serving_port, "GET", target)
        assert resp.body == target.encode(), target


async def test_request_methods_pass_through(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = after_body(lambda req: Reply(body=f"{req.method} {len(req.body)}".encode()))
    for method, body in (("POST", b"abc"), ("PUT", b"abcd"), ("DELETE", None), ("PATCH", b"x"),
                         ("OPTIONS", None), ("PROPFIND", b"<d/>"), ("MKCOL", None)):
        resp = await fetch(qp.serving_port, method, "/m", body=body)
        assert resp.body == f"{method} {len(body or b'')}".encode()


@kdp_only("upstream holds an early answer back while the client still owes request body bytes")
async def test_an_upstream_connection_whose_request_body_was_cut_short_is_not_reused(
        app: FakeBackend, qps: QueueProxies) -> None:
    """The app answers an upload early and keeps its connection, still expecting the rest of the
    body; the proxy stops sending it (the client's connection closes). That upstream connection
    must not carry the next request: the app would read it as body bytes."""
    qp = await qps.get(app.port)

    async def early(req: BackendRequest) -> Reply | None:
        if req.method == "POST":
            await req.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            return None  # the harness then reads the rest of the body, as servers do
        return Reply(body=b"next")

    app.script = early
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("POST", "/upload", [("Content-Length", "100000")]) + b"x" * 1000)
        resp = await c.response()
        assert (resp.status, resp.body) == (200, b"early")
    for _ in range(3):
        resp = await fetch(qp.serving_port, "GET", "/after", timeout=3)
        assert (resp.status, resp.body) == (200, b"next")


async def test_an_unregistered_method_token_passes_through(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(body=req.method.encode())
    resp = await fetch(qp.serving_port, "FROBNICATE", "/m")
    assert (resp.status, resp.body) == (200, b"FROBNICATE")


# ---- streaming bodies -------------------------------------------------------------------------


async def test_a_large_upload_streams_through_without_being_buffered(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    size, piece = 48 << 20, bytes(range(256)) * 256  # 48 MiB in 64 KiB pieces

    async def slow_reader(req: BackendRequest) -> Reply:
        h, n = hashlib.sha256(), 0
        while data := await req.read(65536):
            h.update(data)
            n += len(data)
            await asyncio.sleep(0.0005)  # a slower reader than the client: the proxy must push back
        return Reply(body=f"{n} {h.hexdigest()}".encode())

    app.script = slow_reader
    rss_before = qp.memory_kib("VmRSS")
    expected = hashlib.sha256(piece * (size // len(piece))).hexdigest()
    async with await Client.connect(qp.serving_port, timeout=30) as c:
        await c.send(build_request("POST", "/upload", [("Content-Length", str(size))]))
        for _ in range(size // len(piece)):
            c.writer.write(piece)
            await c.writer.drain()
        resp = await c.response()
    assert resp.body.decode() == f"{size} {expected}"
    assert qp.memory_kib("VmHWM") - rss_before < 24 * 1024, "the proxy held a large part of the body"


async def test_a_large_download_streams_through_without_being_buffered(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    size, piece = 48 << 20, bytes(range(256)) * 256

    async def big(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            req.writer.write(piece)
            await req.writer.drain()

    app.script = big
    rss_before = qp.memory_kib("VmRSS")
    h, n = hashlib.sha256(), 0
    async with await Client.connect(qp.serving_port, timeout=30) as c:
        await c.send(build_request("GET", "/download"))
        resp = await c.head()
        async for data in c.body_chunks(resp):
            h.update(data)
            n += len(data)
            await asyncio.sleep(0.0005)  # a slow client: the proxy must stop reading the app
    assert n == size and h.hexdigest() == hashlib.sha256(piece * (size // len(piece))).hexdigest()
    assert qp.memory_kib("VmHWM") - rss_before < 24 * 1024, "the proxy held a large part of the body"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_slowly_dripped_request_body_reaches_the_app_piece_by_piece(
        app: FakeBackend, qps: QueueProxies, framing: str) -> None:
    """Lockstep: the client sends the next piece only once the app has seen the previous one,
    which can only finish if the proxy forwards each piece as it comes."""
    qp = await qps.get(app.port)
    pieces = [b"drip-%d;" % i for i in range(5)]
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    async def reader(req: BackendRequest) -> Reply:
        got = b""
        while data := await req.read():
            got += data
            await seen.put(data)
        return Reply(body=got)

    app.script = reader
    async with await Client.connect(qp.serving_port) as c:
        if framing == "chunked":
            await c.send(build_request("POST", "/drip", [("Transfer-Encoding", "chunked")]))
        else:
            await c.send(build_request("POST", "/drip", [("Content-Length", str(sum(map(len, pieces))))]))
        for p in pieces:
            await c.send(b"%x\r\n%s\r\n" % (len(p), p) if framing == "chunked" else p)
            got = b""
            async with asyncio.timeout(5):
                while got != p:
                    got += await seen.get()
        if framing == "chunked":
            await c.send(b"0\r\n\r\n")
        resp = await c.response()
    assert resp.body == b"".join(pieces)


async def test_chunked_response_pieces_reach_the_client_as_they_are_written(
        app: FakeBackend, qps: QueueProxies) -> None:
    """Lockstep the other way: the app writes the next chunk only after the client got the last."""
    qp = await qps.get(app.port)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def stream(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(5):
            await req.write(b"%x\r\n%s\r\n" % (len(b"piece-%d" % i), b"piece-%d" % i))
            async with asyncio.timeout(5):
                assert (await received.get()).endswith(b"piece-%d" % i)
        await req.write(b"0\r\n\r\n")

    app.script = stream
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/stream"))
        resp = await c.head()
        assert resp.status == 200
        got = b""
        async for data in c.body_chunks(resp):
            got += data
            await received.put(got)
    assert got == b"".join(b"piece-%d" % i for i in range(5))


async def test_server_sent_events_are_flushed_one_by_one(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    async def sse(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(4):
            event = b"id: %d\ndata: tick %d\n\n" % (i, i)
            await req.write(b"%x\r\n%s\r\n" % (len(event), event))
            async with asyncio.timeout(5):
                assert await delivered.get() == f"tick {i}"
        await req.write(b"0\r\n\r\n")

    app.script = sse
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/events", [("Accept", "text/event-stream")]))
        resp = await c.head()
        assert resp.header("content-type") == "text/event-stream"
        buf = b""
        async for data in c.body_chunks(resp):
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                await delivered.put(event.split(b"data: ")[1].decode())
    assert delivered.empty()


async def test_a_response_without_length_is_delivered_whole(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(body=b"until the end" * 1000, close_delimited=True)
    async with await Client.connect(qp.serving_port) as c:
        first = await c.request("GET", "/eof")
        assert first.status == 200 and first.body == b"until the end" * 1000
        if first.chunked:  # re-framed for an HTTP/1.1 client: the connection stays usable
            app.script = lambda req: Reply(body=b"again")
            assert (await c.request("GET", "/again")).body == b"again"


async def test_expect_100_continue_is_answered_and_the_body_follows(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = after_body(lambda req: Reply(body=b"got " + req.body))
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("POST", "/up", [("Expect", "100-continue"), ("Content-Length", "5")]))
        interim = await c.head()
        assert interim.status == 100
        await c.send(b"hello")
        resp = await c.response()
    assert (resp.status, resp.body) == (200, b"got hello")


async def test_expect_100_continue_works_with_an_app_that_ignores_it(app: FakeBackend, qps: QueueProxies) -> None:
    """Many apps never send 100 Continue themselves; upstream's Go server sends it as soon as
    the proxy starts reading the body, so clients that wait for it (curl) are not stalled."""
    qp = await qps.get(app.port)
    app.honor_expect = False
    app.script = after_body(lambda req: Reply(body=b"got " + req.body))
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("POST", "/up", [("Expect", "100-continue"), ("Content-Length", "5")]))
        interim = await c.head()
        assert interim.status == 100
        await c.send(b"hello")
        resp = await c.response()
    assert (resp.status, resp.body) == (200, b"got hello")


# ---- headers on the way in ----------------------------------------------------------------------


async def sent_upstream(qp_port: int, app: FakeBackend, headers: list[tuple[str, str]],
                        host: str | None = "app.example.com") -> BackendRequest:
    resp = await fetch(qp_port, "GET", "/h", headers, host=host)
    assert resp.status == 200, resp
    return app.requests[-1]


async def test_hop_by_hop_request_headers_are_stripped(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [
        ("Connection", "keep-alive, X-Hop-Custom"), ("X-Hop-Custom", "1"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"), ("Upgrade", "something"), ("Trailer", "X-T"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("X-Kept", "yes"), ("Accept", "*/*")])
    names = req.names()
    for gone in ("x-hop-custom", "keep-alive", "proxy-connection", "upgrade", "trailer", "proxy-authorization"):
        assert gone not in names, gone
    assert req.header("x-kept") == "yes" and req.header("accept") == "*/*"
    assert (req.header("connection") or "keep-alive").lower() == "keep-alive"
    assert req.header("host") == "app.example.com"
    assert req.header("accept-encoding") is None  # the proxy asks for no compression of its own


async def test_hop_by_hop_response_headers_are_stripped(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(body=b"x", headers=[
        ("Connection", "X-Resp-Hop"), ("X-Resp-Hop", "1"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"), ("X-Resp-Kept", "yes")])
    resp = await fetch(qp.serving_port, "GET", "/")
    names = {k.lower() for k, _ in resp.headers}
    assert not names & {"x-resp-hop", "keep-alive", "proxy-authenticate"}
    assert resp.header("x-resp-kept") == "yes" and resp.body == b"x"


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param([], "127.0.0.1", id="none"),
    pytest.param([("X-Forwarded-For", "203.0.113.7")], "203.0.113.7, 127.0.0.1", id="one"),
    pytest.param([("X-Forwarded-For", "203.0.113.7, 198.51.100.2")], "203.0.113.7, 198.51.100.2, 127.0.0.1",
                 id="list"),
    pytest.param([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2")],
                 "203.0.113.7, 198.51.100.2, 127.0.0.1", id="two-lines"),
])
async def test_the_client_address_is_appended_to_x_forwarded_for(
        app: FakeBackend, qps: QueueProxies, given: list[tuple[str, str]], expected: str) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, given)
    assert req.all("x-forwarded-for") == [expected]


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param([("X-Forwarded-For", "203.0.113.7")], "for=203.0.113.7", id="for"),
    pytest.param([("X-Forwarded-For", "203.0.113.7, 198.51.100.2"), ("X-Forwarded-Host", "shop.example"),
                  ("X-Forwarded-Proto", "https")],
                 "for=203.0.113.7;host=shop.example;proto=https, for=198.51.100.2", id="all"),
    pytest.param([("X-Forwarded-Proto", "https")], "proto=https", id="proto-only"),
    pytest.param([("X-Forwarded-Host", "h.example"), ("X-Forwarded-Proto", "http")], "host=h.example;proto=http",
                 id="host-proto"),
    pytest.param([("X-Forwarded-For", "2001:db8::1,10.0.0.1 , ::1")],
                 'for="[2001:db8::1]", for=10.0.0.1, for="[::1]"', id="ipv6"),
    pytest.param([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2"),
                  ("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
                 "for=203.0.113.7;proto=https", id="first-lines-only"),
])
async def test_a_forwarded_header_is_built_from_x_forwarded_headers(
        app: FakeBackend, qps: QueueProxies, given: list[tuple[str, str]], expected: str) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, given)
    assert req.all("forwarded") == [expected]


async def test_an_existing_forwarded_header_is_left_alone(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [("Forwarded", "for=192.0.2.1;proto=http"),
                                                     ("X-Forwarded-For", "203.0.113.7")])
    assert req.all("forwarded") == ["for=192.0.2.1;proto=http"]


async def test_no_forwarded_header_is_invented_without_x_forwarded_headers(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [])
    assert req.header("forwarded") is None


async def test_k_original_host_is_restored_as_the_host(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [("K-Original-Host", "hello.default.example.com")],
                              host="10.0.0.5:8012")
    assert req.all("host") == ["hello.default.example.com"]
    assert req.header("k-original-host") is None


async def test_knative_serving_headers_are_stripped_and_k_proxy_request_is_kept(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [
        ("Knative-Serving-Revision", "rev-1"), ("Knative-Serving-Namespace", "ns"),
        ("K-Proxy-Request", "activator"), ("Knative-Serving-Tag", "blue")])
    assert req.header("knative-serving-revision") is None and req.header("knative-serving-namespace") is None
    assert req.header("k-proxy-request") == "activator"
    assert req.header("knative-serving-tag") == "blue"
    assert req.header("host") == "app.example.com"


async def test_a_request_without_user_agent_reaches_the_app_without_one(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [])
    assert req.header("user-agent") in (None, "")


async def test_a_kubelet_probe_header_bypasses_the_host_rewrite(app: FakeBackend, qps: QueueProxies) -> None:
    """Upstream's kubelet bypass (K-Kubelet-Probe without a health User-Agent): straight to the
    app, Host untouched."""
    qp = await qps.get(app.port)
    req = await sent_upstream(qp.serving_port, app, [("K-Kubelet-Probe", "queue"),
                                                     ("K-Original-Host", "other.example.com")])
    assert req.header("host") == "app.example.com"
