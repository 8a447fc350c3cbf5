"""The simulator's model of the KPA reconciler and the Deployment it scales.

:class:`ReconcilerModel` is one revision's PodAutoscaler reconcile (``shared/upstream/
autoscaler-kpa.md`` §5), run by the simulator after every second's decider tick:

1. ``scale(desired)``: no decision yet (-1) passes through unless activating; min/max bounds,
   with initial-scale raising min until the revision first reaches it; then scale to zero:
   disabled -> 1 pod; activating -> wait, or give up after the activation timeout; active ->
   keep at most one pod until active for a stable window, then go inactive without scaling;
   inactive -> scale to zero once inactive for max(grace period, last-pod retention), or once
   the activator has been in the path for the grace period (the fast path), never before the
   retention. The activator is assumed to answer its probe.
2. SKS mode: serve iff want > 0 and excess burst capacity >= 0 and some pod is ready; else proxy
   (the activator in the path). "Proxy since" is when that last became true.
3. The Active condition (activating / active / inactive, with the time of the last change),
   and whether the scale target has reached its initial scale.

:class:`Deployment` is the pods: asked for by replica count, ready a start-up delay later,
removed at once (not-ready ones first, then the newest).

Times are float seconds on the simulation's clock. Pure: no I/O, no clock. The parts the
service's scaler could share are ``scale_to_zero`` and ``active_condition`` (pure functions
of the state and ``now``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.config import RevisionScaling

__all__ = [
    "ACTIVATING",
    "ACTIVE",
    "Deployment",
    "INACTIVE",
    "PROXY",
    "Reconciled",
    "ReconcilerModel",
    "SERVE",
    "active_condition",
    "scale_to_zero",
]

ACTIVATING, ACTIVE, INACTIVE = "activating", "active", "inactive"
SERVE, PROXY = "serve", "proxy"
NO_DECISION = -1
_LONG_AGO = -math.inf


def scale_to_zero(scaling: RevisionScaling, now: float, desired: int, state: str,
                  state_since: float, proxy_since: float | None) -> tuple[int, bool, str]:
    """Upstream's ``handleScaleToZero``: (want, apply to the scale target, why).

    ``desired`` is already bounded; ``state``/``state_since`` are the Active condition and
    when it last changed; ``proxy_since`` is when the activator last entered the path (None
    = not in the path). The activator is taken to answer its probe.
    """
    if desired != 0:
        return desired, True, "decider"
    if not scaling.enable_scale_to_zero:
        return 1, True, "scale to zero disabled"
    if state == ACTIVATING:
        if now - state_since > scaling.activation_timeout:
            return 0, True, "activation timed out"
        return NO_DECISION, False, "activating"
    if state == ACTIVE:
        if now - state_since >= scaling.stable_window:
            return 0, False, "idle: deactivating"
        return 1, True, "idle but active for less than a stable window"
    inactive_for = now - state_since
    retention = scaling.last_pod_retention
    grace = scaling.scale_to_zero_grace_period
    if inactive_for >= max(grace, retention):
        return 0, True, "inactive for the grace period"
    if retention > 0 and inactive_for < retention:
        return 0, False, "keeping the last pod (retention)"
    proxy_for = 0.0 if proxy_since is None else now - proxy_since
    if grace - proxy_for <= 0:
        return 0, True, "activator in the path for the grace period"
    return 0, False, "waiting for the grace period"


def active_condition(want: int, ready: int, min_ready: int, state: str) -> str:
    """Upstream's ``computeActiveCondition``: the next Active state."""
    if want == 0 or min_ready == 0:
        return INACTIVE
    if ready < min_ready:
        return ACTIVATING if want > 0 or state != INACTIVE else INACTIVE
    return ACTIVE if want > 0 or state != INACTIVE else state


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One reconcile: the scaler's answer, the replicas asked for, the SKS mode, the state."""

    want: int
    replicas: int
    applied: bool
    mode: str
    state: str
    reason: str


class ReconcilerModel:
    """One revision's PodAutoscaler, reconciled by :meth:`reconcile` (see module docstring)."""

    def __init__(self, scaling: RevisionScaling, *, replicas: int, state: str,
                 state_since: float, initialized: bool, mode: str = PROXY,
                 proxy_since: float | None = _LONG_AGO) -> None:
        self.scaling = scaling
        self.replicas = replicas
        self.state = state
        self.state_since = state_since
        self.initialized = initialized
        self.mode = mode
        self.proxy_since = proxy_since if mode == PROXY else None

    @classmethod
    def new_revision(cls, scaling: RevisionScaling, now: float) -> ReconcilerModel:
        """Just created: initial-scale replicas, activating, the activator in the path."""
        return cls(scaling, replicas=scaling.initial_scale, state=ACTIVATING, state_since=now,
                   initialized=False, proxy_since=now)

    @classmethod
    def idle_at_zero(cls, scaling: RevisionScaling) -> ReconcilerModel:
        """Scaled to zero long ago: inactive, behind the activator."""
        return cls(scaling, replicas=0, state=INACTIVE, state_since=_LONG_AGO,
                   initialized=True)

    @classmethod
    def running(cls, scaling: RevisionScaling, pods: int) -> ReconcilerModel:
        """Active for a long time with ``pods`` replicas."""
        return cls(scaling, replicas=pods, state=ACTIVE, state_since=_LONG_AGO,
                   initialized=True)

    def min_ready(self) -> int:
        """Ready pods needed to count as active (upstream's ``activeThreshold``)."""
        lo = self.scaling.min_scale
        if not self.initialized:
            return max(lo, self.scaling.initial_scale)
        return max(lo, 1)

    def reconcile(self, now: float, desired_scale: int, excess_burst_capacity: int,
                  ready: int) -> Reconciled:
        """Reconcile at ``now`` with the decider's status and the ready pod count."""
        s = self.scaling
        applied = False
        if desired_scale < 0 and self.state != ACTIVATING:
            want, reason = desired_scale, "no decision yet"
        else:
            bounded = s.apply_bounds(desired_scale, self.initialized)
            want, applied, reason = scale_to_zero(s, now, bounded, self.state,
                                                  self.state_since, self.proxy_since)
            if applied:
                self.replicas = want
        if want == NO_DECISION and self.state == INACTIVE:
            mode = PROXY
        elif want > 0 and excess_burst_capacity >= 0:
            mode = SERVE
        else:
            mode = PROXY
        if ready == 0:
            mode = PROXY  # no ready endpoints: the SKS keeps the activator in the path
        if mode == PROXY and self.proxy_since is None:
            self.proxy_since = now
        elif mode == SERVE:
            self.proxy_since = None
        self.mode = mode
        min_ready = self.min_ready()
        if ready >= min_ready:
            self.initialized = True
        state = active_condition(want, ready, min_ready, self.state)
        if state != self.state:
            self.state, self.state_since = state, now
        return Reconciled(want, self.replicas, applied, mode, self.state, reason)


class Deployment:
    """The revision's pods: each is ready ``startup_delay`` after it is asked for."""

    def __init__(self, startup_delay: float) -> None:
        self._delay = startup_delay
        self._ready_at: list[float] = []  # ascending

    def __len__(self) -> int:
        return len(self._ready_at)

    def ready(self, now: float) -> int:
        return sum(1 for t in self._ready_at if t <= now)

    def add_ready(self, count: int, now: float) -> None:
        """Pods that are ready already (a warm start)."""
        self._ready_at = sorted([now] * count + self._ready_at)

    def scale(self, replicas: int, now: float) -> int:
        """Start or remove pods to have ``replicas``; returns the change."""
        change = replicas - len(self._ready_at)
        if change > 0:
            ready_at = float(math.ceil(now + self._delay))
            self._ready_at.extend([ready_at] * change)
        elif change < 0:
            del self._ready_at[change:]  # the latest to be ready go first: starting, then newest
        return change
