"""The asyncio face of the throttler, on a manual clock: no real sleeps."""
from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from activator.buffer import Lease, RequestBuffer
from activator.clock import ManualClock
from activator.metrics import ActivatorMetrics
from activator.revisions import RevisionInfo, RevisionKey
from activator.throttler import (
    PacingParams,
    QueueFull,
    RevisionFailed,
    RevisionNotFound,
    Throttler,
    ThrottlerParams,
    WaitTimeout,
)

KEY = RevisionKey("ns", "rev")


class Rig:
    def __init__(self, cc: int = 1, target: float = 0.0, **params: object) -> None:
        params.setdefault("pacing", PacingParams(warmup=0.0))
        self.clock = ManualClock(start=100.0)
        self.registry = CollectorRegistry()
        self.refused: list[tuple[RevisionKey, str]] = []
        self.throttler = Throttler(ThrottlerParams(**params), random.Random(1))  # type: ignore[arg-type]
        self.buffer = RequestBuffer(self.throttler, clock=self.clock, metrics=ActivatorMetrics(self.registry),
                                    on_refused=lambda k, d: self.refused.append((k, d)))
        self.buffer.upsert_revision(RevisionInfo("ns", "rev", container_concurrency=cc, target=target))

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"k8s_namespace_name": "ns", "kn_revision_name": "rev"} | labels)

    def start(self, deadline: float | None = None) -> asyncio.Task[Lease]:
        return asyncio.ensure_future(self.buffer.acquire(KEY, deadline))


async def test_a_free_pod_is_leased_at_once_and_counted_active() -> None:
    rig = Rig()
    rig.buffer.set_pods(KEY, ["10.0.0.1:8012"])
    lease = await rig.buffer.acquire(KEY)
    assert lease.dest == "10.0.0.1:8012" and lease.waited == 0.0 and lease.info.name == "rev"
    assert rig.sample("kn_revision_request_active") == 1
    lease.release()
    lease.release()  # idempotent
    assert rig.sample("kn_revision_request_active") == 0
    assert rig.sample("kdp_activator_wait_seconds_count") == 1


async def test_a_request_waits_for_the_first_pod_and_reports_how_long() -> None:
    rig = Rig()
    task = rig.start()
    await rig.clock.advance(1.5)
    assert not task.done() and rig.sample("kn_revision_request_queued") == 1
    rig.buffer.set_pods(KEY, ["10.0.0.1:8012"])
    lease = await task
    assert lease.waited == pytest.approx(1.5) and lease.server_timing == "activator-wait;dur=1500.000"
    assert rig.sample("kn_revision_request_queued") == 0
    assert rig.sample("kdp_activator_wait_seconds_bucket", le="2.5") == 1
    assert rig.sample("kdp_activator_wait_seconds_bucket", le="1.0") == 0


async def test_the_deadline_ends_the_wait_with_a_timeout_exactly_then() -> None:
    rig = Rig()
    task = rig.start(deadline=rig.clock.time() + 2.0)
    await rig.clock.advance(1.999)
    assert not task.done()
    await rig.clock.advance(0.001)
    with pytest.raises(WaitTimeout) as err:
        await task
    assert err.value.status_hint == 504
    assert rig.buffer.waiting == 0 and rig.throttler.get(KEY).breaker.waiting == 0
    assert rig.sample("kdp_activator_rejected_requests_total", reason="timeout") == 1


async def test_a_deadline_already_past_fails_without_waiting() -> None:
    rig = Rig()
    with pytest.raises(WaitTimeout):
        await rig.buffer.acquire(KEY, deadline=rig.clock.time())
    assert rig.buffer.waiting == 0


async def test_a_client_that_goes_away_leaves_the_queue() -> None:
    rig = Rig(max_waiting_per_revision=1)
    task = rig.start()
    await rig.clock.run_ready()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.buffer.waiting == 0
    second = rig.start()
    rig.buffer.set_pods(KEY, ["p:1"])
    assert (await second).dest == "p:1"


async def test_a_grant_that_races_a_cancellation_goes_to_the_next_request() -> None:
    rig = Rig()
    first, second = rig.start(), rig.start()
    await rig.clock.run_ready()
    first.cancel()  # cancelled, but it has not run yet...
    rig.buffer.set_pods(KEY, ["p:1"])  # ...when the pod arrives and is granted to it
    with pytest.raises(asyncio.CancelledError):
        await first
    lease = await second
    assert lease.pod.in_flight == 1 and rig.throttler.get(KEY).breaker.active == 1


async def test_a_full_queue_is_refused_at_once_with_retry_after() -> None:
    rig = Rig(max_waiting_per_revision=2, queue_full_retry_after=1.0)
    waiting = [rig.start(), rig.start()]
    await rig.clock.run_ready()
    with pytest.raises(QueueFull) as err:
        await rig.buffer.acquire(KEY)
    assert err.value.status_hint == 503 and err.value.retry_after_header == "1"
    assert rig.sample("kdp_activator_rejected_requests_total", reason="queue_full") == 1
    for t in waiting:
        t.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_failed_revision_fails_every_waiting_request_at_once() -> None:
    rig = Rig()
    tasks = [rig.start(deadline=rig.clock.time() + 300) for _ in range(50)]
    await rig.clock.advance(5.0)
    rig.buffer.set_decision_failure(KEY, "container exited with code 1")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RevisionFailed) for r in results)
    assert "exited with code 1" in str(results[0])
    assert rig.clock.time() == 105.0  # not at the deadline: at once
    assert rig.sample("kdp_activator_rejected_requests_total", reason="revision_failed") == 50
    with pytest.raises(RevisionFailed):
        await rig.buffer.acquire(KEY)


async def test_an_unknown_revision_is_not_found() -> None:
    rig = Rig()
    assert rig.buffer.revision(RevisionKey("ns", "nope")) is None
    with pytest.raises(RevisionNotFound):
        await rig.buffer.acquire(RevisionKey("ns", "nope"))


async def test_a_refused_connection_is_retried_on_another_pod_and_reported() -> None:
    rig = Rig(cc=1)
    rig.buffer.set_pods(KEY, ["a:1", "b:1"])
    lease = await rig.buffer.acquire(KEY)
    assert lease.dest == "a:1"
    lease.refused()
    assert rig.refused == [(KEY, "a:1")]
    again = await rig.buffer.acquire(KEY)
    assert again.dest == "b:1"
    assert rig.sample("kn_revision_request_active") == 1


async def test_the_lease_context_releases_on_success_and_on_error() -> None:
    rig = Rig(cc=1)
    rig.buffer.set_pods(KEY, ["a:1"])
    async with rig.buffer.lease(KEY) as lease:
        assert lease.pod.in_flight == 1
    assert lease.pod.in_flight == 0
    with pytest.raises(RuntimeError):
        async with rig.buffer.lease(KEY) as lease:
            raise RuntimeError("proxy broke")
    assert lease.pod.in_flight == 0 and rig.sample("kn_revision_request_active") == 0


async def test_released_slots_pass_to_waiters_in_arrival_order() -> None:
    rig = Rig(cc=1)
    rig.buffer.set_pods(KEY, ["a:1"])
    holder = await rig.buffer.acquire(KEY)
    tasks = [rig.start() for _ in range(3)]
    await rig.clock.run_ready()
    order = []
    lease = holder
    for t in tasks:
        lease.release()
        lease = await t
        order.append(tasks.index(t))
    assert order == [0, 1, 2]


async def test_fresh_pods_are_paced_and_the_warmup_timer_releases_the_rest() -> None:
    rig = Rig(cc=0, target=10, pacing=PacingParams(warmup=5.0))
    tasks = [rig.start() for _ in range(100)]
    await rig.clock.advance(1.0)
    rig.buffer.set_pods(KEY, ["a:1"])
    await rig.clock.run_ready()
    assert sum(t.done() for t in tasks) == 10
    assert rig.clock.pending == [106.0]
    await rig.clock.advance(4.999)
    assert sum(t.done() for t in tasks) == 10
    await rig.clock.advance(0.001)
    assert all(t.done() for t in tasks)
    assert rig.clock.pending == []


async def test_time_to_headers_is_what_grows_a_paced_pod() -> None:
    rig = Rig(cc=0, target=1, pacing=PacingParams(warmup=60.0))
    rig.buffer.set_pods(KEY, ["a:1"])
    lease = await rig.buffer.acquire(KEY)
    await rig.clock.advance(0.01)
    lease.response_started()
    await rig.clock.advance(30.0)  # a long stream after fast headers still counts as fast
    lease.release()
    assert lease.pod.limit == 2


async def test_ten_thousand_waiting_requests_are_all_served_and_the_next_is_refused() -> None:
    rig = Rig(cc=0, max_waiting_per_revision=10_000, max_waiting=10_000)
    tasks = [rig.start() for _ in range(10_000)]
    await rig.clock.run_ready()
    assert rig.buffer.waiting == 10_000
    with pytest.raises(QueueFull):
        await rig.buffer.acquire(KEY)
    rig.buffer.set_pods(KEY, ["a:1", "b:1"])
    await asyncio.gather(*tasks)
    assert rig.buffer.waiting == 0
    a, b = (p.in_flight for p in rig.throttler.get(KEY).pods)
    assert a + b == 10_000 and abs(a - b) <= 1  # two pods: every choice compares both


async def test_pacing_timers_cover_every_revision_with_fresh_pods() -> None:
    rig = Rig(cc=0, target=1, pacing=PacingParams(warmup=5.0))
    other = RevisionKey("ns", "other")
    rig.buffer.upsert_revision(RevisionInfo("ns", "other", container_concurrency=0, target=1))
    rig.buffer.set_pods(KEY, ["a:1"])
    await rig.clock.advance(2.0)
    rig.buffer.set_pods(other, ["b:1"])
    assert rig.clock.pending == [105.0]  # the earliest first
    await rig.clock.advance(3.0)
    assert rig.clock.pending == [107.0]  # then the next revision's
    await rig.clock.advance(2.0)
    assert rig.clock.pending == []
    assert not any(p.paced for k in (KEY, other) for p in rig.throttler.get(k).pods)
