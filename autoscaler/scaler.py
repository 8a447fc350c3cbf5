"""The KPA reconciler for one revision: bounds, scale to and from zero, serve/proxy mode.

Upstream runs this in the PodAutoscaler reconciler (``pkg/reconciler/autoscaling/kpa/kpa.go``
``ReconcileKind`` and ``scaler.go``): it turns the decider's DesiredScale into the replicas to
apply, the SKS mode (serve/proxy), the activator count, and the PA's ``Active`` condition
(Active / Activating / Inactive, each with the instant it was entered). Here the PA status and
the SKS are the fields of :class:`Scaler`, and one :meth:`Scaler.reconcile` call is one PA
reconcile at ``now``. What upstream asks Kubernetes for comes in as arguments: the decider's
status, the pod counts, and whether the activator is in the request path (upstream probes it;
locally it is in the path whenever the mode we last published is proxy or no pod is ready).

Upstream's re-enqueue timers become :attr:`ScalerResult.requeue_at`: the caller reconciles again
at that instant (or earlier, on any other event), as the work queue would. A reconcile that
changes the Active condition or the mode asks to be followed at once (upstream: the PA and SKS
updates come back as informer events).

Two deliberate differences, both about things upstream keeps in etcd and we keep in memory:

* ``failure`` (our addition, for the activator): the runtime's pod failure, else the activation
  time-out, published only when pods were actually requested or seen during that activation
  (after a restart of the autoscaler a revision idling at zero would otherwise "time out");
* the SKS "activator endpoints populated" instant is the instant the mode became proxy or the
  last ready pod went away.

Times are float Unix seconds (``now``). Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

from autoscaler.config import RevisionScaling

__all__ = [
    "ACTIVE",
    "ACTIVATING",
    "INACTIVE",
    "MODE_PROXY",
    "MODE_SERVE",
    "PodCounts",
    "Scaler",
    "ScalerResult",
    "SCALE_UNKNOWN",
]

logger = logging.getLogger(__name__)

ACTIVE, ACTIVATING, INACTIVE = "active", "activating", "inactive"
MODE_SERVE, MODE_PROXY = "serve", "proxy"
SCALE_UNKNOWN = -1
#: Reasons of the Active condition (upstream's strings).
REASON_QUEUED = "Queued"
REASON_NO_TRAFFIC = "NoTraffic"
REASON_TIMED_OUT = "TimedOut"
#: Re-reconcile delay when the PA can go inactive but the SKS is already in proxy mode.
_PROXY_REQUEUE = 3.0
#: Re-reconcile delay while the activator is not yet in the path (upstream: async probe).
_PROBE_REQUEUE = 1.0


@dataclass(frozen=True, slots=True)
class PodCounts:
    """A revision's pods as the runtime reports them (upstream: the pod lister)."""

    ready: int = 0
    not_ready: int = 0
    pending: int = 0
    terminating: int = 0
    failure: str = ""
    """Non-empty when pods cannot start (crash loop, ...): a reason for users."""

    @property
    def any(self) -> bool:
        return self.ready + self.not_ready + self.pending > 0


class ScalerResult(NamedTuple):
    """One reconcile: what to apply, publish and remember."""

    want: int
    """The scale after bounds and scale-to-zero handling; -1 = unknown (touch nothing)."""
    apply: bool
    """Set the scale target's replicas to ``want``."""
    desired_scale: int
    """The PA's ``status.desiredScale``: ``want``, except that -1 keeps a known value."""
    mode: str
    num_activators: int
    active: str
    reason: str
    failure: str
    requeue_at: float | None
    scale_target_initialized: bool


class Scaler:
    """One revision's PA status and SKS state, advanced by :meth:`reconcile`."""

    def __init__(self, now: float) -> None:
        # A new PA starts Activating (upstream InitializeConditions: Active=Unknown).
        self.active = ACTIVATING
        self.reason = ""
        self.since = now
        self.scale_target_initialized = False
        self.desired_scale: int | None = None
        self.mode = MODE_PROXY
        self.proxy_since: float | None = now
        self.activation_attempted = False
        self.last_result: ScalerResult | None = None

    def adopt(self, now: float) -> None:
        """The revision was already running with all its pods ready when we first saw it (an
        autoscaler restart): start Active and initialized, as upstream's persisted PA status
        would be, so min- or initial-scale do not resize it before the first decision."""
        self.active, self.reason, self.since = ACTIVE, "", now
        self.scale_target_initialized = True

    # -- the Active condition -----------------------------------------------------------------

    def _mark(self, status: str, reason: str, now: float) -> None:
        """Set the condition; the transition instant moves only when something changed."""
        if status == ACTIVATING and self.active != ACTIVATING:
            self.activation_attempted = False
        if (status, reason) != (self.active, self.reason):
            self.active, self.reason, self.since = status, reason, now

    def _in_status_for(self, status: str, now: float) -> float:
        return now - self.since if self.active == status else -1.0

    # -- scale (upstream scaler.scale + handleScaleToZero) -------------------------------------

    def _scale(self, rs: RevisionScaling, desired: int, activator_in_path: bool,
               now: float) -> tuple[int, bool, float | None]:
        """(want, apply, requeue delay)."""
        if desired < 0 and self.active != ACTIVATING:
            return desired, False, None
        desired = rs.apply_bounds(desired, self.scale_target_initialized)
        if desired != 0:
            return desired, True, None
        if not rs.enable_scale_to_zero:
            return 1, True, None
        if self.active == ACTIVATING:
            timeout = rs.activation_timeout
            waited = self._in_status_for(ACTIVATING, now)
            if waited > timeout:
                logger.info("activation timed out after %.0fs", timeout)
                return 0, True, None
            return SCALE_UNKNOWN, False, max(timeout - waited, 0.0) + 0.001
        if self.active == ACTIVE:
            window = rs.stable_window
            active_for = self._in_status_for(ACTIVE, now)
            if active_for >= window:
                # want 0 marks the PA inactive and puts the activator in the path.
                return 0, False, _PROXY_REQUEUE if self.mode == MODE_PROXY else None
            return 1, True, window - active_for
        # Inactive.
        if not (rs.activator_always_in_path or activator_in_path):
            return 0, False, _PROBE_REQUEUE
        retention = rs.last_pod_retention
        inactive_for = self._in_status_for(INACTIVE, now)
        if inactive_for >= max(rs.scale_to_zero_grace_period, retention):
            return 0, True, None
        if retention > 0 and inactive_for < retention:
            return 0, False, retention - inactive_for
        proxy_for = now - self.proxy_since if self.proxy_since is not None else 0.0
        left = rs.scale_to_zero_grace_period - proxy_for
        if left <= 0:
            return 0, True, None
        return 0, False, left

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(self, now: float, rs: RevisionScaling, decider_desired: int,
                  excess_burst_capacity: int, pods: PodCounts, num_activators: int) -> ScalerResult:
        """One PA reconcile at ``now`` with the decider's current status and the pod counts."""
        before = (self.active, self.mode)
        in_path = self.mode == MODE_PROXY or pods.ready == 0
        want, apply, requeue = self._scale(rs, decider_desired, in_path, now)

        # SKS mode: serve only with pods wanted and enough spare capacity.
        mode = MODE_SERVE if want > 0 and excess_burst_capacity >= 0 else MODE_PROXY
        self.mode = mode
        if mode == MODE_PROXY or pods.ready == 0:
            if self.proxy_since is None:
                self.proxy_since = now
        else:
            self.proxy_since = None

        # computeStatus: the desired scale (a restart's -1 keeps the known value) ...
        if not (want == SCALE_UNKNOWN and self.desired_scale is not None
                and self.desired_scale >= 0):
            self.desired_scale = want
        # ... and the Active condition (upstream computeActiveCondition).
        lo = rs.min_scale
        min_ready = max(lo, rs.initial_scale) if not self.scale_target_initialized else max(lo, 1)
        if pods.ready >= min_ready:
            self.scale_target_initialized = True
        attempted = pods.any or (apply and want > 0)
        if self.active == ACTIVATING and attempted:
            self.activation_attempted = True  # the activation now ending (or going on)
        if want == 0 or min_ready == 0:
            if self.active == ACTIVATING and min_ready > 0:
                self._mark(INACTIVE, REASON_TIMED_OUT, now)
            else:
                self._mark(INACTIVE, REASON_NO_TRAFFIC, now)
        elif pods.ready < min_ready:
            if want > 0 or self.active != INACTIVE:
                self._mark(ACTIVATING, REASON_QUEUED, now)
            else:
                self._mark(INACTIVE, REASON_NO_TRAFFIC, now)
        elif want > 0 or self.active != INACTIVE:
            self._mark(ACTIVE, "", now)
        if self.active == ACTIVATING and attempted:
            self.activation_attempted = True  # an activation this reconcile started

        if (self.active, self.mode) != before:
            # Upstream: the PA status and SKS updates come back as informer events and
            # reconcile the PA again at once.
            requeue = 0.0
        failure = pods.failure
        if not failure and self.active == INACTIVE and self.reason == REASON_TIMED_OUT \
                and self.activation_attempted:
            failure = (f"{REASON_TIMED_OUT}: the revision's pods did not become ready within "
                       f"{rs.activation_timeout:g}s (progress deadline + 30s)")
        result = ScalerResult(
            want=want, apply=apply,
            desired_scale=SCALE_UNKNOWN if self.desired_scale is None else self.desired_scale,
            mode=mode, num_activators=num_activators, active=self.active, reason=self.reason,
            failure=failure, requeue_at=None if requeue is None else now + requeue,
            scale_target_initialized=self.scale_target_initialized)
        self.last_result = result
        return result

    def describe(self, now: float) -> dict[str, object]:
        """The PA-like status, for the debug endpoint."""
        return {
            "active": self.active, "reason": self.reason, "since_unix": self.since,
            "for_seconds": now - self.since,
            "scale_target_initialized": self.scale_target_initialized,
            "desired_scale": SCALE_UNKNOWN if self.desired_scale is None else self.desired_scale,
            "mode": self.mode,
            "activator_path_for_seconds": None if self.proxy_since is None
            else now - self.proxy_since,
            "activation_attempted": self.activation_attempted,
        }
