"""Scalar reference decider: one revision's KPA ``Scale(now)`` plus its MultiScaler status.

The readable, exact port of upstream's ``scaling.autoscaler`` (the per-revision state machine)
and the part of ``scaling.MultiScaler`` that keeps a revision's status. The service runs the
vectorised :mod:`autoscaler.batch_decider`, which is tested to give the same answers.

One tick, in order (``shared/upstream/autoscaler-kpa.md`` §3, ``shared/conformance/README.md``):
pod count (an error makes the tick invalid), rate clamps against ``max(1, ready)``, raw pod
counts ``ceil(observed / target)``, clamping, activation scale, the panic state machine with
its no-scale-down ratchet, the scale-down delay window, and excess burst capacity. An invalid
tick changes nothing. Every tick produces a :class:`Decision` that explains itself.

Instants are ``int`` Unix nanoseconds (``now_ns``). Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler import gotime
from autoscaler.gotime import GO_ZERO_NS, fdiv, go_fmax, go_fmin, go_int32
from autoscaler.spec import DeciderSpec
from autoscaler.windows import MaxTimeWindow

__all__ = [
    "DELAY_GRANULARITY",
    "Decider",
    "DeciderStatus",
    "Decision",
    "INVALID_METRICS",
    "INVALID_POD_COUNT",
    "ScaleResult",
    "initial_status",
    "num_activators",
]

#: The scale-down delay window's slot width: upstream's tick interval.
DELAY_GRANULARITY = 2.0
#: ``Decision.invalid_reason`` values.
INVALID_POD_COUNT = "pod_count_error"
INVALID_METRICS = "metrics_unavailable"
_MIN_ACTIVATORS = 2.0


def _ceil(x: float) -> float:
    """``math.Ceil``: Python's raises on Inf and NaN."""
    return float(math.ceil(x)) if math.isfinite(x) else x


def _floor(x: float) -> float:
    return float(math.floor(x)) if math.isfinite(x) else x


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """Upstream's ``ScaleResult``; an invalid one is ``(0, 0, False)``."""

    desired_pod_count: int
    excess_burst_capacity: int
    scale_valid: bool


INVALID_RESULT = ScaleResult(0, 0, False)


@dataclass(frozen=True, slots=True)
class DeciderStatus:
    """What the MultiScaler publishes for a revision (upstream ``Decider.Status``)."""

    desired_scale: int
    excess_burst_capacity: int


@dataclass(frozen=True, slots=True)
class Decision:
    """One tick, explained: the inputs, every intermediate value, and what was published.

    The intermediate fields are ``None`` on an invalid tick (``invalid_reason`` says why).
    """

    now_ns: int
    result: ScaleResult
    status: DeciderStatus
    informed: bool  # the status changed enough to re-reconcile the revision
    num_activators: int
    in_panic: bool  # after this tick
    max_panic_pods: int  # after this tick
    ready_pods: int | None  # None: the pod count could not be read
    observed_stable: float | None  # None on an invalid tick
    observed_panic: float | None
    invalid_reason: str | None = None
    effective_ready: float | None = None  # max(1, ready)
    max_scale_up: float | None = None
    max_scale_down: float | None = None
    raw_stable_pods: float | None = None  # ceil(stable / target), before clamps
    raw_panic_pods: float | None = None
    stable_pods: int | None = None  # after clamps and activation scale
    panic_pods: int | None = None
    over_panic_threshold: bool | None = None
    panic_transition: str | None = None  # "enter" | "extend" | "exit" | None
    undelayed_pod_count: int | None = None  # before the scale-down delay window
    delayed: bool | None = None  # the delay window held the count up


def num_activators(ready_pods: int, spec: DeciderSpec) -> int:
    """Upstream's ``computeNumActivators``: activators needed to cover capacity plus TBC."""
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return int(_MIN_ACTIVATORS)
    capacity = float(ready_pods) * spec.total_value
    if tbc > 0:
        capacity += tbc
    return go_int32(go_fmax(_MIN_ACTIVATORS, _ceil(fdiv(capacity, spec.activator_capacity))))


def initial_status(spec: DeciderSpec) -> DeciderStatus:
    """Status at creation: no decision yet (-1); EBC from the initial scale, truncated."""
    tbc = spec.target_burst_capacity
    if tbc in (-1.0, 0.0):
        ebc = int(tbc)
    else:
        ebc = go_int32(float(spec.initial_scale) * spec.total_value - tbc)
    return DeciderStatus(desired_scale=-1, excess_burst_capacity=ebc)


def _same_sign(a: int, b: int) -> bool:
    return (a < 0) == (b < 0)


class Decider:
    """One revision's decider: panic state, scale-down delay window, spec and status.

    ``Decider(spec, now_ns, ready_pods)`` is created when the revision appears; ``ready_pods``
    is ``None`` when the pod count cannot be read (it then counts as 0). With more than one
    ready pod the decider starts in panic at ``now_ns`` holding that count, so a restart does
    not scale down before metrics exist. The delay window exists only if the spec at creation
    has a scale-down delay; :meth:`update` never adds, resizes or removes it.
    """

    def __init__(self, spec: DeciderSpec, now_ns: int, ready_pods: int | None) -> None:
        ready = ready_pods or 0
        self._spec = spec
        self._stable_window_ns = gotime.duration_ns(spec.stable_window)
        self._delay = (MaxTimeWindow(spec.scale_down_delay, DELAY_GRANULARITY)
                       if gotime.duration_ns(spec.scale_down_delay) > 0 else None)
        self._panic_time = now_ns if ready > 1 else GO_ZERO_NS
        self._max_panic_pods = ready
        self._status = initial_status(spec)
        self.last_decision: Decision | None = None

    @property
    def spec(self) -> DeciderSpec:
        return self._spec

    @property
    def status(self) -> DeciderStatus:
        return self._status

    @property
    def in_panic(self) -> bool:
        return self._panic_time != GO_ZERO_NS

    @property
    def panic_time_ns(self) -> int | None:
        return self._panic_time if self.in_panic else None

    @property
    def max_panic_pods(self) -> int:
        return self._max_panic_pods

    @property
    def has_delay_window(self) -> bool:
        return self._delay is not None

    def update(self, spec: DeciderSpec) -> None:
        """Swap the spec; panic state, delay window and status carry over."""
        self._spec = spec
        self._stable_window_ns = gotime.duration_ns(spec.stable_window)

    def set_panic_state(self, panic_time_ns: int | None, max_panic_pods: int) -> None:
        """Overwrite the panic state (``None`` = not panicking), e.g. to restore it."""
        self._panic_time = GO_ZERO_NS if panic_time_ns is None else panic_time_ns
        self._max_panic_pods = max_panic_pods

    def scale(self, now_ns: int, *, ready_pods: int | None,
              stable: float | None, panic: float | None) -> Decision:
        """Decide at ``now_ns``.

        ``ready_pods`` is ``None`` when the pod count failed (a not-found counts as 0);
        ``stable``/``panic`` are the revision-wide window averages, ``None`` when the metrics
        are unavailable (no data, not collecting). Either failure makes the tick invalid and
        leaves all state untouched.
        """
        spec = self._spec
        n_act = num_activators(ready_pods or 0, spec)
        if ready_pods is None or stable is None or panic is None:
            reason = INVALID_POD_COUNT if ready_pods is None else INVALID_METRICS
            return self._remember(Decision(
                now_ns=now_ns, result=INVALID_RESULT, status=self._status, informed=False,
                num_activators=n_act, in_panic=self.in_panic,
                max_panic_pods=self._max_panic_pods, ready_pods=ready_pods,
                observed_stable=None, observed_panic=None, invalid_reason=reason))

        rp = go_fmax(1.0, float(ready_pods))
        max_up = _ceil(spec.max_scale_up_rate * rp)
        max_down = _floor(fdiv(rp, spec.max_scale_down_rate)) if spec.reachable else 0.0
        dspc = _ceil(fdiv(stable, spec.target_value))
        dppc = _ceil(fdiv(panic, spec.target_value))
        ds = go_int32(go_fmin(go_fmax(dspc, max_down), max_up))
        dp = go_int32(go_fmin(go_fmax(dppc, max_down), max_up))
        act = spec.activation_scale
        if act > 1:
            if dspc > 0 and act > ds:
                ds = act
            if dppc > 0 and act > dp:
                dp = act

        over = dppc / rp >= spec.panic_threshold
        transition = None
        if self._panic_time == GO_ZERO_NS and over:
            self._panic_time, transition = now_ns, "enter"
        elif over:
            self._panic_time, transition = now_ns, "extend"
        elif (self._panic_time != GO_ZERO_NS
              and self._panic_time + self._stable_window_ns < now_ns):
            self._panic_time, transition = GO_ZERO_NS, "exit"
            self._max_panic_pods = 0

        desired = ds
        if self._panic_time != GO_ZERO_NS:
            desired = max(desired, dp)
            if desired > self._max_panic_pods:
                self._max_panic_pods = desired
            desired = self._max_panic_pods
        undelayed = desired
        if spec.reachable and self._delay is not None:
            self._delay.record(now_ns, desired)
            desired = self._delay.current()

        tbc = spec.target_burst_capacity
        if tbc == 0:
            ebc_f = 0.0
        elif tbc > 0:
            ebc_f = _floor(float(ready_pods) * spec.total_value - tbc - panic)
        else:
            ebc_f = -1.0
        result = ScaleResult(desired, go_int32(ebc_f), True)

        old = self._status
        informed = (old.desired_scale != desired
                    or not _same_sign(old.excess_burst_capacity, result.excess_burst_capacity))
        self._status = DeciderStatus(desired, result.excess_burst_capacity)
        return self._remember(Decision(
            now_ns=now_ns, result=result, status=self._status, informed=informed,
            num_activators=n_act, in_panic=self.in_panic, max_panic_pods=self._max_panic_pods,
            ready_pods=ready_pods, observed_stable=stable, observed_panic=panic,
            effective_ready=rp, max_scale_up=max_up, max_scale_down=max_down,
            raw_stable_pods=dspc, raw_panic_pods=dppc, stable_pods=ds, panic_pods=dp,
            over_panic_threshold=over, panic_transition=transition,
            undelayed_pod_count=undelayed, delayed=desired != undelayed))

    def _remember(self, decision: Decision) -> Decision:
        self.last_decision = decision
        return decision
