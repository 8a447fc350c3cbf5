"""The real readiness checks against real servers on 127.0.0.1 (port 0): an asyncio HTTP/1.1 and
h2c server, a TLS server with a throwaway self-signed certificate, a closed port, and a grpc.aio
server implementing grpc.health.v1 with generic handlers (messages built by protobuf itself, so the
check's hand encoding is tested against the real library)."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from queueproxy import probe_checks
from queueproxy.probe_checks import CheckFailed
from queueproxy.readiness import (
    GRPCAction,
    HTTPGetAction,
    ProbeSpec,
    ReadinessProber,
    TCPSocketAction,
    build_readiness_prober,
    make_check_runner,
)

pytestmark = pytest.mark.functional

TIMEOUT = 2.0  # generous for passing checks; the tests never wait for it


# --- a small HTTP/1.1 + h2c backend -------------------------------------------------------------


@dataclass
class Backend:
    port: int = 0
    status: int = 200  # HTTP/1.1 answer
    h2_status: int | None = None  # None: this server does not speak h2c (it closes on the preface)
    interim: bool = False  # send a 103 Early Hints before the final answer
    hang: bool = False  # never answer
    # (protocol, headers, request line) of every request received
    requests: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter


async def _serve_h1(backend: Backend, reader: Reader, writer: Writer, first: bytes) -> None:
    head = first + await reader.readuntil(b"\r\n\r\n")
    line, *rest = head.decode().split("\r\n")
    headers = dict(h.split(": ", 1) for h in rest if h)
    backend.requests.append(("http/1.1", headers, line))
    if backend.hang:
        await backend.stop.wait()
        return
    if backend.interim:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
    head = f"HTTP/1.1 {backend.status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + b"body")
    await writer.drain()


async def _serve_h2(backend: Backend, reader: Reader, writer: Writer, first: bytes) -> None:
    config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    data = first
    while data:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                backend.requests.append(("h2", dict(event.headers), ""))  # type: ignore[arg-type]
                answer = [(":status", str(backend.h2_status))]
                conn.send_headers(event.stream_id, answer, end_stream=True)
        writer.write(conn.data_to_send())
        await writer.drain()
        data = await reader.read(65536)


@contextlib.asynccontextmanager
async def http_backend(**kwargs: object) -> AsyncIterator[Backend]:
    backend = Backend(**kwargs)  # type: ignore[arg-type]
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            first = await reader.readexactly(3)
            if first == b"PRI":
                if backend.h2_status is not None:
                    await _serve_h2(backend, reader, writer, first)
            else:
                await _serve_h1(backend, reader, writer, first)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    backend.port = server.sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        backend.stop.set()
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()
        await asyncio.sleep(0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get(backend: Backend, **kwargs: object) -> None:
    args: dict[str, object] = {"host": "127.0.0.1", "port": backend.port, "target": "/", "timeout": TIMEOUT}
    args.update(kwargs)
    await probe_checks.http_get(**args)  # type: ignore[arg-type]


# --- HTTP/1.1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204, 302, 399])
async def test_http_status_200_to_399_passes(status: int) -> None:
    async with http_backend(status=status) as backend:
        await get(backend)
        assert len(backend.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_http_status_400_and_above_fails_with_the_code(status: int) -> None:
    async with http_backend(status=status) as backend:
        with pytest.raises(CheckFailed, match=f"got status code: {status}"):
            await get(backend)


async def test_http_sends_upstreams_request_line_and_headers() -> None:
    async with http_backend() as backend:
        await get(backend, target="/ready?deep=1", headers=(("X-Custom", "yes"), ("K-Network-Probe", "queue")))
        ((proto, headers, line),) = backend.requests
    assert (proto, line) == ("http/1.1", "GET /ready?deep=1 HTTP/1.1")
    assert headers == {
        "Host": f"127.0.0.1:{backend.port}",
        "User-Agent": "kube-probe//",
        "X-Custom": "yes",
        "K-Network-Probe": "queue",
        "Connection": "close",
    }


async def test_http_skips_an_interim_1xx_answer() -> None:
    async with http_backend(interim=True, status=500) as backend:
        with pytest.raises(CheckFailed, match="500"):
            await get(backend)


async def test_http_to_a_closed_port_fails() -> None:
    port = closed_port()
    with pytest.raises(CheckFailed, match=f"GET http://127.0.0.1:{port}/ failed"):
        await probe_checks.http_get(host="127.0.0.1", port=port, target="/", timeout=TIMEOUT)


async def test_http_that_never_answers_fails_at_the_timeout() -> None:
    async with http_backend(hang=True) as backend:
        with pytest.raises(CheckFailed, match="timed out after 0.1s"):
            await get(backend, timeout=0.1)


# --- h2c auto-detection -------------------------------------------------------------------------


async def test_h2c_is_tried_first_and_a_ready_answer_suffices() -> None:
    async with http_backend(h2_status=200, status=500) as backend:
        await get(backend, try_h2c=True, target="/h", headers=(("X-Custom", "yes"), ("Connection", "x")))
        ((proto, headers, _),) = backend.requests
    assert proto == "h2"
    assert headers[":method"] == "GET" and headers[":path"] == "/h"
    assert headers[":authority"] == f"127.0.0.1:{backend.port}"
    assert headers["user-agent"] == "kube-probe//" and headers["x-custom"] == "yes"
    assert "connection" not in headers


async def test_h2c_not_ready_falls_back_to_http1() -> None:
    async with http_backend(h2_status=503, status=200) as backend:
        await get(backend, try_h2c=True)
        assert [proto for proto, _, _ in backend.requests] == ["h2", "http/1.1"]


async def test_an_http1_only_server_passes_with_h2c_detection_on() -> None:
    async with http_backend(status=200) as backend:
        await get(backend, try_h2c=True)
        assert [proto for proto, _, _ in backend.requests] == ["http/1.1"]


async def test_h2c_detection_fails_when_neither_protocol_is_ready() -> None:
    async with http_backend(h2_status=500, status=500) as backend:
        with pytest.raises(CheckFailed, match="500"):
            await get(backend, try_h2c=True)


async def test_a_real_http1_server_answering_the_h2_preface_with_an_error_still_passes() -> None:
    from aiohttp import web

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await probe_checks.http_get(host="127.0.0.1", port=port, target="/", try_h2c=True, timeout=TIMEOUT)
    finally:
        await runner.cleanup()


# --- HTTPS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throwaway certificate")
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=not-this-host"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


async def test_https_passes_against_a_self_signed_certificate(self_signed: ssl.SSLContext) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self_signed)
    port = server.sockets[0].getsockname()[1]
    try:
        await probe_checks.http_get(host="127.0.0.1", port=port, target="/tls", tls=True, timeout=TIMEOUT)
        with pytest.raises(CheckFailed):  # the same port spoken to in cleartext is not HTTP
            await probe_checks.http_get(host="127.0.0.1", port=port, target="/", timeout=TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()
    assert seen[0].startswith(b"GET /tls HTTP/1.1\r\n")


# --- TCP ----------------------------------------------------------------------------------------


async def test_tcp_passes_when_something_listens_and_fails_on_a_closed_port() -> None:
    async with http_backend() as backend:
        await probe_checks.tcp_connect("127.0.0.1", backend.port, TIMEOUT)
    port = closed_port()
    with pytest.raises(CheckFailed, match=f"tcp connect to 127.0.0.1:{port} failed"):
        await probe_checks.tcp_connect("127.0.0.1", port, TIMEOUT)


# --- gRPC health --------------------------------------------------------------------------------


def _health_messages() -> tuple[type, type]:
    """HealthCheckRequest/Response classes built by protobuf from a descriptor, not by our code."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="test_health.proto", package="grpc.health.v1", syntax="proto3")
    proto.message_type.add(name="HealthCheckRequest").field.add(
        name="service", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL
    )
    response = proto.message_type.add(name="HealthCheckResponse")
    enum = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]):
        enum.value.add(name=name, number=number)
    response.field.add(
        name="status", number=1, type=f.TYPE_ENUM, label=f.LABEL_OPTIONAL,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


Request, Response = _health_messages()
SERVING, NOT_SERVING = 1, 2


@dataclass
class HealthServer:
    port: int
    seen: list[tuple[str, dict[str, str]]]  # (service, metadata)
    deadlines: list[float]  # seconds left when each call arrived


@contextlib.asynccontextmanager
async def grpc_health_server(statuses: dict[str, int] | None) -> AsyncIterator[HealthServer]:
    """``statuses`` maps service names to a status; unknown names get NOT_FOUND; the name "hang"
    never gets an answer. None: the server has no Health service at all."""
    seen: list[tuple[str, dict[str, str]]] = []
    deadlines: list[float] = []

    async def check(request: object, context: grpc.aio.ServicerContext) -> object:
        service = request.service  # type: ignore[attr-defined]
        seen.append((service, {k: str(v) for k, v in context.invocation_metadata() or ()}))
        deadlines.append(context.time_remaining() or 0.0)
        assert statuses is not None
        if service == "hang":
            await asyncio.Event().wait()  # cancelled by server.stop()
        if service not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return Response(status=statuses[service])

    server = grpc.aio.server()
    if statuses is not None:
        handler = grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=Request.FromString, response_serializer=Response.SerializeToString
        )
        service = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler})
        server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield HealthServer(port, seen, deadlines)
    finally:
        await server.stop(None)


async def check_health(port: int, service: str) -> None:
    await probe_checks.grpc_health_check(host="127.0.0.1", port=port, service=service, timeout=TIMEOUT)


def test_the_hand_encoded_health_messages_match_protobuf() -> None:
    for service in ["", "a", "orders.v1.Orders", "x" * 300]:
        assert probe_checks.encode_health_request(service) == Request(service=service).SerializeToString()
    for status in range(4):
        assert probe_checks.decode_health_status(Response(status=status).SerializeToString()) == status


async def test_grpc_serving_passes_and_sends_the_service_name() -> None:
    async with grpc_health_server({"": SERVING, "orders": SERVING}) as server:
        await check_health(server.port, "")
        await check_health(server.port, "orders")
    assert [service for service, _ in server.seen] == ["", "orders"]
    assert server.seen[0][1]["user-agent"].startswith("kube-probe//")


async def test_grpc_not_serving_fails() -> None:
    async with grpc_health_server({"": NOT_SERVING}) as server:
        with pytest.raises(CheckFailed, match="service unhealthy \\(responded with 'NOT_SERVING'\\)"):
            await check_health(server.port, "")


async def test_grpc_unknown_service_fails_with_its_status() -> None:
    async with grpc_health_server({"": SERVING}) as server:
        with pytest.raises(CheckFailed, match="grpc-status 5 \\(unknown service\\)"):
            await check_health(server.port, "nope")


async def test_grpc_without_the_health_service_fails_as_unimplemented() -> None:
    async with grpc_health_server(None) as server:
        with pytest.raises(CheckFailed, match="does not implement grpc.health.v1.Health"):
            await check_health(server.port, "")


async def test_grpc_that_never_answers_fails_at_the_timeout() -> None:
    async with grpc_health_server({"": SERVING}) as server:
        with pytest.raises(CheckFailed, match="did not complete within 0.2s"):
            await probe_checks.grpc_health_check(host="127.0.0.1", port=server.port, service="hang", timeout=0.2)
    assert 0 < server.deadlines[0] <= 0.2  # the timeout travelled as grpc-timeout


async def test_grpc_against_a_closed_port_fails() -> None:
    with pytest.raises(CheckFailed, match="failed to connect"):
        await check_health(closed_port(), "")


# --- the prober with the real checks ------------------------------------------------------------


async def test_the_default_probe_passes_at_once_when_the_app_listens() -> None:
    async with http_backend() as backend:
        env = f'{{"tcpSocket":{{"port":{backend.port},"host":"127.0.0.1"}},"successThreshold":1}}'
        prober = build_readiness_prober(env)
        assert await prober.probe() is True
        assert prober.last_ok and prober.ever_ready


async def test_a_multi_container_prober_checks_every_kind_together() -> None:
    async with http_backend() as backend, grpc_health_server({"": SERVING}) as health:
        probes = [
            ProbeSpec(action=TCPSocketAction(port=backend.port), success_threshold=1),
            ProbeSpec(action=HTTPGetAction(port=backend.port, path="/ready"), period_seconds=1, timeout_seconds=1),
            ProbeSpec(action=GRPCAction(port=health.port), period_seconds=1, timeout_seconds=1),
        ]
        prober = ReadinessProber(probes, check=make_check_runner(http2_auto_detect=True))
        assert await prober.probe() is True
        assert [proto for proto, _, _ in backend.requests] == ["http/1.1"]  # no h2c there: fell back


async def test_a_normal_mode_prober_fails_after_one_try_against_a_closed_port() -> None:
    port = closed_port()
    prober = build_readiness_prober(f'{{"httpGet":{{"port":{port}}},"periodSeconds":5,"timeoutSeconds":1}}')
    assert await prober.probe() is False
    (error,) = prober.last_errors
    assert error.startswith(f"GET http://127.0.0.1:{port}/ failed: ")
