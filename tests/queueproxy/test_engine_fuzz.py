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
from collections.abc import Callable
from typing import Any

import httptools
import pytest

from queueproxy.handler import QueueHandler
from queueproxy.http1 import HttpServer
from tests.queueproxy.test_engine import FakeLoop, FakePool, FakeTransport, answer_upstreams, connect, queue_handler

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


def next_response(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The first whole response in ``data`` and what follows it (fed byte by byte to find its end)."""
    m = Messages(response=True)
    used = 0
    while not m.done:
        assert used < len(data), f"an incomplete response: {data[:200]!r}"
        m.parser.feed_data(data[used:used + 1])
        used += 1
    return m.done[0], data[used:]


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
        msg, data = next_response(data)
        got.append((msg["status"], msg["body"]))
    assert data == b"", f"bytes after the last response: {data[:200]!r}"
    return got


def count_statuses(out: bytes, statuses: dict[int, int]) -> None:
    for status in re.findall(rb"HTTP/1.1 (\d{3})", out):
        statuses[int(status)] = statuses.get(int(status), 0) + 1


def for_every_seed(case: Callable[..., object], *args: object) -> None:
    """Run ``case(seed, *args)`` for each seed; any failure is reported with its seed."""
    failures = []
    for seed in range(CASES):
        try:
            case(seed, *args)
        except Exception as e:  # noqa: BLE001 - any failure is reported with its seed
            failures.append(f"seed {seed}: {e!r}")
    assert not failures, f"{len(failures)} of {CASES} cases failed; first: {failures[0]}"


class Departures:
    """Ends connections once each, as the loop would: the peer goes away, or the engine closed
    the transport and the loop reports it."""

    def __init__(self) -> None:
        self.gone: set[int] = set()

    def leave(self, conn: Any, t: FakeTransport, exc: Exception | None = None) -> None:
        t.closed = True
        if id(conn) not in self.gone:
            self.gone.add(id(conn))
            conn.connection_lost(exc)


def client_step(rng: random.Random, clients: list[tuple[Any, FakeTransport, list[bytes]]],
                departures: Departures) -> None:
    """Maybe a random live client sends its next piece, or (now and then) goes away."""
    live = [c for c in clients if not c[1].closed]
    if live and rng.random() < 0.6:
        conn, t, todo = rng.choice(live)
        if todo and rng.random() < 0.95:
            conn.data_received(todo.pop(0))
        elif rng.random() < 0.3:
            departures.leave(conn, t)


def answer_or_die(rng: random.Random, up: Any, ut: FakeTransport, departures: Departures, dies: float) -> None:
    """A random response in random pieces; with probability ``dies`` the app dies partway."""
    _, _, wire, closes = a_response(rng, "GET")
    parts = pieces(rng, wire)
    cut = rng.random() < dies and len(parts) > 1
    for part in parts[:rng.randint(1, len(parts) - 1)] if cut else parts:
        up.data_received(part)
    if (cut or closes) and not ut.closed:
        departures.leave(up, ut)


def assert_holds_nothing(handler: QueueHandler) -> None:
    breaker = handler.breaker
    assert breaker is not None
    assert (breaker.active, breaker.waiting) == (0, 0), "a breaker slot or queue place leaked"
    assert handler.stats.concurrency == 0, "a request is still counted as in flight"


def run_case(seed: int, cc: int) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)
    ((conn, client),) = connect(HttpServer(queue_handler(loop, pool, cc), loop=loop), 1)  # type: ignore[arg-type]
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
    for_every_seed(run_case, cc)


def run_failure_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)
    handler = queue_handler(loop, pool, rng.choice([1, 2]), timeout=rng.choice([300.0, 5.0]),
                            response_start_timeout=rng.choice([0.0, 2.0]), idle_timeout=rng.choice([0.0, 1.0]))
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    clients = []  # [connection, transport, pieces still to send]
    for conn, t in connect(server, rng.randint(1, 3)):
        wire = b"".join(w for _, _, w in (a_request(rng, i) for i in range(rng.randint(1, 3))))
        clients.append((conn, t, pieces(rng, wire)))
    departures = Departures()
    for _ in range(200):
        client_step(rng, clients, departures)
        if pool.pending and rng.random() < 0.7:
            pool.refuse() if rng.random() < 0.1 else pool.dial()
        for up, ut in list(pool.made):
            if ut.closed or not ut.take():
                continue
            what = rng.random()
            if what < 0.6:  # an answer, possibly cut short by the app dying
                answer_or_die(rng, up, ut, departures, 0.15)
            elif what < 0.7:
                up.data_received(b"garbage\r\n\r\n")
            elif what < 0.8:
                departures.leave(up, ut, ConnectionResetError("connection reset by peer"))
            # else: no answer at all; the revision timeouts deal with it
        loop.advance(rng.choice([0.0, 0.0, 0.0, 0.5, 3.0]))
    for conn, t, _ in clients:
        count_statuses(bytes(t.out), statuses)
        departures.leave(conn, t)
    for up, ut in pool.made:
        departures.leave(up, ut)
    loop.advance(1000.0)
    assert_holds_nothing(handler)
    assert not server.connections, "a client connection is still tracked"


def test_failures_anywhere_leave_no_slot_request_or_connection_behind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    statuses: dict[int, int] = {}
    for_every_seed(run_failure_case, statuses)
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    # the mix did reach every outcome: answers, 502 from failed upstreams, 504 from timeouts
    assert statuses.get(200, 0) > 50 and statuses.get(502, 0) > 50 and statuses.get(504, 0) > 50, statuses


def run_corrupt_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    pool = FakePool(loop)
    handler = queue_handler(loop, pool, 1, timeout=5.0)
    ((conn, client),) = connect(HttpServer(handler, loop=loop), 1)  # type: ignore[arg-type]
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
            answer_upstreams(loop, pool)
    loop.advance(10.0)
    out = bytes(client.out)
    count_statuses(out, statuses)
    if b"HEAD" not in wire:  # (a HEAD response's head alone cannot be framed without knowing it is one)
        while out:
            _, out = next_response(out)
    departures = Departures()
    departures.leave(conn, client)
    for up, ut in pool.made:
        departures.leave(up, ut)
    loop.advance(100.0)
    assert_holds_nothing(handler)


def test_corrupted_requests_get_well_framed_answers_and_leave_nothing_behind(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    statuses: dict[int, int] = {}
    for_every_seed(run_corrupt_case, statuses)
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 100, statuses
