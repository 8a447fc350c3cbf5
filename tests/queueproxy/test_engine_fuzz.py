"""The HTTP/1.1 engine under seeded random traffic, with fake transports (no sockets, no time).

Each case is a client connection carrying 1-5 pipelined requests (any method, Content-Length or
chunked bodies, hop-by-hop and forwarding headers), cut into random pieces, through the
queue-proxy's handler (containerConcurrency 0 and 1). The fake user container answers each request
as it arrives upstream with a random response (any status, Content-Length, chunked, chunked with
trailers, ended by closing the connection, no body for 204/304/HEAD, 103 Early Hints first
sometimes), also cut into random pieces. Checked: every request reaches the user container whole
(method and body), and the client gets one well-framed response per request, in order, with the
status and body the user container sent.

A second test mixes in failure: refused dials, user containers that reset, die mid-response,
answer garbage or never answer (revision timeouts fire), clients that leave at any point, on up to
three connections sharing containerConcurrency 1 or 2. Checked: nothing is logged as an error, and
once everyone has gone no breaker slot, queue place, counted request or connection is left behind.
A third test corrupts the client's bytes (flipped, inserted or deleted bytes, stray CR/LF, colons,
NULs, extra framing headers): every response the client gets is well framed (the bad request gets a
4xx/5xx after the ones before it are answered), nothing is logged as an error and nothing is left held.

Seeds are fixed, so a failure names its case.
"""
from __future__ import annotations

import logging
import random
import re
from typing import Any

import httptools
import pytest

from queueproxy.drain import Drainer
from queueproxy.handler import QueueHandler
from queueproxy.http1 import HttpServer
from queueproxy.stats import RequestStats
from tests.queueproxy.test_engine import FakeLoop, FakePool, FakeTransport

CASES = 600


class Messages:
    """Whole HTTP messages out of a byte stream, by httptools."""

    def __init__(self, response: bool) -> None:
        self.done: list[dict[str, Any]] = []
        self.cur: dict[str, Any] = {}
        self.response = response
        self.parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(self)

    def on_message_begin(self) -> None:
        self.cur = {"url": b"", "body": b""}

    def on_url(self, url: bytes) -> None:
        self.cur["url"] += url

    def on_headers_complete(self) -> None:
        if self.response:
            self.cur["status"] = self.parser.get_status_code()
        else:
            self.cur["method"] = self.parser.get_method().decode()

    def on_body(self, chunk: bytes) -> None:
        self.cur["body"] += chunk

    def on_message_complete(self) -> None:
        self.done.append(self.cur)


def chunked(rng: random.Random, body: bytes, trailer: bytes = b"") -> bytes:
    out, rest = [], body
    while rest:
        n = rng.randint(1, len(rest))
        out.append(b"%x\r\n%s\r\n" % (n, rest[:n]))
        rest = rest[n:]
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def some_body(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"ab0\r\n") for _ in range(rng.choice([0, 1, 5, 100, 3000])))


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    out = []
    while data:
        n = rng.choice([1, 2, 7, 50, len(data)])
        out.append(data[:n])
        data = data[n:]
    return out


def a_request(rng: random.Random, i: int) -> tuple[str, bytes, bytes]:
    method = rng.choice(["GET", "GET", "POST", "PUT", "HEAD", "DELETE"])
    lines = [f"{method} /r{i}?q={i} HTTP/1.1", f"Host: h{i}.example"]
    lines += rng.sample(["Accept: */*", "Connection: keep-alive", "X-Forwarded-For: 10.0.0.1", "Keep-Alive: 5",
                         "TE: trailers", "Forwarded: for=192.0.2.1", "K-Original-Host: orig.example",
                         "X-Forwarded-Proto: https", "X-Empty:"], rng.randint(0, 4))
    body, wire = b"", b""
    if method in ("POST", "PUT") or rng.random() < 0.1:
        body = some_body(rng)
        if rng.random() < 0.5:
            lines.append("Transfer-Encoding: chunked")
            wire = chunked(rng, body)
        else:
            lines.append(f"Content-Length: {len(body)}")
            wire = body
    return method, body, ("\r\n".join(lines) + "\r\n\r\n").encode() + wire


def a_response(rng: random.Random, method: str) -> tuple[int, bytes, bytes, bool]:
    """(status, body the client should see, bytes on the wire, closes after)."""
    status = rng.choice([200, 200, 201, 204, 304, 404, 500, 302])
    lines = [f"HTTP/1.1 {status} Whatever"] + [rng.choice(["Server: app", "Date: today"])
                                               for _ in range(rng.randint(0, 3))]
    body = some_body(rng) if status not in (204, 304) else b""
    framing = "none" if status in (204, 304) else rng.choice(["length", "length", "chunked", "trailers", "close"])
    closes = framing == "close"
    if rng.random() < 0.2 and not closes:
        lines.append("Connection: keep-alive")
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        wire = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        wire = chunked(rng, body)
    elif framing == "trailers":
        lines += ["Transfer-Encoding: chunked", "Trailer: X-Digest"]
        wire = chunked(rng, body, b"X-Digest: 1\r\n")
    elif framing == "close":
        lines.append("Connection: close")
        wire = body
    else:
        wire = b""
    if method == "HEAD":
        body = wire = b""
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n" if rng.random() < 0.1 else b""
    return status, body, early + ("\r\n".join(lines) + "\r\n\r\n").encode() + wire, closes


def client_responses(data: bytes, methods: list[str]) -> list[tuple[int, bytes]]:
    """Split what the client got into (status, body), one per request; 1xx heads skipped."""
    got = []
    for method in methods:
        while data.startswith(b"HTTP/1.1 1"):
            data = data[data.index(b"\r\n\r\n") + 4:]
        if not data:
            break
        if method == "HEAD":  # a head alone, whatever its Content-Length says
            end = data.index(b"\r\n\r\n") + 4
            got.append((int(data.split(b" ", 2)[1]), b""))
            data = data[end:]
            continue
        m = Messages(response=True)
        used = 0
        while not m.done:  # byte by byte, to find where this response ends
            assert used < len(data), f"an incomplete response: {data[:200]!r}"
            m.parser.feed_data(data[used:used + 1])
            used += 1
        got.append((m.done[0]["status"], m.done[0]["body"]))
        data = data[used:]
    assert data == b"", f"bytes after the last response: {data[:200]!r}"
    return got


def run_case(seed: int, cc: int) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)

    async def ready() -> bool:
        return True

    handler = QueueHandler(loop=loop, pool=pool, stats=RequestStats(loop.time()),  # type: ignore[arg-type]
                           drainer=Drainer(0.0, loop), readiness=ready,  # type: ignore[arg-type]
                           container_concurrency=cc, timeout=300.0)
    conn = HttpServer(handler, loop=loop).protocol()  # type: ignore[arg-type]
    client = FakeTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    requests = [a_request(rng, i) for i in range(rng.randint(1, 5))]
    expected: list[tuple[int, bytes]] = []
    seen: dict[int, Messages] = {}

    def serve_upstream() -> None:
        for _ in range(100):
            progressed = False
            if pool.pending:
                pool.dial()
                progressed = True
            for up, ut in list(pool.made):
                m = seen.setdefault(id(up), Messages(response=False))
                data = ut.take()
                if data:
                    m.parser.feed_data(data)
                while m.done:
                    got = m.done.pop(0)
                    i = int(got["url"].split(b"?q=")[1])
                    method, body, _ = requests[i]
                    assert (got["method"], got["body"]) == (method, body), f"request {i} reached the app altered"
                    status, rbody, wire, closes = a_response(rng, method)
                    expected.append((status, rbody))
                    for piece in pieces(rng, wire):
                        up.data_received(piece)
                    if closes and not ut.closed:
                        up.connection_lost(None)
                    progressed = True
            loop.advance(0)
            if not progressed:
                return

    for piece in pieces(rng, b"".join(wire for _, _, wire in requests)):
        conn.data_received(piece)
        serve_upstream()
    serve_upstream()
    assert len(expected) == len(requests), "a request never reached the app"
    assert client_responses(client.take(), [m for m, _, _ in requests]) == expected
    assert not client.closed


@pytest.mark.parametrize("cc", [0, 1])
def test_random_request_and_response_mixes_arrive_whole_and_in_order(cc: int) -> None:
    failures = []
    for seed in range(CASES):
        try:
            run_case(seed, cc)
        except Exception as e:  # noqa: BLE001 - any failure is reported with its seed
            failures.append(f"seed {seed}: {e!r}")
    assert not failures, f"{len(failures)} of {CASES} cases failed; first: {failures[0]}"


def run_failure_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)

    async def ready() -> bool:
        return True

    stats = RequestStats(loop.time())
    handler = QueueHandler(loop=loop, pool=pool, stats=stats, drainer=Drainer(0.0, loop),  # type: ignore[arg-type]
                           readiness=ready, container_concurrency=rng.choice([1, 2]),
                           timeout=rng.choice([300.0, 5.0]), response_start_timeout=rng.choice([0.0, 2.0]),
                           idle_timeout=rng.choice([0.0, 1.0]))
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    clients = []  # [connection, transport, pieces still to send]
    for _ in range(rng.randint(1, 3)):
        conn, t = server.protocol(), FakeTransport()
        conn.connection_made(t)  # type: ignore[arg-type]
        wire = b"".join(w for _, _, w in (a_request(rng, i) for i in range(rng.randint(1, 3))))
        clients.append((conn, t, pieces(rng, wire)))

    lost: set[int] = set()

    def leave(conn: Any, t: FakeTransport) -> None:
        """The peer goes away (or, for a transport the engine closed, the loop reports it)."""
        t.closed = True
        if id(conn) not in lost:
            lost.add(id(conn))
            conn.connection_lost(None)

    for _ in range(200):
        live = [c for c in clients if not c[1].closed]
        if live and rng.random() < 0.6:
            conn, t, todo = rng.choice(live)
            if todo and rng.random() < 0.95:
                conn.data_received(todo.pop(0))
            elif rng.random() < 0.3:
                leave(conn, t)
        if pool.pending and rng.random() < 0.7:
            pool.refuse() if rng.random() < 0.1 else pool.dial()
        for up, ut in list(pool.made):
            if ut.closed or not ut.take():
                continue
            what = rng.random()
            if what < 0.6:  # an answer, possibly cut short by the app dying
                _, _, wire, closes = a_response(rng, "GET")
                parts = pieces(rng, wire)
                dies = rng.random() < 0.15 and len(parts) > 1
                for part in parts[:rng.randint(1, len(parts) - 1)] if dies else parts:
                    up.data_received(part)
                if (dies or closes) and not ut.closed:
                    leave(up, ut)
            elif what < 0.7:
                up.data_received(b"garbage\r\n\r\n")
            elif what < 0.8:
                ut.closed = True
                lost.add(id(up))
                up.connection_lost(ConnectionResetError("connection reset by peer"))
            # else: no answer at all; the revision timeouts deal with it
        loop.advance(rng.choice([0.0, 0.0, 0.0, 0.5, 3.0]))
    for conn, t, _ in clients:
        for status in re.findall(rb"HTTP/1.1 (\d{3})", bytes(t.out)):
            statuses[int(status)] = statuses.get(int(status), 0) + 1
        leave(conn, t)
    for up, ut in pool.made:
        leave(up, ut)
    loop.advance(1000.0)
    breaker = handler.breaker
    assert breaker is not None
    assert (breaker.active, breaker.waiting) == (0, 0), "a breaker slot or queue place leaked"
    assert stats.concurrency == 0, "a request is still counted as in flight"
    assert not server.connections, "a client connection is still tracked"


def test_failures_anywhere_leave_no_slot_request_or_connection_behind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for seed in range(CASES):
        try:
            run_failure_case(seed, statuses)
        except Exception as e:  # noqa: BLE001 - any failure is reported with its seed
            failures.append(f"seed {seed}: {e!r}")
    assert not failures, f"{len(failures)} of {CASES} cases failed; first: {failures[0]}"
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    # the mix did reach every outcome: answers, 502 from failed upstreams, 504 from timeouts
    assert statuses.get(200, 0) > 50 and statuses.get(502, 0) > 50 and statuses.get(504, 0) > 50, statuses


def run_corrupt_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)

    async def ready() -> bool:
        return True

    stats = RequestStats(loop.time())
    handler = QueueHandler(loop=loop, pool=pool, stats=stats, drainer=Drainer(0.0, loop),  # type: ignore[arg-type]
                           readiness=ready, container_concurrency=1, timeout=5.0)
    conn = HttpServer(handler, loop=loop).protocol()  # type: ignore[arg-type]
    client = FakeTransport()
    conn.connection_made(client)  # type: ignore[arg-type]
    wire = bytearray(b"".join(a_request(rng, i)[2] for i in range(rng.randint(1, 4))))
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(wire))
        what = rng.random()
        if what < 0.4:
            wire[at] = rng.randrange(256)
        elif what < 0.7:
            wire[at:at] = rng.choice([b"\r\n", b"\n", b":", b" ", b"\x00", b"\r\n\r\n", rng.randbytes(5),
                                      b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n"])
        else:
            del wire[at:at + rng.randint(1, 10)]
    for piece in pieces(rng, bytes(wire)):
        if client.closed:
            break
        conn.data_received(piece)
        for _ in range(5):
            while pool.pending:
                pool.dial()
            loop.advance(0)
            for up, ut in pool.made:
                if not ut.closed and ut.take():
                    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            loop.advance(0)
    loop.advance(10.0)
    out = bytes(client.out)
    for status in re.findall(rb"HTTP/1.1 (\d{3})", out):
        statuses[int(status)] = statuses.get(int(status), 0) + 1
    if b"HEAD" not in wire:  # (a HEAD response's head alone cannot be framed without knowing it is one)
        while out:
            m = Messages(response=True)
            used = 0
            while not m.done:
                assert used < len(out), f"an incomplete response: {out[:200]!r}"
                m.parser.feed_data(out[used:used + 1])
                used += 1
            out = out[used:]
    client.closed = True
    conn.connection_lost(None)
    for up, ut in pool.made:
        if not ut.closed:
            ut.closed = True
            up.connection_lost(None)
    loop.advance(100.0)
    breaker = handler.breaker
    assert breaker is not None
    assert (breaker.active, breaker.waiting) == (0, 0), "a breaker slot or queue place leaked"
    assert stats.concurrency == 0, "a request is still counted as in flight"


def test_corrupted_requests_get_well_framed_answers_and_leave_nothing_behind(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for seed in range(CASES):
        try:
            run_corrupt_case(seed, statuses)
        except Exception as e:  # noqa: BLE001 - any failure is reported with its seed
            failures.append(f"seed {seed}: {e!r}")
    assert not failures, f"{len(failures)} of {CASES} cases failed; first: {failures[0]}"
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 100, statuses
