"""containerConcurrency at the process level (contract §1.7, §3.1 item 8): CC slots, a queue of
10 x CC behind them, and an immediate 503 beyond; 0 means unlimited."""
from __future__ import annotations

import asyncio

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    AGAINST_UPSTREAM,
    BackendRequest,
    Client,
    FakeBackend,
    QueueProxies,
    QueueProxyProcess,
    Reply,
    _backend_server,
    app,
    build_request,
    eventually,
    fetch,
    fetch_prometheus,
    fetch_stat,
    kdp_only,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


def gated(gate: asyncio.Event, finished: list[str] | None = None,
          done_before: dict[str, list[str]] | None = None):  # noqa: ANN201
    """Each request waits for ``gate``; ``finished`` lists the answered ones in order and
    ``done_before[target]`` what had been answered when that request arrived."""
    async def script(req: BackendRequest) -> Reply | None:
        if done_before is not None and finished is not None:
            done_before[req.target] = list(finished)
        async with asyncio.timeout(10):
            await gate.wait()
        await req.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(req.target), req.target.encode()))
        if finished is not None:
            finished.append(req.target)
        return None
    return script


async def open_requests(qp: QueueProxyProcess, targets: list[str]) -> list[Client]:
    clients = []
    for t in targets:
        c = await Client.connect(qp.serving_port, timeout=10)
        await c.send(build_request("GET", t))
        clients.append(c)
    return clients


async def wait_concurrency(qp: QueueProxyProcess, at_least: float) -> None:
    """Until ``at_least`` requests are inside the queue-proxy, holding or waiting for a slot.
    Ours says so at once in the kn_serving_queue_depth gauge; upstream's gauge is only set when
    a request starts being proxied, so there we wait for a whole 1 s stats window at that
    concurrency (queued requests count: they are counted before the breaker)."""
    if AGAINST_UPSTREAM:
        async def high() -> bool:
            return (await fetch_stat(qp))[1].average_concurrent_requests >= at_least - 0.01
    else:
        async def high() -> bool:
            depth = (await fetch_prometheus(qp)).get("kn_serving_queue_depth")
            return depth is not None and depth.samples[0].value >= at_least
    await eventually(high, timeout=5, interval=0.05, what=f"{at_least} requests in the queue-proxy")


async def test_with_concurrency_one_a_second_request_waits_for_the_first(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="1")
    gate, finished, done_before = asyncio.Event(), [], {}
    app.script = gated(gate, finished, done_before)
    clients = await open_requests(qp, ["/first"])
    await app.wait_requests(1)
    clients += await open_requests(qp, ["/second"])
    await asyncio.sleep(0.3)
    assert [r.target for r in app.requests] == ["/first"], "the second request got past the breaker"
    gate.set()
    responses = [await c.response() for c in clients]
    assert [r.body for r in responses] == [b"/first", b"/second"]
    assert done_before["/second"] == ["/first"]
    for c in clients:
        await c.close()


@kdp_only("a response tells how long its request waited for a slot (Server-Timing)")
async def test_a_response_says_how_long_its_request_waited_in_the_queue(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="1")
    gate = asyncio.Event()
    app.script = gated(gate)
    clients = await open_requests(qp, ["/first"])
    await app.wait_requests(1)
    clients += await open_requests(qp, ["/second"])
    try:
        await wait_concurrency(qp, 2)
        await asyncio.sleep(0.2)  # the second waits at least this long for the slot
        gate.set()
        first, second = [await c.response() for c in clients]
        assert first.header("Server-Timing") is None  # straight through: nothing added
        timing = second.header("Server-Timing")
        assert timing is not None and timing.startswith("queue-proxy-wait;dur=")
        assert 200 <= float(timing.split("dur=")[1]) < 10_000
    finally:
        gate.set()
        for c in clients:
            await c.close()


@pytest.mark.parametrize("cc", [1, 3])
async def test_beyond_the_slots_and_a_queue_of_ten_times_cc_requests_get_503_at_once(
        app: FakeBackend, qps: QueueProxies, cc: int) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY=str(cc))
    gate = asyncio.Event()
    app.script = gated(gate)
    admitted = 11 * cc
    clients = await open_requests(qp, [f"/{i}" for i in range(admitted)])
    try:
        await app.wait_requests(cc)
        await wait_concurrency(qp, admitted)
        assert len(app.requests) == cc
        rejected = await fetch(qp.serving_port, "GET", "/one-too-many", timeout=3)
        assert (rejected.status, rejected.body) == (503, b"pending request queue full\n")
        gate.set()
        results = [await c.response() for c in clients]
        assert [r.status for r in results] == [200] * admitted
        assert sorted(r.body for r in results) == sorted(f"/{i}".encode() for i in range(admitted))
        assert (await fetch(qp.serving_port, "GET", "/later")).status == 200
    finally:
        gate.set()
        for c in clients:
            await c.close()


async def test_a_client_that_gives_up_while_queued_frees_its_place(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="1")
    gate = asyncio.Event()
    app.script = gated(gate)
    holder = await open_requests(qp, ["/holder"])
    waiters: list[Client] = []
    quitters = await open_requests(qp, [f"/quit{i}" for i in range(10)])
    try:
        await wait_concurrency(qp, 11)
        assert (await fetch(qp.serving_port, "GET", "/full", timeout=3)).status == 503
        for c in quitters:
            await c.close()

        async def admitted() -> Client | None:
            # Upstream notices a gone client a moment later than we do: try a few times.
            c = (await open_requests(qp, ["/waiter"]))[0]
            waiters.append(c)
            try:
                refused = await asyncio.wait_for(c.response(), 0.3)
            except TimeoutError:
                return c  # no answer while the gate is shut: it waits in the queue
            assert refused.status == 503
            return None

        waiter = await eventually(admitted, timeout=3, interval=0.1, what="a place in the queue")
        gate.set()
        assert (await holder[0].response()).body == b"/holder"
        assert (await waiter.response()).body == b"/waiter"
        if not AGAINST_UPSTREAM:  # upstream may still hand a departed client's request to the app
            assert not any(r.target.startswith("/quit") for r in app.requests)
    finally:
        gate.set()
        for c in (*holder, *waiters):
            await c.close()


async def test_concurrency_zero_means_no_limit(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="0")
    gate = asyncio.Event()
    app.script = gated(gate)
    clients = await open_requests(qp, [f"/{i}" for i in range(40)])
    try:
        await app.wait_requests(40)
        gate.set()
        assert [(await c.response()).status for c in clients] == [200] * 40
    finally:
        gate.set()
        for c in clients:
            await c.close()


async def test_a_client_that_disconnects_while_served_frees_its_slot(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="1")
    gate = asyncio.Event()

    async def script(req: BackendRequest) -> Reply | None:
        if req.target == "/stuck":
            async with asyncio.timeout(10):
                await gate.wait()
        return Reply(body=req.target.encode())

    app.script = script
    try:
        stuck = (await open_requests(qp, ["/stuck"]))[0]
        await app.wait_requests(1)
        await stuck.close()  # the client gives up; the app is still busy with it
        resp = await fetch(qp.serving_port, "GET", "/next", timeout=5)
        assert (resp.status, resp.body) == (200, b"/next")
    finally:
        gate.set()
