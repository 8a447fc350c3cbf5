"""The HTTP/1.1 engine (``queueproxy.http1`` + ``queueproxy.upstream``) with fake transports and a
fake clock: no sockets, no real time. Bytes go in as a client and an upstream would send them;
the tests read what the engine wrote to each side."""
from __future__ import annotations

import gc
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from queueproxy.drain import Drainer
from queueproxy.handler import QueueHandler
from queueproxy.http1 import H_CONNECTION, H_PROBE, H_UA, H_XFF, H_XFF_FIRST, Exchange, HttpServer, Limits
from queueproxy import upstream as upstream_module
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamConnection, UpstreamPool

# ---- fakes ------------------------------------------------------------------------------------


class FakeTransport:
    def __init__(self, peer: tuple[str, int] = ("192.0.2.9", 40000)) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True
        self.peer = peer
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class _Handle:
    def __init__(self, when: float, cb: Callable[..., object], args: tuple[object, ...]) -> None:
        self.when, self.cb, self.args, self.cancelled = when, cb, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just what the engine asks of a loop: a clock and timers, advanced by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[tuple[float, int, _Handle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[..., object], *args: object) -> _Handle:
        h = _Handle(when, cb, args)
        heapq.heappush(self._heap, (when, next(self._seq), h))
        return h

    def call_later(self, delay: float, cb: Callable[..., object], *args: object) -> _Handle:
        return self.call_at(self.now + delay, cb, *args)

    def call_soon(self, cb: Callable[..., object], *args: object) -> _Handle:
        return self.call_at(self.now, cb, *args)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, h = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if not h.cancelled:
                h.cb(*h.args)
        self.now = end


class FakePool(UpstreamPool):
    """Dials complete when the test says so, with a fake transport per upstream connection."""

    def __init__(self, loop: FakeLoop) -> None:
        super().__init__("127.0.0.1", 8080, loop=loop)  # type: ignore[arg-type]
        self.pending: list[Callable[[UpstreamConnection | None, BaseException | None], None]] = []
        self.made: list[tuple[UpstreamConnection, FakeTransport]] = []

    def connect(self, done: Callable[[UpstreamConnection | None, BaseException | None], None]) -> None:
        self.pending.append(done)

    def dial(self) -> tuple[UpstreamConnection, FakeTransport]:
        """Complete the oldest pending dial."""
        up, t = UpstreamConnection(self), FakeTransport()
        up.connection_made(t)  # type: ignore[arg-type]
        self.made.append((up, t))
        self.pending.pop(0)(up, None)
        return up, t

    def refuse(self) -> None:
        self.pending.pop(0)(None, ConnectionRefusedError("dial tcp 127.0.0.1:8080: connection refused"))


class Forward:
    """An app that sends everything upstream (``local`` answers some requests itself)."""

    def __init__(self, pool: FakePool, timeouts: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.pool = pool
        self.timeouts = timeouts
        self.local: Callable[[Exchange], bool] = lambda ex: False
        self.seen: list[Exchange] = []

    def handle(self, ex: Exchange) -> None:
        self.seen.append(ex)
        if self.local(ex):
            return
        ex.set_timeouts(*self.timeouts)
        ex.prepare()
        ex.forward(self.pool)


class Rig:
    def __init__(self, timeouts: tuple[float, float, float] = (0.0, 0.0, 0.0), limits: Limits = Limits()) -> None:
        self.loop = FakeLoop()
        self.pool = FakePool(self.loop)
        self.app = Forward(self.pool, timeouts)
        self.server = HttpServer(self.app, loop=self.loop, limits=limits)  # type: ignore[arg-type]
        self.conn = self.server.protocol()
        self.client = FakeTransport()
        self.conn.connection_made(self.client)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def upstream(self) -> tuple[UpstreamConnection, FakeTransport]:
        if self.pool.pending:
            return self.pool.dial()
        return self.pool.made[-1]


def req(method: str = "GET", target: str = "/", headers: tuple[str, ...] = (), body: bytes | None = None,
        version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: app.example", *headers]
    if body is not None and not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def queue_handler(loop: FakeLoop, pool: FakePool, cc: int = 0, timeout: float = 300.0,
                  **timeouts: float) -> QueueHandler:
    """The queue-proxy's own app over the fakes (always ready; its stats at ``.stats``)."""
    async def ready() -> bool:
        return True

    return QueueHandler(loop=loop, pool=pool, stats=RequestStats(loop.time()),  # type: ignore[arg-type]
                        drainer=Drainer(0.0, loop), readiness=ready,  # type: ignore[arg-type]
                        container_concurrency=cc, timeout=timeout, **timeouts)


def connect(server: HttpServer, n: int) -> list[tuple[Any, FakeTransport]]:
    """``n`` client connections to ``server``, each with its fake transport."""
    clients = []
    for _ in range(n):
        conn, t = server.protocol(), FakeTransport()
        conn.connection_made(t)  # type: ignore[arg-type]
        clients.append((conn, t))
    return clients


def answer_upstreams(loop: FakeLoop, pool: FakePool, response: bytes = OK) -> None:
    """Complete the pending dials and answer every request that reached an open upstream."""
    while pool.pending:
        pool.dial()
    loop.advance(0)
    for up, ut in pool.made:
        if not ut.closed and ut.take():
            up.data_received(response)
    loop.advance(0)


def head_lines(raw: bytes) -> list[str]:
    return raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")


# ---- forwarding ---------------------------------------------------------------------------------


def test_a_request_goes_upstream_without_hop_by_hop_headers_and_with_the_client_in_x_forwarded_for() -> None:
    r = Rig()
    r.send(req("GET", "/a?b=1", ("Connection: keep-alive, X-Hop", "X-Hop: 1", "Keep-Alive: 5", "TE: trailers",
                                 "Proxy-Authorization: x", "X-Forwarded-For: 203.0.113.1", "X-Keep: yes")))
    _, up = r.upstream()
    lines = head_lines(up.take())
    assert lines[0] == "GET /a?b=1 HTTP/1.1"
    names = [line.split(":")[0].lower() for line in lines[1:]]
    assert not {"connection", "x-hop", "keep-alive", "te", "proxy-authorization"} & set(names)
    assert "X-Keep: yes" in lines and "Host: app.example" in lines
    assert "X-Forwarded-For: 203.0.113.1, 192.0.2.9" in lines


def test_the_response_streams_back_and_the_upstream_connection_is_reused() -> None:
    r = Rig()
    r.send(req())
    up, ut = r.upstream()
    ut.take()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n01234")
    first = r.client.take()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n01234")
    assert b"connection: keep-alive" not in first.lower()
    up.data_received(b"56789")
    assert r.client.take() == b"56789"
    assert r.pool.idle == [up]
    r.send(req("GET", "/second"))
    assert not r.pool.pending, "a new dial although an idle connection was free"
    assert ut.take().startswith(b"GET /second HTTP/1.1")


def test_an_upstream_connection_is_not_reused_when_the_response_came_before_the_whole_request_body() -> None:
    r = Rig()
    r.send(req("POST", "/up", ("Content-Length: 10",)) + b"01234")
    up, ut = r.upstream()
    up.data_received(OK)  # an early answer: the app still expects five more bytes
    assert r.client.take().endswith(b"\r\n\r\nok") and r.client.closed
    assert r.pool.idle == [] and ut.closed


def test_a_response_without_length_is_rechunked_for_an_http11_client() -> None:
    r = Rig()
    r.send(req())
    up, ut = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
    up.data_received(b"def")
    up.connection_lost(None)
    out = r.client.take()
    assert b"Transfer-Encoding: chunked" in out
    assert out.endswith(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
    assert not r.client.closed  # the client's connection stays usable


def test_trailers_of_a_chunked_response_close_the_chunked_body_for_the_client() -> None:
    r = Rig()
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                     b"2\r\nok\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n")
    out = r.client.take()
    assert out.endswith(b"\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n")
    r.send(req("GET", "/next"))  # both sides stay in step
    up.data_received(OK)
    assert r.client.take().endswith(b"\r\n\r\nok")


def test_a_chunked_response_with_trailers_split_into_single_bytes_arrives_whole() -> None:
    r = Rig()
    r.send(req())
    up, _ = r.upstream()
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
           b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n")
    for i in range(len(raw)):
        up.data_received(raw[i:i + 1])
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n") and b"Transfer-Encoding: chunked\r\n" in out
    assert out.endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\nX-Sum: 9\r\n\r\n")  # as it came
    r.send(req("GET", "/next"))  # the next response is parsed afresh
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 2\r\n\r\nok")
    out = r.client.take()
    assert b"X-B: 2\r\n" in out and out.endswith(b"\r\n\r\nok") and b"X-Sum" not in out


def test_early_hints_and_the_final_response_in_one_read_both_pass() -> None:
    r = Rig()
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok")
    out = r.client.take()
    hints, final = out.split(b"\r\n\r\n", 1)
    assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload"
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Final: 1\r\n" in final and final.endswith(b"ok")
    assert b"Link:" not in final


def test_response_hop_by_hop_headers_and_those_connection_names_are_dropped_in_any_case() -> None:
    r = Rig()
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 200 Fine Thanks\r\nCONNECTION: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                     b"X-Secret-Not: 2\r\nkeep-alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
                     b"Upgrade: h2c\r\nTE: trailers\r\nX-Te: 3\r\nContent-Length: 2\r\n\r\nok")
    lines = head_lines(r.client.take())
    assert lines[0] == "HTTP/1.1 200 Fine Thanks"
    assert lines[1:] == ["X-Secret-Not: 2", "X-Te: 3", "Content-Length: 2"]


def test_a_response_head_with_bare_line_feeds_is_a_502() -> None:
    r = Rig()
    r.send(req())
    up, ut = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok")
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 502 ") and b"malformed response from upstream" in out and ut.closed


def test_a_response_head_over_the_limit_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "MAX_RESPONSE_HEAD", 64)
    r = Rig()
    r.send(req())
    up, ut = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"x" * 40 + b"\r\n")
    up.data_received(b"X-More: " + b"y" * 40 + b"\r\n")
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 502 ") and b"response head over 64 bytes" in out
    assert ut.closed


def test_a_whole_response_is_sent_in_one_write_before_the_finish_bookkeeping_runs() -> None:
    r = Rig()
    writes: list[bytes] = []
    r.client.write = lambda data: writes.append(bytes(data))  # type: ignore[method-assign]
    seen_at_finish: list[list[bytes]] = []
    r.app.local = lambda ex: setattr(ex, "on_finish", lambda _: seen_at_finish.append(list(writes))) or False
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\nok")
    assert seen_at_finish == [writes]  # already on its way when stats, metrics and logs ran


def test_status_lines_are_remembered_only_up_to_a_bound() -> None:
    from queueproxy import http1

    assert http1.status_line(200, b"OK") == b"HTTP/1.1 200 OK\r\n"
    assert http1.status_line(503) == b"HTTP/1.1 503 Service Unavailable\r\n"
    for i in range(1000):  # an app inventing reason phrases cannot grow the table
        assert http1.status_line(200, b"reason %d" % i) == b"HTTP/1.1 200 reason %d\r\n" % i
    assert len(http1._STATUS_LINES) <= 256


def test_a_1xx_passes_its_connection_header_while_the_final_head_drops_it() -> None:
    r = Rig()
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 103 Early Hints\r\nConnection: keep-alive\r\nLink: </a>\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    hints, final = r.client.take().split(b"\r\n\r\n", 1)
    assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: keep-alive"
    assert b"onnection" not in final


def test_pipelined_requests_are_answered_in_order() -> None:
    r = Rig()
    r.send(req("GET", "/1") + req("GET", "/2") + req("GET", "/3"))
    up, ut = r.upstream()
    assert ut.take().startswith(b"GET /1 ")  # one at a time on the upstream side
    for n in (1, 2, 3):
        up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
        if n < 3:
            assert ut.take().startswith(b"GET /%d " % (n + 1))
    out = r.client.take()
    assert [part[-1:] for part in out.split(b"HTTP/1.1 200 OK")[1:]] == [b"1", b"2", b"3"]


def test_a_head_response_leaves_both_connections_in_step() -> None:
    r = Rig()
    r.send(req("HEAD", "/h"))
    up, ut = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    out = r.client.take()
    assert out.endswith(b"Content-Length: 100\r\n\r\n")
    r.send(req("GET", "/next"))
    up.data_received(OK)
    assert r.client.take().endswith(b"\r\n\r\nok")


def test_an_http10_keep_alive_client_is_told_the_connection_stays_open() -> None:
    r = Rig()
    r.send(req("GET", "/", ("Connection: keep-alive",), version="1.0"))
    up, _ = r.upstream()
    up.data_received(OK)
    assert "Connection: keep-alive" in head_lines(r.client.take())
    r.app.local = lambda ex: ex.respond(204) or True
    r.send(req("GET", "/", ("Connection: keep-alive",), version="1.0"))
    assert "Connection: keep-alive" in head_lines(r.client.take())
    assert not r.client.closed


def test_an_http10_request_without_keep_alive_is_closed_after_its_answer() -> None:
    r = Rig()
    r.send(req("GET", "/", version="1.0"))
    up, _ = r.upstream()
    up.data_received(OK)
    assert "Connection: close" in head_lines(r.client.take()) and r.client.closed


def test_an_http11_request_without_host_gets_400() -> None:
    r = Rig()
    r.send(b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n")
    assert r.client.take().startswith(b"HTTP/1.1 400 ") and r.client.closed
    assert r.app.seen == []
    r = Rig()
    r.send(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0 needs none
    assert r.app.seen and r.pool.pending


# ---- methods llhttp does not know ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["FROBNICATE", "PLAY", "X-Custom_1.0!", "a"])
def test_a_method_token_llhttp_does_not_know_passes_through_with_its_body(method: str) -> None:
    # Go's server, and so upstream's queue-proxy, takes any token as a method.
    r = Rig()
    r.send(req(method, "/m", body=b"hello"))
    assert [ex.method for ex in r.app.seen] == [method.encode()]
    up, ut = r.upstream()
    sent = ut.take()
    assert sent.startswith(f"{method} /m HTTP/1.1\r\n".encode()) and sent.endswith(b"\r\n\r\nhello")
    up.data_received(OK)
    assert r.client.take().startswith(b"HTTP/1.1 200 OK") and not r.client.closed
    r.send(req("POST", "/next", body=b"x"))  # the stand-in was for that request only (and this one
    assert r.app.seen[-1].method == b"POST"  # has a body, so llhttp reads it, not the compiled reader)
    assert ut.take().startswith(b"POST /next HTTP/1.1")


def test_a_known_method_reaches_the_app_as_llhttp_read_it() -> None:
    r = Rig()
    r.send(req("PROPFIND", "/dav", body=b""))
    assert r.app.seen[0].method == b"PROPFIND" and r.conn.method_override is None


@pytest.mark.parametrize("line", [
    b"FR(B / HTTP/1.1",                 # not a token
    b"X" * 65 + b" / HTTP/1.1",          # longer than MAX_METHOD
    b" GET / HTTP/1.1",                 # empty method
])
def test_a_request_line_whose_method_is_not_a_token_still_gets_400(line: bytes) -> None:
    r = Rig()
    r.send(line + b"\r\nHost: a\r\n\r\n")
    assert r.client.take().startswith(b"HTTP/1.1 400 ") and r.client.closed
    assert r.app.seen == []


def test_an_unknown_method_pipelined_behind_another_in_one_read_gets_400_after_the_first_is_answered() -> None:
    # The documented limit: only a method at the start of a read is looked at.
    r = Rig()
    r.send(req("GET", "/1") + req("FROBNICATE", "/2"))
    up, ut = r.upstream()
    assert ut.take().startswith(b"GET /1 ")
    up.data_received(OK)
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 " in out and r.client.closed


def test_a_stand_in_request_whose_head_is_bad_gets_400_and_its_connection_ends() -> None:
    # The stand-in is kept only until the head completes; a head that fails ends the connection,
    # so it cannot be applied to a later request.
    r = Rig()
    r.send(b"FROBNICATE / HTTP/1.1\r\nBad Name: v\r\n\r\n")
    assert r.client.take().startswith(b"HTTP/1.1 400 ") and r.app.seen == []
    assert r.client.closed
    other = Rig()
    other.send(req("GET", "/"))
    assert other.app.seen[0].method == b"GET"


def test_a_stand_in_head_split_over_reads_keeps_its_method() -> None:
    r = Rig()
    r.send(b"FROBNICATE /m HTTP/1.1\r\nHo")
    r.send(b"st: a\r\n\r\n")
    assert [ex.method for ex in r.app.seen] == [b"FROBNICATE"]


# ---- Expect: 100-continue -------------------------------------------------------------------


def test_a_client_expecting_100_continue_gets_it_once_the_request_goes_upstream() -> None:
    r = Rig()
    r.send(req("POST", "/up", ("Expect: 100-continue", "Content-Length: 5")))
    assert r.client.take() == b""  # not before there is an upstream to take the body
    up, ut = r.upstream()
    assert r.client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"Expect: 100-continue" in ut.take()  # the app still sees what the client asked
    up.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")  # the app's own is not passed on
    assert r.client.take() == b""
    r.send(b"hello")
    assert ut.take() == b"hello"
    up.data_received(OK)
    assert r.client.take().startswith(b"HTTP/1.1 200 OK")


def test_a_request_answered_locally_gets_no_100_continue_and_its_connection_closes() -> None:
    r = Rig()
    r.app.local = lambda ex: ex.respond(503, b"full\n") or True
    r.send(req("POST", "/up", ("Expect: 100-continue", "Content-Length: 5")))
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 503 ") and b"100 Continue" not in out
    assert r.client.closed  # its body never came: the connection cannot be reused


@pytest.mark.parametrize("request_bytes", [
    pytest.param(req("POST", "/", ("Expect: 100-continue", "Content-Length: 5"), version="1.0"), id="http10"),
    pytest.param(req("POST", "/", ("Expect: 100-continue",), body=b""), id="no-body"),
    pytest.param(req("POST", "/", ("Expect: something-else", "Content-Length: 5")), id="other-expectation"),
])
def test_no_100_continue_where_it_does_not_apply(request_bytes: bytes) -> None:
    r = Rig()
    r.send(request_bytes)
    r.upstream()
    assert b"100 Continue" not in r.client.take()


# ---- bad input ----------------------------------------------------------------------------------


def test_a_malformed_request_gets_400_and_the_connection_closes() -> None:
    r = Rig()
    r.send(b"NOT A REQUEST\r\n\r\n")
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out
    assert r.client.closed and r.server.rejected == 1


def test_a_bad_request_behind_pipelined_ones_is_refused_after_they_are_answered() -> None:
    r = Rig()
    r.send(req("GET", "/1") + req("GET", "/2") + b"\x16\x03\x01garbage\r\n\r\n")
    up, ut = r.upstream()
    assert r.client.take() == b""
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    out = r.client.take()
    assert out.index(b"\r\n\r\n1") < out.index(b"\r\n\r\n2") < out.index(b"HTTP/1.1 400 ")
    assert r.client.closed


def test_a_broken_body_of_the_request_in_flight_fails_it_with_400() -> None:
    r = Rig()
    r.send(req("POST", "/c", ("Transfer-Encoding: chunked",)) + b"3\r\nabc\r\n")
    up, ut = r.upstream()
    r.send(b"zz\r\n")
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 400 ")
    assert r.client.closed and ut.closed  # the half-sent request is abandoned upstream


def test_a_head_over_the_limit_gets_431() -> None:
    r = Rig(limits=Limits(max_head_bytes=1024))
    r.send(req("GET", "/", ("X-Big: " + "v" * 2000,)))
    assert r.client.take().startswith(b"HTTP/1.1 431 ")
    assert r.client.closed and not r.pool.pending


@pytest.mark.parametrize(("raw", "status"), [
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
                 id="another-coding"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, id="two-hosts"),
])
def test_a_request_the_app_could_misread_is_refused(raw: bytes, status: int) -> None:
    r = Rig()
    r.send(raw)
    assert r.client.take().startswith(b"HTTP/1.1 %d " % status) and r.client.closed
    assert r.app.seen == [] and not r.pool.pending


def test_repeated_request_headers_keep_the_first_line_except_lists() -> None:
    r = Rig()
    r.app.local = lambda ex: ex.respond(204) or True
    r.send(req("GET", "/", ("User-Agent: first", "User-Agent: second", "K-Network-Probe: queue",
                            "K-Network-Probe: probe", "X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2",
                            "Connection: x-a", "Connection: x-b")))
    sp = r.app.seen[0].special
    assert sp[H_UA] == b"first" and sp[H_PROBE] == b"queue"
    assert sp[H_XFF] == b"1.1.1.1, 2.2.2.2" and sp[H_XFF_FIRST] == b"1.1.1.1"
    assert sp[H_CONNECTION] == b"x-a, x-b"


# ---- timeouts on the fake clock ---------------------------------------------------------------


def test_without_an_idle_limit_a_kept_alive_connection_stays_open_while_slow_heads_are_still_cut() -> None:
    r = Rig(limits=Limits(header_timeout=5.0, idle_keepalive=float("inf")))
    r.send(req())
    up, _ = r.upstream()
    up.data_received(OK)
    r.client.take()
    r.loop.advance(86400.0)
    r.conn.sweep(r.loop.time())
    assert not r.client.closed
    r.send(b"GET / HTTP/1.1\r\n")  # then nothing more
    r.loop.advance(6.0)
    r.conn.sweep(r.loop.time())
    assert r.client.take().startswith(b"HTTP/1.1 408 ") and r.client.closed


def test_no_response_within_the_total_timeout_gives_504() -> None:
    r = Rig(timeouts=(2.0, 0.0, 0.0))
    r.send(req())
    up, ut = r.upstream()
    r.loop.advance(1.9)
    assert r.client.take() == b""
    r.loop.advance(0.2)
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 504 ") and out.endswith(b"\r\n\r\nrequest timeout")
    assert ut.closed and not r.client.closed  # the upstream exchange is abandoned; the client may go on


def test_a_timeout_after_the_response_started_cuts_the_client_connection() -> None:
    r = Rig(timeouts=(2.0, 0.0, 0.0))
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    r.loop.advance(2.1)
    assert r.client.closed
    assert b"request timeout" not in r.client.take()


def test_the_idle_timeout_rearms_on_every_write_and_fires_after_silence() -> None:
    r = Rig(timeouts=(100.0, 0.0, 1.0))
    r.send(req())
    up, _ = r.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        r.loop.advance(0.8)
        up.data_received(b"1\r\nx\r\n")
    assert not r.client.closed
    r.loop.advance(1.1)
    assert r.client.closed


def test_the_response_start_timeout_stops_mattering_once_the_response_starts() -> None:
    r = Rig(timeouts=(100.0, 1.0, 0.0))
    r.send(req())
    up, _ = r.upstream()
    r.loop.advance(0.5)
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no")
    r.loop.advance(3.0)
    up.data_received(b"k")
    assert r.client.take().endswith(b"\r\n\r\nok") and not r.client.closed


# ---- upstream failures ----------------------------------------------------------------------


def test_a_refused_dial_gives_502_with_the_error() -> None:
    r = Rig()
    r.send(req())
    r.pool.refuse()
    out = r.client.take()
    assert out.startswith(b"HTTP/1.1 502 ") and b"connection refused" in out


def test_a_pooled_connection_that_died_unseen_is_retried_once_on_a_fresh_one() -> None:
    r = Rig()
    r.send(req("GET", "/1"))
    up, _ = r.upstream()
    up.data_received(OK)
    r.client.take()
    r.send(req("GET", "/2"))  # goes to the pooled connection, which the app had closed
    up.connection_lost(None)
    up2, ut2 = r.pool.dial()
    assert ut2.take().startswith(b"GET /2 ")
    up2.data_received(OK)
    assert r.client.take().startswith(b"HTTP/1.1 200 OK")


# ---- garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cc", [0, 1])
def test_requests_leave_nothing_for_the_cyclic_collector(cc: int) -> None:
    """Each request's objects die by reference counting when it ends, whether it went straight
    through, waited for a breaker slot, or gave up while waiting: under load the cyclic
    collector would otherwise run for every few hundred requests (7 % of the CPU at
    containerConcurrency 10 and 100 clients, before queued requests stopped forming cycles)."""
    loop = FakeLoop()
    pool = FakePool(loop)
    server = HttpServer(queue_handler(loop, pool, cc), loop=loop)  # type: ignore[arg-type]
    clients = connect(server, 3)

    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            for conn, _t in clients:
                conn.data_received(req("GET", "/x", ("X-Forwarded-For: 203.0.113.7",)))
            for _ in range(len(clients)):
                answer_upstreams(loop, pool)
        # one more round where a queued client goes away before its turn
        for conn, _t in clients:
            conn.data_received(req("GET", "/y"))
        clients[-1][0].connection_lost(None)
        for _ in range(len(clients)):
            answer_upstreams(loop, pool)
        answered = sum(t.take().count(b"HTTP/1.1 200 OK") for _c, t in clients)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert answered == 20 * len(clients) + len(clients) - 1  # all but the one that left
    assert unreachable == 0
