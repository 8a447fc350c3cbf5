"""The simulator's KPA reconciler model and pods (autoscaler.simulate_scaler).

The active-condition table is upstream's ``computeActiveCondition`` comment
(pkg/reconciler/autoscaling/kpa/kpa.go); the scale-to-zero branches are §5.3 of
shared/upstream/autoscaler-kpa.md.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autoscaler.config import AutoscalerConfig, resolve_revision
from autoscaler.simulate_scaler import (ACTIVATING, ACTIVE, INACTIVE, PROXY, SERVE, Deployment,
                                        ReconcilerModel, active_condition, scale_to_zero)

S = resolve_revision(AutoscalerConfig(), {})  # window 60 s, grace 30 s, timeout 630 s
LONG_AGO = -math.inf


@pytest.mark.parametrize(("want", "ready", "min_ready", "state", "expected"), [
    (0, 5, 1, ACTIVE, INACTIVE),
    (3, 0, 1, INACTIVE, ACTIVATING),
    (3, 1, 1, INACTIVE, ACTIVE),
    (-1, 0, 1, INACTIVE, INACTIVE),
    (-1, 0, 1, ACTIVATING, ACTIVATING),
    (-1, 0, 1, ACTIVE, ACTIVATING),
    (-1, 1, 1, INACTIVE, INACTIVE),
    (-1, 1, 0, ACTIVATING, INACTIVE),
    (-1, 1, 1, ACTIVATING, ACTIVE),
    (-1, 1, 1, ACTIVE, ACTIVE),
])
def test_the_active_condition_follows_upstreams_table(want: int, ready: int, min_ready: int,
                                                      state: str, expected: str) -> None:
    assert active_condition(want, ready, min_ready, state) == expected


def test_a_non_zero_desired_scale_is_applied_as_it_is() -> None:
    assert scale_to_zero(S, 0.0, 4, ACTIVE, LONG_AGO, None) == (4, True, "decider")


def test_without_scale_to_zero_zero_becomes_one() -> None:
    s = replace(S, enable_scale_to_zero=False)
    assert scale_to_zero(s, 0.0, 0, INACTIVE, LONG_AGO, 0.0)[:2] == (1, True)


def test_activating_waits_until_the_activation_timeout_then_gives_up() -> None:
    assert scale_to_zero(S, 630.0, 0, ACTIVATING, 0.0, 0.0)[:2] == (-1, False)
    assert scale_to_zero(S, 630.5, 0, ACTIVATING, 0.0, 0.0)[:2] == (0, True)


def test_active_keeps_one_pod_until_active_for_a_stable_window_then_deactivates() -> None:
    assert scale_to_zero(S, 59.0, 0, ACTIVE, 0.0, None)[:2] == (1, True)
    assert scale_to_zero(S, 60.0, 0, ACTIVE, 0.0, None)[:2] == (0, False)


def test_inactive_scales_to_zero_after_the_grace_period_or_the_proxy_fast_path() -> None:
    # inactive since 100, activator in the path since 100: wait 30 s
    assert scale_to_zero(S, 129.0, 0, INACTIVE, 100.0, 100.0)[:2] == (0, False)
    assert scale_to_zero(S, 130.0, 0, INACTIVE, 100.0, 100.0)[:2] == (0, True)
    # the activator was in the path long before: scale at once
    assert scale_to_zero(S, 101.0, 0, INACTIVE, 100.0, 0.0)[:2] == (0, True)


def test_last_pod_retention_is_a_floor_even_on_the_fast_path() -> None:
    s = replace(S, last_pod_retention=50.0)
    assert scale_to_zero(s, 149.0, 0, INACTIVE, 100.0, 0.0)[:2] == (0, False)
    assert scale_to_zero(s, 150.0, 0, INACTIVE, 100.0, 0.0)[:2] == (0, True)


def test_a_new_revision_holds_its_initial_scale_until_first_reached() -> None:
    s = replace(S, initial_scale=3)
    rec = ReconcilerModel.new_revision(s, 0.0)
    # no decision yet (-1) while activating: bounded up to the initial scale, and applied
    r = rec.reconcile(0.0, -1, -111, ready=0)
    assert (r.want, r.replicas, r.state, r.mode) == (3, 3, ACTIVATING, PROXY)
    # until it is reached, a decision of 1 still asks for 3
    r = rec.reconcile(2.0, 1, -111, ready=2)
    assert (r.want, r.replicas, r.state) == (3, 3, ACTIVATING)
    r = rec.reconcile(3.0, 1, -111, ready=3)
    assert r.state == ACTIVE and rec.initialized
    r = rec.reconcile(4.0, 1, -111, ready=3)
    assert (r.want, r.replicas) == (1, 1)  # initialised: the bound is gone


def test_serve_mode_needs_want_burst_capacity_and_a_ready_pod() -> None:
    rec = ReconcilerModel.running(S, 2)
    assert rec.reconcile(0.0, 2, 5, ready=2).mode == SERVE and rec.proxy_since is None
    assert rec.reconcile(1.0, 2, -1, ready=2).mode == PROXY and rec.proxy_since == 1.0
    assert rec.reconcile(2.0, 2, 0, ready=0).mode == PROXY and rec.proxy_since == 1.0


def test_an_idle_revision_wakes_on_a_decision() -> None:
    rec = ReconcilerModel.idle_at_zero(S)
    r = rec.reconcile(5.0, 0, -211, ready=0)
    assert (r.want, r.replicas, r.applied, r.state) == (0, 0, True, INACTIVE)
    r = rec.reconcile(6.0, 1, -211, ready=0)
    assert (r.want, r.replicas, r.state) == (1, 1, ACTIVATING)
    assert rec.state_since == 6.0


def test_min_scale_keeps_pods_at_an_idle_revision() -> None:
    s = replace(S, min_scale=2)
    rec = ReconcilerModel.idle_at_zero(s)
    assert rec.reconcile(0.0, 0, -211, ready=0).replicas == 2


def test_pods_are_ready_a_rounded_up_start_up_delay_after_they_are_asked_for() -> None:
    d = Deployment(2.5)
    assert d.scale(2, 10.0) == 2
    assert (len(d), d.ready(12.0), d.ready(13.0)) == (2, 0, 2)


def test_removing_pods_takes_starting_ones_first_then_the_newest() -> None:
    d = Deployment(5.0)
    d.add_ready(2, 0.0)
    d.scale(3, 10.0)  # one more, ready at 15
    d.scale(2, 11.0)
    assert (len(d), d.ready(11.0), d.ready(100.0)) == (2, 2, 2)
    d.scale(4, 20.0)  # two more, ready at 25
    d.scale(1, 30.0)
    assert (len(d), d.ready(30.0)) == (1, 1)


def test_a_new_revision_with_initial_scale_one_waits_without_a_decision() -> None:
    rec = ReconcilerModel.new_revision(S, 0.0)
    r = rec.reconcile(0.0, -1, -111, ready=0)
    assert (r.want, r.replicas, r.applied, r.state) == (-1, 1, False, ACTIVATING)
