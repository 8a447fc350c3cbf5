"""The three revision timeouts and user-container failures at the process level (contract §1.8,
§3.1 item 8): 504 ``request timeout`` before the response starts, 502 when the app is down or
fails before answering.

Once a response has started, upstream appends the text ``request timeout`` to the body and ends
it as if it were complete; we cut the connection instead, so a client can tell a truncated body
from a whole one (our documented choice, tested here with ``kdp_only``; upstream's behaviour is
pinned by the ``upstream_only`` twins)."""
from __future__ import annotations

import asyncio

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    BackendRequest,
    Client,
    FakeBackend,
    QueueProxies,
    Reply,
    _backend_server,
    app,
    build_request,
    fetch,
    free_port,
    kdp_only,
    qps,
    upstream_only,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

TOTAL = "REVISION_TIMEOUT_SECONDS"
START = "REVISION_RESPONSE_START_TIMEOUT_SECONDS"
IDLE = "REVISION_IDLE_TIMEOUT_SECONDS"


def stalls_then_streams(first: bytes, stall: float, rest: list[bytes] = (), gap: float = 0.0):  # noqa: ANN201
    """A chunked response: ``first`` at once, then nothing for ``stall`` seconds, then ``rest``."""
    async def script(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(first), first))
        await asyncio.sleep(stall)
        for c in rest:
            await req.write(b"%x\r\n%s\r\n" % (len(c), c))
            await asyncio.sleep(gap)
        await req.write(b"0\r\n\r\n")
    return script


async def timed(coro):  # noqa: ANN001, ANN201
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await coro
    return result, loop.time() - t0


# ---- before the response starts: 504 ---------------------------------------------------------


@pytest.mark.parametrize("env", [
    pytest.param({TOTAL: "1"}, id="total"),
    pytest.param({TOTAL: "10", START: "1"}, id="response-start"),
    pytest.param({TOTAL: "10", IDLE: "1"}, id="idle-before-first-byte"),
])
async def test_a_slow_app_gets_504_request_timeout(app: FakeBackend, qps: QueueProxies, env: dict[str, str]) -> None:
    qp = await qps.get(app.port, **env)
    app.script = lambda req: Reply(delay=3.0, body=b"too late")
    resp, took = await timed(fetch(qp.serving_port, "GET", "/slow"))
    assert (resp.status, resp.body) == (504, b"request timeout")
    assert took >= 0.9
    app.script = lambda req: Reply(body=b"fine")
    assert (await fetch(qp.serving_port, "GET", "/next")).body == b"fine"


async def test_time_queued_in_the_breaker_counts_against_the_timeout(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port, CONTAINER_CONCURRENCY="1", **{TOTAL: "1"})
    app.script = lambda req: Reply(delay=3.0)
    first = asyncio.ensure_future(fetch(qp.serving_port, "GET", "/holder"))
    await app.wait_requests(1)
    queued = await fetch(qp.serving_port, "GET", "/queued")
    assert (queued.status, queued.body) == (504, b"request timeout")
    assert (await first).status == 504


async def test_a_response_that_starts_in_time_may_take_longer_than_the_start_timeout(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port, **{TOTAL: "10", START: "1"})
    app.script = stalls_then_streams(b"head-", 1.5, [b"tail"])
    resp = await fetch(qp.serving_port, "GET", "/")
    assert (resp.status, resp.body) == (200, b"head-tail")


async def test_the_idle_timeout_is_rearmed_by_every_write(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port, **{TOTAL: "10", IDLE: "1"})
    app.script = stalls_then_streams(b"a", 0.5, [b"b", b"c", b"d"], gap=0.5)
    resp = await fetch(qp.serving_port, "GET", "/")
    assert (resp.status, resp.body) == (200, b"abcd")


# ---- after the response started -------------------------------------------------------------


@kdp_only("a timeout after the response started cuts the connection instead of appending text")
@pytest.mark.parametrize("env", [pytest.param({TOTAL: "1"}, id="total"),
                                 pytest.param({TOTAL: "10", IDLE: "1"}, id="idle")])
async def test_a_timeout_after_the_response_started_cuts_the_connection(
        app: FakeBackend, qps: QueueProxies, env: dict[str, str]) -> None:
    qp = await qps.get(app.port, **env)
    app.script = stalls_then_streams(b"partial", 3.0, [b"never"])
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/"))
        resp = await c.head()
        assert resp.status == 200 and resp.chunked
        got = b""
        with pytest.raises(asyncio.IncompleteReadError):
            async for piece in c.body_chunks(resp):
                got += piece
        assert got == b"partial"
        assert await c.closed(1)


@upstream_only("upstream ends a started response with the text 'request timeout' as if complete")
@pytest.mark.parametrize("env", [pytest.param({TOTAL: "1"}, id="total"),
                                 pytest.param({TOTAL: "10", IDLE: "1"}, id="idle")])
async def test_upstream_appends_request_timeout_to_a_started_response(
        app: FakeBackend, qps: QueueProxies, env: dict[str, str]) -> None:
    qp = await qps.get(app.port, **env)
    app.script = stalls_then_streams(b"partial", 3.0, [b"never"])
    resp = await fetch(qp.serving_port, "GET", "/")
    assert (resp.status, resp.body) == (200, b"partialrequest timeout")


# ---- the user container fails: 502 ----------------------------------------------------------


async def test_an_app_that_is_not_listening_gets_502(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(free_port(), SERVING_READINESS_PROBE="")
    resp = await fetch(qp.serving_port, "GET", "/")
    assert resp.status == 502
    assert b"refused" in resp.body.lower()


async def test_an_app_that_closes_without_answering_gets_502(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(drop=True)
    assert (await fetch(qp.serving_port, "GET", "/")).status == 502
    assert (await fetch(qp.serving_port, "POST", "/", body=b"payload")).status == 502
    app.script = lambda req: Reply(body=b"back")
    assert (await fetch(qp.serving_port, "GET", "/")).body == b"back"


async def test_an_app_that_dies_mid_response_leaves_a_visibly_cut_response(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = lambda req: Reply(body=b"x" * 100000, cut_after=1000)
    async with await Client.connect(qp.serving_port) as c:
        await c.send(build_request("GET", "/"))
        raw = await c.rest()  # until the proxy closes the connection
    # Either nothing at all (upstream: the head was still in its buffer) or a head announcing
    # the full length followed by less than that: never something that looks complete.
    head, _, body = raw.partition(b"\r\n\r\n")
    if raw:
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"content-length: 100000" in head.lower()
        assert len(body) < 100000


async def test_a_malformed_answer_from_the_app_gets_502(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)

    async def garbage(req: BackendRequest) -> None:
        await req.write(b"this is not HTTP\r\n\r\n")
        req.writer.close()

    app.script = garbage
    assert (await fetch(qp.serving_port, "GET", "/")).status == 502


async def test_an_app_that_quietly_closes_idle_connections_causes_no_errors(
        app: FakeBackend, qps: QueueProxies) -> None:
    """Apps often close keep-alive connections after each answer or an idle timeout without
    saying so: the proxy must not hand a request to a connection the app already closed."""
    qp = await qps.get(app.port)

    async def answer_then_close(req: BackendRequest) -> None:
        await req.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        req.writer.close()

    app.script = answer_then_close
    async with await Client.connect(qp.serving_port) as c:
        statuses = [(await c.request("GET", f"/{i}")).status for i in range(30)]
    assert statuses == [200] * 30


async def test_a_restarted_app_is_reached_again(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    for _ in range(3):
        assert (await fetch(qp.serving_port, "GET", "/")).status == 200
    await app.stop()
    assert (await fetch(qp.serving_port, "GET", "/")).status == 502
    await app.start(app.port)
    assert [(await fetch(qp.serving_port, "GET", "/")).status for _ in range(3)] == [200] * 3
