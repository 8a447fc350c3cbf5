"""Timelines of the offline simulator (autoscaler.simulate), which runs the service's core.

Every expectation is worked out by hand from the service's rules and the simulator's model
(module docstrings): stats about second i are pushed as it ends, stamped i; a tick at even
instant k (or a poke or burst at k) averages the completed seconds up to k - 1, so a window of
w seconds holds w - 1 of them (upstream's ring average with the current bucket still empty);
pods are ready ceil(start-up delay) seconds after they are asked for.
"""
from __future__ import annotations

import pytest

from autoscaler.simulate import T0_UNIX_S, Second, SimulationResult, Start, simulate
from autoscaler.simulate_scenario import ScenarioSpec, apply_variant, resolve
from autoscaler.simulate_trace import Trace


def trace(*segments: tuple[int, float, float]) -> Trace:
    """Consecutive (seconds, rps, latency s) segments."""
    rps: list[float] = []
    lat: list[float] = []
    for seconds, r, latency in segments:
        rps += [r] * seconds
        lat += [latency] * seconds
    return Trace(tuple(rps), tuple(lat), "test")


def run(tr: Trace, *, cc: int = 0, variant: str | None = None, start: Start | None = None,
        startup: float = 3.0, capacity: float | None = None) -> SimulationResult:
    spec = ScenarioSpec(name="t", container_concurrency=cc, startup_delay=startup,
                        pod_capacity=capacity)
    if variant:
        spec = apply_variant(spec, variant)
    return simulate(tr, resolve(spec), start)


def at(result: SimulationResult, t: int) -> Second:
    return result.timeline[t]


def instant_ns(t: int) -> int:
    """The Unix nanoseconds of simulation instant ``t``."""
    return (T0_UNIX_S + t) * 10**9


def instant(now_ns: int) -> int:
    return now_ns // 10**9 - T0_UNIX_S


# -- scaling up and panic ---------------------------------------------------------------------

def test_a_step_in_load_scales_up_once_the_stable_window_average_needs_another_pod() -> None:
    # CC 0: target 70. Warm at concurrency 100 on 2 pods; at t=20 the load doubles to 200.
    # Stable average at tick k: seconds k-59..k-1, of which k-20 high: 100 + 100 (k-20)/59 ->
    # needs a third pod once above 140: 137.29 at tick 42, 140.68 at tick 44.
    r = run(trace((20, 1000, 0.1), (60, 2000, 0.1)), start=Start("warm"))
    assert at(r, 0).ready == 2 and at(r, 0).mode == "proxy"
    assert all(at(r, t).desired == 2 for t in range(0, 44))
    assert at(r, 42).stable == pytest.approx(100 + 2200 / 59, abs=1e-6)
    assert at(r, 44).stable == pytest.approx(100 + 2400 / 59, abs=1e-6)
    assert at(r, 44).desired == 3 and at(r, 44).decision == "tick"
    assert at(r, 44).replicas == 3 and at(r, 46).ready == 2 and at(r, 47).ready == 3
    assert not any(s.in_panic for s in r.timeline)  # the panic ratio stays below 2


def test_a_shorter_stable_window_scales_up_sooner_for_the_same_step() -> None:
    # Window 30 s: 100 + 100 (k-20)/29 > 140 first at tick 32 (12 high seconds of 29).
    r = run(trace((20, 1000, 0.1), (40, 2000, 0.1)), start=Start("warm"),
            variant="stable-window=30s")
    assert at(r, 30).desired == 2
    assert at(r, 32).desired == 3


def test_a_burst_enters_panic_at_the_tick_where_the_panic_window_doubles_the_pods() -> None:
    # Warm at 100 on 2 pods; at t=30 the load goes to 400. Panic window 6 s, so 5 completed
    # seconds at a tick: tick 30: 100 -> 2 pods;
    # tick 32: (3x100 + 2x400)/5 = 220 -> ceil(3.14) = 4 pods, 4/2 >= 2: panic, desired 4;
    # tick 34: (1x100 + 4x400)/5 = 340 -> ceil(4.86) = 5.
    r = run(trace((30, 1000, 0.1), (30, 4000, 0.1)), start=Start("warm"))
    assert not at(r, 30).in_panic and at(r, 30).desired == 2
    assert at(r, 32).in_panic and at(r, 32).desired == 4
    assert at(r, 32).panic == pytest.approx(220.0)
    assert at(r, 34).desired == 5 and at(r, 34).panic == pytest.approx(340.0)
    assert r.panic_periods[0].start == 32
    entered = [d for d in r.decisions if d.panic_transition == "enter"]
    assert [instant(d.now_ns) for d in entered] == [32]


def test_a_burst_is_decided_as_its_second_ends_without_waiting_for_the_tick() -> None:
    # Warm at 100 on 2 pods; second 30 brings 1000. The tick at 30 set the burst level at
    # 100 + 6 x (70 x 3 - 100) = 760 (the panic value that would start a panic); second 30's
    # 1000 crosses it, so the collector's burst decides at 31 on seconds 26..30:
    # (4 x 100 + 1000)/5 = 280 -> 4 pods: panic one second before the tick at 32.
    r = run(trace((30, 1000, 0.1), (10, 10000, 0.1)), start=Start("warm"))
    assert at(r, 30).decision == "tick" and not at(r, 30).in_panic
    assert at(r, 31).decision == "burst"
    assert at(r, 31).panic == pytest.approx(280.0)
    assert at(r, 31).in_panic and at(r, 31).desired == 4 and at(r, 31).replicas == 4
    assert r.panic_periods[0].start == 31


def test_panic_never_scales_down_and_ends_a_stable_window_after_the_last_high_tick() -> None:
    # A 10 s burst from t=30: over the threshold at ticks 34..42 at most; panic holds its
    # peak and exits at the first tick strictly more than 60 s after the last high tick.
    r = run(trace((30, 1000, 0.1), (10, 4000, 0.1), (100, 1000, 0.1)), start=Start("warm"))
    last_high_s = max(instant(d.now_ns) for d in r.decisions if d.over_panic_threshold)
    peak = r.panic_periods[0].peak_desired
    in_panic = [s for s in r.timeline if s.in_panic]
    assert all(s.desired == peak for s in in_panic[4:])
    assert r.panic_periods[0].end == last_high_s + 62


# -- scale to zero ----------------------------------------------------------------------------

def test_behind_the_activator_an_idle_revision_goes_to_zero_right_after_deactivating() -> None:
    # Default TBC 211: the activator is always in the path for one pod. Load stops at t=10;
    # the last non-zero bucket is instant 10, so the 60 s window is all zeros at tick 70:
    # desired 0, the PA goes inactive, and the next reconcile scales to zero (fast path).
    r = run(trace((10, 100, 0.1), (100, 0, 0.1)), start=Start("warm"))
    assert at(r, 68).desired == 1 and at(r, 68).replicas == 1
    assert at(r, 70).desired == 0 and at(r, 70).state == "inactive"
    assert at(r, 70).replicas == 1
    assert at(r, 71).replicas == 0 and at(r, 71).pods == 0


def test_in_serve_mode_scale_to_zero_waits_the_grace_period_after_deactivating() -> None:
    # TBC 0: serve mode while a pod is ready. Inactive at 70, activator in the path from 70,
    # grace 30 s -> zero pods at 100.
    r = run(trace((10, 100, 0.1), (120, 0, 0.1)), start=Start("warm"),
            variant="target-burst-capacity=0")
    assert at(r, 69).mode == "serve"
    assert at(r, 70).state == "inactive" and at(r, 70).mode == "proxy"
    assert all(at(r, t).pods == 1 for t in range(70, 100))
    assert at(r, 100).pods == 0


def test_last_pod_retention_keeps_the_pod_after_the_grace_period() -> None:
    r = run(trace((10, 100, 0.1), (140, 0, 0.1)), start=Start("warm"),
            variant="scale-to-zero-pod-retention-period=45s")
    assert at(r, 114).pods == 1
    assert at(r, 115).pods == 0


def test_without_scale_to_zero_the_last_pod_stays() -> None:
    r = run(trace((10, 100, 0.1), (100, 0, 0.1)), start=Start("warm"),
            variant="enable-scale-to-zero=false")
    assert at(r, 109).desired == 0 and at(r, 109).pods == 1


def test_with_no_pods_and_no_stats_the_ticks_become_invalid_and_keep_zero() -> None:
    r = run(trace((10, 100, 0.1), (150, 0, 0.1)), start=Start("warm"))
    last = at(r, 159)
    assert last.stable is None and last.desired == 0 and last.pods == 0
    assert r.decisions[-1].invalid_reason == "metrics_unavailable"


# -- scale from zero and cold starts ----------------------------------------------------------

def test_a_cold_start_counts_the_requests_that_waited_for_the_first_pod() -> None:
    # At zero; 10 rps from t=5. The activator's first request pokes the decider at 5, a pod
    # is asked for then and is ready at 8: 10 requests from each of seconds 5, 6, 7 wait
    # 3, 2 and 1 s.
    r = run(trace((5, 0, 0.1), (20, 10, 0.1)))
    assert at(r, 5).decision == "poke" and at(r, 5).desired == 1 and at(r, 5).replicas == 1
    assert at(r, 5).state == "activating" and at(r, 7).ready == 0
    assert at(r, 8).ready == 1 and at(r, 8).state == "active"
    (cold,) = r.cold_starts
    assert (cold.start, cold.ready_at, cold.duration_s) == (5, 8, 3)
    assert cold.requests == pytest.approx(30.0)
    assert cold.wait_request_seconds == pytest.approx(60.0)
    assert cold.max_wait_s == 3
    assert r.queued_requests == pytest.approx(30.0)
    assert at(r, 8).served_rps == pytest.approx(40.0)  # the backlog and the new arrivals


def test_the_activators_first_report_is_lowered_by_its_immediate_message() -> None:
    # The poke at 5 reads the immediate stat alone (bucket 5 = 1). The report about second 5
    # (concurrency 5: 10 arrivals waiting half a second on average) minus 1 joins it in
    # bucket 5, so the tick at 6 reads 1 + 4 = 5 over the one second recorded.
    r = run(trace((5, 0, 0.1), (20, 10, 0.1)))
    assert at(r, 5).stable == pytest.approx(1.0)
    assert at(r, 5).concurrency == pytest.approx(5.0)
    assert at(r, 6).stable == pytest.approx(5.0)


def test_without_burst_capacity_requests_go_through_the_activator_until_a_pod_is_ready() -> None:
    # TBC 0: the poke's decision wants a pod with excess burst capacity 0, so the scaler
    # publishes serve mode at once; with no pod ready the activator stays in the path.
    r = run(trace((5, 0, 0.1), (20, 10, 0.1)), variant="target-burst-capacity=0")
    assert at(r, 5).decision == "poke" and at(r, 5).excess_burst_capacity == 0
    assert [at(r, t).mode for t in (5, 6, 7, 8)] == ["proxy", "proxy", "proxy", "serve"]
    assert r.cold_starts[0].duration_s == 3


def test_activation_scale_lifts_the_first_decision_from_zero() -> None:
    r = run(trace((5, 0, 0.1), (20, 10, 0.1)), variant="activation-scale=3")
    assert at(r, 5).desired == 3 and at(r, 5).replicas == 3


def test_a_new_revision_starts_its_initial_scale_and_activates_when_they_are_ready() -> None:
    r = run(trace((20, 0, 0.1)), start=Start("new"), variant="initial-scale=3")
    assert at(r, 0).replicas == 3 and at(r, 0).state == "activating"
    assert at(r, 2).ready == 0 and at(r, 3).ready == 3 and at(r, 3).state == "active"


def test_a_new_revision_that_cannot_start_gives_up_after_the_activation_timeout() -> None:
    # progress deadline 10 s -> activation timeout 40 s; the pod would take 100 s to start.
    # With no pod there are no stats, every tick is invalid and the decider never decides.
    spec = apply_variant(ScenarioSpec(name="t", startup_delay=100.0),
                         "serving.knative.dev/progress-deadline=10s")
    r = simulate(trace((60, 0, 0.1)), resolve(spec), Start("new"))
    assert at(r, 40).replicas == 1 and at(r, 40).state == "activating"
    assert at(r, 40).want == -1 and at(r, 40).desired == -1
    assert at(r, 41).state == "inactive" and at(r, 41).replicas == 0 and at(r, 41).pods == 0


# -- capacity and queueing --------------------------------------------------------------------

def test_container_concurrency_caps_what_a_pod_can_take() -> None:
    # One pod pinned (min = max = 1), CC 1, 1 s requests: one request starts per second.
    r = run(trace((20, 3, 1.0)), cc=1, start=Start("warm"), variant="min-scale=1,max-scale=1")
    assert all(s.ready == 1 for s in r.timeline)
    assert all(s.served_rps == pytest.approx(1.0) for s in r.timeline)
    assert r.timeline[-1].waiting > 30
    roomy = run(trace((20, 3, 1.0)), cc=3, start=Start("warm"),
                variant="min-scale=1,max-scale=1")
    assert all(s.served_rps == pytest.approx(3.0) for s in roomy.timeline)
    assert roomy.queued_requests == 0


def test_a_pod_capacity_caps_pods_when_container_concurrency_is_unlimited() -> None:
    r = run(trace((10, 50, 0.1)), capacity=2.0, start=Start("warm", 1),
            variant="min-scale=1,max-scale=1")
    assert at(r, 0).served_rps == pytest.approx(20.0)  # 2 slots / 0.1 s
    unlimited = run(trace((10, 50, 0.1)), start=Start("warm", 1),
                    variant="min-scale=1,max-scale=1")
    assert at(unlimited, 0).served_rps == pytest.approx(50.0)


def test_a_full_queue_proxy_queue_rejects_requests_in_serve_mode() -> None:
    # TBC 0 -> serve mode; CC 1 -> the queue-proxy queues 10. Second 0: 1 starts, 10 queue,
    # 19 are rejected; second 1: 1 starts from the queue, 1 more fits, 29 are rejected.
    r = run(trace((3, 30, 1.0)), cc=1, start=Start("warm", 1),
            variant="min-scale=1,max-scale=1,target-burst-capacity=0")
    assert at(r, 0).mode == "serve"
    assert at(r, 0).rejected == pytest.approx(19.0)
    assert at(r, 1).rejected == pytest.approx(29.0)


def test_in_flight_concurrency_includes_the_requests_that_wait() -> None:
    r = run(trace((2, 3, 1.0)), cc=1, start=Start("warm", 1), variant="min-scale=1,max-scale=1")
    # second 0: 1 working, the queue goes 0 -> 2 (average 1); second 1: 1 working, 2 -> 4.
    assert at(r, 0).concurrency == pytest.approx(2.0)
    assert at(r, 1).concurrency == pytest.approx(4.0)


# -- metrics and algorithms -------------------------------------------------------------------

def test_the_rps_metric_scales_on_request_rate() -> None:
    tr = trace((200, 50, 0.01))  # concurrency 0.5, 50 rps
    by_rps = run(tr, variant="metric=rps,target=10,target-utilization-percentage=100")
    by_conc = run(tr)
    assert by_rps.timeline[-1].desired == 5
    assert by_conc.timeline[-1].desired == 1


def test_the_weighted_exponential_average_is_used_when_annotated() -> None:
    tr = trace((5, 0, 0.1), (40, 100, 0.1))
    linear = run(tr)
    weighted = run(tr, variant="metric-aggregation-algorithm=weighted-exponential")
    assert linear.timeline[20].stable != weighted.timeline[20].stable
    late = [d for d in weighted.decisions if d.now_ns > instant_ns(5)]
    assert late and all(d.result.scale_valid for d in late)


def test_a_scale_down_delay_holds_pods_after_the_load_drops() -> None:
    tr = trace((30, 4000, 0.1), (90, 100, 0.1))
    plain = run(tr, start=Start("warm"))
    delayed = run(tr, start=Start("warm"), variant="scale-down-delay=60s")
    assert sum(s.pods for s in delayed.timeline) > sum(s.pods for s in plain.timeline)


def test_simulation_is_deterministic() -> None:
    tr = trace((5, 0, 0.1), (30, 400, 0.1), (60, 20, 0.1))
    assert run(tr, cc=10).timeline == run(tr, cc=10).timeline


def test_a_zero_start_is_where_the_service_takes_an_idle_pod() -> None:
    r = run(trace((5, 0, 0.1)))
    s = at(r, 0)
    assert (s.desired, s.pods, s.state, s.mode, s.stable) == (0, 0, "inactive", "proxy", None)
    assert r.decisions[0].invalid_reason == "metrics_unavailable"  # no pods, no stats
    kept = at(run(trace((5, 0, 0.1)), variant="min-scale=2"), 0)
    assert (kept.ready, kept.state) == (2, "active")
    one = at(run(trace((5, 0, 0.1)), variant="enable-scale-to-zero=false"), 0)
    assert (one.desired, one.ready) == (0, 1)
    # The run-up outlasts the last pod's retention: 2 x 60 + 300 + 6 seconds.
    retained = at(run(trace((5, 0, 0.1)), variant="scale-to-zero-pod-retention-period=5m"), 0)
    assert (retained.pods, retained.state) == (0, "inactive")


def test_a_warm_start_with_several_pods_is_not_in_restart_panic() -> None:
    # A decider created with 3 ready pods would hold them in panic for a stable window; a
    # warm revision scales down at once (max scale-down rate 2: 3 -> 1).
    r = run(trace((10, 0, 0.1)), start=Start("warm", 3))
    assert not at(r, 0).in_panic and at(r, 0).desired == 1 and at(r, 0).ready == 1
    assert r.panic_periods == ()


def test_start_parses_states_and_pod_counts() -> None:
    assert Start.parse("zero") == Start("zero")
    assert Start.parse(" 4 ") == Start("warm", 4)
    with pytest.raises(ValueError, match="allowed: zero, new, warm"):
        Start.parse("hot")
    with pytest.raises(ValueError, match="pod count >= 1"):
        Start("warm", 0)
