"""Per-revision resolution: config + annotations -> targets, windows, bounds, DeciderSpec.

Precedence everywhere: the annotation wins when it is present and parses; otherwise the
config-autoscaler value applies.
"""
from __future__ import annotations

import pytest

from autoscaler.config import (
    AutoscalerConfig,
    make_decider_spec,
    panic_window,
    resolve_metric_target,
    resolve_revision,
)
from autoscaler.spec import DeciderSpec

G = "autoscaling.knative.dev"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
DEFAULT = AutoscalerConfig()


@pytest.mark.parametrize(("annotations", "cc", "config", "target", "total"), [
    pytest.param({}, 0, DEFAULT, 70.0, 100.0, id="defaults-cc0"),
    pytest.param({}, 10, DEFAULT, 7.0, 10.0, id="defaults-cc10"),
    pytest.param({f"{G}/metric": "rps"}, 0, DEFAULT, 140.0, 200.0, id="rps"),
    pytest.param({f"{G}/metric": "rps"}, 10, DEFAULT, 140.0, 200.0, id="rps-ignores-cc"),
    pytest.param({f"{G}/target": "50"}, 20, DEFAULT, 14.0, 20.0, id="target-capped-by-cc"),
    pytest.param({f"{G}/target": "5"}, 20, DEFAULT, 3.5, 5.0, id="target-below-cc"),
    pytest.param({f"{G}/target": "50", f"{G}/target-utilization-percentage": "100"}, 0,
                 DEFAULT, 50.0, 50.0, id="target-tu100"),
    pytest.param({f"{G}/metric": "rps", f"{G}/target": "50"}, 20, DEFAULT, 35.0, 50.0,
                 id="rps-target-not-capped"),
    pytest.param({f"{G}/metric": "rps", f"{G}/targetUtilizationPercentage": "50"}, 0, DEFAULT,
                 100.0, 200.0, id="tu-alias-applies-to-rps"),
    pytest.param({f"{G}/metric": "cpu", f"{G}/target": "50"}, 20, DEFAULT, 35.0, 50.0,
                 id="non-concurrency-metric-is-not-capped"),
    pytest.param({}, 0, AutoscalerConfig.from_configmap(
        {"container-concurrency-target-percentage": "1.5"}), 1.5, 100.0, id="legacy-1.5-pct"),
    pytest.param({}, 0, AutoscalerConfig(rps_target_default=10.0, target_utilization=0.5),
                 70.0, 100.0, id="rps-config-unused-for-concurrency"),
    pytest.param({f"{G}/target": "0.01", f"{G}/target-utilization-percentage": "1"}, 0, DEFAULT,
                 0.01, 0.01, id="target-floor-0.01"),
    pytest.param({f"{G}/target": "abc", f"{G}/target-utilization-percentage": "x"}, 10,
                 DEFAULT, 7.0, 10.0, id="unparsable-falls-back"),
])
def test_resolve_metric_target_worked_values(annotations: dict[str, str], cc: int,
                                             config: AutoscalerConfig, target: float,
                                             total: float) -> None:
    assert resolve_metric_target(config, annotations, cc) == (target, total)


@pytest.mark.parametrize(("stable", "pct", "want"), [
    (60.0, 10.0, 6.0),
    (6.0, 10.0, 1.0),      # 0.6 s rounds up to the 1 s minimum anyway
    (25.0, 10.0, 3.0),     # 2.5 s: half away from zero, not to even
    (15.0, 10.0, 2.0),     # 1.5 s
    (35.0, 10.0, 4.0),     # 3.5 s
    (45.0, 5.0, 2.0),      # 2.25 s
    (60.0, 1.0, 1.0),      # 0.6 s
    (6.0, 1.0, 1.0),       # 0.06 s -> minimum 1 s
    (3600.0, 1.0, 36.0),
    (6.0, 100.0, 6.0),
    (7.0, 15.0, 1.0),      # 1.05 s
])
def test_panic_window_rounds_to_whole_seconds_half_away_from_zero(
        stable: float, pct: float, want: float) -> None:
    assert panic_window(stable, pct) == want


@pytest.mark.parametrize(("annotations", "config", "stable", "panic"), [
    pytest.param({}, DEFAULT, 60.0, 6.0, id="defaults"),
    pytest.param({f"{G}/window": "25s"}, DEFAULT, 25.0, 3.0, id="window-annotation"),
    pytest.param({f"{G}/window": "25 seconds"}, DEFAULT, 60.0, 6.0, id="window-unparsable"),
    pytest.param({}, AutoscalerConfig(stable_window=120.0), 120.0, 12.0, id="config-window"),
    pytest.param({f"{G}/panic-window-percentage": "20"}, DEFAULT, 60.0, 12.0, id="pct-ann"),
    pytest.param({f"{G}/panicWindowPercentage": "5"}, DEFAULT, 60.0, 3.0, id="pct-alias"),
    pytest.param({}, AutoscalerConfig(panic_window_percentage=50.0), 60.0, 30.0,
                 id="pct-config"),
    pytest.param({f"{G}/panic-window-percentage": "lots"}, DEFAULT, 60.0, 6.0,
                 id="pct-unparsable"),
])
def test_stable_and_panic_windows_follow_precedence(annotations: dict[str, str],
                                                    config: AutoscalerConfig, stable: float,
                                                    panic: float) -> None:
    rs = resolve_revision(config, annotations)
    assert (rs.stable_window, rs.panic_window) == (stable, panic)


def test_decider_spec_from_defaults() -> None:
    assert make_decider_spec(DEFAULT, {}, 0, True) == DeciderSpec(
        max_scale_up_rate=1000.0, max_scale_down_rate=2.0, scaling_metric="concurrency",
        target_value=70.0, total_value=100.0, target_burst_capacity=211.0,
        activator_capacity=100.0, activation_scale=0, panic_threshold=2.0, stable_window=60.0,
        scale_down_delay=0.0, initial_scale=1, reachable=True)


def test_decider_spec_takes_every_annotation_that_parses() -> None:
    config = AutoscalerConfig.from_configmap({
        "max-scale-up-rate": "10", "max-scale-down-rate": "4", "activator-capacity": "50",
        "panic-threshold-percentage": "300", "scale-down-delay": "30s",
        "target-burst-capacity": "100", "allow-zero-initial-scale": "true",
    })
    annotations = {
        f"{G}/metric": "rps", f"{G}/target": "80", f"{G}/target-utilization-percentage": "50",
        f"{G}/targetBurstCapacity": "-1", f"{G}/panic-threshold-percentage": "150",
        f"{G}/window": "2m", f"{G}/scale-down-delay": "15s", f"{G}/initial-scale": "0",
        f"{G}/activation-scale": "3",
    }
    assert make_decider_spec(config, annotations, 5, False) == DeciderSpec(
        max_scale_up_rate=10.0, max_scale_down_rate=4.0, scaling_metric="rps",
        target_value=40.0, total_value=80.0, target_burst_capacity=-1.0,
        activator_capacity=50.0, activation_scale=3, panic_threshold=1.5, stable_window=120.0,
        scale_down_delay=15.0, initial_scale=0, reachable=False)


def test_decider_spec_falls_back_to_config_for_every_unparsable_annotation() -> None:
    config = AutoscalerConfig(panic_threshold_percentage=300.0, scale_down_delay=30.0,
                              target_burst_capacity=100.0, initial_scale=2)
    garbage = {key: "garbage" for key in (
        "target", "target-utilization-percentage", "target-burst-capacity",
        "panic-threshold-percentage", "window", "scale-down-delay", "initial-scale",
        "activation-scale")}
    spec = make_decider_spec(config, {f"{G}/{k}": v for k, v in garbage.items()}, 0, True)
    assert spec == make_decider_spec(config, {}, 0, True)
    assert (spec.panic_threshold, spec.scale_down_delay, spec.target_burst_capacity,
            spec.initial_scale, spec.activation_scale) == (3.0, 30.0, 100.0, 2, 0)


def test_config_panic_threshold_below_100_is_accepted_unvalidated() -> None:
    config = AutoscalerConfig.from_configmap({"panic-threshold-percentage": "50"})
    assert make_decider_spec(config, {}, 0, True).panic_threshold == 0.5


@pytest.mark.parametrize(("annotations", "config", "want"), [
    pytest.param({}, DEFAULT, 1, id="config-default"),
    pytest.param({f"{G}/initial-scale": "3"}, DEFAULT, 3, id="annotation"),
    pytest.param({f"{G}/initialScale": "4"}, DEFAULT, 4, id="alias"),
    pytest.param({f"{G}/initial-scale": "0"}, DEFAULT, 1, id="zero-not-allowed-falls-back"),
    pytest.param({f"{G}/initial-scale": "0"}, AutoscalerConfig(allow_zero_initial_scale=True), 0,
                 id="zero-allowed"),
    pytest.param({f"{G}/initial-scale": "many"}, AutoscalerConfig(initial_scale=2), 2,
                 id="unparsable"),
    pytest.param({f"{G}/initial-scale": "3000000000"}, DEFAULT, 1, id="beyond-int32"),
])
def test_initial_scale(annotations: dict[str, str], config: AutoscalerConfig, want: int) -> None:
    assert resolve_revision(config, annotations).initial_scale == want


@pytest.mark.parametrize(("annotations", "reachable", "want"), [
    pytest.param({}, True, (1, 4), id="config"),
    pytest.param({f"{G}/min-scale": "2", f"{G}/max-scale": "5"}, True, (2, 5), id="annotations"),
    pytest.param({f"{G}/minScale": "3", f"{G}/maxScale": "6"}, True, (3, 6), id="aliases"),
    pytest.param({f"{G}/min-scale": "two", f"{G}/max-scale": "x"}, True, (1, 4),
                 id="unparsable"),
    pytest.param({f"{G}/min-scale": "2", f"{G}/max-scale": "5"}, False, (0, 5),
                 id="unreachable-drops-min"),
    pytest.param({}, False, (0, 4), id="unreachable-drops-config-min"),
])
def test_scale_bounds(annotations: dict[str, str], reachable: bool,
                      want: tuple[int, int]) -> None:
    config = AutoscalerConfig(min_scale=1, max_scale=4)
    rs = resolve_revision(config, annotations, reachable=reachable)
    assert (rs.min_scale, rs.max_scale) == want


def test_initial_scale_raises_min_until_the_target_is_initialized() -> None:
    annotations = {f"{G}/initial-scale": "5", f"{G}/min-scale": "2", f"{G}/max-scale": "8"}
    rs = resolve_revision(DEFAULT, annotations)
    assert rs.scale_bounds(scale_target_initialized=False) == (5, 8)
    assert rs.scale_bounds(scale_target_initialized=True) == (2, 8)
    unreachable = resolve_revision(DEFAULT, annotations, reachable=False)
    assert unreachable.scale_bounds(scale_target_initialized=False) == (0, 8)
    small = resolve_revision(DEFAULT, {f"{G}/initial-scale": "1"})
    assert small.scale_bounds(scale_target_initialized=False) == (0, 0)


@pytest.mark.parametrize(("desired", "initialized", "want"), [
    (0, True, 2), (-1, True, 2), (3, True, 3), (9, True, 8), (4, False, 5), (7, False, 7),
])
def test_apply_bounds(desired: int, initialized: bool, want: int) -> None:
    rs = resolve_revision(DEFAULT, {f"{G}/initial-scale": "5", f"{G}/min-scale": "2",
                                    f"{G}/max-scale": "8"})
    assert rs.apply_bounds(desired, initialized) == want


def test_max_scale_zero_is_unbounded() -> None:
    assert resolve_revision(DEFAULT, {}).apply_bounds(10_000, True) == 10_000


@pytest.mark.parametrize(("annotations", "deadline", "want"), [
    pytest.param({}, 600.0, 630.0, id="config-deployment-default"),
    pytest.param({}, 120.0, 150.0, id="config-deployment-custom"),
    pytest.param({"serving.knative.dev/progress-deadline": "100s"}, 600.0, 130.0,
                 id="annotation"),
    pytest.param({"serving.knative.dev/progress-deadline": "soon"}, 600.0, 630.0,
                 id="unparsable"),
])
def test_activation_timeout_is_progress_deadline_plus_30s(annotations: dict[str, str],
                                                          deadline: float, want: float) -> None:
    rs = resolve_revision(DEFAULT, annotations, progress_deadline=deadline)
    assert rs.activation_timeout == want


@pytest.mark.parametrize(("annotations", "reachable", "want"), [
    pytest.param({}, True, 30.0, id="config"),
    pytest.param({f"{G}/scale-to-zero-pod-retention-period": "90s"}, True, 90.0, id="ann"),
    pytest.param({f"{G}/scaleToZeroPodRetentionPeriod": "1m30.5s"}, True, 90.5, id="alias"),
    pytest.param({f"{G}/scale-to-zero-pod-retention-period": "later"}, True, 30.0,
                 id="unparsable"),
    pytest.param({f"{G}/scale-to-zero-pod-retention-period": "90s"}, False, 0.0,
                 id="unreachable"),
])
def test_last_pod_retention(annotations: dict[str, str], reachable: bool, want: float) -> None:
    config = AutoscalerConfig(scale_to_zero_pod_retention_period=30.0)
    assert resolve_revision(config, annotations, reachable=reachable).last_pod_retention == want


def test_config_only_knobs_pass_through() -> None:
    config = AutoscalerConfig.from_configmap({"enable-scale-to-zero": "false",
                                              "scale-to-zero-grace-period": "45s"})
    rs = resolve_revision(config, {})
    assert rs.enable_scale_to_zero is False
    assert rs.scale_to_zero_grace_period == 45.0


@pytest.mark.parametrize(("annotations", "want"), [
    ({}, "linear"),
    ({f"{G}/metric-aggregation-algorithm": "weightedExponential"}, "weighted-exponential"),
    ({f"{G}/metric-aggregation-algorithm": "bogus"}, "linear"),
])
def test_aggregation_algorithm_choice(annotations: dict[str, str], want: str) -> None:
    assert resolve_revision(DEFAULT, annotations).aggregation_algorithm == want


def test_class_defaults_to_the_config_class() -> None:
    assert resolve_revision(DEFAULT, {}).is_kpa
    hpa_default = AutoscalerConfig(pod_autoscaler_class=HPA)
    rs = resolve_revision(hpa_default, {})
    assert rs.autoscaler_class == HPA and not rs.is_kpa
    assert resolve_revision(hpa_default, {f"{G}/class": KPA}).is_kpa


def test_activator_always_in_path_only_with_tbc_minus_one() -> None:
    assert not resolve_revision(DEFAULT, {}).activator_always_in_path
    assert resolve_revision(DEFAULT, {f"{G}/target-burst-capacity": "-1"}).activator_always_in_path
    assert resolve_revision(AutoscalerConfig(target_burst_capacity=-1), {}) \
        .activator_always_in_path
