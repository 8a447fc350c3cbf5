"""Timelines for the scalar reference decider (autoscaler.decider).

The worked examples are those of shared/upstream/autoscaler-kpa.md §3.4. Times are seconds
after T0 (a Unix second); ``tick(d, s, ...)`` runs one ``Scale`` at T0 + s.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.decider import (INVALID_METRICS, INVALID_POD_COUNT, Decider, Decision,
                                initial_status, num_activators)
from autoscaler.gotime import GO_ZERO_NS
from autoscaler.spec import DeciderSpec

T0 = 1_787_315_304
DEFAULT = DeciderSpec()  # concurrency, CC=0: total 100, target 70, TBC 211
CC10 = DeciderSpec(target_value=7.0, total_value=10.0)


def at(s: float) -> int:
    return T0 * 1_000_000_000 + round(s * 1e9)


def tick(d: Decider, s: float, ready: int | None, stable: float | None,
         panic: float | None = None) -> Decision:
    return d.scale(at(s), ready_pods=ready, stable=stable,
                   panic=stable if panic is None else panic)


# -- worked examples --------------------------------------------------------------------------

def test_steady_state_scales_to_the_stable_count() -> None:
    d = Decider(DEFAULT, at(0), ready_pods=3)
    dec = tick(d, 2, 3, 150.0, 180.0)
    assert dec.result.desired_pod_count == 3
    assert (dec.raw_stable_pods, dec.raw_panic_pods) == (3.0, 3.0)
    assert (dec.max_scale_up, dec.max_scale_down) == (3000.0, 1.0)
    assert dec.result.excess_burst_capacity == -91  # floor(300 - 211 - 180)
    assert dec.num_activators == 6  # ceil((300 + 211) / 100)


def test_a_burst_enters_panic_and_holds_the_peak_until_a_stable_window_passes() -> None:
    d = Decider(CC10, at(0), ready_pods=1)
    assert not d.in_panic
    dec = tick(d, 2, 4, 30.0, 80.0)  # dppc 12, 12/4 = 3 >= 2
    assert dec.panic_transition == "enter" and dec.in_panic
    assert dec.result.desired_pod_count == 12
    assert dec.result.excess_burst_capacity == -251
    dec = tick(d, 4, 4, 30.0, 60.0)  # dppc 9: still over, panic extended, no scale-down
    assert dec.panic_transition == "extend" and dec.result.desired_pod_count == 12
    dec = tick(d, 22, 12, 70.0, 70.0)  # 10/12 < 2 but within the window since t=4
    assert dec.panic_transition is None and dec.result.desired_pod_count == 12
    dec = tick(d, 64, 12, 70.0, 70.0)  # exactly a window after t=4: strict, still panicking
    assert dec.in_panic and dec.result.desired_pod_count == 12
    dec = tick(d, 66, 12, 70.0, 70.0)
    assert dec.panic_transition == "exit" and not dec.in_panic
    assert dec.result.desired_pod_count == 10  # clamp(10, floor(12/2), 12000)
    assert d.max_panic_pods == 0


def test_panic_ratchet_takes_the_larger_of_stable_and_panic() -> None:
    d = Decider(replace(CC10, panic_threshold=2.0), at(0), ready_pods=0)
    tick(d, 2, 2, 7.0, 40.0)  # dppc 6 on 2 pods: panic, desired 6
    dec = tick(d, 4, 2, 70.0, 40.0)  # stable now asks for 10 (clamped to 2 * 1000)
    assert dec.result.desired_pod_count == 10 and d.max_panic_pods == 10


def test_scale_up_rate_always_allows_one_more_pod() -> None:
    d = Decider(replace(DEFAULT, max_scale_up_rate=1.1, target_value=1.0), at(0), 0)
    dec = tick(d, 2, 2, 3.0)
    assert dec.max_scale_up == 3.0 and dec.result.desired_pod_count == 3


@pytest.mark.parametrize(("reachable", "want"), [(True, 90), (False, 1)])
def test_scale_down_rate_applies_only_while_reachable(reachable: bool, want: int) -> None:
    spec = replace(DEFAULT, max_scale_down_rate=1.1, target_value=10.0, reachable=reachable)
    d = Decider(spec, at(0), ready_pods=None)
    assert tick(d, 2, 100, 1.0).result.desired_pod_count == want


def test_zero_ready_pods_count_as_one_for_the_clamps_and_panic() -> None:
    d = Decider(replace(DEFAULT, max_scale_up_rate=10.0, target_value=10.0), at(0), 0)
    dec = tick(d, 2, 0, 1000.0, 888.0)
    assert dec.effective_ready == 1.0 and dec.in_panic
    assert dec.result.desired_pod_count == 10
    assert dec.result.excess_burst_capacity == -1099  # floor(0 - 211 - 888)


def test_activation_scale_lifts_a_non_zero_count_past_the_clamps() -> None:
    d = Decider(replace(DEFAULT, activation_scale=3), at(0), ready_pods=0)
    dec = tick(d, 2, 0, 1.0)
    assert dec.raw_stable_pods == 1.0 and dec.result.desired_pod_count == 3
    assert tick(d, 4, 0, 0.0).result.desired_pod_count == 0  # zero stays zero


def test_no_traffic_scales_to_zero_when_the_rate_allows() -> None:
    d = Decider(DEFAULT, at(0), ready_pods=1)
    assert tick(d, 2, 1, 0.0).result.desired_pod_count == 0  # floor(1/2) = 0


# -- scale-down delay -------------------------------------------------------------------------

def unix(s: int) -> int:
    return s * 1_000_000_000


def test_scale_down_waits_for_the_delay_window() -> None:
    spec = replace(DEFAULT, target_value=1.0, scale_down_delay=15.0)
    d = Decider(spec, unix(98), ready_pods=1)
    assert d.scale(unix(100), ready_pods=5, stable=5.0, panic=5.0).result.desired_pod_count == 5
    for t in range(102, 116, 2):
        dec = d.scale(unix(t), ready_pods=5, stable=2.0, panic=2.0)
        assert dec.result.desired_pod_count == 5 and dec.delayed, t
        assert dec.undelayed_pod_count == 2
    assert d.scale(unix(116), ready_pods=5, stable=2.0, panic=2.0).result.desired_pod_count == 2


def test_scale_up_passes_the_delay_window_at_once() -> None:
    d = Decider(replace(DEFAULT, target_value=1.0, scale_down_delay=60.0), unix(0), 1)
    d.scale(unix(2), ready_pods=1, stable=1.0, panic=1.0)
    assert d.scale(unix(4), ready_pods=1, stable=2.0, panic=2.0).result.desired_pod_count == 2


def test_the_delay_window_exists_only_if_created_with_a_delay() -> None:
    spec = replace(DEFAULT, target_value=1.0)
    d = Decider(spec, unix(0), ready_pods=1)
    d.update(replace(spec, scale_down_delay=60.0))
    assert not d.has_delay_window
    d.scale(unix(2), ready_pods=4, stable=4.0, panic=4.0)
    assert d.scale(unix(4), ready_pods=4, stable=2.0, panic=2.0).result.desired_pod_count == 2


def test_an_unreachable_revision_skips_the_delay_window() -> None:
    spec = replace(DEFAULT, target_value=1.0, scale_down_delay=60.0)
    d = Decider(spec, unix(0), ready_pods=1)
    d.scale(unix(2), ready_pods=4, stable=4.0, panic=4.0)
    d.update(replace(spec, reachable=False))
    assert d.scale(unix(4), ready_pods=4, stable=1.0, panic=1.0).result.desired_pod_count == 1


# -- construction, invalid ticks, status ------------------------------------------------------

@pytest.mark.parametrize(("ready", "panicking", "held"), [
    (0, False, 0), (1, False, 1), (2, True, 2), (None, False, 0)])
def test_a_new_decider_starts_in_panic_with_more_than_one_pod(
        ready: int | None, panicking: bool, held: int) -> None:
    d = Decider(DEFAULT, at(0), ready_pods=ready)
    assert d.in_panic is panicking and d.max_panic_pods == held
    assert d.panic_time_ns == (at(0) if panicking else None)


def test_starting_in_panic_keeps_the_pods_after_a_restart() -> None:
    d = Decider(DEFAULT, at(0), ready_pods=5)
    assert tick(d, 2, 5, 0.0).result.desired_pod_count == 5  # no history: hold 5
    assert tick(d, 60, 5, 0.0).result.desired_pod_count == 5
    assert tick(d, 62, 5, 0.0).result.desired_pod_count == 2  # window passed: rate-limited


@pytest.mark.parametrize(("ready", "stable", "reason"), [
    (None, 10.0, INVALID_POD_COUNT), (3, None, INVALID_METRICS)])
def test_an_invalid_tick_changes_nothing(ready: int | None, stable: float | None,
                                         reason: str) -> None:
    spec = replace(CC10, scale_down_delay=30.0)
    d = Decider(spec, at(0), ready_pods=1)
    tick(d, 2, 4, 30.0, 80.0)
    before = (d.status, d.panic_time_ns, d.max_panic_pods)
    dec = d.scale(at(3), ready_pods=ready, stable=stable, panic=stable)
    assert dec.invalid_reason == reason and not dec.informed
    assert (dec.result.desired_pod_count, dec.result.excess_burst_capacity,
            dec.result.scale_valid) == (0, 0, False)
    assert (d.status, d.panic_time_ns, d.max_panic_pods) == before
    assert d.last_decision is dec
    assert tick(d, 4, 4, 7.0, 7.0).result.desired_pod_count == 12  # still in panic


def test_status_starts_undecided_with_the_initial_excess_burst_capacity() -> None:
    assert initial_status(DEFAULT).desired_scale == -1
    assert initial_status(DEFAULT).excess_burst_capacity == -111  # 1 * 100 - 211
    truncated = replace(DEFAULT, total_value=10.5, target_burst_capacity=20.0)
    assert initial_status(truncated).excess_burst_capacity == -9  # int32(-9.5), not floor
    assert initial_status(replace(DEFAULT, target_burst_capacity=-1.0)).excess_burst_capacity == -1
    assert initial_status(replace(DEFAULT, target_burst_capacity=0.0)).excess_burst_capacity == 0


def test_the_watcher_is_informed_on_a_new_count_or_an_ebc_sign_change() -> None:
    d = Decider(replace(DEFAULT, target_burst_capacity=50.0), at(0), ready_pods=1)
    assert tick(d, 2, 1, 60.0).informed  # -1 -> 1
    assert not tick(d, 4, 1, 60.0, 55.0).informed  # same count, EBC -10 -> -5: same sign
    assert tick(d, 6, 1, 60.0, 0.0).informed  # EBC 50: negative -> non-negative
    assert not tick(d, 8, 1, 60.0, 10.0).informed  # EBC 40: same sign
    assert d.status.excess_burst_capacity == 40


def test_entering_panic_at_go_zero_time_reads_as_not_panicking() -> None:
    d = Decider(DEFAULT, GO_ZERO_NS, ready_pods=0)
    assert d.scale(GO_ZERO_NS, ready_pods=1, stable=1000.0, panic=1000.0).in_panic is False
    assert d.scale(GO_ZERO_NS + 1, ready_pods=1, stable=1000.0, panic=1000.0).in_panic


@pytest.mark.parametrize(("ready", "spec", "want"), [
    pytest.param(3, DEFAULT, 6, id="default"),
    pytest.param(0, DEFAULT, 3, id="no-pods-tbc-only"),
    pytest.param(50, replace(DEFAULT, target_burst_capacity=0.0), 2, id="tbc=0"),
    pytest.param(5, replace(DEFAULT, target_burst_capacity=-1.0), 5, id="tbc=-1"),
    pytest.param(1, replace(DEFAULT, target_burst_capacity=-1.0), 2, id="at-least-two"),
])
def test_activator_count_covers_capacity_and_burst(ready: int, spec: DeciderSpec,
                                                   want: int) -> None:
    assert num_activators(ready, spec) == want


def test_the_scaling_metric_does_not_change_the_math() -> None:
    rps = replace(DEFAULT, scaling_metric="rps")
    a, b = Decider(DEFAULT, at(0), 3), Decider(rps, at(0), 3)
    for s, load in [(2, 300.0), (4, 900.0), (6, 10.0)]:
        assert tick(a, s, 3, load).result == tick(b, s, 3, load).result
