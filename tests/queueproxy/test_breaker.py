from __future__ import annotations

import pytest

from queueproxy.breaker import Breaker, QueueFullError


def test_slots_are_taken_immediately_until_capacity() -> None:
    b = Breaker(queue_depth=2, capacity=2)
    assert b.try_acquire() and b.try_acquire()
    assert not b.try_acquire()
    assert b.active == 2 and b.in_flight == 2


def test_queue_beyond_depth_is_rejected_at_once() -> None:
    b = Breaker(queue_depth=2, capacity=1)
    assert b.try_acquire()
    b.enqueue(lambda: None)
    b.enqueue(lambda: None)
    with pytest.raises(QueueFullError):
        b.enqueue(lambda: None)
    assert b.in_flight == 3  # capacity + queue_depth, upstream's 11 x CC for CC=1, depth 10 x CC


def test_release_hands_the_slot_to_the_oldest_waiter() -> None:
    b = Breaker(queue_depth=10, capacity=1)
    woken: list[str] = []
    assert b.try_acquire()
    first = b.enqueue(lambda: woken.append("first"))
    b.enqueue(lambda: woken.append("second"))
    b.release()
    assert woken == ["first"] and first.granted
    assert b.active == 1 and b.waiting == 1


def test_newcomer_cannot_overtake_a_waiter() -> None:
    b = Breaker(queue_depth=10, capacity=1)
    assert b.try_acquire()
    b.enqueue(lambda: None)
    b.release()  # slot passes to the waiter
    assert not b.try_acquire()


def test_cancelled_waiter_is_skipped_and_frees_its_queue_place() -> None:
    b = Breaker(queue_depth=1, capacity=1)
    woken: list[str] = []
    assert b.try_acquire()
    t = b.enqueue(lambda: woken.append("gone"))
    b.cancel(t)
    assert b.waiting == 0
    b.enqueue(lambda: woken.append("next"))  # the place is free again
    b.release()
    assert woken == ["next"]


def test_cancel_after_grant_gives_the_slot_back() -> None:
    b = Breaker(queue_depth=5, capacity=1)
    woken: list[str] = []
    assert b.try_acquire()
    t1 = b.enqueue(lambda: woken.append("t1"))
    b.enqueue(lambda: woken.append("t2"))
    b.release()
    assert t1.granted
    b.cancel(t1)  # woken but gone before using the slot
    assert woken == ["t1", "t2"] and b.active == 1


def test_a_ticket_lets_go_of_its_wake_callable_and_arguments_once_granted_or_cancelled() -> None:
    # Both usually refer to the request holding the ticket: kept, every queued request would
    # be a reference cycle left to the cyclic collector.
    b = Breaker(queue_depth=5, capacity=1)
    request = object()
    assert b.try_acquire()
    granted = b.enqueue(lambda r: None, request)
    cancelled = b.enqueue(lambda r: None, request)
    b.cancel(cancelled)
    assert cancelled.wake is None and cancelled.args == ()
    assert granted.wake is not None and granted.args == (request,)
    b.release()
    assert granted.granted and granted.wake is None and granted.args == ()


def test_the_wake_callable_gets_the_arguments_given_with_it() -> None:
    b = Breaker(queue_depth=5, capacity=1)
    woken: list[tuple[str, int]] = []
    assert b.try_acquire()
    b.enqueue(lambda name, n: woken.append((name, n)), "first", 1)
    b.enqueue(woken.append, ("second", 2))
    b.release()
    b.release()
    assert woken == [("first", 1), ("second", 2)]


def test_capacity_growth_wakes_waiters_and_shrink_does_not_evict() -> None:
    b = Breaker(queue_depth=10, capacity=0)
    woken: list[int] = []
    for i in range(3):
        b.enqueue(lambda i=i: woken.append(i))
    b.set_capacity(2)
    assert woken == [0, 1]
    b.set_capacity(0)
    assert b.active == 2
    b.release()
    b.release()
    assert woken == [0, 1] and b.waiting == 1


def test_dead_entries_do_not_accumulate() -> None:
    b = Breaker(queue_depth=10, capacity=0)
    for _ in range(10_000):
        b.cancel(b.enqueue(lambda: None))
    assert len(b._queue) <= 16


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        Breaker(queue_depth=-1, capacity=1)
    with pytest.raises(ValueError, match="capacity"):
        Breaker(queue_depth=1, capacity=-1)
