"""config-autoscaler: every key's default, valid values, and each invalid boundary.

Errors must name the key, show the value as written, and say what is allowed.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from autoscaler.config import CONFIG_KEYS, AutoscalerConfig, ConfigError, unknown_keys


def test_every_upstream_key_is_known() -> None:
    assert CONFIG_KEYS == {
        "pod-autoscaler-class", "enable-scale-to-zero", "allow-zero-initial-scale",
        "max-scale-up-rate", "max-scale-down-rate", "container-concurrency-target-percentage",
        "container-concurrency-target-default", "requests-per-second-target-default",
        "target-burst-capacity", "panic-window-percentage", "activator-capacity",
        "panic-threshold-percentage", "initial-scale", "min-scale", "max-scale",
        "max-scale-limit", "stable-window", "scale-down-delay", "scale-to-zero-grace-period",
        "scale-to-zero-pod-retention-period",
    }


def test_an_empty_map_gives_upstream_defaults() -> None:
    cfg = AutoscalerConfig.from_configmap({})
    assert cfg == AutoscalerConfig()
    assert dataclasses.asdict(cfg) == {
        "enable_scale_to_zero": True,
        "container_concurrency_target_fraction": 0.7,
        "container_concurrency_target_default": 100.0,
        "target_utilization": 0.7,
        "rps_target_default": 200.0,
        "target_burst_capacity": 211.0,
        "activator_capacity": 100.0,
        "allow_zero_initial_scale": False,
        "initial_scale": 1,
        "min_scale": 0,
        "max_scale": 0,
        "max_scale_limit": 0,
        "max_scale_up_rate": 1000.0,
        "max_scale_down_rate": 2.0,
        "stable_window": 60.0,
        "panic_window_percentage": 10.0,
        "panic_threshold_percentage": 200.0,
        "scale_to_zero_grace_period": 30.0,
        "scale_to_zero_pod_retention_period": 0.0,
        "scale_down_delay": 0.0,
        "pod_autoscaler_class": "kpa.autoscaling.knative.dev",
    }


@pytest.mark.parametrize(("data", "field", "want"), [
    pytest.param({"pod-autoscaler-class": "  hpa.autoscaling.knative.dev \n"},
                 "pod_autoscaler_class", "hpa.autoscaling.knative.dev", id="class-trimmed"),
    pytest.param({"enable-scale-to-zero": "false"}, "enable_scale_to_zero", False, id="stz-false"),
    pytest.param({"enable-scale-to-zero": "0"}, "enable_scale_to_zero", False, id="stz-0"),
    pytest.param({"enable-scale-to-zero": "T"}, "enable_scale_to_zero", True, id="stz-T"),
    pytest.param({"allow-zero-initial-scale": "True"}, "allow_zero_initial_scale", True,
                 id="allow-zero"),
    pytest.param({"max-scale-up-rate": "1.001"}, "max_scale_up_rate", 1.001, id="up-rate"),
    pytest.param({"max-scale-up-rate": "Inf"}, "max_scale_up_rate", math.inf, id="up-rate-inf"),
    pytest.param({"max-scale-down-rate": "1.5"}, "max_scale_down_rate", 1.5, id="down-rate"),
    pytest.param({"container-concurrency-target-percentage": "80"},
                 "container_concurrency_target_fraction", 0.8, id="pct-80"),
    pytest.param({"container-concurrency-target-percentage": "100"},
                 "container_concurrency_target_fraction", 1.0, id="pct-100"),
    pytest.param({"container-concurrency-target-percentage": "1"},
                 "container_concurrency_target_fraction", 1.0, id="pct-1-is-a-fraction"),
    pytest.param({"container-concurrency-target-percentage": "1.5"},
                 "container_concurrency_target_fraction", 0.015, id="pct-1.5-means-1.5%"),
    pytest.param({"container-concurrency-target-percentage": "0.5"},
                 "container_concurrency_target_fraction", 0.5, id="pct-legacy-fraction"),
    pytest.param({"container-concurrency-target-default": "10"},
                 "container_concurrency_target_default", 10.0, id="cc-default"),
    pytest.param({"requests-per-second-target-default": "0.01"}, "rps_target_default", 0.01,
                 id="rps-min"),
    pytest.param({"target-burst-capacity": "-1"}, "target_burst_capacity", -1.0, id="tbc--1"),
    pytest.param({"target-burst-capacity": "0"}, "target_burst_capacity", 0.0, id="tbc-0"),
    pytest.param({"target-burst-capacity": "1e3"}, "target_burst_capacity", 1000.0, id="tbc-1e3"),
    pytest.param({"panic-window-percentage": "1"}, "panic_window_percentage", 1.0, id="pwp-1"),
    pytest.param({"panic-window-percentage": "100"}, "panic_window_percentage", 100.0,
                 id="pwp-100"),
    pytest.param({"activator-capacity": "1"}, "activator_capacity", 1.0, id="ac-1"),
    pytest.param({"panic-threshold-percentage": "-50"}, "panic_threshold_percentage", -50.0,
                 id="ptp-unvalidated"),
    pytest.param({"initial-scale": "0", "allow-zero-initial-scale": "true"}, "initial_scale", 0,
                 id="initial-0-allowed"),
    pytest.param({"initial-scale": "+5"}, "initial_scale", 5, id="initial-5"),
    pytest.param({"min-scale": "3"}, "min_scale", 3, id="min"),
    pytest.param({"max-scale": "5"}, "max_scale", 5, id="max"),
    pytest.param({"max-scale-limit": "10", "max-scale": "10"}, "max_scale_limit", 10, id="limit"),
    pytest.param({"min-scale": "3", "max-scale": "3"}, "min_scale", 3, id="min-eq-max"),
    pytest.param({"min-scale": "3", "max-scale": "0"}, "min_scale", 3, id="min-unbounded-max"),
    pytest.param({"stable-window": "6s"}, "stable_window", 6.0, id="window-min"),
    pytest.param({"stable-window": "1h"}, "stable_window", 3600.0, id="window-max"),
    pytest.param({"stable-window": "2m"}, "stable_window", 120.0, id="window-2m"),
    pytest.param({"stable-window": "6000ms"}, "stable_window", 6.0, id="window-ms-whole"),
    pytest.param({"scale-down-delay": "0s"}, "scale_down_delay", 0.0, id="delay-0"),
    pytest.param({"scale-down-delay": "0"}, "scale_down_delay", 0.0, id="delay-bare-0"),
    pytest.param({"scale-down-delay": "2h"}, "scale_down_delay", 7200.0, id="delay-no-upper"),
    pytest.param({"scale-to-zero-grace-period": "45s"}, "scale_to_zero_grace_period", 45.0,
                 id="grace"),
    pytest.param({"scale-to-zero-grace-period": "1ns"}, "scale_to_zero_grace_period", 1e-9,
                 id="grace-1ns"),
    pytest.param({"scale-to-zero-pod-retention-period": "1.5s"},
                 "scale_to_zero_pod_retention_period", 1.5, id="retention-subsecond"),
])
def test_a_valid_value_is_parsed(data: dict[str, str], field: str, want: object) -> None:
    assert getattr(AutoscalerConfig.from_configmap(data), field) == want


@pytest.mark.parametrize(("data", "key", "allowed"), [
    pytest.param({"enable-scale-to-zero": "yes"}, "enable-scale-to-zero", "Go bool", id="stz"),
    pytest.param({"allow-zero-initial-scale": "on"}, "allow-zero-initial-scale", "Go bool",
                 id="allow-zero"),
    pytest.param({"max-scale-up-rate": "1"}, "max-scale-up-rate", "> 1", id="up-1"),
    pytest.param({"max-scale-up-rate": "0.5"}, "max-scale-up-rate", "> 1", id="up-0.5"),
    pytest.param({"max-scale-up-rate": " 2"}, "max-scale-up-rate", "> 1", id="up-space"),
    pytest.param({"max-scale-up-rate": "NaN"}, "max-scale-up-rate", "> 1", id="up-nan"),
    pytest.param({"max-scale-down-rate": "1.0"}, "max-scale-down-rate", "> 1", id="down-1"),
    pytest.param({"container-concurrency-target-percentage": "0"},
                 "container-concurrency-target-percentage", "(0, 100]", id="pct-0"),
    pytest.param({"container-concurrency-target-percentage": "-5"},
                 "container-concurrency-target-percentage", "(0, 100]", id="pct-neg"),
    pytest.param({"container-concurrency-target-percentage": "100.5"},
                 "container-concurrency-target-percentage", "(0, 100]", id="pct-above-100"),
    pytest.param({"container-concurrency-target-percentage": "70%"},
                 "container-concurrency-target-percentage", "(0, 100]", id="pct-sign"),
    pytest.param({"container-concurrency-target-default": "0.01"},
                 "container-concurrency-target-default", ">= 0.01", id="target-below-min"),
    pytest.param({"container-concurrency-target-percentage": "1",
                  "container-concurrency-target-default": "0.005"},
                 "container-concurrency-target-default", ">= 0.01", id="fraction-x-default"),
    pytest.param({"requests-per-second-target-default": "0.009"},
                 "requests-per-second-target-default", ">= 0.01", id="rps"),
    pytest.param({"target-burst-capacity": "-2"}, "target-burst-capacity", "-1", id="tbc--2"),
    pytest.param({"target-burst-capacity": "-0.5"}, "target-burst-capacity", "-1",
                 id="tbc--0.5"),
    pytest.param({"panic-window-percentage": "0.99"}, "panic-window-percentage", "[1, 100]",
                 id="pwp-low"),
    pytest.param({"panic-window-percentage": "100.01"}, "panic-window-percentage", "[1, 100]",
                 id="pwp-high"),
    pytest.param({"activator-capacity": "0.99"}, "activator-capacity", ">= 1", id="ac"),
    pytest.param({"panic-threshold-percentage": "NaN"}, "panic-threshold-percentage",
                 "a number", id="ptp-nan"),
    pytest.param({"initial-scale": "0"}, "initial-scale", "allow-zero-initial-scale",
                 id="initial-0"),
    pytest.param({"initial-scale": "-1", "allow-zero-initial-scale": "true"}, "initial-scale",
                 ">= 0", id="initial-neg"),
    pytest.param({"initial-scale": "2147483648"}, "initial-scale", "integer", id="initial-big"),
    pytest.param({"initial-scale": "1.5"}, "initial-scale", "integer", id="initial-float"),
    pytest.param({"min-scale": "-1"}, "min-scale", ">= 0", id="min-neg"),
    pytest.param({"max-scale": "-1"}, "max-scale", ">= 0", id="max-neg"),
    pytest.param({"max-scale": "0", "max-scale-limit": "5"}, "max-scale",
                 "[1, max-scale-limit (5)]", id="max-unbounded-with-limit"),
    pytest.param({"max-scale-limit": "5"}, "max-scale", "[1, max-scale-limit (5)]",
                 id="limit-needs-max"),
    pytest.param({"max-scale": "6", "max-scale-limit": "5"}, "max-scale",
                 "[1, max-scale-limit (5)]", id="max-above-limit"),
    pytest.param({"max-scale-limit": "-1"}, "max-scale-limit", ">= 0", id="limit-neg"),
    pytest.param({"min-scale": "5", "max-scale": "3"}, "min-scale", "<= max-scale",
                 id="min-above-max"),
    pytest.param({"stable-window": "5s"}, "stable-window", "[6s, 1h]", id="window-low"),
    pytest.param({"stable-window": "5999ms"}, "stable-window", "[6s, 1h]", id="window-5999ms"),
    pytest.param({"stable-window": "1h0m1s"}, "stable-window", "[6s, 1h]", id="window-high"),
    pytest.param({"stable-window": "60.5s"}, "stable-window", "whole seconds", id="window-frac"),
    pytest.param({"stable-window": "60"}, "stable-window", "duration", id="window-no-unit"),
    pytest.param({"scale-down-delay": "-1s"}, "scale-down-delay", ">= 0s", id="delay-neg"),
    pytest.param({"scale-down-delay": "1.5s"}, "scale-down-delay", "whole seconds",
                 id="delay-frac"),
    pytest.param({"scale-down-delay": "10"}, "scale-down-delay", "duration", id="delay-no-unit"),
    pytest.param({"scale-to-zero-grace-period": "0s"}, "scale-to-zero-grace-period", "> 0s",
                 id="grace-0"),
    pytest.param({"scale-to-zero-grace-period": "-1s"}, "scale-to-zero-grace-period", "> 0s",
                 id="grace-neg"),
    pytest.param({"scale-to-zero-pod-retention-period": "-1ns"},
                 "scale-to-zero-pod-retention-period", ">= 0s", id="retention-neg"),
])
def test_an_invalid_value_is_rejected_naming_key_value_and_range(
        data: dict[str, str], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig.from_configmap(data)
    err = info.value
    assert err.key == key
    # a key not in the map shows its default (only max-scale=0 with a limit does that here)
    assert err.value == (repr(data[key]) if key in data else "0")
    assert key in str(err)
    assert allowed in err.allowed
    assert allowed in str(err)


def test_the_error_shows_the_value_as_written() -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig.from_configmap({"stable-window": "5s"})
    assert str(info.value) == (
        "config-autoscaler: stable-window='5s': out of range; "
        "allowed: a duration in [6s, 1h], whole seconds")


def test_parse_errors_come_in_upstream_key_order() -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig.from_configmap({"stable-window": "bad", "max-scale-up-rate": "bad"})
    assert info.value.key == "max-scale-up-rate"


def test_any_parse_error_fails_the_map_before_validation() -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig.from_configmap({"max-scale-up-rate": "0.5", "stable-window": "x"})
    assert info.value.key == "stable-window"


def test_validation_errors_come_in_upstream_rule_order() -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig.from_configmap({"stable-window": "5s",
                                         "scale-to-zero-grace-period": "0s"})
    assert info.value.key == "scale-to-zero-grace-period"


def test_unknown_keys_are_ignored_and_reported() -> None:
    data = {"_example": "# docs", "tick-interval": "2s", "stable-window": "30s"}
    assert AutoscalerConfig.from_configmap(data).stable_window == 30.0
    assert unknown_keys(data) == ["tick-interval"]


def test_numbers_are_not_trimmed_but_strings_are() -> None:
    with pytest.raises(ConfigError):
        AutoscalerConfig.from_configmap({"min-scale": "1 "})
    cfg = AutoscalerConfig.from_configmap({"pod-autoscaler-class": " x "})
    assert cfg.pod_autoscaler_class == "x"


def test_direct_construction_and_replace_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig(stable_window=5.0)
    assert info.value.key == "stable-window"
    assert info.value.value == "5s"
    with pytest.raises(ConfigError):
        dataclasses.replace(AutoscalerConfig(), max_scale_up_rate=math.nan)
    with pytest.raises(ConfigError):
        AutoscalerConfig(scale_down_delay=math.inf)
    assert dataclasses.replace(AutoscalerConfig(), stable_window=30.0).stable_window == 30.0


def test_config_is_immutable() -> None:
    cfg = AutoscalerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stable_window = 10.0  # type: ignore[misc]


def test_target_utilization_is_not_a_configmap_key_but_is_checked_when_constructed() -> None:
    assert AutoscalerConfig.from_configmap({"target-utilization": "0.1"}).target_utilization == 0.7
    assert AutoscalerConfig(target_utilization=0.5).target_utilization == 0.5
    with pytest.raises(ConfigError) as info:
        AutoscalerConfig(target_utilization=0.0)
    assert "(0, 1]" in str(info.value)
