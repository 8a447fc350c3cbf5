"""One-shot checks of the user container: TCP connect, HTTP GET (HTTP/1.1, h2c, TLS), gRPC health.

This module is the I/O half of readiness probing; the policy (which check, how often, how many
passes in a row) lives in ``queueproxy.readiness``. Each coroutine here makes exactly one attempt
on a fresh connection, enforces its own ``timeout`` (float seconds), and either returns (the check
passed) or raises ``CheckFailed`` with a reason a person can act on. Every lower-level error
(``OSError``, ``TimeoutError``, ``ssl.SSLError``, h2 protocol errors) is translated here, once.

What goes on the wire follows upstream's queue-proxy prober (``pkg/queue/health/probe.go``):

- HTTP: ``GET`` with ``Host: host:port``, ``User-Agent: kube-probe//`` (upstream leaves the
  kubelet version empty), the probe's own headers, ``Connection: close``; status 200-399 passes.
  Redirects are not followed (a 3xx passes). TLS certificates are not verified (kubelet's rule;
  upstream's Go client would verify against system roots, which fails for the usual self-signed
  certificate on 127.0.0.1).
- h2c (when HTTP/2 auto-detection is on): the same GET over HTTP/2 with prior knowledge first;
  anything but a 200-399 answer falls back to HTTP/1.1.
- gRPC: ``/grpc.health.v1.Health/Check`` over h2c with the probe's service name; passes only on
  ``grpc-status: 0`` and ``SERVING``. Messages are encoded by hand (two tiny protobufs), so the
  check needs neither grpcio nor generated code.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Sequence


__all__ = [
    "PROBE_USER_AGENT",
    "CheckFailed",
    "decode_health_status",
    "encode_health_request",
    "grpc_health_check",
    "http_get",
    "tcp_connect",
]

logger = logging.getLogger(__name__)

PROBE_USER_AGENT = "kube-probe//"
"""Upstream builds ``kube-probe/<major>/<minor>`` with both parts empty."""

_MAX_BODY = 64 * 1024  # a gRPC health answer is a few bytes; refuse to buffer more
_HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
_SERVING_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_SERVING = 1
_GRPC_UNIMPLEMENTED = "12"
# Connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2); Host becomes :authority.
_H2_DROPPED_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}
)


class CheckFailed(Exception):
    """The user container did not pass this attempt; ``str(exc)`` says why."""


# --- TCP ----------------------------------------------------------------------------------------


async def tcp_connect(host: str, port: int, timeout: float) -> None:
    """Pass when a TCP connection to ``host:port`` opens within ``timeout``; it is closed at once."""
    loop = asyncio.get_running_loop()
    where = _authority(host, port)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except TimeoutError:
        raise CheckFailed(f"tcp connect to {where} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise CheckFailed(f"tcp connect to {where} failed: {exc}") from None
    transport.close()


# --- HTTP ---------------------------------------------------------------------------------------


async def http_get(
    *,
    host: str,
    port: int,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    tls: bool = False,
    try_h2c: bool = False,
    timeout: float,
) -> None:
    """Pass when ``GET target`` answers 200-399.

    ``target`` is the request target (path and query, already escaped). With ``try_h2c`` (and
    no TLS) an h2c attempt comes first and its own ``timeout`` starts; if it does not pass, an
    HTTP/1.1 attempt follows with a fresh ``timeout``, as upstream's auto-detection does.
    """
    if try_h2c and not tls:
        try:
            status = await _h2c_get_status(host, port, target, headers, timeout)
        except CheckFailed as exc:
            logger.debug("h2c readiness attempt failed, trying HTTP/1.1: %s", exc)
        else:
            if 200 <= status < 400:
                return
            logger.debug("h2c readiness attempt answered %d, trying HTTP/1.1", status)
    status = await _http1_get_status(host, port, target, headers, tls, timeout)
    if not 200 <= status < 400:
        raise CheckFailed(f"HTTP probe did not respond Ready, got status code: {status}")


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_insecure_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """A client context that encrypts but verifies nothing, built once (no CA bundle to load)."""
    global _insecure_tls
    if _insecure_tls is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _insecure_tls = ctx
    return _insecure_tls


def _http1_request(host: str, port: int, target: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {_authority(host, port)}",
        f"User-Agent: {PROBE_USER_AGENT}",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _http1_get_status(
    host: str, port: int, target: str, headers: Sequence[tuple[str, str]], tls: bool, timeout: float
) -> int:
    scheme = "https" if tls else "http"
    url = f"{scheme}://{_authority(host, port)}{target}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=_tls_context() if tls else None, server_hostname=host if tls else None
            )
            writer.write(_http1_request(host, port, target, headers))
            return await _read_final_status(reader)
    except TimeoutError:
        raise CheckFailed(f"GET {url} timed out after {timeout:g}s") from None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; ValueError: line too long
        raise CheckFailed(f"GET {url} failed: {exc}") from None
    finally:
        if writer is not None and tls:
            # We have what we need (the status); do not linger in a TLS close handshake.
            writer.transport.abort()
        elif writer is not None:
            writer.close()


async def _read_final_status(reader: asyncio.StreamReader) -> int:
    """The status of the final response, skipping interim 1xx answers (except 101)."""
    while True:
        line = await reader.readline()
        if not line:
            raise CheckFailed("connection closed before a response")
        parts = line.split(None, 2)
        valid_code = len(parts) >= 2 and parts[1].isdigit() and len(parts[1]) == 3
        if not (valid_code and parts[0].startswith(b"HTTP/1.")):
            raise CheckFailed(f"malformed status line {line[:80]!r}")
        status = int(parts[1])
        if not (100 <= status < 200 and status != 101):
            return status
        while (await reader.readline()).strip():
            pass  # the interim response's header block


# --- HTTP/2 cleartext (h2c, prior knowledge) ----------------------------------------------------


@dataclass
class _H2Answer:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)


async def _h2c_exchange(
    host: str, port: int, headers: list[tuple[str, str]], body: bytes | None, *, need_end: bool
) -> _H2Answer:
    """One request on a fresh h2c connection. Returns at the response headers unless ``need_end``."""
    reader, writer = await asyncio.open_connection(host, port)
    import h2.config  # only when h2c auto-detection is on: h2 costs start-up time
    import h2.connection
    import h2.events
    import h2.exceptions

    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config)
    try:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            conn.send_data(stream_id, body, end_stream=True)
        writer.write(conn.data_to_send())
        answer = _H2Answer()
        while True:
            data = await reader.read(65536)
            if not data:
                raise CheckFailed("h2c connection closed before the response ended")
            for event in conn.receive_data(data):
                if getattr(event, "stream_id", stream_id) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = dict(event.headers)  # type: ignore[arg-type]
                    if not need_end:
                        return answer
                elif isinstance(event, h2.events.DataReceived):
                    answer.body += event.data or b""
                    if len(answer.body) > _MAX_BODY:
                        raise CheckFailed(f"response body over {_MAX_BODY} bytes")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = dict(event.headers)  # type: ignore[arg-type]
                elif isinstance(event, h2.events.StreamEnded):
                    return answer
                elif isinstance(event, h2.events.StreamReset):
                    raise CheckFailed(f"h2c stream reset by the server (error code {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    code = event.error_code
                    raise CheckFailed(f"h2c connection terminated by the server (error code {code})")
            pending = conn.data_to_send()
            if pending:
                writer.write(pending)
    except h2.exceptions.H2Error as exc:
        raise CheckFailed(f"h2c protocol error: {exc}") from None
    finally:
        if not writer.is_closing():
            try:
                conn.close_connection()
                writer.write(conn.data_to_send())
            except (h2.exceptions.H2Error, OSError):
                pass
        writer.close()


async def _h2c_get_status(
    host: str, port: int, target: str, headers: Sequence[tuple[str, str]], timeout: float
) -> int:
    request = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", _authority(host, port)),
        (":path", target),
        ("user-agent", PROBE_USER_AGENT),
    ]
    request.extend((n.lower(), v) for n, v in headers if n.lower() not in _H2_DROPPED_HEADERS)
    try:
        async with asyncio.timeout(timeout):
            answer = await _h2c_exchange(host, port, request, None, need_end=False)
    except TimeoutError:
        raise CheckFailed(f"h2c GET {target} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise CheckFailed(f"h2c GET {target} failed: {exc}") from None
    status = answer.headers.get(":status", "")
    if not status.isdigit():
        raise CheckFailed(f"h2c response without a valid :status ({status!r})")
    return int(status)


# --- gRPC health (grpc.health.v1) ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckFailed("truncated protobuf varint in the health response")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def encode_health_request(service: str) -> bytes:
    """``HealthCheckRequest{service}`` as protobuf bytes (field 1, string; empty means absent)."""
    raw = service.encode()
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def decode_health_status(message: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, enum) from protobuf bytes; unknown fields skipped."""
    pos, status = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(message, pos)
            if number == 1:
                status = value
        elif wire_type == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise CheckFailed(f"unsupported protobuf wire type {wire_type} in the health response")
    if pos != len(message):
        raise CheckFailed("truncated health response message")
    return status


def _grpc_unframe(body: bytes) -> bytes:
    if len(body) < 5:
        raise CheckFailed(f"gRPC response has no message ({len(body)} body bytes)")
    if body[0] != 0:
        raise CheckFailed("gRPC response is compressed, which the probe did not ask for")
    length = int.from_bytes(body[1:5], "big")
    if len(body) < 5 + length:
        raise CheckFailed("gRPC response message is truncated")
    return bytes(body[5 : 5 + length])


async def grpc_health_check(*, host: str, port: int, service: str, timeout: float) -> None:
    """Pass when ``grpc.health.v1.Health/Check(service)`` answers ``SERVING`` within ``timeout``."""
    message = encode_health_request(service)
    request = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", _authority(host, port)),
        (":path", _HEALTH_CHECK_PATH),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", PROBE_USER_AGENT),
        ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
    ]
    where = f"gRPC health check at {_authority(host, port)} (service {service!r})"
    try:
        async with asyncio.timeout(timeout):
            answer = await _h2c_exchange(
                host, port, request, b"\x00" + len(message).to_bytes(4, "big") + message, need_end=True
            )
    except TimeoutError:
        raise CheckFailed(f"{where} did not complete within {timeout:g}s") from None
    except OSError as exc:
        raise CheckFailed(f"{where} failed to connect: {exc}") from None
    if answer.headers.get(":status") != "200":
        raise CheckFailed(f"{where} got HTTP status {answer.headers.get(':status')!r}")
    grpc_status = answer.trailers.get("grpc-status", answer.headers.get("grpc-status"))
    if grpc_status is None:
        raise CheckFailed(f"{where} ended without a grpc-status")
    if grpc_status != "0":
        detail = answer.trailers.get("grpc-message", answer.headers.get("grpc-message", ""))
        if grpc_status == _GRPC_UNIMPLEMENTED:
            raise CheckFailed(f"{where}: the server does not implement grpc.health.v1.Health ({detail})")
        raise CheckFailed(f"{where} failed with grpc-status {grpc_status} ({detail})")
    status = decode_health_status(_grpc_unframe(answer.body))
    if status != _SERVING:
        name = _SERVING_STATUS_NAMES.get(status, str(status))
        raise CheckFailed(f"{where}: service unhealthy (responded with {name!r})")
