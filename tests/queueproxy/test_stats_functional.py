"""Autoscaling stats at the process level (contract §1.9, §1.12, §3.1 items 5-6): the protobuf
``Stat`` on :9090 exactly as the autoscaler scrapes it, the Prometheus request metrics on :9091,
and (ours) the per-second push to the autoscaler's ``StatIngest`` gRPC stream."""
from __future__ import annotations

import asyncio
import time

import pytest

from proto import stat_pb2
from queueproxy.reporter import StatPusher
from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    HEALTH_HEADERS,
    BackendRequest,
    Client,
    FakeBackend,
    FakeStatIngest,
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
    stat_ingest,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


async def collect_stats(qp: QueueProxyProcess, seconds: float) -> list[stat_pb2.Stat]:
    """Every distinct snapshot :9090 serves during ``seconds`` (a new one each second)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    seen: dict[float, stat_pb2.Stat] = {}
    while loop.time() < end:
        _, stat = await fetch_stat(qp)
        seen.setdefault(stat.process_uptime, stat)
        await asyncio.sleep(0.1)
    return [seen[k] for k in sorted(seen)]


async def test_the_stat_endpoint_serves_upstreams_protobuf_exactly(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    for accept in ("application/protobuf", "text/plain", "*/*"):
        resp = await fetch(qp.stat_port, "GET", "/metrics", [("Accept", accept)], host="10.0.0.1:9090")
        assert resp.status == 200
        assert resp.all("content-type") == ["application/protobuf"]
        assert len(resp.body) <= 336  # the autoscaler reads no more than that
        stat = stat_pb2.Stat()
        stat.ParseFromString(resp.body)
        assert stat.pod_name == "pod-1"
        assert stat.timestamp == 0


async def _with_uptime(qp: QueueProxyProcess) -> tuple[object, stat_pb2.Stat] | None:
    resp, stat = await fetch_stat(qp)
    return (resp, stat) if stat.process_uptime > 0 else None


async def test_concurrency_is_time_weighted_and_proxied_requests_count_twice(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port)
    gate = asyncio.Event()

    async def held(req: BackendRequest) -> Reply:
        async with asyncio.timeout(10):
            await gate.wait()
        return Reply()

    app.script = held
    clients = []
    try:
        for headers in ([], [("K-Proxy-Request", "activator")]):
            c = await Client.connect(qp.serving_port)
            await c.send(build_request("GET", "/held", headers))
            clients.append(c)
        await app.wait_requests(2)

        async def full_window() -> stat_pb2.Stat | None:
            _, s = await fetch_stat(qp)
            return s if s.average_concurrent_requests >= 1.999 else None

        stat = await eventually(full_window, timeout=4, interval=0.1, what="a window with two requests held")
        assert stat.average_concurrent_requests == pytest.approx(2.0, abs=1e-3)
        assert stat.average_proxied_concurrent_requests == pytest.approx(1.0, abs=1e-3)
        assert stat.request_count == 0 and stat.proxied_request_count == 0  # they arrived earlier
        gate.set()
        for c in clients:
            assert (await c.response()).status == 200
    finally:
        gate.set()
        for c in clients:
            await c.close()


async def test_counts_are_per_second_rates_probes_are_not_counted_and_uptime_is_real(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port)
    await eventually(lambda: _with_uptime(qp), timeout=3, what="a first stats tick")
    collecting = asyncio.ensure_future(collect_stats(qp, 2.5))
    try:
        for i in range(9):
            headers = [("K-Proxy-Request", "activator")] if i % 3 == 0 else []
            assert (await fetch(qp.serving_port, "GET", f"/{i}", headers)).status == 200
            assert (await fetch(qp.serving_port, "GET", "/", HEALTH_HEADERS)).body == b"queue"
            kp = await fetch(qp.serving_port, "GET", "/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "x")])
            assert kp.status == 200
        stats = await collecting
    finally:
        collecting.cancel()
    assert sum(s.request_count for s in stats) == 9
    assert sum(s.proxied_request_count for s in stats) == 3
    assert all(s.pod_name == "pod-1" for s in stats)
    # process_uptime: real seconds since start, a new snapshot about every second
    uptimes = [s.process_uptime for s in stats]
    assert len(uptimes) >= 2 and uptimes == sorted(uptimes)
    _, last = await fetch_stat(qp)
    now = time.monotonic()
    # The reporter starts before the listeners and cuts a snapshot every second.
    assert now - qp.ready_at - 1.2 <= last.process_uptime <= now - qp.started_at


async def test_prometheus_serves_upstreams_request_metrics(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="5")
    app.script = lambda req: Reply(status=500 if req.target == "/fail" else 200)
    for target in ("/a", "/b", "/c", "/fail"):
        await fetch(qp.serving_port, "GET", target)
    for _ in range(3):  # probes are not measured
        await fetch(qp.serving_port, "GET", "/", HEALTH_HEADERS)

    async def families() -> dict | None:
        fams = await fetch_prometheus(qp)
        h = fams.get("kn_serving_invocation_duration_seconds")
        return fams if h is not None and _count(h, "200") == 3 else None

    fams = await eventually(families, timeout=5, interval=0.2, what="invocation histogram with 3 x 200")
    hist = fams["kn_serving_invocation_duration_seconds"]
    assert hist.type == "histogram"
    assert _count(hist, "500") == 1
    bounds = sorted({float(s.labels["le"]) for s in hist.samples if s.name.endswith("_bucket")})
    assert bounds == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf")]
    assert "kn_serving_queue_depth" in fams


def _count(family: object, status: str) -> float:
    return sum(s.value for s in family.samples  # type: ignore[attr-defined]
               if s.name.endswith("_count") and s.labels.get("http_response_status_code") == status)


# ---- the gRPC push to our autoscaler --------------------------------------------------------


@kdp_only("upstream's queue-proxy has no push; its autoscaler scrapes :9090")
async def test_stats_are_pushed_every_second_to_the_autoscaler(
        app: FakeBackend, qps: QueueProxies, stat_ingest: FakeStatIngest) -> None:
    qp = await qps.fresh(app.port, KDP_AUTOSCALER_ADDRESS=f"127.0.0.1:{stat_ingest.port}")
    await stat_ingest.wait_for(lambda: len(stat_ingest.batches) >= 1, timeout=5)
    for i in range(4):
        await fetch(qp.serving_port, "GET", f"/{i}", [("K-Proxy-Request", "activator")] if i == 0 else [])
    mark = len(stat_ingest.batches)
    await stat_ingest.wait_for(lambda: len(stat_ingest.batches) >= mark + 2, timeout=5)
    batches = list(stat_ingest.batches)
    assert stat_ingest.streams == 1  # one long-lived stream
    for b in batches:
        assert b.sender == "pod-1" and len(b.messages) == 1
        m = b.messages[0]
        assert (m.namespace, m.name, m.stat.pod_name) == ("ns", "rev-1", "pod-1")
        assert abs(m.stat.timestamp - time.time()) < 30
    assert sum(b.messages[0].stat.request_count for b in batches) == 4
    assert sum(b.messages[0].stat.proxied_request_count for b in batches) == 1


@kdp_only("upstream's queue-proxy has no push")
async def test_the_push_reconnects_after_the_autoscaler_restarts_and_delivers_the_backlog(
        app: FakeBackend, qps: QueueProxies, stat_ingest: FakeStatIngest) -> None:
    qp = await qps.fresh(app.port, KDP_AUTOSCALER_ADDRESS=f"127.0.0.1:{stat_ingest.port}")
    await stat_ingest.wait_for(lambda: len(stat_ingest.batches) >= 1, timeout=5)
    await stat_ingest.stop()
    down_from = time.time()
    for i in range(3):  # traffic is served while the autoscaler is away
        assert (await fetch(qp.serving_port, "GET", f"/away{i}")).status == 200
        await asyncio.sleep(0.6)
    down_until = time.time()
    before = len(stat_ingest.batches)
    await stat_ingest.start(stat_ingest.port)
    await stat_ingest.wait_for(lambda: stat_ingest.streams >= 2 and len(stat_ingest.batches) >= before + 3,
                               timeout=10)
    resent = stat_ingest.batches[before:]
    stamps = [b.messages[0].stat.timestamp for b in resent]
    assert stamps == sorted(stamps)
    assert stamps[0] <= int(down_from) + 1 and any(s >= int(down_until) - 1 for s in stamps)
    # nothing lost: every request made while it was away is in the backlog
    assert sum(b.messages[0].stat.request_count for b in stat_ingest.batches) >= 3


async def test_the_push_backlog_is_bounded_and_keeps_the_newest(stat_ingest: FakeStatIngest) -> None:
    """StatPusher alone: while the autoscaler is away only the newest ``backlog`` reports wait."""
    port = stat_ingest.port
    await stat_ingest.stop()
    pusher = StatPusher(f"127.0.0.1:{port}", "ns", "rev-1", "pod-1", backlog=3, backoff=(0.05, 0.1))
    pusher.start()
    try:
        for i in range(10):
            pusher(stat_pb2.Stat(pod_name="pod-1", request_count=float(i), timestamp=1000 + i))
        assert len(pusher.queue) == 3 and pusher.dropped == 7
        await stat_ingest.start(port)
        await stat_ingest.wait_for(lambda: len(stat_ingest.batches) >= 3, timeout=5)
        assert [b.messages[0].stat.request_count for b in stat_ingest.batches] == [7.0, 8.0, 9.0]
        pusher(stat_pb2.Stat(pod_name="pod-1", request_count=10.0, timestamp=1010))
        await stat_ingest.wait_for(lambda: len(stat_ingest.batches) >= 4, timeout=5)
        assert stat_ingest.batches[-1].messages[0].stat.request_count == 10.0
    finally:
        await pusher.stop()
