"""The throttler core as timelines: explicit ``now``, scripted pods, recorded grants."""
from __future__ import annotations

import random

import pytest

from activator.revisions import RevisionInfo, RevisionKey
from activator.throttler import (
    UNLIMITED,
    PacingParams,
    PodTracker,
    QueueFull,
    RevisionFailed,
    RevisionNotFound,
    Throttler,
    ThrottlerError,
    ThrottlerParams,
    Waiter,
)

KEY = RevisionKey("ns", "rev")
NO_PACING = PacingParams(warmup=0.0)


class Timeline:
    """A throttler plus a record of which waiter got which pod, or which error."""

    def __init__(self, cc: int = 1, target: float = 0.0, **params: object) -> None:
        params.setdefault("pacing", NO_PACING)
        self.th = Throttler(ThrottlerParams(**params), random.Random(3))  # type: ignore[arg-type]
        self.th.upsert(RevisionInfo("ns", "rev", container_concurrency=cc, target=target))
        self.granted: dict[str, PodTracker] = {}
        self.failed: dict[str, ThrottlerError] = {}
        self.order: list[str] = []

    def wait(self, tag: str, now: float = 0.0, key: RevisionKey = KEY) -> Waiter:
        def grant(pod: PodTracker) -> None:
            self.granted[tag] = pod
            self.order.append(tag)

        return self.th.enqueue(key, now, grant, lambda e: self.failed.__setitem__(tag, e))

    def acquire(self, tag: str, now: float = 0.0, key: RevisionKey = KEY) -> Waiter | PodTracker:
        pod = self.th.try_acquire(key)
        if pod is not None:
            self.granted[tag] = pod
            self.order.append(tag)
            return pod
        return self.wait(tag, now, key)

    def pods(self, *dests: str, now: float = 0.0) -> None:
        self.th.set_pods(KEY, dests, now)

    @property
    def rt(self):  # noqa: ANN201
        return self.th.get(KEY)


def test_requests_wait_while_there_is_no_pod_and_go_when_one_is_ready() -> None:
    t = Timeline(cc=1)
    assert t.rt.breaker.capacity == 0
    t.acquire("r1"), t.acquire("r2")
    assert t.granted == {} and t.th.waiting == 2
    t.pods("10.0.0.1:8012", now=1.0)
    assert t.granted["r1"].dest == "10.0.0.1:8012" and "r2" not in t.granted
    assert t.th.waiting == 1


def test_capacity_is_cc_times_pods_and_slots_pass_in_arrival_order() -> None:
    t = Timeline(cc=2)
    t.pods("a:1", "b:1")
    assert t.rt.breaker.capacity == 4
    for tag in "abcdef":
        t.acquire(tag)
    assert t.order == list("abcd")  # the first four got slots at once, two wait
    assert sorted(p.in_flight for p in t.rt.pods) == [2, 2]
    t.th.release(t.granted["c"], 1.0)
    t.th.release(t.granted["a"], 1.0)
    assert t.order == list("abcdef")


def test_cc_one_to_three_fills_pods_in_order() -> None:
    t = Timeline(cc=1)
    t.pods("b:1", "a:1", "c:1")
    for tag in "xyz":
        t.acquire(tag)
    assert [t.granted[x].dest for x in "xyz"] == ["a:1", "b:1", "c:1"]  # sorted by address


def test_cc_above_three_rotates_over_pods() -> None:
    t = Timeline(cc=4)
    t.pods("a:1", "b:1", "c:1")
    for i in range(6):
        t.acquire(str(i))
    assert [t.granted[str(i)].dest for i in range(6)] == ["a:1", "b:1", "c:1"] * 2


def test_cc_zero_is_unlimited_with_a_pod_and_closed_without() -> None:
    t = Timeline(cc=0)
    t.acquire("early")
    assert t.granted == {}
    t.pods("a:1", "b:1")
    assert t.rt.breaker.capacity == UNLIMITED and "early" in t.granted
    for i in range(1000):
        t.acquire(str(i))
    assert len(t.granted) == 1001
    assert abs(t.rt.pods[0].in_flight - t.rt.pods[1].in_flight) <= 2  # power of two choices
    t.pods()
    assert t.rt.breaker.capacity == 0


def test_subsetting_gives_this_activator_its_share_of_pods() -> None:
    t = Timeline(cc=10, self_ip="10.1.0.2")
    t.pods(*(f"10.0.0.{i}:8012" for i in range(1, 6)))
    assert t.rt.breaker.capacity == 50
    t.th.set_activators(KEY, ["10.1.0.1", "10.1.0.2"])
    # 5 pods, 2 activators: index 1 gets pods 2..3 plus nothing from the remnant
    assert [p.dest for p in t.rt.pods] == ["10.0.0.3:8012", "10.0.0.4:8012"]
    assert t.rt.breaker.capacity == 20


def test_an_activator_not_yet_in_the_endpoints_keeps_every_pod() -> None:
    t = Timeline(cc=10, self_ip="10.1.0.9")
    t.pods("a:1", "b:1", "c:1")
    t.th.set_activators(KEY, ["10.1.0.1", "10.1.0.2"])
    assert len(t.rt.pods) == 3 and t.rt.activator_index == -1


def test_cc_zero_uses_every_pod_whatever_the_activator_count() -> None:
    t = Timeline(cc=0, self_ip="10.1.0.2")
    t.pods("a:1", "b:1", "c:1")
    t.th.set_activators(KEY, ["10.1.0.1", "10.1.0.2", "10.1.0.3"])
    assert len(t.rt.pods) == 3


def test_a_full_revision_queue_rejects_with_a_reason_and_retry_after() -> None:
    t = Timeline(cc=1, max_waiting_per_revision=2, queue_full_retry_after=2.5)
    t.acquire("a"), t.acquire("b")
    with pytest.raises(QueueFull) as err:
        t.acquire("c")
    assert "ns/rev" in err.value.reason and err.value.status_hint == 503
    assert err.value.retry_after == 2.5 and err.value.retry_after_header == "3"
    assert t.th.waiting == 2


def test_the_global_cap_counts_every_revision() -> None:
    t = Timeline(cc=1, max_waiting=3)
    other = RevisionKey("ns", "other")
    t.th.upsert(RevisionInfo("ns", "other", container_concurrency=1))
    t.acquire("a"), t.acquire("b"), t.acquire("c", key=other)
    with pytest.raises(QueueFull, match="activator queue full"):
        t.acquire("d", key=other)
    t.pods("p:1")  # one of ns/rev's waiters leaves the queue: room for one more anywhere
    t.acquire("d", key=other)
    assert t.th.waiting == 3


def test_a_failure_report_fails_every_waiter_at_once_and_refuses_new_ones() -> None:
    t = Timeline(cc=1, failed_retry_after=7.0)
    for tag in "abc":
        t.acquire(tag)
    t.th.set_decision_failure(KEY, "ImagePullBackOff")
    assert set(t.failed) == {"a", "b", "c"} and t.th.waiting == 0
    err = t.failed["a"]
    assert isinstance(err, RevisionFailed) and "ImagePullBackOff" in err.reason and err.retry_after == 7.0
    with pytest.raises(RevisionFailed):
        t.acquire("d")
    t.th.set_decision_failure(KEY, "")  # recovered
    t.acquire("e")
    assert "e" not in t.failed and t.th.waiting == 1


def test_a_failure_does_not_touch_requests_a_live_pod_will_serve() -> None:
    t = Timeline(cc=1)
    t.pods("a:1")
    t.acquire("busy"), t.acquire("next")
    t.th.upsert(RevisionInfo("ns", "rev", container_concurrency=1, failure="CrashLoopBackOff"))
    assert t.failed == {}
    t.pods()  # the last pod goes away: now nobody will serve the waiter
    assert isinstance(t.failed["next"], RevisionFailed)


def test_a_ready_pod_ends_the_failure() -> None:
    t = Timeline(cc=1)
    t.th.set_decision_failure(KEY, "activation timed out")
    with pytest.raises(RevisionFailed):
        t.acquire("a")
    t.pods("a:1")
    t.acquire("b")
    assert "b" in t.granted


def test_cancelling_a_waiter_frees_its_place() -> None:
    t = Timeline(cc=1, max_waiting_per_revision=1)
    w = t.acquire("a")
    t.th.cancel(w, 1.0)
    assert t.th.waiting == 0
    t.acquire("b")
    t.pods("p:1")
    assert list(t.granted) == ["b"]


def test_cancelling_after_the_grant_hands_the_pod_to_the_next_waiter() -> None:
    t = Timeline(cc=1)
    first, second = t.acquire("a"), t.acquire("b")
    t.pods("p:1")
    assert "a" in t.granted
    t.th.cancel(first, 1.0)  # the grant arrived, but the caller had already given up
    assert t.granted["b"].dest == "p:1" and t.granted["b"].in_flight == 1
    t.th.cancel(first, 1.0)  # twice is harmless
    assert t.rt.breaker.active == 1
    assert isinstance(second, Waiter)


def test_a_refused_pod_leaves_rotation_and_the_retry_lands_elsewhere() -> None:
    t = Timeline(cc=1)
    t.pods("a:1", "b:1")
    pod = t.acquire("first")
    assert pod.dest == "a:1"
    t.th.refused(pod, 1.0)
    assert [p.dest for p in t.rt.pods] == ["b:1"] and t.rt.breaker.capacity == 1
    retry = t.acquire("retry")
    assert retry.dest == "b:1"
    t.pods("a:1", "b:1")  # the prober admits it again
    assert t.rt.breaker.capacity == 2


def test_requests_on_a_vanished_pod_do_not_count_against_the_others() -> None:
    t = Timeline(cc=1)
    t.pods("a:1", "b:1")
    on_a, on_b = t.acquire("x"), t.acquire("y")
    t.acquire("waiting")
    t.pods("b:1")
    assert t.rt.breaker.capacity == 1
    t.th.release(on_a, 1.0)  # a's slot is gone with a: still no room on b
    assert "waiting" not in t.granted
    t.th.release(on_b, 2.0)
    assert t.granted["waiting"].dest == "b:1"


def test_deleting_a_revision_fails_its_waiters_as_not_found() -> None:
    t = Timeline(cc=1)
    t.acquire("a")
    t.th.delete(KEY)
    assert isinstance(t.failed["a"], RevisionNotFound) and t.th.waiting == 0
    with pytest.raises(RevisionNotFound) as err:
        t.th.try_acquire(KEY)
    assert err.value.status_hint == 404
    assert t.th.revision(KEY) is None


def test_changing_container_concurrency_resizes_every_pod() -> None:
    t = Timeline(cc=1)
    t.pods("a:1", "b:1")
    t.th.upsert(RevisionInfo("ns", "rev", container_concurrency=5))
    assert t.rt.breaker.capacity == 10 and all(p.limit == 5 for p in t.rt.pods)


def test_a_slot_without_a_pod_holds_on_until_a_pod_frees() -> None:
    t = Timeline(cc=1)
    t.pods("a:1")
    busy = t.acquire("busy")
    t.acquire("held")
    rt = t.rt
    real, rt._policy = rt._policy, lambda targets: None  # force the lost race upstream re-queues
    t.pods("a:1", "b:1")  # capacity grows: the breaker grants, the policy finds nothing
    assert "held" not in t.granted and t.th.waiting == 1
    rt._policy = real
    t.th.release(busy, 1.0)
    assert "held" in t.granted and t.th.waiting == 0


# ---- pacing fresh pods of CC = 0 revisions ---------------------------------------------

PACING = PacingParams(warmup=10.0, fast_factor=2.0, fast_floor=0.05, default_target=100.0)


def burst(t: Timeline, n: int, now: float = 0.0) -> list[str]:
    tags = [f"r{i}" for i in range(n)]
    for tag in tags:
        t.acquire(tag, now)
    return tags


def test_a_fresh_pod_takes_only_target_requests_from_a_backlog() -> None:
    t = Timeline(cc=0, target=10, pacing=PACING)
    burst(t, 100)
    t.pods("a:1", now=1.0)
    assert len(t.granted) == 10 and t.rt.breaker.capacity == 10
    t.pods("a:1", "b:1", now=1.5)  # the next pod takes the next ten
    assert len(t.granted) == 20
    assert sorted(p.in_flight for p in t.rt.pods) == [10, 10]


def test_fast_answers_grow_a_paced_pod_by_one_each() -> None:
    t = Timeline(cc=0, target=2, pacing=PACING)
    burst(t, 20)
    t.pods("a:1", now=1.0)
    first = [t.granted[x] for x in list(t.granted)]
    assert len(first) == 2
    t.th.release(first[0], 1.1, ok=True, latency=0.010)  # fast: limit 3, two more go
    assert len(t.granted) == 4 and t.rt.pods[0].limit == 3
    t.th.release(first[1], 1.2, ok=True, latency=0.015)  # within 2 x best: limit 4
    assert len(t.granted) == 6 and t.rt.pods[0].limit == 4


def test_slow_answers_do_not_grow_a_paced_pod() -> None:
    t = Timeline(cc=0, target=2, pacing=PACING)
    burst(t, 20)
    t.pods("a:1", now=1.0)
    a, b = (t.granted[x] for x in list(t.granted))
    t.th.release(a, 1.5, ok=True, latency=0.2)
    t.th.release(b, 2.5, ok=True, latency=0.9)  # 4.5 x the best, above the floor: no growth
    assert t.rt.pods[0].limit == 3 and len(t.granted) == 5


def test_errors_halve_a_paced_pod_but_not_below_its_start() -> None:
    t = Timeline(cc=0, target=2, pacing=PACING)
    t.pods("a:1", now=0.0)
    pod = t.rt.pods[0]
    for i in range(6):
        held = t.acquire(f"h{i}")
        t.th.release(held, 0.1, ok=True, latency=0.001)
    assert pod.limit == 8
    held = t.acquire("x")
    t.th.release(held, 0.2, ok=False, latency=0.001)
    assert pod.limit == 4
    for i in range(3):
        held = t.acquire(f"e{i}")
        t.th.release(held, 0.3, ok=False)
    assert pod.limit == 2


def test_pacing_ends_after_the_warmup() -> None:
    t = Timeline(cc=0, target=5, pacing=PACING)
    burst(t, 50)
    t.pods("a:1", now=2.0)
    assert len(t.granted) == 5 and t.th.next_deadline() == 12.0
    t.th.tick(11.9)
    assert len(t.granted) == 5
    t.th.tick(12.0)
    assert len(t.granted) == 50 and t.rt.breaker.capacity == UNLIMITED
    assert t.th.next_deadline() is None


def test_a_release_after_the_warmup_ends_pacing_too() -> None:
    t = Timeline(cc=0, target=1, pacing=PACING)
    burst(t, 5)
    t.pods("a:1", now=0.0)
    t.th.release(t.granted["r0"], 30.0, ok=True, latency=5.0)
    assert len(t.granted) == 5 and not t.rt.pods[0].paced


def test_unknown_target_paces_at_the_default() -> None:
    t = Timeline(cc=0, target=0, pacing=PacingParams(warmup=5.0, default_target=3))
    burst(t, 10)
    t.pods("a:1", now=0.0)
    assert len(t.granted) == 3


def test_one_warm_pod_makes_a_cc_zero_revision_unlimited_again() -> None:
    t = Timeline(cc=0, target=2, pacing=PACING)
    t.pods("a:1", now=0.0)
    t.th.tick(10.0)
    burst(t, 30, now=11.0)
    t.pods("a:1", "b:1", now=11.0)  # b is fresh but a is warm and unlimited
    assert len(t.granted) == 30
    assert t.rt.breaker.capacity == UNLIMITED


def test_paced_pods_never_exceed_their_limit_under_power_of_two() -> None:
    t = Timeline(cc=0, target=3, pacing=PACING)
    burst(t, 40)
    t.pods("a:1", "b:1", "c:1", now=0.0)
    assert len(t.granted) == 9
    assert [p.in_flight for p in t.rt.pods] == [3, 3, 3]


def test_load_counts_waiting_requests_and_requests_holding_a_pod() -> None:
    t = Timeline(cc=1)
    w = t.acquire("r1")
    t.acquire("r2")
    assert t.th.load() == [(KEY, 2, 0)]
    t.pods("10.0.0.1:8012", "10.0.0.2:8012", now=1.0)
    assert t.th.load() == [(KEY, 0, 2)]
    t.th.release(t.granted["r1"], 2.0)
    t.th.refused(t.granted["r2"], 2.0)
    assert t.th.load() == [(KEY, 0, 0)]
    assert isinstance(w, Waiter)
