"""The multiscaler: revisions, ticks, pokes, bursts and timers, with an explicit clock."""
from __future__ import annotations

import pytest

from autoscaler.collector import PUSH, WEBSOCKET
from autoscaler.config import AutoscalerConfig
from autoscaler.multiscaler import MultiScaler, Outcome, RevisionInput, RevisionRejected
from autoscaler.scaler import PodCounts
from proto import stat_pb2

T0 = 1_787_000_000  # an even second: ticks at T0 + 2k
NS = 1_000_000_000
KEY = ("default", "hello-00001")
A = "autoscaling.knative.dev/"


class World:
    """A multiscaler and a revision; time is seconds after T0."""

    def __init__(self, annotations: dict[str, str] | None = None, ready: int | None = 1,
                 config: dict[str, str] | None = None, cc: int = 0) -> None:
        self.ms = MultiScaler(AutoscalerConfig.from_configmap(config or {}), capacity=4)
        self.ms.sync(RevisionInput(*KEY, service="hello", annotations=annotations or {},
                                   container_concurrency=cc), T0)
        self.published: list[Outcome] = []
        if ready is not None:
            self.pods(0, ready)

    def pods(self, t: float, ready: int, **kw: int) -> list[Outcome]:
        return self.keep(self.ms.report_pods(KEY, PodCounts(ready=ready, **kw), T0 + t))

    def keep(self, out: list[Outcome]) -> list[Outcome]:
        self.published += out
        return out

    def push(self, t: float, c: float, source: str = PUSH, pods: int = 1) -> list[Outcome]:
        """``pods`` pods each report ``c / pods`` for second ``int(t)``, arriving at ``t``."""
        res = self.ms.collector.ingest(
            [stat_pb2.WireStatMessage(namespace=KEY[0], name=KEY[1], stat=stat_pb2.Stat(
                pod_name=f"pod-{i}", average_concurrent_requests=c / pods,
                request_count=c / pods, timestamp=T0 + int(t))) for i in range(pods)],
            T0 + t, source)
        if res.pokes or res.bursts:
            return self.keep(self.ms.decide(res.pokes + res.bursts, int((T0 + t) * NS)))
        return []

    def tick(self, t: float) -> list[Outcome]:
        return self.keep(self.ms.tick(int((T0 + t) * NS)))

    def run(self, start: int, end: int, load: float, pods: int = 1) -> list[Outcome]:
        """Every second from ``start`` to ``end``: stats at +0.5, ticks on even seconds."""
        out: list[Outcome] = []
        for s in range(start, end):
            if s % 2 == 0:
                out += self.tick(s + 0.05)
            else:
                out += self.keep(self.ms.due(T0 + s + 0.05))
                self.ms.collector.flush(T0 + s + 0.05)
            out += self.push(s + 0.5, load, pods=pods)
        return out

    def decision(self) -> stat_pb2.WireStatMessage:
        return self.ms.explain(KEY, T0)["published"]  # type: ignore[return-value]


def scales(out: list[Outcome]) -> list[int]:
    return [o.scale for o in out if o.scale is not None]


def test_invalid_annotations_are_refused_naming_the_key_and_range() -> None:
    ms = MultiScaler()
    with pytest.raises(RevisionRejected) as e:
        ms.sync(RevisionInput(*KEY, annotations={A + "panic-threshold-percentage": "50"}), T0)
    assert "panic-threshold-percentage" in str(e.value) and "110" in str(e.value)
    assert KEY not in ms


def test_an_invalid_update_keeps_the_revisions_previous_settings() -> None:
    w = World({A + "target": "10"})
    with pytest.raises(RevisionRejected):
        w.ms.sync(RevisionInput(*KEY, annotations={A + "window": "5s"}), T0 + 1)
    assert w.ms.scaling(KEY).target_value == 7.0  # type: ignore[union-attr]


def test_other_autoscaler_classes_are_not_ours() -> None:
    with pytest.raises(RevisionRejected, match="hpa.autoscaling.knative.dev"):
        MultiScaler().sync(RevisionInput(*KEY, annotations={
            A + "class": "hpa.autoscaling.knative.dev", A + "metric": "cpu"}), T0)


def test_pushed_stats_reach_a_decision_and_the_scale_target() -> None:
    w = World(cc=10)  # target 7 per pod
    w.run(0, 6, 35.0)
    d = w.decision()
    assert d["desired_pods"] == 5 and d["stable_concurrency"] == 35.0
    assert scales(w.published)[-1] == 5


def test_a_decision_is_published_only_when_it_changes() -> None:
    w = World(cc=10)
    first = w.run(0, 6, 35.0)
    assert [o.decision for o in w.run(6, 20, 35.0) if o.decision is not None] == []
    assert first


def test_observed_load_that_moves_is_republished_even_when_the_decision_holds() -> None:
    w = World(cc=10)
    w.run(0, 6, 35.0)
    later = [o.decision for o in w.run(6, 40, 30.0) if o.decision is not None]
    # ceil(35 / 7) == ceil(30.75 / 7) == 5 pods throughout, but status views see the load fall.
    assert later and {d.desired_pods for d in later} == {5}
    assert later[-1].stable_concurrency < 31.5


def test_no_data_makes_ticks_invalid_unless_the_activator_is_always_in_the_path() -> None:
    w = World()
    assert w.tick(2.05) == [] or w.decision()["desired_pods"] == -1
    assert w.ms.decider.status(0).desired_scale == -1
    w2 = World({A + "target-burst-capacity": "-1"})
    w2.tick(2.05)
    assert w2.ms.decider.status(0).desired_scale == 0


def test_the_decider_is_created_after_a_grace_when_no_pod_count_comes() -> None:
    w = World(ready=None)
    assert w.ms.explain(KEY, T0)["decider"]["created"] is False  # type: ignore[index]
    w.tick(0.05)
    assert w.ms.explain(KEY, T0)["decider"]["created"] is False  # type: ignore[index]
    w.tick(2.05)
    assert w.ms.explain(KEY, T0)["decider"]["created"] is True  # type: ignore[index]


def test_scale_to_zero_then_back_on_a_poke() -> None:
    w = World({A + "window": "6s"})
    out = w.run(0, 40, 0.0)
    assert scales(out)[-1] == 0  # active a window, then the activator was already in the path
    w.pods(40, 0)
    assert w.ms.decider.status(0).desired_scale == 0
    # A request reaches the activator, which reports it at once: scale from zero now.
    out = w.push(45.3, 1.0, source=WEBSOCKET)
    assert scales(out) == [1]
    assert w.decision()["desired_pods"] == 1


def test_the_initial_decider_status_does_not_poke() -> None:
    w = World(ready=0)
    assert w.push(0.5, 1.0) == []  # desired -1 is not 0 (upstream quirk)


def test_a_restarted_autoscaler_starts_in_panic_and_does_not_scale_down() -> None:
    w = World(ready=5, cc=10)
    assert w.ms.explain(KEY, T0)["decider"]["in_panic"] is True  # type: ignore[index]
    out = w.run(0, 60, 7.0)  # one pod's worth of load
    assert [o.decision.desired_pods for o in out if o.decision] == [5]
    assert set(scales(out)) == {5}
    out = w.run(60, 70, 7.0)
    assert w.decision()["desired_pods"] < 5  # a stable window later the panic is over


def test_a_burst_is_decided_before_the_next_tick() -> None:
    w = World(cc=10)
    w.run(0, 10, 7.0, pods=1)
    assert w.decision()["desired_pods"] == 1
    # The load steps up to 20x at second 10; the first pod reports at 10.2, mid-second.
    out = w.push(10.2, 140.0)
    assert out and out[-1].decision is not None and out[-1].decision.in_panic
    assert out[-1].scale is not None and out[-1].scale > 1


def test_the_scale_down_delay_holds_a_higher_count() -> None:
    w = World({A + "scale-down-delay": "10s"}, cc=10)
    w.run(0, 10, 70.0)
    high = w.decision()["desired_pods"]
    w.pods(10, high)
    w.run(10, 16, 7.0)
    assert w.decision()["desired_pods"] == high
    w.run(16, 90, 7.0)
    assert w.decision()["desired_pods"] < high


def test_a_deleted_revision_is_forgotten() -> None:
    w = World()
    w.ms.sync(RevisionInput(*KEY, deleted=True), T0 + 1)
    assert KEY not in w.ms
    assert w.ms.collector.ingest([], T0, PUSH).accepted == 0
    assert w.tick(2.05) == []


def test_a_config_change_re_resolves_every_revision() -> None:
    w = World()
    w.run(0, 4, 10.0)
    out = w.ms.set_config(AutoscalerConfig.from_configmap({"stable-window": "30s",
                                                           "min-scale": "2"}), T0 + 4)
    assert w.ms.scaling(KEY).stable_window == 30.0  # type: ignore[union-attr]
    assert w.ms.collector.describe(KEY, T0 + 4)["concurrency_stable"]["num_buckets"] == 30  # type: ignore[index]
    assert scales(out) == [2]


def test_timers_scale_to_zero_without_waiting_for_a_tick() -> None:
    w = World({A + "window": "6s", A + "target-burst-capacity": "0"})
    w.run(0, 10, 0.0)
    assert w.ms.explain(KEY, T0)["scaler"]["active"] == "inactive"  # type: ignore[index]
    at = w.ms.next_timer()
    # Inactive (and proxying) since the reconcile at 6.05: the grace period ends 30 s later.
    assert at == pytest.approx(T0 + 36.05)
    assert scales(w.keep(w.ms.due(at - 0.01))) == []
    assert scales(w.keep(w.ms.due(at))) == [0]


def test_after_a_burst_decision_the_next_burst_check_waits_for_the_tick() -> None:
    w = World(cc=10)
    w.run(0, 10, 7.0)
    assert w.push(10.2, 140.0)  # decided at once
    assert w.push(10.9, 300.0) == []  # still bursting: the tick will see it
    assert w.ms.out_of_band == 1
    w.tick(12.05)
    assert w.push(12.3, 2000.0)  # a new crossing after the tick is decided at once again
    assert w.ms.out_of_band == 2


def test_without_burst_decisions_only_the_tick_decides() -> None:
    w = World(cc=10)
    w.ms.burst_decisions = False
    w.run(0, 10, 7.0)
    assert w.push(10.2, 140.0) == []
    assert w.ms.out_of_band == 0


def test_a_restart_does_not_apply_min_scale_before_the_first_decision() -> None:
    w = World({A + "min-scale": "2"}, ready=None)
    out = w.pods(0, 10)  # running 10 pods when the restarted autoscaler learns of it
    assert scales(out) == []
    assert w.ms.explain(KEY, T0)["scaler"]["active"] == "active"  # type: ignore[index]


def test_a_new_revision_still_starting_keeps_its_initial_scale_floor() -> None:
    w = World({A + "initial-scale": "3"}, ready=None)
    w.pods(0, 1, pending=2)
    w.run(0, 4, 7.0)
    assert set(scales(w.published)) == {3}
