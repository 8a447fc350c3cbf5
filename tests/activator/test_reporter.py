"""Concurrency accounting as timelines, and the reporter's ticks on a manual clock."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from activator.clock import ManualClock
from activator.concurrency import ConcurrencyTracker, RevisionStat
from activator.metrics import ActivatorMetrics
from activator.reporter import StatReporter, StatSink, to_wire
from activator.revisions import RevisionInfo, RevisionKey

A, B = RevisionKey("ns", "a"), RevisionKey("ns", "b")


def by_key(stats: list[RevisionStat]) -> dict[str, tuple[float, float]]:
    return {s.key.name: (round(s.concurrency, 6), s.request_count) for s in stats}


def test_the_first_request_for_a_revision_pokes_and_later_ones_do_not() -> None:
    t = ConcurrencyTracker()
    _, poke = t.request_in(A, 0.0)
    assert poke
    _, poke = t.request_in(A, 0.1)
    assert not poke
    _, poke = t.request_in(B, 0.2)
    assert poke
    assert t.poke(A) == RevisionStat(A, 1.0, 1.0)


def test_the_first_report_subtracts_what_the_poke_already_said() -> None:
    t = ConcurrencyTracker()
    h, _ = t.request_in(A, 0.0)  # held for the whole first second
    assert by_key(t.report(1.0)) == {"a": (0.0, 0.0)}  # 1 - 1 and 1 - 1
    t.request_in(A, 1.5)
    t.request_out(h, 1.5)
    assert by_key(t.report(2.0)) == {"a": (1.0, 1.0)}  # no adjustment any more


def test_the_adjusted_concurrency_never_goes_negative() -> None:
    t = ConcurrencyTracker()
    h, _ = t.request_in(A, 0.0)
    t.request_out(h, 0.25)
    h2, _ = t.request_in(A, 0.5)
    t.request_out(h2, 0.75)
    assert by_key(t.report(1.0)) == {"a": (0.0, 1.0)}  # avg 0.5 - 1 -> 0; 2 arrivals - 1


def test_waiting_counts_as_concurrency_until_the_response_ends() -> None:
    t = ConcurrencyTracker()
    t.report(0.0)
    hs = [t.request_in(A, 0.0)[0] for _ in range(4)]  # four requests waiting for a cold pod
    t.report(1.0)
    assert by_key(t.report(2.0)) == {"a": (4.0, 0.0)}
    for h in hs:
        t.request_out(h, 2.5)
    assert by_key(t.report(3.0)) == {"a": (2.0, 0.0)}


def test_an_idle_revision_is_reported_once_more_then_dropped_and_pokes_again() -> None:
    t = ConcurrencyTracker()
    h, _ = t.request_in(A, 0.0)
    t.request_out(h, 0.5)
    assert by_key(t.report(1.0)) == {"a": (0.0, 0.0)}
    assert A in t
    assert by_key(t.report(2.0)) == {"a": (0.0, 0.0)}  # a zero window: reported, then dropped
    assert A not in t and len(t) == 0
    _, poke = t.request_in(A, 2.1)
    assert poke


def test_a_request_arriving_at_the_report_instant_keeps_its_revision() -> None:
    t = ConcurrencyTracker()
    h, _ = t.request_in(A, 0.0)
    t.request_out(h, 0.5)
    t.report(1.0)
    t.request_in(A, 2.0)
    t.report(2.0)  # the window averaged 0, but a request is in flight
    assert A in t


def test_every_revision_is_in_one_report() -> None:
    t = ConcurrencyTracker()
    t.request_in(A, 0.0)
    t.request_in(B, 0.0)
    t.request_in(B, 0.0)
    assert by_key(t.report(1.0)) == {"a": (0.0, 0.0), "b": (1.0, 1.0)}


def test_wire_messages_carry_only_upstreams_activator_fields() -> None:
    (msg,) = to_wire([RevisionStat(A, 2.5, 3.0)], "activator-0")
    assert (msg.namespace, msg.name) == ("ns", "a") and msg.HasField("stat")
    assert msg.stat.pod_name == "activator-0"
    assert (msg.stat.average_concurrent_requests, msg.stat.request_count) == (2.5, 3.0)
    assert (msg.stat.average_proxied_concurrent_requests, msg.stat.proxied_request_count,
            msg.stat.process_uptime, msg.stat.timestamp) == (0, 0, 0, 0)


def test_an_idle_stat_still_encodes_its_stat_submessage() -> None:
    (msg,) = to_wire([RevisionStat(A, 0.0, 0.0)], "")
    assert msg.HasField("stat")
    assert b"\x1a" in msg.SerializeToString()  # field 3, length-delimited


class RecordingSink(StatSink):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__(pod_name="activator-0", clock=clock)
        self.messages: list[tuple[list[tuple[str, float, float]], bool]] = []

    def send(self, stats, poke=False):  # type: ignore[no-untyped-def]
        super().send(stats, poke)
        self.messages.append(([(s.key.name, s.concurrency, s.request_count) for s in stats], poke))

    async def _session(self) -> None:
        await asyncio.Event().wait()


async def test_the_reporter_pokes_at_once_and_reports_every_second() -> None:
    clock = ManualClock(start=0.0)
    sink = RecordingSink(clock)
    registry = CollectorRegistry()
    infos = {A: RevisionInfo("ns", "a", service="svc", configuration="cfg")}
    reporter = StatReporter(sink, clock=clock, metrics=ActivatorMetrics(registry), describe=infos.get)
    reporter.start()
    try:
        h = reporter.request_in(A)
        assert sink.messages == [([("a", 1.0, 1.0)], True)]
        reporter.request_in(B)
        await clock.advance(0.5)
        reporter.request_out(h)
        await clock.advance(0.5)
        assert sink.messages[-1] == ([("a", 0.0, 0.0), ("b", 0.0, 0.0)], False)
        await clock.advance(2.0)
        assert len(sink.messages) == 5  # two pokes, three ticks
        assert sink.messages[-1] == ([("b", 1.0, 0.0)], False)  # a was dropped after an idle window
        assert registry.get_sample_value("kn_revision_request_concurrency", {
            "kn_service_name": "svc", "kn_configuration_name": "cfg",
            "kn_revision_name": "a", "k8s_namespace_name": "ns"}) == 0.0
    finally:
        await reporter.close()


async def test_the_reporter_sends_nothing_when_nothing_is_tracked() -> None:
    clock = ManualClock(start=0.0)
    sink = RecordingSink(clock)
    reporter = StatReporter(sink, clock=clock)
    reporter.start()
    try:
        await clock.advance(5.0)
        assert sink.messages == []
    finally:
        await reporter.close()


def test_the_outbox_is_bounded_while_the_autoscaler_is_away() -> None:
    clock = ManualClock(start=0.0)
    sink = StatSink(pod_name="a", clock=clock, backlog=4)
    for i in range(10):
        sink.send([RevisionStat(A, float(i), 1.0)])
    assert len(sink._outbox) == 4 and sink.dropped == 6
    assert [m[1][0].stat.average_concurrent_requests for m in sink._outbox] == [6.0, 7.0, 8.0, 9.0]
    assert not sink.connected


@pytest.mark.parametrize("period", [0.5, 1.0])
async def test_ticks_stay_on_their_grid(period: float) -> None:
    clock = ManualClock(start=0.0)
    sink = RecordingSink(clock)
    reporter = StatReporter(sink, clock=clock, period=period)
    ticks: list[float] = []
    reporter.tick = lambda now: ticks.append(now) or []  # type: ignore[method-assign]
    reporter.start()
    try:
        await clock.advance(period * 4)
        assert ticks == [period * k for k in range(1, 5)]
    finally:
        await reporter.close()
