"""Timelines of the offline simulator (autoscaler.simulate).

Every expectation is worked out by hand from the model in the module docstring: stats about
second i are recorded at instant i + 1, the decider ticks at even instants (and on a poke),
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
    # Stable average at tick k (k-20 high seconds recorded): 100 + 100 (k-20)/60 -> needs a
    # third pod once above 140: 140 exactly at tick 44 (ceil(2.0) = 2), 143.3 at tick 46.
    r = run(trace((20, 1000, 0.1), (60, 2000, 0.1)), start=Start("warm"))
    assert at(r, 0).ready == 2 and at(r, 0).mode == "proxy"
    assert all(at(r, t).desired == 2 for t in range(0, 46))
    assert at(r, 44).stable == pytest.approx(140.0)
    assert at(r, 46).desired == 3 and at(r, 46).decision == "tick"
    assert at(r, 46).replicas == 3 and at(r, 48).ready == 2 and at(r, 49).ready == 3
    assert not any(s.in_panic for s in r.timeline)  # the panic ratio stays below 2


def test_a_shorter_stable_window_scales_up_sooner_for_the_same_step() -> None:
    # Window 30 s: 100 + 100 (k-20)/30 > 140 first at tick 34 (13 high seconds).
    r = run(trace((20, 1000, 0.1), (40, 2000, 0.1)), start=Start("warm"),
            variant="stable-window=30s")
    assert at(r, 32).desired == 2
    assert at(r, 34).desired == 3


def test_a_burst_enters_panic_at_the_tick_where_the_panic_window_doubles_the_pods() -> None:
    # Warm at 100 on 2 pods; at t=30 the load goes to 400. Panic window 6 s:
    # tick 32: (4x100 + 2x400)/6 = 200 -> 3 pods, 3/2 < 2;
    # tick 34: (2x100 + 4x400)/6 = 300 -> ceil(4.29) = 5 pods, 5/2 >= 2: panic, desired 5.
    r = run(trace((30, 1000, 0.1), (30, 4000, 0.1)), start=Start("warm"))
    assert not at(r, 32).in_panic and at(r, 32).desired == 2
    assert at(r, 34).in_panic and at(r, 34).desired == 5
    assert at(r, 34).panic == pytest.approx(300.0)
    assert r.panic_periods[0].start == 34
    entered = [d for d in r.decisions if d.panic_transition == "enter"]
    assert [instant(d.now_ns) for d in entered] == [34]


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
    # The immediate stat (1) lands in bucket 5; the report about second 5 (concurrency 5:
    # 10 arrivals waiting on average half a second... here 10 x 0.5 = 5) minus 1 in bucket 6.
    r = run(trace((5, 0, 0.1), (20, 10, 0.1)))
    assert at(r, 5).concurrency == pytest.approx(5.0)
    assert at(r, 6).stable == pytest.approx((1.0 + 4.0) / 2)


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


def test_start_parses_states_and_pod_counts() -> None:
    assert Start.parse("zero") == Start("zero")
    assert Start.parse(" 4 ") == Start("warm", 4)
    with pytest.raises(ValueError, match="allowed: zero, new, warm"):
        Start.parse("hot")
    with pytest.raises(ValueError, match="pod count >= 1"):
        Start("warm", 0)
