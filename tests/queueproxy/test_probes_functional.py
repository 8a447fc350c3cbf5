"""The probe contract at the process level (contract §1.5, §3.1 items 2-3): which requests the
queue-proxy answers itself on any path, with which status and body, and how
``SERVING_READINESS_PROBE`` decides the answer to health checks."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    FakeBackend,
    QueueProxies,
    Reply,
    _backend_server,
    app,
    fetch,
    free_port,
    kdp_only,
    probe,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

HEALTH_UAS = ["kube-probe/1.31", "Knative-Activator-Probe", "Knative-Autoscaling-Probe"]
PATHS = ["/", "/healthz", "/some/app/path?x=1"]


def from_app(req: object) -> Reply:
    return Reply(body=b"from-app")


# ---- what the queue-proxy answers itself ----------------------------------------------------


@pytest.mark.parametrize("ua", HEALTH_UAS)
async def test_a_health_check_on_any_path_gets_200_queue_when_the_app_is_ready(
        app: FakeBackend, qps: QueueProxies, ua: str) -> None:
    qp = await qps.get(app.port)
    app.script = from_app
    for path in PATHS:
        resp = await probe(qp, path, [("User-Agent", ua), ("K-Network-Probe", "queue")])
        assert (resp.status, resp.body) == (200, b"queue"), path
    assert app.requests == []  # answered by the queue-proxy, not the app


@pytest.mark.parametrize(("value", "body"), [
    pytest.param(None, b"unexpected probe header value: \n", id="missing"),
    pytest.param("bogus", b"unexpected probe header value: bogus\n", id="bogus"),
    pytest.param("probe-queue", b"unexpected probe header value: probe-queue\n", id="near-miss"),
])
@pytest.mark.parametrize("ua", HEALTH_UAS)
async def test_a_health_check_with_another_probe_value_gets_400(
        app: FakeBackend, qps: QueueProxies, ua: str, value: str | None, body: bytes) -> None:
    qp = await qps.get(app.port)
    headers = [("User-Agent", ua)] + ([("K-Network-Probe", value)] if value is not None else [])
    resp = await probe(qp, "/healthz", headers)
    assert (resp.status, resp.body) == (400, body)
    assert app.requests == []


async def test_the_autoscalers_activator_probe_is_never_answered_as_the_activator(
        app: FakeBackend, qps: QueueProxies) -> None:
    """The KPA asks "is the activator in the path?"; a queue-proxy saying yes would let the
    revision scale to zero with nobody to catch the next request."""
    qp = await qps.get(app.port)
    app.script = from_app
    resp = await probe(qp, "/", [("User-Agent", "Knative-Autoscaling-Probe"), ("K-Network-Probe", "activator")])
    assert resp.status == 400 and resp.body == b"unexpected probe header value: activator\n"
    assert app.requests == []


async def test_an_activator_probe_header_without_a_health_agent_goes_to_the_app(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = from_app
    resp = await fetch(qp.serving_port, "GET", "/", [("K-Network-Probe", "activator")])
    assert (resp.status, resp.body) == (200, b"from-app")
    assert app.requests[-1].header("k-network-probe") == "activator"


async def test_a_queue_probe_header_without_a_health_agent_goes_to_the_app(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    app.script = from_app
    resp = await fetch(qp.serving_port, "GET", "/x", [("K-Network-Probe", "queue")])
    assert (resp.status, resp.body) == (200, b"from-app")
    assert len(app.requests) == 1


async def test_a_network_probe_echoes_its_hash_on_any_path(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port)
    for path in PATHS:
        resp = await fetch(qp.serving_port, "GET", path, [("K-Network-Probe", "probe"), ("K-Network-Hash", "abc123")])
        assert resp.status == 200 and resp.header("k-network-hash") == "abc123", path
    assert app.requests == []


@pytest.mark.parametrize("hash_header", [pytest.param([], id="missing"), pytest.param([("K-Network-Hash", "")], id="empty")])
async def test_a_network_probe_without_a_hash_gets_400(
        app: FakeBackend, qps: QueueProxies, hash_header: list[tuple[str, str]]) -> None:
    qp = await qps.get(app.port)
    resp = await fetch(qp.serving_port, "GET", "/", [("K-Network-Probe", "probe"), *hash_header])
    assert resp.status == 400 and resp.header("k-network-hash") is None
    assert app.requests == []


async def test_a_probe_never_counts_as_a_request_of_the_app(app: FakeBackend, qps: QueueProxies) -> None:
    """Many probes, one real request: the connection stays usable across probe answers."""
    qp = await qps.get(app.port)
    app.script = from_app
    from tests.queueproxy.harness import Client, HEALTH_HEADERS

    async with await Client.connect(qp.serving_port) as c:
        for _ in range(3):
            assert (await c.request("GET", "/", HEALTH_HEADERS)).body == b"queue"
            resp = await c.request("GET", "/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "h")])
            assert resp.status == 200
        assert (await c.request("GET", "/real")).body == b"from-app"
    assert [r.target for r in app.requests] == ["/real"]


# ---- SERVING_READINESS_PROBE ----------------------------------------------------------------


def http_probe(port: int, path: str = "/ready", period: int = 1, headers: dict[str, str] | None = None) -> dict:
    spec: dict = {"httpGet": {"path": path, "port": port, "host": "127.0.0.1", "scheme": "HTTP"},
                  "successThreshold": 1, "periodSeconds": period, "timeoutSeconds": 1}
    if headers:
        spec["httpGet"]["httpHeaders"] = [{"name": k, "value": v} for k, v in headers.items()]
    return spec


def tcp_spec(port: int, period: int = 1) -> dict:
    return {"tcpSocket": {"port": port, "host": "127.0.0.1"}, "successThreshold": 1, "periodSeconds": period,
            "timeoutSeconds": 1}


async def test_an_http_readiness_probe_asks_the_app_and_passes_on_2xx_and_3xx(
        app: FakeBackend, qps: QueueProxies) -> None:
    status = {"code": 200}
    app.script = lambda req: Reply(status=status["code"], body=b"ready?")
    qp = await qps.get(app.port, SERVING_READINESS_PROBE=json.dumps(
        http_probe(app.port, "/ready?deep=1", headers={"X-Probe": "yes"})))
    resp = await probe(qp)
    assert (resp.status, resp.body) == (200, b"queue")
    checks = [r for r in app.requests if r.target == "/ready?deep=1"]
    assert checks and checks[-1].method == "GET" and checks[-1].header("x-probe") == "yes"
    assert (checks[-1].header("user-agent") or "").startswith("kube-probe/")
    status["code"] = 302
    assert (await probe(qp)).status == 200
    status["code"] = 503
    resp = await probe(qp)
    assert (resp.status, resp.body) == (503, b"")
    status["code"] = 200
    assert (await probe(qp)).body == b"queue"


async def test_a_tcp_readiness_probe_fails_while_the_app_is_down(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port, SERVING_READINESS_PROBE=json.dumps(tcp_spec(app.port)))
    assert (await probe(qp)).body == b"queue"
    await app.stop()
    resp = await probe(qp)
    assert (resp.status, resp.body) == (503, b"")
    await app.start(app.port)
    assert (await probe(qp)).body == b"queue"


async def test_all_probes_of_a_multi_container_array_must_pass(app: FakeBackend, qps: QueueProxies) -> None:
    sidecar = await FakeBackend().start()
    try:
        healthy = {"sidecar": True}
        sidecar.script = lambda req: Reply(status=200 if healthy["sidecar"] else 500)
        probes = [tcp_spec(app.port), http_probe(sidecar.port, "/sidecar-ready")]
        qp = await qps.get(app.port, ENABLE_MULTI_CONTAINER_PROBES="true", SERVING_READINESS_PROBE=json.dumps(probes))
        assert (await probe(qp)).body == b"queue"
        healthy["sidecar"] = False
        assert (await probe(qp)).status == 503
        healthy["sidecar"] = True
        assert (await probe(qp)).body == b"queue"
        await app.stop()
        assert (await probe(qp)).status == 503
    finally:
        await sidecar.stop()


async def test_aggressive_probing_answers_as_soon_as_the_app_starts_listening(
        app: FakeBackend, qps: QueueProxies) -> None:
    """periodSeconds 0 (the default): the health check keeps trying every 50 ms for up to 10 s,
    so a cold start is reported ready the moment the app listens."""
    late = FakeBackend()
    port = free_port()
    qp = await qps.get(app.port, SERVING_READINESS_PROBE=json.dumps(
        {"tcpSocket": {"port": port, "host": "127.0.0.1"}, "successThreshold": 1}))
    pending = asyncio.ensure_future(probe(qp))
    try:
        await asyncio.sleep(0.5)
        assert not pending.done(), "the probe gave up instead of waiting for the app"
        await late.start(port)
        resp = await asyncio.wait_for(pending, 9)
        assert (resp.status, resp.body) == (200, b"queue")
    finally:
        pending.cancel()
        await late.stop()


async def test_an_empty_readiness_probe_means_always_ready(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.get(app.port, SERVING_READINESS_PROBE="")
    await app.stop()
    assert (await probe(qp)).body == b"queue"
