"""The concurrency breaker: at most ``capacity`` holders, a bounded FIFO of waiters.

Pure: no asyncio, no clock. A waiter is represented by a ``wake`` callable and its arguments,
which the breaker calls when it hands the waiter a slot (slots pass directly from releaser to
the oldest waiter, so the queue is fair). Passing the arguments, rather than a closure over
them, spares the queue-proxy a function object and a Python frame per queued request: its
``wake`` is ``functools.partial(loop.call_soon, handler)``, called entirely in C.

    try_acquire()          -> True: you hold a slot now (only when nobody is waiting)
    enqueue(wake, *args)   -> a Ticket; raises QueueFullError when ``queue_depth`` already wait
    cancel(ticket)         -> the waiter gives up; a slot granted meanwhile is given back
    release()              -> give a slot back; the oldest waiter gets it
    set_capacity(n)        -> the activator's throttler resizes as pods come and go

Upstream's queue-proxy breaker admits ``queue_depth + capacity`` requests in all; ours is
the same rule said differently: beyond the slots, at most ``queue_depth`` may wait.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["Breaker", "QueueFullError", "Ticket"]

_WAITING, _GRANTED, _GONE = 0, 1, 2


class QueueFullError(Exception):
    """Every slot is taken and the wait queue is at its depth: answer 503 at once."""

    status_hint = 503
    body = b"pending request queue full\n"


class Ticket:
    """A waiter's place. ``wake`` and ``args`` are dropped once the ticket is granted or
    cancelled: they usually refer to the request that holds the ticket, and keeping them would
    make every queued request a reference cycle that only the cyclic collector can free."""

    __slots__ = ("wake", "args", "state")

    def __init__(self, wake: Callable[..., object], args: tuple[object, ...]) -> None:
        self.wake: Callable[..., object] | None = wake
        self.args = args
        self.state = _WAITING

    @property
    def granted(self) -> bool:
        return self.state == _GRANTED


class Breaker:
    __slots__ = ("queue_depth", "capacity", "active", "waiting", "_queue")

    def __init__(self, queue_depth: int, capacity: int) -> None:
        if queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0, got {queue_depth}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.queue_depth = queue_depth
        self.capacity = capacity
        self.active = 0
        self.waiting = 0
        self._queue: deque[Ticket] = deque()

    @property
    def in_flight(self) -> int:
        """Holders plus waiters (upstream's queue-depth gauge)."""
        return self.active + self.waiting

    def try_acquire(self) -> bool:
        if self.active < self.capacity and not self.waiting:
            self.active += 1
            return True
        return False

    def enqueue(self, wake: Callable[..., object], *args: object) -> Ticket:
        if self.waiting >= self.queue_depth:
            raise QueueFullError()
        ticket = Ticket(wake, args)
        self._queue.append(ticket)
        self.waiting += 1
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if ticket.state == _WAITING:
            ticket.state = _GONE
            ticket.wake = None
            ticket.args = ()
            self.waiting -= 1
            queue = self._queue
            if len(queue) > 2 * self.waiting + 16:  # drop the dead entries, amortised O(1)
                self._queue = deque(t for t in queue if t.state == _WAITING)
        elif ticket.state == _GRANTED:  # the waiter's request is done: its slot is free
            ticket.state = _GONE
            self.release()

    def release(self) -> None:
        self.active -= 1
        if self.waiting:
            self._grant()

    def set_capacity(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        if self.waiting:
            self._grant()

    def _grant(self) -> None:
        queue = self._queue
        while self.active < self.capacity and queue:
            ticket = queue.popleft()
            if ticket.state != _WAITING:
                continue
            ticket.state = _GRANTED
            wake, args = ticket.wake, ticket.args
            ticket.wake = None
            ticket.args = ()
            self.waiting -= 1
            self.active += 1
            assert wake is not None
            wake(*args)
