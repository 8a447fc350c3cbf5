"""Load-balancing policies: given a revision's assigned pods, which one takes the next request.

A policy is a callable ``policy(targets) -> target | None``. It only *chooses*; the throttler
takes the slot (``in_flight += 1``) on the pod it gets back. ``None`` means no pod has room
right now. Which policy a revision uses depends on its containerConcurrency (upstream
``pkg/activator/net/lb_policy.go`` and ``throttler.go``):

* CC = 0: :class:`PowerOfTwoChoices` on in-flight weight, ties broken at random. The caller
  passes only pods with room (all of them unless fresh pods are being paced).
* 1 <= CC <= 3: :func:`first_available` — scan in order, take the first pod with a free slot.
* CC > 3: :class:`RoundRobin` — start after the last pick, skip full pods.

Random choices come from an injected ``random.Random`` so tests are deterministic.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

__all__ = ["Policy", "PowerOfTwoChoices", "RoundRobin", "Target", "first_available", "policy_for"]


class Target(Protocol):
    """What a policy looks at: requests in flight on the pod and how many it may hold."""

    in_flight: int
    limit: int


T = TypeVar("T", bound=Target)
Policy = Callable[[Sequence[T]], "T | None"]


class PowerOfTwoChoices:
    """Pick two distinct pods at random and take the one with fewer requests in flight."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def __call__(self, targets: Sequence[T]) -> T | None:
        n = len(targets)
        if n == 0:
            return None
        if n == 1:
            return targets[0]
        i, j = 0, 1
        if n > 2:
            i = self._rng.randrange(n)
            j = self._rng.randrange(n - 1)
            if j >= i:  # j ranges over every index but i
                j += 1
        pick, alt = targets[i], targets[j]
        if pick.in_flight > alt.in_flight:
            return alt
        if pick.in_flight == alt.in_flight and self._rng.getrandbits(1) == 0:
            return alt
        return pick


def first_available(targets: Sequence[T]) -> T | None:
    for t in targets:
        if t.in_flight < t.limit:
            return t
    return None


class RoundRobin:
    """Cycle through the pods, starting after the previous pick and skipping full ones."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, targets: Sequence[T]) -> T | None:
        n = len(targets)
        start = self._next if self._next < n else 0  # the pod list may have shrunk
        for k in range(n):
            p = (start + k) % n
            t = targets[p]
            if t.in_flight < t.limit:
                self._next = p + 1
                return t
        return None


def policy_for(container_concurrency: int, rng: random.Random | None = None) -> Policy:
    if container_concurrency == 0:
        return PowerOfTwoChoices(rng)
    if container_concurrency <= 3:
        return first_available
    return RoundRobin()
