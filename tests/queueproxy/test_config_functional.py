"""Configuration at the process level (contract §1.2, §3.1 item 1): upstream's variable names and
required-ness; a missing or malformed value makes the process exit non-zero with a message that
names the variable; optional ones may be absent and string ones empty."""
from __future__ import annotations

import json
import socket

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    AGAINST_UPSTREAM,
    FakeBackend,
    QueueProxies,
    _backend_server,
    app,
    fetch,
    kdp_only,
    make_queue_proxy,
    probe,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]

REQUIRED = [
    "SERVING_NAMESPACE", "SERVING_CONFIGURATION", "SERVING_REVISION", "SERVING_POD", "SERVING_POD_IP",
    "QUEUE_SERVING_PORT", "QUEUE_SERVING_TLS_PORT", "USER_PORT", "CONTAINER_CONCURRENCY",
    "REVISION_TIMEOUT_SECONDS", "SERVING_LOGGING_CONFIG", "SERVING_LOGGING_LEVEL",
]
OPTIONAL = [
    "SERVING_SERVICE", "REVISION_RESPONSE_START_TIMEOUT_SECONDS", "REVISION_IDLE_TIMEOUT_SECONDS",
    "SERVING_READINESS_PROBE", "ENABLE_MULTI_CONTAINER_PROBES", "ENABLE_HTTP2_AUTO_DETECTION",
    "ENABLE_HTTP_FULL_DUPLEX", "SYSTEM_NAMESPACE",
]


async def exits_naming(env: dict[str, str | None], name: str, *, upstream_names_it: bool = True) -> str:
    """Starts with ``env``; the process must exit non-zero and say ``name`` (upstream's message
    sometimes says only what failed, not which variable: ``upstream_names_it=False``)."""
    qp = make_queue_proxy(8080, **env)
    await qp.spawn()
    try:
        code = await qp.wait_exit(10)
        out = qp.output()
    finally:
        await qp.stop()
        qp.cleanup()
    assert code != 0, f"started despite {env}"
    if upstream_names_it or not AGAINST_UPSTREAM:
        assert name in out, out
    return out


@pytest.mark.parametrize("name", REQUIRED)
async def test_a_missing_required_variable_stops_the_process_naming_it(name: str) -> None:
    await exits_naming({name: None}, name)


@pytest.mark.parametrize(("name", "value", "upstream_names_it"), [
    ("CONTAINER_CONCURRENCY", "ten", True),
    ("CONTAINER_CONCURRENCY", "1.5", True),
    ("CONTAINER_CONCURRENCY", "", True),
    ("REVISION_TIMEOUT_SECONDS", "300s", True),
    ("REVISION_TIMEOUT_SECONDS", "1e3", True),
    ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "soon", True),
    ("REVISION_IDLE_TIMEOUT_SECONDS", "0.5", True),
    ("QUEUE_SERVING_PORT", "99999", False),
    ("ENABLE_MULTI_CONTAINER_PROBES", "maybe", True),
    pytest.param("USER_PORT", "http", False, marks=kdp_only(
        "upstream takes USER_PORT as a string and only fails each request with 502")),
])
async def test_a_malformed_value_stops_the_process_naming_the_variable(
        name: str, value: str, upstream_names_it: bool) -> None:
    await exits_naming({name: value}, name, upstream_names_it=upstream_names_it)


@pytest.mark.parametrize("value", [
    pytest.param("{not json", id="not-json"),
    pytest.param(json.dumps([{"tcpSocket": {"port": 8080, "host": "127.0.0.1"}}]), id="array-without-multi"),
])
async def test_a_malformed_readiness_probe_stops_the_process(value: str) -> None:
    await exits_naming({"SERVING_READINESS_PROBE": value}, "SERVING_READINESS_PROBE", upstream_names_it=False)


async def test_a_malformed_observability_config_stops_the_process() -> None:
    await exits_naming({"OBSERVABILITY_CONFIG": "{bad json"}, "OBSERVABILITY_CONFIG")


async def test_a_serving_port_already_in_use_stops_the_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        qp = make_queue_proxy(8080, QUEUE_SERVING_PORT=str(port))
        await qp.spawn()
        try:
            code = await qp.wait_exit(10)
        finally:
            await qp.stop()
            qp.cleanup()
    assert code != 0


async def test_optional_variables_may_be_absent_and_strings_empty(app: FakeBackend, qps: QueueProxies) -> None:
    env: dict[str, str | None] = {name: None for name in OPTIONAL}
    env.update(SERVING_CONFIGURATION="", SERVING_LOGGING_CONFIG="", SERVING_LOGGING_LEVEL="")
    qp = await qps.fresh(app.port, **env)
    assert (await fetch(qp.serving_port, "GET", "/")).status == 200
    assert (await probe(qp)).body == b"queue"


async def test_integers_are_read_as_go_does(app: FakeBackend, qps: QueueProxies) -> None:
    """Base prefixes and digit separators, as Go's strconv.ParseInt with base 0."""
    qp = await qps.fresh(app.port, CONTAINER_CONCURRENCY="0x2", REVISION_TIMEOUT_SECONDS="1_000",
                         USER_PORT=str(app.port))
    assert (await fetch(qp.serving_port, "GET", "/")).status == 200


async def test_prometheus_metrics_are_served_only_when_the_observability_config_asks(
        app: FakeBackend, qps: QueueProxies) -> None:
    qp = await qps.fresh(app.port, OBSERVABILITY_CONFIG=None)
    assert (await fetch(qp.serving_port, "GET", "/")).status == 200
    with pytest.raises(OSError):
        await fetch(qp.metrics_port, "GET", "/metrics", host="pod", timeout=2)
