"""Drain and shutdown at the process level (contract §1.6, §3.1 item 4): SIGTERM fails probes at
once, waits for a quiet period without requests, lets in-flight requests finish, then exits 0;
``:8022/wait-for-drain`` returns after the drain and resets itself when no SIGTERM follows.

Our queue-proxy runs with a short ``KDP_DRAIN_QUIET_PERIOD``; upstream's is fixed at 30 s, so
against upstream these tests take minutes."""
from __future__ import annotations

import asyncio
import signal

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    HEALTH_HEADERS,
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
    probe,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

KPROBE = [("K-Network-Probe", "probe"), ("K-Network-Hash", "h")]


async def probes_fail(qp: QueueProxyProcess) -> None:
    async def shutting_down() -> bool:
        r = await probe(qp)
        return r.status == 503 and r.body == b"shutting down\n"
    await eventually(shutting_down, timeout=2, what="probes failing with 'shutting down'")


def alive(qp: QueueProxyProcess) -> bool:
    return qp.returncode is None


async def test_sigterm_fails_probes_at_once_and_exits_0_after_the_quiet_period(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port)
    q = qp.quiet_period
    assert (await probe(qp)).body == b"queue"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    qp.signal(signal.SIGTERM)
    await probes_fail(qp)
    kprobe = await fetch(qp.serving_port, "GET", "/", KPROBE)
    assert (kprobe.status, kprobe.body) == (503, b"shutting down\n")
    for ua in ("Knative-Activator-Probe", "Knative-Autoscaling-Probe"):
        assert (await probe(qp, "/", [("User-Agent", ua), ("K-Network-Probe", "queue")])).status == 503
    assert (await fetch(qp.serving_port, "GET", "/still-served")).status == 200  # traffic flows meanwhile
    code = await qp.wait_exit(q + 10)
    assert code == 0
    assert loop.time() - t0 >= q
    assert [r.target for r in app.requests] == ["/still-served"]


async def test_each_request_during_the_drain_restarts_the_quiet_period(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, KDP_DRAIN_QUIET_PERIOD="0.8")
    q = qp.quiet_period
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    qp.signal(signal.SIGTERM)
    await probes_fail(qp)
    await asyncio.sleep(0.6 * q - (loop.time() - t0))
    assert (await fetch(qp.serving_port, "GET", "/late")).status == 200
    await asyncio.sleep(1.3 * q - (loop.time() - t0))
    assert alive(qp), "exited one quiet period after SIGTERM despite the request"
    assert await qp.wait_exit(q + 10) == 0
    assert loop.time() - t0 >= 1.6 * q


async def test_probes_during_the_drain_do_not_restart_the_quiet_period(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, KDP_DRAIN_QUIET_PERIOD="0.6")
    q = qp.quiet_period
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    qp.signal(signal.SIGTERM)
    while alive(qp) and loop.time() - t0 < 2.5 * q:
        for headers in ([*HEALTH_HEADERS], KPROBE):
            try:
                await fetch(qp.serving_port, "GET", "/", headers, timeout=1)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the listener closed: the drain is over
        await asyncio.sleep(0.05 * q)
    assert not alive(qp) or await qp.wait_exit(0.5) == 0, "probes kept the drain going"
    assert qp.returncode == 0


async def test_an_in_flight_request_finishes_before_the_process_exits(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port)
    q = qp.quiet_period
    gate = asyncio.Event()

    async def held(req: BackendRequest) -> Reply:
        if req.target == "/work":
            async with asyncio.timeout(q * 3 + 10):
                await gate.wait()
        return Reply(body=b"finished " + req.target.encode())

    app.script = held
    loop = asyncio.get_running_loop()
    async with await Client.connect(qp.serving_port, timeout=q * 3 + 10) as c:
        await c.send(build_request("POST", "/work", body=b"payload"))
        await app.wait_requests(1)
        idle = await Client.connect(qp.serving_port)  # an idle keep-alive connection must not hold it up
        assert (await idle.request("GET", "/ping")).status == 200
        t0 = loop.time()
        qp.signal(signal.SIGTERM)
        await probes_fail(qp)
        await asyncio.sleep(1.5 * q - (loop.time() - t0))
        assert alive(qp), "exited with a request in flight"
        with pytest.raises(OSError):  # the drain is over: no new connections
            await Client.connect(qp.serving_port, timeout=2)
        assert await idle.closed(2), "an idle keep-alive connection stayed open after the drain"
        await idle.close()
        gate.set()
        resp = await c.response()
        assert (resp.status, resp.body) == (200, b"finished /work")
    assert await qp.wait_exit(10) == 0


async def test_wait_for_drain_without_sigterm_resets_itself(app: FakeBackend, qps: QueueProxies) -> None:
    """The user container restarts (liveness) and runs its preStop hook, but no SIGTERM comes
    for the queue-proxy: after about a second it serves probes normally again."""
    qp = await qps.fresh(app.port, KDP_DRAIN_QUIET_PERIOD="4")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    waiting = asyncio.ensure_future(fetch(qp.admin_port, "GET", "/wait-for-drain", host="localhost", timeout=10))
    try:
        await probes_fail(qp)
        resp = await waiting
        took = loop.time() - t0
    finally:
        waiting.cancel()
    assert resp.status == 200
    assert 0.9 <= took < qp.quiet_period, "it waited for the quiet period instead of resetting"
    assert (await probe(qp)).body == b"queue"
    assert alive(qp)
    again = await fetch(qp.admin_port, "GET", "/wait-for-drain", host="localhost", timeout=10)
    assert again.status == 200 and alive(qp)  # and it works again the next time


async def test_wait_for_drain_followed_by_sigterm_returns_after_the_quiet_period(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, KDP_DRAIN_QUIET_PERIOD="1.2")
    q = qp.quiet_period
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    waiting = asyncio.ensure_future(fetch(qp.admin_port, "GET", "/wait-for-drain", host="localhost",
                                          timeout=q + 10))
    try:
        await probes_fail(qp)
        qp.signal(signal.SIGTERM)
        resp = await waiting
    finally:
        waiting.cancel()
    assert resp.status == 200
    assert loop.time() - t0 >= q
    assert await qp.wait_exit(10) == 0


async def test_the_admin_port_serves_only_wait_for_drain(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    for path in ("/", "/metrics", "/wait-for-drain/x"):
        assert (await fetch(qp.admin_port, "GET", path, host="localhost")).status == 404, path
    assert (await probe(qp)).body == b"queue"  # and nothing started draining
