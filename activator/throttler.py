"""The throttler core: per-revision capacity, per-pod slots, load balancing, and who waits.

Pure: no asyncio, no clock; every call that depends on time takes ``now``. The asyncio layer
(:mod:`activator.buffer`) turns waiters into futures and deadlines.

Per revision (upstream ``pkg/activator/net/throttler.go``), a :class:`RevisionThrottler` keeps

* a revision breaker (the kernel :class:`~queueproxy.breaker.Breaker`) whose capacity is the sum
  of the slots of the pods assigned to this activator: ``CC x assigned pods`` when CC > 0;
  unlimited when CC = 0 and some pod is routable; 0 with no pod;
* a :class:`PodTracker` per routable pod: ``in_flight`` is the load-balancing weight and
  ``limit`` its slots (CC, or unlimited for CC = 0). A pod slot is only ever taken together with
  a revision slot, so whenever the breaker grants a slot some pod has room;
* the load-balancing policy from :mod:`activator.lb_policy` and the subset of pods from
  :mod:`activator.subsetting` (CC > 0 only).

Beyond upstream:

* **Bounded waiting.** At most ``max_waiting_per_revision`` requests wait per revision (the
  breaker's queue depth) and ``max_waiting`` in the whole activator; beyond either,
  :class:`QueueFull` carrying a reason and a Retry-After value.
* **Fail fast.** While a revision is reported unable to start (``failure`` from the endpoints
  or the decision feed) *and* has no routable pod, every waiting request fails at once with
  :class:`RevisionFailed` and new requests that would have to wait are refused. A routable
  pod or a cleared reason ends it.
* **Pacing fresh pods (CC = 0).** Upstream releases the whole backlog onto the first pod of a
  CC = 0 revision. Here a newly routable pod starts with ``limit = ceil(target)`` (the
  autoscaler's per-pod target; ``default_target`` when unknown), so the backlog spreads over
  pods as they arrive instead of flooding the first one. Slow start: every response answered
  "fast" (time to response headers within ``fast_factor`` x the pod's best, or under
  ``fast_floor``) raises the limit by one, so a pod that keeps up doubles its share about every
  round trip; an error halves it (never below the initial limit). The pod is released from
  pacing ``warmup`` seconds after it became routable. ``warmup = 0`` turns pacing off.
* **Refused connections.** :meth:`Throttler.refused` takes a pod that refused a connection
  (nothing was sent) out of rotation at once and frees the slot, so the caller can acquire
  again and reach another pod; the prober re-admits the pod when it answers again.

Errors, and the status a handler should answer with::

    ThrottlerError
    ├── RevisionNotFound   404  unknown (or deleted) revision
    ├── QueueFull          503  + Retry-After; per-revision or global waiting cap reached
    ├── RevisionFailed     503  + Retry-After; the revision cannot start (reason in the message)
    └── WaitTimeout        504  the request's deadline passed while waiting (raised by buffer)
"""
from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from activator.lb_policy import policy_for
from activator.revisions import RevisionInfo, RevisionKey
from activator.subsetting import assign_slice, infer_index
from queueproxy.breaker import Breaker, QueueFullError, Ticket

__all__ = [
    "UNLIMITED",
    "PacingParams",
    "PodTracker",
    "QueueFull",
    "RevisionFailed",
    "RevisionNotFound",
    "RevisionThrottler",
    "Throttler",
    "ThrottlerError",
    "ThrottlerParams",
    "WaitTimeout",
    "Waiter",
]

logger = logging.getLogger(__name__)

UNLIMITED = 2**31 - 1  # upstream's MaxBreakerCapacity


class ThrottlerError(Exception):
    """Base of the throttler's errors; ``status_hint`` is the HTTP status to answer with."""

    status_hint = 500

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str | None:
        """``Retry-After`` as whole seconds (at least 1), or None."""
        return None if self.retry_after is None else str(max(1, math.ceil(self.retry_after)))


class RevisionNotFound(ThrottlerError):
    status_hint = 404


class QueueFull(ThrottlerError):
    status_hint = 503


class RevisionFailed(ThrottlerError):
    status_hint = 503


class WaitTimeout(ThrottlerError):
    status_hint = 504


@dataclass(frozen=True, slots=True)
class PacingParams:
    warmup: float = 10.0
    """Seconds a fresh pod of a CC = 0 revision stays paced; 0 turns pacing off."""
    fast_factor: float = 2.0
    """A response counts as fast within this multiple of the pod's best time to headers..."""
    fast_floor: float = 0.05
    """...or under this many seconds, whichever is larger."""
    default_target: float = 100.0
    """Initial limit when the revision's target is unknown (upstream's default target)."""


@dataclass(frozen=True, slots=True)
class ThrottlerParams:
    max_waiting_per_revision: int = 10_000
    """Upstream's breaker queue depth."""
    max_waiting: int = 20_000
    """Requests waiting in the whole activator, all revisions together."""
    queue_full_retry_after: float = 1.0
    failed_retry_after: float = 10.0
    self_ip: str = ""
    """This activator's IP, to find its index among the activators (subsetting)."""
    pacing: PacingParams = field(default_factory=PacingParams)


class PodTracker:
    """One routable pod of a revision. ``dest`` is the queue-proxy address ``host:port``."""

    __slots__ = ("dest", "owner", "in_flight", "limit", "added_at", "paced", "min_latency", "removed")

    def __init__(self, dest: str, owner: RevisionThrottler, limit: int, added_at: float, paced: bool) -> None:
        self.dest = dest
        self.owner = owner
        self.in_flight = 0
        self.limit = limit
        self.added_at = added_at
        self.paced = paced
        self.min_latency = math.inf
        self.removed = False

    def __repr__(self) -> str:
        return f"PodTracker({self.dest!r}, in_flight={self.in_flight}, limit={self.limit})"


_WAITING, _HOLDING, _GRANTED, _DONE = range(4)


class Waiter:
    """A request waiting for a pod. ``on_grant(pod)`` or ``on_fail(error)`` is called once."""

    __slots__ = ("owner", "on_grant", "on_fail", "since", "ticket", "state", "pod")

    def __init__(self, owner: RevisionThrottler, on_grant: Callable[[PodTracker], object],
                 on_fail: Callable[[ThrottlerError], object], since: float) -> None:
        self.owner = owner
        self.on_grant = on_grant
        self.on_fail = on_fail
        self.since = since
        self.ticket: Ticket | None = None
        self.state = _WAITING
        self.pod: PodTracker | None = None


class _Budget:
    __slots__ = ("waiting", "limit")

    def __init__(self, limit: int) -> None:
        self.waiting = 0
        self.limit = limit


class RevisionThrottler:
    def __init__(self, info: RevisionInfo, params: ThrottlerParams, budget: _Budget, rng: random.Random) -> None:
        self.info = info
        self.params = params
        self.breaker = Breaker(params.max_waiting_per_revision, 0)
        self.activator_index = -1
        self.num_activators = 0
        self.deleted = False
        self._budget = budget
        self._rng = rng
        self._policy = policy_for(info.container_concurrency, rng)
        self._pods: dict[str, PodTracker] = {}
        self._assigned: list[PodTracker] = []
        self._paced = 0
        self._holders: deque[Waiter] = deque()
        self._waiters: dict[Waiter, None] = {}
        self._decision_failure = ""
        self.active = 0
        """Requests holding a pod slot of this revision (being proxied)."""

    # ---- what the request path calls ---------------------------------------------------

    @property
    def key(self) -> RevisionKey:
        return self.info.key

    @property
    def failure(self) -> str:
        return self.info.failure or self._decision_failure

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def pods(self) -> list[PodTracker]:
        """The pods assigned to this activator, sorted by address."""
        return list(self._assigned)

    def try_acquire(self) -> PodTracker | None:
        if not self.breaker.try_acquire():
            return None
        pod = self._pick()
        if pod is None:  # cannot happen while slots and pods agree; never strand the slot
            self.breaker.release()
            return None
        pod.in_flight += 1
        self.active += 1
        return pod

    def enqueue(self, now: float, on_grant: Callable[[PodTracker], object],
                on_fail: Callable[[ThrottlerError], object]) -> Waiter:
        if self.deleted:
            raise RevisionNotFound(f"revision {self.key} not found")
        reason = self.failure
        if reason and not self._assigned:
            raise RevisionFailed(f"revision {self.key} cannot start: {reason}", self.params.failed_retry_after)
        budget = self._budget
        if budget.waiting >= budget.limit:
            raise QueueFull(f"activator queue full: {budget.waiting} requests waiting",
                            self.params.queue_full_retry_after)
        w = Waiter(self, on_grant, on_fail, now)
        try:
            w.ticket = self.breaker.enqueue(self._granted, w)
        except QueueFullError:
            raise QueueFull(f"revision {self.key} queue full: {self.breaker.waiting} requests waiting",
                            self.params.queue_full_retry_after) from None
        self._waiters[w] = None
        budget.waiting += 1
        return w

    def cancel(self, w: Waiter, now: float) -> None:
        """The waiter gives up (deadline, client gone). A pod granted meanwhile is given back."""
        if w.state == _WAITING:
            assert w.ticket is not None
            self.breaker.cancel(w.ticket)
            self._forget(w)
        elif w.state == _HOLDING:
            self._holders.remove(w)
            self._forget(w)
            self.breaker.release()
        elif w.state == _GRANTED:
            w.state = _DONE
            assert w.pod is not None
            self.release(w.pod, now, ok=True, latency=None)

    def release(self, pod: PodTracker, now: float, ok: bool = True, latency: float | None = None) -> None:
        """The request on ``pod`` is done. ``latency`` is its time to response headers."""
        pod.in_flight -= 1
        self.active -= 1
        resized = pod.paced and not pod.removed and self._pace(pod, now, ok, latency)
        if self._holders:
            self._serve_holders()
        self.breaker.release()
        if resized:
            self._resize()

    def refused(self, pod: PodTracker, now: float) -> None:
        """``pod`` refused the connection: out of rotation now, and the slot is freed."""
        pod.in_flight -= 1
        self.active -= 1
        if self._pods.get(pod.dest) is pod:
            logger.info("revision %s: pod %s refused a connection; out of rotation", self.key, pod.dest)
            pod.removed = True
            del self._pods[pod.dest]
            self._reassign()
        self.breaker.release()

    # ---- what the discovery side calls -------------------------------------------------

    def set_info(self, info: RevisionInfo) -> None:
        old, self.info = self.info, info
        if info.container_concurrency != old.container_concurrency:
            self._policy = policy_for(info.container_concurrency, self._rng)
            for t in self._pods.values():
                t.limit, t.paced = self._steady_limit(), False
            self._reassign()
        self._check_failure()

    def set_decision_failure(self, reason: str) -> None:
        self._decision_failure = reason
        self._check_failure()

    def set_pods(self, dests: Iterable[str], now: float) -> None:
        old, new = self._pods, {}
        for d in dests:
            t = old.get(d)
            if t is None:
                paced = self.info.container_concurrency == 0 and self.params.pacing.warmup > 0
                t = PodTracker(d, self, self._initial_limit() if paced else self._steady_limit(), now, paced)
            new[d] = t
        for d, t in old.items():
            if d not in new:
                t.removed = True
        self._pods = new
        self._reassign()

    def set_activators(self, activator_ips: Iterable[str], self_ip: str) -> None:
        index, count = infer_index(activator_ips, self_ip)
        if index < 0 or (index, count) == (self.activator_index, self.num_activators):
            return  # upstream: not (yet) in the path, or nothing changed
        logger.info("revision %s: this activator is %d of %d", self.key, index, count)
        self.activator_index, self.num_activators = index, count
        self._reassign()

    def delete(self) -> None:
        self.deleted = True
        for t in self._pods.values():
            t.removed = True
        self._pods, self._assigned, self._paced = {}, [], 0
        self.breaker.set_capacity(0)
        self._fail_all(RevisionNotFound(f"revision {self.key} was deleted"))

    def tick(self, now: float) -> None:
        """Release pods from pacing once their warm-up is over."""
        warmup, changed = self.params.pacing.warmup, False
        for t in self._assigned:
            if t.paced and now - t.added_at >= warmup:
                self._graduate(t)
                changed = True
        if changed:
            self._resize()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None."""
        if not self._paced:
            return None
        warmup = self.params.pacing.warmup
        return min(t.added_at + warmup for t in self._assigned if t.paced)

    # ---- internals -----------------------------------------------------------------------

    def _steady_limit(self) -> int:
        cc = self.info.container_concurrency
        return cc if cc > 0 else UNLIMITED

    def _initial_limit(self) -> int:
        target = self.info.target or self.params.pacing.default_target
        return max(1, math.ceil(target))

    def _pick(self) -> PodTracker | None:
        targets = self._assigned
        if self._paced:
            targets = [t for t in targets if t.in_flight < t.limit]
        if not targets:
            return None
        return self._policy(targets)

    def _granted(self, w: Waiter) -> None:
        # Called by the breaker while it hands out slots: must not touch the breaker.
        pod = self._pick()
        if pod is None:
            logger.warning("revision %s: a slot without a pod; the request holds on", self.key)
            w.state = _HOLDING
            self._holders.append(w)
            return
        self._hand_over(w, pod)

    def _hand_over(self, w: Waiter, pod: PodTracker) -> None:
        pod.in_flight += 1
        self.active += 1
        w.pod = pod
        self._forget(w)
        w.state = _GRANTED
        w.on_grant(pod)

    def _forget(self, w: Waiter) -> None:
        w.state = _DONE
        del self._waiters[w]
        self._budget.waiting -= 1

    def _serve_holders(self) -> None:
        while self._holders:
            pod = self._pick()
            if pod is None:
                return
            self._hand_over(self._holders.popleft(), pod)

    def _capacity(self) -> int:
        assigned = self._assigned
        if not assigned:
            return 0
        cc = self.info.container_concurrency
        if cc > 0:
            return min(cc * len(assigned), UNLIMITED)
        if self._paced < len(assigned):
            return UNLIMITED
        return min(sum(t.limit for t in assigned), UNLIMITED)

    def _resize(self) -> None:
        if self._holders:
            self._serve_holders()
        capacity = self._capacity()
        if capacity != self.breaker.capacity:
            self.breaker.set_capacity(capacity)

    def _reassign(self) -> None:
        pods = sorted(self._pods.values(), key=lambda t: t.dest)
        if self.info.container_concurrency > 0:
            pods = assign_slice(pods, self.activator_index, self.num_activators)
        self._assigned = pods
        self._paced = sum(1 for t in pods if t.paced)
        self._resize()
        self._check_failure()

    def _pace(self, pod: PodTracker, now: float, ok: bool, latency: float | None) -> bool:
        pacing = self.params.pacing
        if now - pod.added_at >= pacing.warmup:
            self._graduate(pod)
            return True
        if not ok:
            limit = max(self._initial_limit(), pod.limit // 2)
        elif latency is not None:
            if latency < pod.min_latency:
                pod.min_latency = latency
            if latency > max(pod.min_latency * pacing.fast_factor, pacing.fast_floor):
                return False
            limit = pod.limit + 1
        else:
            return False
        changed, pod.limit = limit != pod.limit, limit
        return changed

    def _graduate(self, pod: PodTracker) -> None:
        pod.paced, pod.limit = False, self._steady_limit()
        self._paced -= 1

    def _check_failure(self) -> None:
        reason = self.failure
        if reason and not self._assigned and self._waiters:
            logger.info("revision %s cannot start (%s): failing %d waiting requests",
                        self.key, reason, len(self._waiters))
            self._fail_all(RevisionFailed(f"revision {self.key} cannot start: {reason}",
                                          self.params.failed_retry_after))

    def _fail_all(self, error: ThrottlerError) -> None:
        for w in list(self._waiters):
            if w.state == _WAITING:
                assert w.ticket is not None
                self.breaker.cancel(w.ticket)
            else:  # holding a revision slot without a pod
                self._holders.remove(w)
                self.breaker.release()
            self._forget(w)
            w.on_fail(error)


class Throttler:
    """Every revision's throttler, plus the activator-wide cap on waiting requests."""

    def __init__(self, params: ThrottlerParams | None = None, rng: random.Random | None = None) -> None:
        self.params = params or ThrottlerParams()
        self._rng = rng or random.Random()
        self._budget = _Budget(self.params.max_waiting)
        self._revisions: dict[RevisionKey, RevisionThrottler] = {}

    @property
    def waiting(self) -> int:
        return self._budget.waiting

    def __contains__(self, key: object) -> bool:
        return key in self._revisions

    def get(self, key: RevisionKey) -> RevisionThrottler | None:
        return self._revisions.get(key)

    def revision(self, key: RevisionKey) -> RevisionInfo | None:
        rt = self._revisions.get(key)
        return rt.info if rt is not None else None

    def keys(self) -> list[RevisionKey]:
        return list(self._revisions)

    def load(self) -> list[tuple[RevisionKey, int, int]]:
        """``(revision, requests waiting, requests holding a pod)`` for every revision."""
        return [(key, rt.waiting, rt.active) for key, rt in self._revisions.items()]

    # ---- request path --------------------------------------------------------------------

    def try_acquire(self, key: RevisionKey) -> PodTracker | None:
        """A pod at once, or None when the request has to wait (then call :meth:`enqueue`)."""
        rt = self._revisions.get(key)
        if rt is None:
            raise RevisionNotFound(f"revision {key} not found")
        return rt.try_acquire()

    def enqueue(self, key: RevisionKey, now: float, on_grant: Callable[[PodTracker], object],
                on_fail: Callable[[ThrottlerError], object]) -> Waiter:
        rt = self._revisions.get(key)
        if rt is None:
            raise RevisionNotFound(f"revision {key} not found")
        return rt.enqueue(now, on_grant, on_fail)

    @staticmethod
    def cancel(w: Waiter, now: float) -> None:
        w.owner.cancel(w, now)

    @staticmethod
    def release(pod: PodTracker, now: float, ok: bool = True, latency: float | None = None) -> None:
        pod.owner.release(pod, now, ok, latency)

    @staticmethod
    def refused(pod: PodTracker, now: float) -> None:
        pod.owner.refused(pod, now)

    # ---- discovery side ------------------------------------------------------------------

    def upsert(self, info: RevisionInfo) -> RevisionThrottler:
        rt = self._revisions.get(info.key)
        if rt is None:
            rt = self._revisions[info.key] = RevisionThrottler(info, self.params, self._budget, self._rng)
        else:
            rt.set_info(info)
        return rt

    def delete(self, key: RevisionKey) -> None:
        rt = self._revisions.pop(key, None)
        if rt is not None:
            rt.delete()

    def set_pods(self, key: RevisionKey, dests: Iterable[str], now: float) -> None:
        rt = self._revisions.get(key)
        if rt is not None:
            rt.set_pods(dests, now)

    def set_activators(self, key: RevisionKey, activator_ips: Iterable[str]) -> None:
        rt = self._revisions.get(key)
        if rt is not None:
            rt.set_activators(activator_ips, self.params.self_ip)

    def set_decision_failure(self, key: RevisionKey, reason: str) -> None:
        rt = self._revisions.get(key)
        if rt is not None:
            rt.set_decision_failure(reason)

    def tick(self, now: float) -> None:
        for rt in self._revisions.values():
            if rt.next_deadline() is not None:
                rt.tick(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for rt in self._revisions.values() if (d := rt.next_deadline()) is not None]
        return min(deadlines) if deadlines else None
