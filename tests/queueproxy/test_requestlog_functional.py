"""Request logs at the process level (contract §1.12): with ``enableRequestLog`` each request is
written to stdout through upstream's Go template (the default one, or the configured one);
probes only with ``enableProbeRequestLog``."""
from __future__ import annotations

import json

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    HEALTH_HEADERS,
    FakeBackend,
    QueueProxies,
    QueueProxyProcess,
    Reply,
    _backend_server,
    after_body,
    app,
    eventually,
    fetch,
    probe,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def observability(**extra: object) -> str:
    return json.dumps({"requestMetrics": {"protocol": "prometheus"}, "enableRequestLog": True, **extra})


def request_lines(qp: QueueProxyProcess) -> list[dict]:
    out = []
    for line in qp.output().splitlines():
        if line.startswith('{"httpRequest"'):
            out.append(json.loads(line))
    return out


async def test_each_request_is_logged_with_upstreams_default_template(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, OBSERVABILITY_CONFIG=observability())
    app.script = after_body(lambda req: Reply(status=201, body=b"12345"))
    resp = await fetch(qp.serving_port, "POST", "/path?q=1", [
        ("User-Agent", 'tester/1.0 "quoted"'), ("Referer", "http://ref.example/"),
        ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")], body=b"abc")
    assert resp.status == 201
    lines = await eventually(lambda: request_lines(qp), timeout=3, what="a request log line")
    assert len(lines) == 1
    r = lines[0]["httpRequest"]
    assert (r["requestMethod"], r["requestUrl"], r["requestSize"], r["status"], r["responseSize"]) == (
        "POST", "/path?q=1", "3", 201, "5")
    assert r["userAgent"] == 'tester/1.0 "quoted"' and r["referer"] == "http://ref.example/"
    assert r["remoteIp"].startswith("127.0.0.1:") and r["serverIp"] == "127.0.0.1"
    assert r["protocol"] == "HTTP/1.1" and r["latency"].endswith("s") and float(r["latency"][:-1]) >= 0
    assert lines[0]["traceId"] == TRACE_ID


async def test_probes_are_logged_only_when_asked(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, OBSERVABILITY_CONFIG=observability())
    assert (await probe(qp)).body == b"queue"
    assert (await fetch(qp.serving_port, "GET", "/real")).status == 200
    lines = await eventually(lambda: request_lines(qp), timeout=3, what="a request log line")
    assert [line["httpRequest"]["requestUrl"] for line in lines] == ["/real"]
    qp = await qps.fresh(app.port, OBSERVABILITY_CONFIG=observability(enableProbeRequestLog=True))
    assert (await probe(qp, "/probed")).body == b"queue"
    # The harness's own readiness probes are logged too now, so look for this one by its path.
    lines = await eventually(lambda: [line for line in request_lines(qp)
                                      if line["httpRequest"]["requestUrl"] == "/probed"],
                             timeout=3, what="the probe's log line")
    assert lines[0]["httpRequest"]["status"] == 200


async def test_a_configured_template_is_used(app: FakeBackend, qps: QueueProxies) -> None:
    template = "custom {{.Request.Method}} {{.Response.Code}} {{.Revision.Name}} {{.Revision.Namespace}}"
    qp = await qps.fresh(app.port, OBSERVABILITY_CONFIG=observability(requestLogTemplate=template))
    assert (await fetch(qp.serving_port, "DELETE", "/x")).status == 200

    def custom() -> list[str]:
        return [line for line in qp.output().splitlines() if line.startswith("custom ")]

    assert await eventually(custom, timeout=3, what="a custom log line") == ["custom DELETE 200 rev-1 ns"]


async def test_no_request_logs_unless_enabled(app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port)
    for _ in range(3):
        assert (await fetch(qp.serving_port, "GET", "/quiet")).status == 200
    qp.signal(15)  # exiting flushes whatever it wrote
    await qp.wait_exit(qp.quiet_period + 10)
    assert request_lines(qp) == []
