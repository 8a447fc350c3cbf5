"""The activator's request path under seeded random trouble, on fake transports and a fake clock.

Each case: one revision (containerConcurrency 0, 1 or 2; pacing of new pods on or off; revision
timeouts long or short) whose pods come and go at random, 1-4 client connections sending 1-3
requests each in random pieces, some leaving at any point; pods that refuse connections (always
when they have left the rotation), answer any response (cut into pieces, sometimes dying midway or
closing after it) or reset; at the end the revision scales to zero. Checked once everyone has gone
and the clock has run on: nothing was
logged as an error, and the throttler holds nothing (no request waiting or active, no breaker slot
or queue place, no pod with a request in flight), nor does the stats reporter (no request still
counted). A leak here would shrink a revision's capacity for good, or hold a scale-from-zero
request forever. Seeds are fixed, so a failure names its case.

Also: requests through the throttler, queued or not, leave no garbage for the cyclic collector.
"""
from __future__ import annotations

import gc
import logging
import random
import re
from typing import Any

import pytest

from activator.buffer import RequestBuffer
from activator.handler import ActivatorHandler
from activator.reporter import StatReporter, StatSink
from activator.revisions import RevisionInfo, RevisionResolver
from activator.throttler import PacingParams, Throttler, ThrottlerParams
from queueproxy.http1 import HttpServer
from tests.queueproxy.test_engine import FakeLoop, FakePool, FakeTransport
from tests.queueproxy.test_engine_fuzz import a_response, pieces

CASES = 600
PODS = ["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]


class QuietSink(StatSink):
    """Queues reports; never connects (nothing starts its run loop)."""

    async def _session(self) -> None:  # pragma: no cover - never run here
        raise NotImplementedError


def run_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    throttler = Throttler(ThrottlerParams(pacing=PacingParams(warmup=rng.choice([0.0, 0.0, 5.0]))),
                          rng=random.Random(seed))
    buffer = RequestBuffer(throttler, clock=loop)  # type: ignore[arg-type]
    info = RevisionInfo("default", "rev", container_concurrency=rng.choice([0, 1, 2]),
                        timeout=rng.choice([300.0, 5.0]), response_start_timeout=rng.choice([0.0, 2.0]))
    buffer.upsert_revision(info)
    ready = rng.sample(PODS, rng.randint(0, 2))
    buffer.set_pods(info.key, ready)
    reporter = StatReporter(QuietSink(pod_name="activator", clock=loop), clock=loop)  # type: ignore[arg-type]
    handler = ActivatorHandler(loop=loop, buffer=buffer, resolver=RevisionResolver(),  # type: ignore[arg-type]
                               reporter=reporter)
    pools = {dest: FakePool(loop) for dest in PODS}
    handler.pools.update(pools)
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    lost: set[int] = set()

    def leave(conn: Any, t: FakeTransport) -> None:
        """The peer goes away (or, for a transport the engine closed, the loop reports it)."""
        t.closed = True
        if id(conn) not in lost:
            lost.add(id(conn))
            conn.connection_lost(None)

    clients = []
    for _ in range(rng.randint(1, 4)):
        conn, t = server.protocol(), FakeTransport()
        conn.connection_made(t)  # type: ignore[arg-type]
        wire = b"".join(b"GET /r%d HTTP/1.1\r\nHost: app.example\r\nKnative-Serving-Namespace: default\r\n"
                        b"Knative-Serving-Revision: rev\r\n\r\n" % i for i in range(rng.randint(1, 3)))
        clients.append((conn, t, pieces(rng, wire)))
    for _ in range(200):
        live = [c for c in clients if not c[1].closed]
        if live and rng.random() < 0.6:
            conn, t, todo = rng.choice(live)
            if todo and rng.random() < 0.95:
                conn.data_received(todo.pop(0))
            elif rng.random() < 0.3:
                leave(conn, t)
        if rng.random() < 0.05:  # the autoscaler scales: pods come and go
            ready = rng.sample(PODS, rng.randint(0, 3))
            buffer.set_pods(info.key, ready)
        for dest, pool in pools.items():
            if pool.pending and rng.random() < 0.7:
                pool.refuse() if dest not in ready or rng.random() < 0.1 else pool.dial()
            for up, ut in list(pool.made):
                if ut.closed or not ut.take():
                    continue
                what = rng.random()
                if what < 0.7:
                    _, _, wire, closes = a_response(rng, "GET")
                    parts = pieces(rng, wire)
                    dies = rng.random() < 0.1 and len(parts) > 1
                    for part in parts[:rng.randint(1, len(parts) - 1)] if dies else parts:
                        up.data_received(part)
                    if (dies or closes) and not ut.closed:
                        leave(up, ut)
                elif what < 0.8:
                    ut.closed = True
                    lost.add(id(up))
                    up.connection_lost(ConnectionResetError("connection reset by peer"))
                # else: the pod never answers; the revision timeouts deal with it
        loop.advance(rng.choice([0.0, 0.0, 0.0, 0.5, 3.0]))
    buffer.set_pods(info.key, [])  # scaled to zero: nothing may be left waiting for a pod
    for conn, t, _ in clients:
        for status in re.findall(rb"HTTP/1.1 (\d{3})", bytes(t.out)):
            statuses[int(status)] = statuses.get(int(status), 0) + 1
        leave(conn, t)
    for pool in pools.values():
        for up, ut in pool.made:
            leave(up, ut)
    loop.advance(1000.0)
    rt = throttler.get(info.key)
    assert rt is not None
    assert (rt.active, rt.waiting, throttler.waiting) == (0, 0, 0), "a request is still active or waiting"
    assert (rt.breaker.active, rt.breaker.waiting) == (0, 0), "a breaker slot or queue place leaked"
    assert [p.dest for p in rt.pods if p.in_flight] == [], "a pod still has a request in flight"
    assert all(e.refs == 0 for e in reporter.tracker._entries.values()), "a request is still counted"


def test_trouble_anywhere_leaves_the_throttler_and_the_reporter_holding_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for seed in range(CASES):
        try:
            run_case(seed, statuses)
        except Exception as e:  # noqa: BLE001 - any failure is reported with its seed
            failures.append(f"seed {seed}: {e!r}")
    assert not failures, f"{len(failures)} of {CASES} cases failed; first: {failures[0]}"
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    # the mix reached every outcome: answers, 502 from failed pods, 504 from timeouts
    assert statuses.get(200, 0) > 50 and statuses.get(502, 0) > 50 and statuses.get(504, 0) > 50, statuses


@pytest.mark.parametrize("cc", [0, 1])
def test_requests_through_the_throttler_leave_nothing_for_the_cyclic_collector(cc: int) -> None:
    """Each request's objects die by reference counting, whether it went straight to a pod, waited
    for one, or left while waiting (with containerConcurrency 1, before the breaker dropped a
    granted ticket's callable, every queued request was 14 objects of cyclic garbage)."""
    loop = FakeLoop()
    throttler = Throttler(ThrottlerParams(pacing=PacingParams(warmup=0.0)))
    buffer = RequestBuffer(throttler, clock=loop)  # type: ignore[arg-type]
    info = RevisionInfo("default", "rev", container_concurrency=cc)
    buffer.upsert_revision(info)
    buffer.set_pods(info.key, PODS[:1])
    reporter = StatReporter(QuietSink(pod_name="activator", clock=loop), clock=loop)  # type: ignore[arg-type]
    handler = ActivatorHandler(loop=loop, buffer=buffer, resolver=RevisionResolver(),  # type: ignore[arg-type]
                               reporter=reporter)
    pool = handler.pools[PODS[0]] = FakePool(loop)
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    request = (b"GET / HTTP/1.1\r\nHost: app.example\r\nKnative-Serving-Namespace: default\r\n"
               b"Knative-Serving-Revision: rev\r\n\r\n")
    clients = []
    for _ in range(3):
        conn, t = server.protocol(), FakeTransport()
        conn.connection_made(t)  # type: ignore[arg-type]
        clients.append((conn, t))

    def round_trip() -> None:
        for conn, _ in clients:
            conn.data_received(request)
        for _ in range(len(clients) + 1):
            while pool.pending:
                pool.dial()
            loop.advance(0)
            for up, ut in pool.made:
                if ut.take():
                    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            loop.advance(0)

    round_trip()
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            round_trip()
            if i % 5 == 0:  # one more client, which leaves while its request waits (or is in flight)
                conn, t = server.protocol(), FakeTransport()
                conn.connection_made(t)  # type: ignore[arg-type]
                conn.data_received(request)
                t.closed = True
                conn.connection_lost(None)
                loop.advance(0)
        answered = sum(bytes(t.out).count(b"HTTP/1.1 200 OK") for _, t in clients)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert answered == 21 * len(clients)
    assert unreachable == 0
