"""The KPA scaler state machine, as timelines with an explicit ``now``.

Each test reconciles one revision at chosen instants with the decider's desired scale and
the pod counts, as upstream's PA reconciler would be called (``kpa.go``, ``scaler.go``).
"""
from __future__ import annotations

import pytest

from autoscaler.config import AutoscalerConfig, RevisionScaling, resolve_revision
from autoscaler.decider import num_activators
from autoscaler.scaler import (ACTIVATING, ACTIVE, INACTIVE, MODE_PROXY, MODE_SERVE, PodCounts,
                               Scaler, ScalerResult)

T0 = 1_787_000_000.0
A = "autoscaling.knative.dev/"


def scaling(config: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
            reachable: bool = True, cc: int = 0) -> RevisionScaling:
    cfg = AutoscalerConfig.from_configmap(config or {})
    return resolve_revision(cfg, annotations or {}, cc, reachable)


class Timeline:
    """One revision's scaler; ``at(t, desired, ready=...)`` reconciles at T0 + t."""

    def __init__(self, rs: RevisionScaling, start: float = 0.0) -> None:
        self.rs = rs
        self.scaler = Scaler(T0 + start)

    def at(self, t: float, desired: int, ready: int = 0, ebc: int = -1, pending: int = 0,
           failure: str = "") -> ScalerResult:
        pods = PodCounts(ready=ready, pending=pending, failure=failure)
        return self.scaler.reconcile(T0 + t, self.rs, desired, ebc, pods,
                                     num_activators(ready, self.rs.decider_spec()))


def test_new_revision_waits_for_a_decision_and_becomes_active_when_its_pod_is_ready() -> None:
    tl = Timeline(scaling())
    r = tl.at(0, -1, pending=1)
    assert (r.want, r.apply, r.active, r.desired_scale) == (-1, False, ACTIVATING, -1)
    r = tl.at(2, -1, ready=1)
    assert (r.want, r.apply, r.active) == (-1, False, ACTIVE)
    assert r.scale_target_initialized
    r = tl.at(4, 1, ready=1)
    assert (r.want, r.apply, r.desired_scale) == (1, True, 1)


def test_scale_to_zero_waits_a_stable_window_of_activity_then_the_grace_period() -> None:
    # TBC 0: the revision serves without the activator while it has pods and capacity.
    tl = Timeline(scaling({"target-burst-capacity": "0"}))
    tl.at(0, 1, ready=1, ebc=0)
    r = tl.at(10, 0, ready=1, ebc=0)
    # Active for less than the stable window: keep one pod, come back when it has passed.
    assert (r.want, r.apply, r.mode) == (1, True, MODE_SERVE)
    assert r.requeue_at == pytest.approx(T0 + 60)
    r = tl.at(60, 0, ready=1, ebc=0)
    # Active a full window: want 0 marks it inactive and puts the activator in the path,
    # but the pod stays for now.
    assert (r.want, r.apply, r.active, r.reason, r.mode) == (0, False, INACTIVE, "NoTraffic",
                                                             MODE_PROXY)
    r = tl.at(63, 0, ready=1, ebc=0)
    assert (r.want, r.apply) == (0, False)
    assert r.requeue_at == pytest.approx(T0 + 90)  # grace period since the mode went proxy
    r = tl.at(89.9, 0, ready=1, ebc=0)
    assert r.apply is False
    r = tl.at(90, 0, ready=1, ebc=0)
    assert (r.want, r.apply, r.desired_scale) == (0, True, 0)


def test_with_the_activator_already_in_the_path_the_fast_path_scales_to_zero_at_once() -> None:
    tl = Timeline(scaling())  # TBC 211: negative EBC keeps the mode proxy all along
    tl.at(0, 1, ready=1, ebc=-111)
    r = tl.at(60, 0, ready=1, ebc=-111)
    assert (r.want, r.apply, r.active) == (0, False, INACTIVE)
    assert r.requeue_at == pytest.approx(T0 + 63)  # already proxying: come back in 3 s
    r = tl.at(63, 0, ready=1, ebc=-111)
    assert (r.want, r.apply) == (0, True)


def test_last_pod_retention_keeps_the_pod_after_going_inactive() -> None:
    tl = Timeline(scaling({"scale-to-zero-pod-retention-period": "90s"}))
    tl.at(0, 1, ready=1)
    tl.at(60, 0, ready=1)
    r = tl.at(63, 0, ready=1)
    assert (r.apply, r.requeue_at) == (False, pytest.approx(T0 + 150))
    assert tl.at(149, 0, ready=1).apply is False
    r = tl.at(150, 0, ready=1)
    assert (r.want, r.apply) == (0, True)


def test_an_unreachable_revision_has_no_retention_and_no_min_scale() -> None:
    rs = scaling({"scale-to-zero-pod-retention-period": "90s"}, {A + "min-scale": "3"},
                 reachable=False)
    assert (rs.min_scale, rs.last_pod_retention) == (0, 0.0)
    tl = Timeline(rs)
    tl.at(0, 1, ready=1)
    tl.at(60, 0, ready=1)
    assert tl.at(63, 0, ready=1).apply is True


def test_enable_scale_to_zero_false_keeps_one_pod() -> None:
    tl = Timeline(scaling({"enable-scale-to-zero": "false"}))
    tl.at(0, 1, ready=1)
    for t in (60, 120, 600):
        r = tl.at(t, 0, ready=1)
        assert (r.want, r.apply, r.active) == (1, True, ACTIVE)


def test_min_and_max_scale_bound_the_decider() -> None:
    tl = Timeline(scaling(annotations={A + "min-scale": "2", A + "max-scale": "5"}))
    assert tl.at(0, 0, ready=2).want == 2
    assert tl.at(2, 9, ready=2).want == 5
    assert tl.at(4, 3, ready=2).want == 3


def test_initial_scale_is_a_floor_until_the_target_first_reaches_it() -> None:
    tl = Timeline(scaling(annotations={A + "initial-scale": "3"}))
    r = tl.at(0, 1, ready=1, pending=2)
    assert (r.want, r.scale_target_initialized, r.active) == (3, False, ACTIVATING)
    r = tl.at(2, 1, ready=3)
    # Reached: the floor no longer applies from the next reconcile on.
    assert r.scale_target_initialized and r.active == ACTIVE
    assert tl.at(4, 1, ready=3).want == 1


def test_a_decider_without_a_decision_leaves_an_active_target_untouched() -> None:
    tl = Timeline(scaling())
    tl.at(0, 4, ready=4)
    r = tl.at(2, -1, ready=4)  # e.g. after an autoscaler restart
    assert (r.want, r.apply) == (-1, False)
    assert r.desired_scale == 4  # the known desired scale is kept
    assert r.mode == MODE_PROXY  # upstream: want -1 is not > 0


@pytest.mark.parametrize(("t", "desired", "ebc", "mode"), [
    pytest.param(1, 3, 0, MODE_SERVE, id="capacity-to-spare"),
    pytest.param(1, 3, -1, MODE_PROXY, id="short-of-burst-capacity"),
    pytest.param(1, 0, 50, MODE_SERVE, id="one-pod-kept-until-active-a-window"),
    pytest.param(60, 0, 50, MODE_PROXY, id="going-to-zero"),
])
def test_serve_mode_needs_pods_wanted_and_enough_burst_capacity(t: float, desired: int,
                                                                 ebc: int, mode: str) -> None:
    tl = Timeline(scaling())
    tl.at(0, 3, ready=3, ebc=ebc)
    assert tl.at(t, desired, ready=3, ebc=ebc).mode == mode


def test_scale_from_zero_activates_then_becomes_active_when_a_pod_is_ready() -> None:
    tl = Timeline(scaling())
    tl.at(0, 1, ready=1)
    tl.at(60, 0, ready=1)
    tl.at(63, 0, ready=1)
    r = tl.at(64, 0, ready=0)
    assert (r.want, r.active) == (0, INACTIVE)
    r = tl.at(300, 1, ready=0)  # the activator's poke: the decider wants a pod
    assert (r.want, r.apply, r.active, r.reason) == (1, True, ACTIVATING, "Queued")
    r = tl.at(302, 1, ready=1)
    assert (r.want, r.active) == (1, ACTIVE)


def test_activation_timeout_gives_up_scales_to_zero_and_reports_a_failure() -> None:
    rs = scaling()
    assert rs.activation_timeout == 630.0
    tl = Timeline(rs)
    r = tl.at(0, -1, pending=1)
    assert r.requeue_at == pytest.approx(T0 + 630, abs=0.01)
    r = tl.at(630, -1, pending=1)  # not yet: more than the timeout is needed
    assert (r.want, r.apply, r.failure) == (-1, False, "")
    r = tl.at(631, -1, pending=1)
    assert (r.want, r.apply, r.active, r.reason) == (0, True, INACTIVE, "TimedOut")
    assert "TimedOut" in r.failure and "630s" in r.failure


def test_the_progress_deadline_annotation_sets_the_activation_timeout() -> None:
    tl = Timeline(scaling(annotations={"serving.knative.dev/progress-deadline": "30s"}))
    tl.at(0, 0, pending=1)
    assert tl.at(60, 0, pending=1).apply is False
    assert tl.at(61, 0, pending=1).reason == "TimedOut"


def test_a_revision_idle_at_zero_after_a_restart_times_out_without_a_failure() -> None:
    tl = Timeline(scaling())
    tl.at(0, -1)
    r = tl.at(700, -1)
    assert (r.active, r.reason, r.failure) == (INACTIVE, "TimedOut", "")


def test_the_runtimes_pod_failure_is_published() -> None:
    tl = Timeline(scaling())
    r = tl.at(0, 1, pending=1, failure="CrashLoopBackOff: exit 1")
    assert r.failure == "CrashLoopBackOff: exit 1"
    assert tl.at(2, 1, ready=1).failure == ""


def test_inactive_without_the_activator_in_the_path_waits_for_it() -> None:
    tl = Timeline(scaling({"target-burst-capacity": "0"}))
    tl.at(0, 1, ready=2, ebc=0)
    assert tl.scaler.mode == MODE_SERVE
    # Inactive for a long time while still serving (e.g. the state before a config change).
    tl.scaler.active, tl.scaler.reason, tl.scaler.since = INACTIVE, "NoTraffic", T0
    r = tl.at(100, 0, ready=2, ebc=0)
    assert (r.apply, r.requeue_at) == (False, pytest.approx(T0 + 101))
    assert r.mode == MODE_PROXY
    r = tl.at(101, 0, ready=2, ebc=0)  # the activator is in the path now
    assert (r.want, r.apply) == (0, True)


def test_activators_cover_ready_capacity_plus_burst_capacity() -> None:
    tl = Timeline(scaling())
    assert tl.at(0, 3, ready=3).num_activators == 6  # ceil((300 + 211) / 100)
