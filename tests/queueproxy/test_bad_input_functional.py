"""Bad input at the process level: malformed requests get 400 and the connection closes, heads
over the limit get 431, a client sending its head too slowly is cut off, and through all of it
the queue-proxy keeps serving everyone else."""
from __future__ import annotations

import asyncio

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    AGAINST_UPSTREAM,
    Client,
    FakeBackend,
    QueueProxies,
    QueueProxyProcess,
    Reply,
    _backend_server,
    app,
    build_request,
    fetch,
    kdp_only,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


async def still_serving(qp: QueueProxyProcess) -> None:
    assert (await fetch(qp.serving_port, "GET", "/healthy-afterwards")).status == 200


async def answer_and_close(qp: QueueProxyProcess, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw``; return everything the server sends until it closes the connection."""
    async with await Client.connect(qp.serving_port, timeout=timeout) as c:
        await c.send(raw)
        return await c.rest()


def status_of(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), raw[:200]
    return int(line.split()[1])


@pytest.mark.parametrize("raw", [
    pytest.param(b"GARBAGE\r\n\r\n", id="no-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n", id="header-without-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", id="space-in-header-name"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", id="content-length-not-a-number"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                 id="conflicting-content-lengths"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
])
async def test_a_malformed_request_gets_400_and_the_connection_closes(
        app: FakeBackend, qps: QueueProxies, raw: bytes) -> None:
    qp = await qps.get(app.port)
    answer = await answer_and_close(qp, raw)
    assert status_of(answer) == 400
    assert not [r for r in app.requests if r.method == "POST"]  # nothing half-parsed went to the app
    await still_serving(qp)


@pytest.mark.parametrize(("raw", "ours", "upstreams"), [
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, 501,
                 id="gzip-chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 400, 501, id="chunked-twice"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 400, id="two-hosts"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 400, None, id="length-and-chunked",
                 marks=kdp_only("upstream serves it, trusting Transfer-Encoding over Content-Length")),
])
async def test_ambiguous_framing_or_routing_is_refused_before_the_app_sees_it(
        app: FakeBackend, qps: QueueProxies, raw: bytes, ours: int, upstreams: int | None) -> None:
    qp = await qps.get(app.port)
    answer = await answer_and_close(qp, raw)
    assert status_of(answer) == (upstreams if AGAINST_UPSTREAM else ours)
    assert app.requests == []
    await still_serving(qp)


async def test_an_unknown_http_version_is_refused(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    answer = await answer_and_close(qp, b"GET / HTTP/9.9\r\nHost: a\r\n\r\n")
    assert status_of(answer) == (505 if AGAINST_UPSTREAM else 400)
    assert app.requests == []
    await still_serving(qp)


async def test_a_broken_chunked_body_fails_the_request_and_closes_the_connection(
        app: FakeBackend, qps: QueueProxies) -> None:
    """The head was fine and went upstream; the body then turns out malformed. Upstream answers
    502 (its proxy's body read failed); we answer 400, the client's mistake."""
    qp = await qps.get(app.port)
    answer = await answer_and_close(qp, b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"3\r\nabc\r\nzz\r\n")
    assert status_of(answer) == (502 if AGAINST_UPSTREAM else 400)
    await still_serving(qp)


@pytest.mark.parametrize("bad", [
    pytest.param(b"\x16\x03\x01 not http at all\r\n\r\n", id="garbage"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", id="bad-header"),
])
async def test_a_bad_request_behind_a_slow_good_one_is_refused_after_the_good_ones_answer(
        app: FakeBackend, qps: QueueProxies, bad: bytes) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(body=req.target.encode(), delay=0.3 if req.target == "/first" else 0)
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/first") + build_request("GET", "/second") + bad)
        first, second = await c.response(), await c.response()
        refused = await c.response()
        assert await c.closed(2)
    assert (first.status, first.body) == (200, b"/first")
    assert (second.status, second.body) == (200, b"/second")
    assert refused.status == 400
    await still_serving(qp)


async def test_garbage_after_a_good_request_gets_its_answer_then_400(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    answer = await answer_and_close(qp, build_request("GET", "/good") + b"\x16\x03\x01 not http at all\r\n\r\n")
    first, _, rest = answer.partition(b"\r\n\r\nok")
    assert status_of(first) == 200
    assert status_of(rest) == 400
    await still_serving(qp)


async def test_a_head_over_the_limit_gets_431_and_the_connection_closes(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    big = "v" * (qp.max_header_bytes + 1024)
    answer = await answer_and_close(qp, build_request("GET", "/", [("X-Big", big)]), timeout=10)
    assert status_of(answer) == 431
    many = [(f"X-H{i}", "v" * 100) for i in range(qp.max_header_bytes // 100 + 64)]
    answer = await answer_and_close(qp, build_request("GET", "/", many), timeout=10)
    assert status_of(answer) == 431
    assert app.requests == []
    await still_serving(qp)


async def test_a_head_just_under_the_limit_is_served(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    value = "v" * (qp.max_header_bytes // 2)
    resp = await fetch(qp.serving_port, "GET", "/", [("X-Large", value)], timeout=10)
    assert resp.status == 200
    assert app.requests[-1].header("x-large") == value


@pytest.mark.parametrize("partial", [
    pytest.param(b"", id="nothing"),
    pytest.param(b"GET /slow HTTP/1.1\r\nHost: a\r\n", id="half-a-head"),
])
async def test_a_client_that_sends_its_head_too_slowly_is_cut_off(
        app: FakeBackend, qps: QueueProxies, partial: bytes) -> None:
    qp = await qps.get(app.port)
    async with await Client.connect(qp.serving_port, timeout=qp.header_timeout + 5) as c:
        await c.send(partial)
        assert await c.closed(qp.header_timeout + 3), "the connection was left open"
    assert app.requests == []
    await still_serving(qp)


async def test_a_client_trickling_header_bytes_is_cut_off_at_the_header_timeout(
        app: FakeBackend, qps: QueueProxies) -> None:
    """Slowloris: one byte at a time keeps a per-read timeout happy; the head as a whole must
    still arrive in time."""
    qp = await qps.get(app.port)
    limit = qp.header_timeout
    loop = asyncio.get_running_loop()
    async with await Client.connect(qp.serving_port, timeout=limit + 5) as c:
        await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
        t0 = loop.time()
        cut = False
        while loop.time() - t0 < limit + 3:
            try:
                await c.send(b"X-Drip: y\r\n")
            except (ConnectionError, TimeoutError):
                cut = True
                break
            if await c.closed(limit / 10):
                cut = True
                break
        assert cut, "a trickling client kept its connection past the header timeout"
    assert app.requests == []
    await still_serving(qp)


async def test_many_bad_clients_at_once_do_not_stop_good_ones(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    bad = [answer_and_close(qp, b"NOT HTTP\r\n\r\n") for _ in range(30)]
    good = [fetch(qp.serving_port, "GET", f"/{i}") for i in range(30)]
    results = await asyncio.gather(*bad, *good)
    assert all(status_of(r) == 400 for r in results[:30])
    assert [r.status for r in results[30:]] == [200] * 30
