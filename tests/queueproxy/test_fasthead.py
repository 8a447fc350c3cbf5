"""``queueproxy._fasthead``: the compiled reader of common HTTP/1.1 heads must change nothing but
speed. Every head it accepts must come out exactly as httptools' path would give it, and every
head it refuses must still be served (by httptools).

The main check is differential: seeded random requests and responses, built from pieces that are
mostly ordinary and sometimes odd (other methods and targets, HTTP/1.0, blanks and tabs, empty
values, repeated and framing headers, obs-fold, bytes over 0x7f, bodies, extra bytes), go through
two engines over fake transports, one using the compiled reader and one without it. What the app
sees of the request, what goes upstream, what the client gets back and which connections stay open
must be identical. The test also checks that the compiled reader really took a good share of the
heads, and refused a good share, so neither path goes untested.
"""
from __future__ import annotations

import random
from typing import Any

import pytest

from queueproxy import http1, upstream as upstream_module
from queueproxy.upstream import HOP_BY_HOP
from tests.queueproxy.test_engine import Rig
from tests.queueproxy.test_engine_fuzz import CASES, for_every_seed

fasthead = http1._fasthead
pytestmark = pytest.mark.skipif(fasthead is None, reason="queueproxy._fasthead is not compiled here")

# ---- generated messages -------------------------------------------------------------------------

METHODS = ["GET"] * 8 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "get", "FOO"]
TARGETS = ["/"] * 6 + ["/a/b?x=1&y=%20z", "/p;q=1/@:~!$'()*+,=", "/frag#x", "http://h.example/x", "*",
                       "/\xfc".encode("latin-1").decode("latin-1"), '/"q"', "/a|b", "/{x}"]
VERSIONS = ["1.1"] * 6 + ["1.0", "1.2", "2.0"]
REQUEST_HEADERS = [
    "Host: app.example", "Host: app.example", "host: other.example", "HOST: a:80",
    "User-Agent: wrk", "User-Agent: kube-probe/1.30", "Accept: */*", "X-Request-Id: 1234",
    "X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2, 10.0.0.3", "Forwarded: for=1.2.3.4",
    "X-Forwarded-Proto: https", "K-Original-Host: orig.example", "Knative-Serving-Revision: r1",
    "K-Proxy-Request: activator", "K-Network-Probe: queue", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "Connection: close", "Connection: keep-alive", "connection: Keep-Alive", "Connection: TE, close",
    "Connection: upgrade", "Connection: foo bar", "Connection: X-Drop", "X-Drop: gone",
    "Content-Length: 0", "Content-Length: 0", "Content-Length: 00", "Content-Length: 3",
    "Transfer-Encoding: chunked", "Upgrade: websocket", "Expect: 100-continue", "TE: trailers",
    "Keep-Alive: timeout=5", "Proxy-Authorization: x", "Proxy-Connection: close",
    "X-Empty: ", "X-Empty:", "X-Sp:  two", "X-Tr: v ", "X-Tab: a\tb", "X-Tab2:\tv",
    "Bad Name: v", "X-Obs: caf\xe9", "X-Fold: a\r\n b", "X-Ctl: a\x01b", "X-Colon: a:b: c",
]
STATUS_LINES = ["HTTP/1.1 200 OK"] * 6 + [
    "HTTP/1.0 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 500 Internal Server Error", "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified", "HTTP/1.1 200 ", "HTTP/1.1 200", "HTTP/1.1 201  Two  Spaces", "HTTP/1.1 599 X",
    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK", "HTTP/1.1 200 \xc0k",
]
RESPONSE_HEADERS = [
    "Server: nginx/1.22.1", "Date: Sun, 22 Nov 2026 05:01:08 GMT", "Content-Type: text/plain",
    "Set-Cookie: a=1", "Set-Cookie: b=2", "Cache-Control: no-cache", "Connection: keep-alive",
    "Connection: close", "connection: Close", "Connection: close, X-Drop", "X-Drop: gone", "Keep-Alive: timeout=5",
    "Transfer-Encoding: chunked", "Upgrade: h2c", "Trailer: X-T", "Proxy-Connection: keep-alive",
    "X-Empty: ", "X-Tr: v ", "X-Tab: a\tb", "X-Obs: caf\xe9", "Bad Name: v",
]


def a_request(rng: random.Random) -> bytes:
    lines = [f"{rng.choice(METHODS)} {rng.choice(TARGETS)} HTTP/{rng.choice(VERSIONS)}"]
    lines += [rng.choice(REQUEST_HEADERS) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.8 and not any(h.lower().startswith("host:") for h in lines[1:]):
        lines.insert(rng.randint(1, len(lines)), "Host: app.example")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if rng.random() < 0.1:
        data += b"abc"  # a body, or the start of the next request
    return data


def a_response(rng: random.Random) -> bytes:
    body = rng.choice([b"", b"ok", b"hello world\n", b"x" * 3000])
    lines = [rng.choice(STATUS_LINES)]
    lines += [rng.choice(RESPONSE_HEADERS) for _ in range(rng.randint(0, 5))]
    r = rng.random()
    if r < 0.7:
        lines.insert(rng.randint(1, len(lines)), f"Content-Length: {len(body)}")
    elif r < 0.8:
        lines.append(f"Content-Length: {len(body)}")
        lines.append(f"Content-Length: {len(body) + rng.randint(0, 1)}")
    elif r < 0.85:
        lines.append(f"Content-Length: {len(body) + 2}")  # the rest never comes: ended by a close
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if any(h.startswith("Transfer-Encoding") for h in lines):
        data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        data += body
    if rng.random() < 0.1:
        data += b"HTTP/1.1 200 OK\r\n"  # bytes past the response
    return data


def cut(rng: random.Random, data: bytes, head_whole: bool) -> list[bytes]:
    """``data`` in 1-3 reads; with ``head_whole`` the first read holds at least the whole head."""
    start = data.find(b"\r\n\r\n") + 4 if head_whole else 1
    points = sorted(rng.sample(range(start, len(data)), min(rng.randint(0, 2), max(0, len(data) - start))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if a < b]


# ---- the two engines ----------------------------------------------------------------------------


def run_one(request: bytes, response_reads: list[bytes], compiled: bool,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One request and its response through an engine with or without the compiled reader;
    everything the outside world or the app could see of it."""
    monkeypatch.setattr(http1, "_fasthead", fasthead if compiled else None)
    monkeypatch.setattr(upstream_module, "_fasthead", fasthead if compiled else None)
    rig = Rig()
    rig.send(request)
    seen: dict[str, Any] = {"apps": [(ex.method, ex.target, ex.version, list(ex.headers), list(ex.special),
                                      ex.keep_alive, ex.upgrade, ex.chunked, ex.content_length, ex._body_done)
                                     for ex in rig.app.seen]}
    if rig.pool.pending:
        up, ut = rig.pool.dial()
        seen["upstream_got"] = ut.take()
        for data in response_reads:
            if ut.closed:
                break
            up.data_received(data)
        rig.loop.advance(0)
        seen["upstream_closed"] = ut.closed
        if not ut.closed:
            up.connection_lost(None)  # what was left open ends here: close-delimited bodies end
        seen["pooled"] = up in rig.pool.idle and not up.closed  # a closed one is skipped and forgotten
    seen["client_got"] = rig.client.take()
    seen["client_closed"] = rig.client.closed
    monkeypatch.undo()
    return seen


def differential_case(seed: int, taken: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    request = a_request(rng)
    response = a_response(rng)
    reads = cut(rng, response, head_whole=rng.random() < 0.9)
    if request.endswith(b"\r\n\r\n"):
        taken["request_read"] += fasthead.request_head(request) is not None
        taken["request_refused"] += fasthead.request_head(request) is None
    if response.find(b"\r\n\r\n") < len(reads[0]):
        taken["response_read"] += fasthead.response_head(reads[0]) is not None
        taken["response_refused"] += fasthead.response_head(reads[0]) is None
    compiled = run_one(request, reads, True, monkeypatch)
    plain = run_one(request, reads, False, monkeypatch)
    for key in plain:
        assert compiled.get(key) == plain[key], f"{key} differs for {request!r} / {reads!r}"
    assert compiled.keys() == plain.keys()


def test_heads_read_by_the_compiled_reader_come_out_as_httptools_gives_them(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = dict.fromkeys(["request_read", "request_refused", "response_read", "response_refused"], 0)
    for_every_seed(differential_case, taken, monkeypatch)
    # both paths ran a good share of the cases, for requests and for responses
    assert all(n >= CASES // 10 for n in taken.values()), taken


# ---- the subset, case by case -------------------------------------------------------------------


def test_the_dropped_hop_by_hop_names_are_the_engines() -> None:
    assert fasthead.hop_by_hop() == HOP_BY_HOP


GOOD_CONFIG = (http1.SPECIAL, http1.N_SPECIAL, http1.H_HOST, http1.H_CONNECTION, http1.H_XFF, http1.H_XFF_FIRST,
               http1.H_CL, http1.H_UPGRADE, http1.H_TE)


@pytest.mark.parametrize("position, bad", [
    (1, -1),                          # n_special
    (2, http1.N_SPECIAL),             # host: one past the end
    (6, -1),                          # content_length
    (8, 1 << 40),                     # transfer_encoding
    (0, {b"host": http1.N_SPECIAL}),  # the table points past the list
    (0, {b"host": -3}),
    (0, {b"host": "0"}),
    (0, {"host": 0}),                 # names are bytes
])
def test_an_index_outside_the_special_list_is_refused_and_the_old_table_kept(position: int, bad: Any) -> None:
    args = list(GOOD_CONFIG)
    args[position] = bad
    with pytest.raises(ValueError, match="configure"):
        fasthead.configure(*args)
    head = fasthead.request_head(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert head is not None and head[4][http1.H_HOST] == b"a" and head[4][http1.H_CL] == b"0"
    fasthead.configure(*GOOD_CONFIG)  # what queueproxy.http1 installed; calling it again changes nothing


def test_a_common_request_is_read_in_one_call() -> None:
    head = fasthead.request_head(b"GET /x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 1.2.3.4\r\n"
                                 b"x-forwarded-for: 5.6.7.8\r\nConnection: keep-alive\r\n\r\n")
    assert head is not None
    method, target, version, headers, special, keep_alive = head
    assert (method, target, version, keep_alive) == (b"GET", b"/x?y=1", b"1.1", True)
    assert headers[1] == (b"X-Forwarded-For", b"x-forwarded-for", b"1.2.3.4")
    assert special[http1.H_HOST] == b"a.example"
    assert special[http1.H_XFF] == b"1.2.3.4, 5.6.7.8"
    assert special[http1.H_XFF_FIRST] == b"1.2.3.4"
    assert special[http1.H_CONNECTION] == b"keep-alive"


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",   # a body follows
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n",       # more than one head
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",              # the parser's path answers 400
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",                     # no Host: 400 there too
    b"GET / HTTP/1.1\r\nHost: a\r\nX: v \r\n\r\n",                # trailing blank
    b"GET / HTTP/1.1\r\nHost: a\r\nX:v\r\n\r\n",                  # no space after the colon
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",           # obs-fold
    b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n",           # obs-text
    b"GET / HTTP/1.1\nHost: a\n\n",                               # bare line feeds
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",                 # absolute-form
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",  # llhttp reads it as Connection
    b"GET / HTTP/1.1\r\nHost: a\r\n",                             # not complete
])
def test_a_request_outside_the_subset_is_left_to_httptools(head: bytes) -> None:
    assert fasthead.request_head(head) is None


def test_a_request_outside_the_subset_is_still_served() -> None:
    rig = Rig()
    rig.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Tr: v \r\n\r\n")
    up, ut = rig.upstream()
    assert b"X-Tr: v \r\n" in ut.take()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert rig.client.take().endswith(b"\r\n\r\nok")


def test_a_common_response_is_read_in_one_call_without_its_hop_by_hop_lines() -> None:
    data = (b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            b"Content-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert fasthead.response_head(data) == (200, b"OK", data.index(b"hello"),
                                            b"Server: s\r\nContent-Length: 5\r\nX-A: b\r\n", 5, True)
    assert fasthead.response_head(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")[-1] is False
    assert fasthead.response_head(b"HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 0\r\n\r\n")[-1] is False


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\n\r\n",                                           # ends with the connection
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close, X-Drop\r\nContent-Length: 0\r\n\r\n",  # names a header to drop
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",                          # not complete
    b"HTTP/1.1 200 OK\r\n" + b"X: a\r\nKeep-Alive: t\r\n" * 65 + b"Content-Length: 0\r\n\r\n",  # 65 kept runs
])
def test_a_response_outside_the_subset_is_left_to_httptools(head: bytes) -> None:
    assert fasthead.response_head(head) is None


def test_a_response_body_over_several_reads_completes_and_the_connection_is_reused() -> None:
    rig = Rig()
    rig.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    up, ut = rig.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel")
    up.data_received(b"lo w")
    assert up not in rig.pool.idle
    up.data_received(b"orld")
    assert rig.client.take().endswith(b"\r\n\r\nhello world")
    assert up in rig.pool.idle and not ut.closed


def test_bytes_past_a_response_close_its_upstream_connection() -> None:
    rig = Rig()
    rig.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    up, ut = rig.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no")
    up.data_received(b"kHTTP/1.1 200 OK\r\n")
    assert rig.client.take().endswith(b"\r\n\r\nok")
    assert ut.closed and up not in rig.pool.idle


def test_an_upstream_that_closes_inside_the_body_cuts_the_client_connection() -> None:
    rig = Rig()
    rig.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    up, _ = rig.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
    up.connection_lost(None)
    assert rig.client.closed
