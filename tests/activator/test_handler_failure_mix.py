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

import pytest

from activator.buffer import RequestBuffer
from activator.handler import ActivatorHandler
from activator.reporter import StatReporter, StatSink
from activator.revisions import RevisionInfo, RevisionResolver
from activator.throttler import PacingParams, Throttler, ThrottlerParams
from queueproxy.http1 import HttpServer
from tests.queueproxy.test_engine import OK, FakeLoop, FakePool, answer_upstreams, connect
from tests.queueproxy.test_engine_fuzz import (
    Departures, answer_or_die, client_step, count_statuses, for_every_seed, pieces,
)

PODS = ["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]
REQUEST = (b"GET / HTTP/1.1\r\nHost: app.example\r\nKnative-Serving-Namespace: default\r\n"
           b"Knative-Serving-Revision: rev\r\n\r\n")


class QuietSink(StatSink):
    """Queues reports; never connects (nothing starts its run loop)."""

    async def _session(self) -> None:  # pragma: no cover - never run here
        raise NotImplementedError


def an_activator(loop: FakeLoop, info: RevisionInfo, pods: list[str], throttler: Throttler
                 ) -> tuple[ActivatorHandler, RequestBuffer, StatReporter, dict[str, FakePool]]:
    """The activator's request path for one revision over the fakes: a fake pool per pod in ``PODS``."""
    buffer = RequestBuffer(throttler, clock=loop)  # type: ignore[arg-type]
    buffer.upsert_revision(info)
    buffer.set_pods(info.key, pods)
    reporter = StatReporter(QuietSink(pod_name="activator", clock=loop), clock=loop)  # type: ignore[arg-type]
    handler = ActivatorHandler(loop=loop, buffer=buffer, resolver=RevisionResolver(),  # type: ignore[arg-type]
                               reporter=reporter)
    pools = {dest: FakePool(loop) for dest in PODS}
    handler.pools.update(pools)
    return handler, buffer, reporter, pools


def run_case(seed: int, statuses: dict[int, int]) -> None:
    rng = random.Random(seed)
    loop = FakeLoop()
    throttler = Throttler(ThrottlerParams(pacing=PacingParams(warmup=rng.choice([0.0, 0.0, 5.0]))),
                          rng=random.Random(seed))
    info = RevisionInfo("default", "rev", container_concurrency=rng.choice([0, 1, 2]),
                        timeout=rng.choice([300.0, 5.0]), response_start_timeout=rng.choice([0.0, 2.0]))
    ready = rng.sample(PODS, rng.randint(0, 2))
    handler, buffer, reporter, pools = an_activator(loop, info, ready, throttler)
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    departures = Departures()
    clients = [(conn, t, pieces(rng, REQUEST * rng.randint(1, 3)))
               for conn, t in connect(server, rng.randint(1, 4))]
    for _ in range(200):
        client_step(rng, clients, departures)
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
                    answer_or_die(rng, up, ut, departures, 0.1)
                elif what < 0.8:
                    departures.leave(up, ut, ConnectionResetError("connection reset by peer"))
                # else: the pod never answers; the revision timeouts deal with it
        loop.advance(rng.choice([0.0, 0.0, 0.0, 0.5, 3.0]))
    buffer.set_pods(info.key, [])  # scaled to zero: nothing may be left waiting for a pod
    for conn, t, _ in clients:
        count_statuses(bytes(t.out), statuses)
        departures.leave(conn, t)
    for pool in pools.values():
        for up, ut in pool.made:
            departures.leave(up, ut)
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
    statuses: dict[int, int] = {}
    for_every_seed(run_case, statuses)
    assert not caplog.records, f"logged: {caplog.records[0].getMessage()}"
    # the mix reached every outcome: answers, 502 from failed pods, 504 from timeouts
    assert statuses.get(200, 0) > 50 and statuses.get(502, 0) > 50 and statuses.get(504, 0) > 50, statuses


@pytest.mark.parametrize("cc", [0, 1])
def test_requests_through_the_throttler_leave_nothing_for_the_cyclic_collector(cc: int) -> None:
    """Each request's objects die by reference counting, whether it went straight to a pod, waited
    for one, or left while waiting (with containerConcurrency 1, before the breaker dropped a
    granted ticket's callable, every queued request was 14 objects of cyclic garbage)."""
    loop = FakeLoop()
    info = RevisionInfo("default", "rev", container_concurrency=cc)
    throttler = Throttler(ThrottlerParams(pacing=PacingParams(warmup=0.0)))
    handler, _, _, pools = an_activator(loop, info, PODS[:1], throttler)
    pool = pools[PODS[0]]
    server = HttpServer(handler, loop=loop)  # type: ignore[arg-type]
    clients = connect(server, 3)

    def round_trip() -> None:
        for conn, _ in clients:
            conn.data_received(REQUEST)
        for _ in range(len(clients) + 1):
            answer_upstreams(loop, pool, OK)

    round_trip()
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            round_trip()
            if i % 5 == 0:  # one more client, which leaves while its request waits (or is in flight)
                ((conn, t),) = connect(server, 1)
                conn.data_received(REQUEST)
                Departures().leave(conn, t)
                loop.advance(0)
        answered = sum(bytes(t.out).count(b"HTTP/1.1 200 OK") for _, t in clients)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert answered == 21 * len(clients)
    assert unreachable == 0
