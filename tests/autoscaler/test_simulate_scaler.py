"""The simulator's autoscaler: one revision under the service's MultiScaler, and its pods
(autoscaler.simulate_scaler). Timelines with explicit instants; the rules themselves are the
service's and are tested with it (test_collector, test_multiscaler, test_scaler)."""
from __future__ import annotations

import pytest

from autoscaler.scaler import PodCounts
from autoscaler.simulate_scaler import (KEY, MODE_PROXY, MODE_SERVE, Deployment,
                                        SimulatedRevision, StatReport)
from autoscaler.simulate_scenario import ScenarioSpec, apply_variant, resolve


def revision(variant: str | None = None, *, ready: int = 1, record_from: int = 0
             ) -> SimulatedRevision:
    """A revision first seen at instant 0 with ``ready`` pods running (starting in 3 s)."""
    spec = ScenarioSpec(name="t")
    if variant:
        spec = apply_variant(spec, variant)
    deploy = Deployment(3.0)
    deploy.add_ready(ready, 0.0)
    rev = SimulatedRevision(resolve(spec), deploy, at=0, record_from=record_from)
    rev.report_pods(0)
    return rev


def idle_seconds(rev: SimulatedRevision, start: int, end: int) -> None:
    """Instants start..end: the pods report no load about the second before; the service steps."""
    for i in range(start, end + 1):
        rev.push([("pods", i - 1, StatReport())], i)
        rev.step(i)


# -- the deployment ---------------------------------------------------------------------------

def test_pods_are_ready_a_rounded_up_start_up_delay_after_they_are_asked_for() -> None:
    d = Deployment(2.5)
    assert d.scale(2, 10.0) == 2
    assert (len(d), d.ready(12.0), d.ready(13.0)) == (2, 0, 2)
    assert d.counts(12.0) == PodCounts(ready=0, pending=2)
    assert d.counts(13.0) == PodCounts(ready=2)


def test_removing_pods_takes_starting_ones_first_then_the_newest() -> None:
    d = Deployment(5.0)
    d.add_ready(2, 0.0)
    d.scale(3, 10.0)  # one more, ready at 15
    d.scale(2, 11.0)
    assert (len(d), d.ready(11.0), d.ready(100.0)) == (2, 2, 2)
    d.scale(4, 20.0)  # two more, ready at 25
    d.scale(1, 30.0)
    assert (len(d), d.ready(30.0)) == (1, 1)


# -- the service driven -----------------------------------------------------------------------

def test_the_service_resolves_the_same_knobs_as_the_scenario() -> None:
    rev = revision("serving.knative.dev/progress-deadline=10s,window=30s")
    rs = rev.ms.scaling(KEY)
    assert rs == rev.scenario.scaling
    assert (rs.activation_timeout, rs.stable_window) == (40.0, 30.0)


def test_a_running_revision_is_adopted_active_and_ticks_on_even_instants() -> None:
    rev = revision()
    assert rev.last is not None and rev.last.active == "active"
    assert rev.step(1) == []
    assert rev.step(2) == ["tick"]
    assert rev.decisions[-1].invalid_reason == "metrics_unavailable"  # nothing pushed yet


def test_the_windows_get_what_did_not_come_through_the_activator() -> None:
    # Second 0: the pods worked on 5 requests, all proxied; the activator counted 5 in flight
    # (its own) -- recorded: (5 - 5) + 5 = 5, not 10.
    rev = revision()
    rev.push([("pods", 0, StatReport(5.0, 5.0, 50.0, 50.0)),
              ("activator", 0, StatReport(5.0, 0.0, 50.0, 0.0))], 1)
    rev.step(1)
    assert rev.step(2) == ["tick"]
    assert rev.observed() == (pytest.approx(5.0), pytest.approx(5.0))


def test_a_decided_scale_goes_to_the_deployment_and_its_pods_are_reported_back() -> None:
    rev = revision()
    rev.push([("pods", 1, StatReport(concurrency=300.0))], 2)
    rev.step(2)  # stable 300 on 1 pod, target 70: ceil(4.29) = 5
    assert rev.decider_status()[0] == 5
    assert len(rev.deployment) == 5 and rev.scale_changes == 1
    (_, _, _, pods, last), = rev.ms.snapshot_rows()
    assert pods == PodCounts(ready=1, pending=4)
    assert last is not None and (last.want, last.apply) == (5, True)


def test_a_stat_with_concurrency_at_desired_scale_zero_pokes_a_decision_at_once() -> None:
    rev = revision()
    idle_seconds(rev, 1, 2)  # tick 2: zeros on one pod -> desired 0
    assert rev.decider_status()[0] == 0
    kinds = rev.push([("activator", 2, StatReport(concurrency=3.0, request_count=3.0))], 3)
    assert kinds == ["poke"]
    # Seconds 0..2: 0, 0, 3 -> stable 1 -> one pod.
    assert rev.decider_status()[0] == 1
    assert rev.observed()[0] == pytest.approx(1.0)
    assert [d.now_ns for d in rev.decisions][-1] == (1_700_000_003) * 10**9


def test_requests_go_through_the_activator_while_no_pod_is_ready_whatever_the_mode() -> None:
    # TBC 0: one pod wanted with excess burst capacity 0 -> serve mode, once the pod is ready.
    rev = revision("target-burst-capacity=0", ready=0)
    rev.deployment.scale(1, 0.0)  # ready at 3
    rev.report_pods(0)
    rev.push([("activator", 0, StatReport(concurrency=1.0, request_count=1.0))], 1)
    rev.step(1)
    rev.step(2)
    assert rev.mode == MODE_SERVE
    assert rev.path(2) == MODE_PROXY
    rev.report_pods(3)
    assert rev.path(3) == MODE_SERVE


def test_decisions_and_scale_changes_count_from_the_recorded_instant_on() -> None:
    rev = revision(record_from=4)
    rev.push([("pods", 1, StatReport(concurrency=300.0))], 2)
    rev.step(2)
    assert (rev.decisions, rev.scale_changes) == ([], 0)
    assert rev.latest is not None  # still the latest, for the timeline
    rev.step(3)
    rev.step(4)
    assert len(rev.decisions) == 1
