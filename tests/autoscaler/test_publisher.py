"""Decision fan-out and the scale dispatcher (fake target, fake clock, no sleeping)."""
from __future__ import annotations

import pytest

from autoscaler.publisher import DecisionHub, ScaleDispatcher, ScaleError
from proto import kdp_pb2

KEY = ("default", "hello")


def decision(rev: str, pods: int) -> kdp_pb2.Decision:
    return kdp_pb2.Decision(namespace="default", revision=rev, desired_pods=pods)


async def test_a_subscriber_gets_every_current_decision_first() -> None:
    hub = DecisionHub()
    hub.publish(decision("a", 1))
    hub.publish(decision("b", 2))
    hub.publish(decision("a", 3))
    sub = hub.subscribe("activator-1")
    assert [(d.revision, d.desired_pods) for d in await sub.next_batch()] == [("a", 3), ("b", 2)]


async def test_a_slow_subscriber_gets_the_latest_state_one_entry_per_revision() -> None:
    hub = DecisionHub()
    sub = hub.subscribe("slow")
    for n in range(1000):
        hub.publish(decision("a", n))
        hub.publish(decision(f"r{n % 10}", n))
    assert len(sub.pending) == 11
    batch = await sub.next_batch()
    assert {d.revision: d.desired_pods for d in batch}["a"] == 999
    assert sub.coalesced == 2000 - 11


async def test_a_forgotten_revision_leaves_the_snapshot_and_the_queues() -> None:
    hub = DecisionHub()
    sub = hub.subscribe("x")
    hub.publish(decision("a", 1))
    hub.forget(("default", "a"))
    assert hub.latest == {} and sub.pending == {}


class FakeTarget:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[int] = []

    async def scale(self, namespace: str, revision: str, replicas: int) -> int:
        self.calls.append(replicas)
        if self.failures:
            self.failures -= 1
            raise ScaleError("runtime unavailable")
        return replicas

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_replicas_are_applied_once_per_change() -> None:
    target, clock = FakeTarget(), Clock()
    d = ScaleDispatcher(target, clock=clock, resync_period=30.0)
    for n in (3, 3, 3):
        d.set(KEY, n)
        await d.step()
        await d.settle()
    d.set(KEY, 5)
    await d.step()
    await d.settle()
    assert target.calls == [3, 5]
    assert d.status(KEY)["applied"] == 5  # type: ignore[index]


async def test_a_failed_scale_is_retried_with_backoff_and_reported() -> None:
    target, clock = FakeTarget(failures=3), Clock()
    d = ScaleDispatcher(target, clock=clock, backoff=(1.0, 8.0))
    d.set(KEY, 4)
    delays = []
    for _ in range(4):
        nxt = await d.step()
        await d.settle()
        if d.status(KEY)["last_error"]:  # type: ignore[index]
            assert d.failing == 1
            nxt = await d.step()
            assert nxt is not None
            delays.append(nxt - clock.t)
            clock.t = nxt
    assert delays == [1.0, 2.0, 4.0]
    assert target.calls == [4, 4, 4, 4]
    assert d.status(KEY)["applied"] == 4 and d.failing == 0  # type: ignore[index]
    assert (d.applied_ok, d.applied_failed) == (1, 3)


async def test_a_newer_value_goes_out_at_once_even_while_retrying() -> None:
    target, clock = FakeTarget(failures=1), Clock()
    d = ScaleDispatcher(target, clock=clock, backoff=(10.0, 60.0))
    d.set(KEY, 4)
    await d.step()
    await d.settle()
    d.set(KEY, 6)
    await d.step()
    await d.settle()
    assert target.calls == [4, 6]
    assert d.status(KEY)["applied"] == 6  # type: ignore[index]


async def test_the_periodic_resync_sends_every_value_again() -> None:
    target, clock = FakeTarget(), Clock()
    d = ScaleDispatcher(target, clock=clock, resync_period=30.0)
    d.set(KEY, 2)
    d.set(("default", "other"), 7)
    await d.step()
    await d.settle()
    clock.t += 29.0
    await d.step()
    await d.settle()
    assert sorted(target.calls) == [2, 7]
    clock.t += 1.0
    await d.step()
    await d.settle()
    assert sorted(target.calls) == [2, 2, 7, 7]


@pytest.mark.parametrize("replicas", [0, 1, 10])
async def test_a_forgotten_revision_is_not_applied(replicas: int) -> None:
    target = FakeTarget()
    d = ScaleDispatcher(target, clock=Clock())
    d.set(KEY, replicas)
    d.forget(KEY)
    await d.step()
    await d.settle()
    assert target.calls == []


async def test_the_dispatcher_stops_on_cancel_even_when_woken_at_the_same_moment() -> None:
    # asyncio.wait_for on 3.11 returns the inner result and drops a cancel that lands just as
    # the wait completes: a run loop built on it would never stop (and stop() would hang).
    import asyncio

    class Target:
        async def scale(self, namespace: str, revision: str, replicas: int) -> int:
            return replicas

    d = ScaleDispatcher(Target(), clock=lambda: 0.0)
    task = asyncio.ensure_future(d.run())
    for _ in range(3):
        await asyncio.sleep(0)  # it waits for a wake-up now
    d._wake.set()
    for _ in range(2):
        await asyncio.sleep(0)  # the wait has completed; the run loop has not resumed yet
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:  # the cancel was lost: stop the loop for good before failing
        task.cancel()
        await asyncio.wait([task], timeout=1)
    assert done and task.cancelled()
