"""Annotation validation (all errors, each naming the key, the value and the allowed range)
and readers (first present key wins; an unparsable value reads as absent)."""
from __future__ import annotations

import pytest

from autoscaler import annotations as ann
from autoscaler.annotations import (
    AnnotationsInvalid,
    check_annotations,
    lookup,
    read_duration,
    read_float,
    read_int32,
    validate_annotations,
)
from autoscaler.config import AutoscalerConfig

G = "autoscaling.knative.dev"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
CLASS, METRIC, TARGET = f"{G}/class", f"{G}/metric", f"{G}/target"
MIN, MAX, INITIAL, ACTIVATION = f"{G}/min-scale", f"{G}/max-scale", f"{G}/initial-scale", \
    f"{G}/activation-scale"
PWP, PTP, TU, TBC = (f"{G}/panic-window-percentage", f"{G}/panic-threshold-percentage",
                     f"{G}/target-utilization-percentage", f"{G}/target-burst-capacity")
WINDOW, DELAY, RETENTION, ALGO = (f"{G}/window", f"{G}/scale-down-delay",
                                  f"{G}/scale-to-zero-pod-retention-period",
                                  f"{G}/metric-aggregation-algorithm")
DEADLINE = "serving.knative.dev/progress-deadline"

DEFAULT = AutoscalerConfig()
LIMIT_10 = AutoscalerConfig(max_scale_limit=10, max_scale=1)
ZERO_OK = AutoscalerConfig(allow_zero_initial_scale=True)
HPA_DEFAULT = AutoscalerConfig(pod_autoscaler_class=HPA)


@pytest.mark.parametrize(("annotations", "config"), [
    pytest.param({}, DEFAULT, id="empty"),
    pytest.param({CLASS: "some.other.domain"}, DEFAULT, id="non-knative-class"),
    pytest.param({MIN: "0", MAX: "0"}, DEFAULT, id="min-max-0"),
    pytest.param({MIN: "2", MAX: "5"}, DEFAULT, id="min-2-max-5"),
    pytest.param({f"{G}/minScale": "5"}, DEFAULT, id="camel-min"),
    pytest.param({MAX: "9"}, LIMIT_10, id="max-within-limit"),
    pytest.param({}, AutoscalerConfig(max_scale_limit=10, max_scale=10), id="limit-no-annotation"),
    pytest.param({MIN: "1", ACTIVATION: "2", MAX: "3"}, DEFAULT, id="activation-between"),
    pytest.param({ALGO: "linear", CLASS: KPA}, DEFAULT, id="algo-linear"),
    pytest.param({ALGO: "weightedExponential", CLASS: KPA}, DEFAULT, id="algo-camel"),
    pytest.param({ALGO: "", CLASS: KPA}, DEFAULT, id="algo-empty"),
    pytest.param({ALGO: "random-selection", CLASS: "of-keys"}, DEFAULT, id="algo-other-class"),
    pytest.param({ALGO: "random-selection"}, DEFAULT, id="algo-no-explicit-class"),
    pytest.param({PTP: "210", PWP: "1", TU: "100", TARGET: "0.01"}, DEFAULT, id="floats-edges"),
    pytest.param({TBC: "0"}, DEFAULT, id="tbc-0"),
    pytest.param({TBC: "-1"}, DEFAULT, id="tbc--1"),
    pytest.param({TBC: "19870709"}, DEFAULT, id="tbc-big"),
    pytest.param({WINDOW: "6s"}, DEFAULT, id="window-6s"),
    pytest.param({WINDOW: "1h", CLASS: "test"}, DEFAULT, id="window-1h"),
    pytest.param({RETENTION: "0"}, DEFAULT, id="retention-0"),
    pytest.param({RETENTION: "21m31.5s"}, DEFAULT, id="retention-subsecond"),
    pytest.param({DELAY: "0"}, DEFAULT, id="delay-0"),
    pytest.param({DELAY: "1h"}, DEFAULT, id="delay-1h"),
    pytest.param({METRIC: "rps"}, DEFAULT, id="kpa-rps"),
    pytest.param({METRIC: "concurrency"}, DEFAULT, id="kpa-concurrency"),
    pytest.param({CLASS: HPA, METRIC: "cpu"}, DEFAULT, id="hpa-cpu"),
    pytest.param({METRIC: "cpu"}, HPA_DEFAULT, id="cluster-default-hpa-cpu"),
    pytest.param({CLASS: "other", METRIC: "whatever"}, DEFAULT, id="other-class-metric"),
    pytest.param({INITIAL: "0"}, ZERO_OK, id="initial-0-allowed"),
    pytest.param({INITIAL: "2"}, DEFAULT, id="initial-2"),
    pytest.param({INITIAL: "3000000000"}, DEFAULT, id="initial-beyond-int32-passes-atoi"),
    pytest.param({DEADLINE: "1m3s"}, DEFAULT, id="deadline"),
    pytest.param({DEADLINE: "0s"}, DEFAULT, id="deadline-0"),
    pytest.param({DEADLINE: ""}, DEFAULT, id="deadline-empty-is-unset"),
    pytest.param({PTP: "125", PWP: "75", MIN: "5", MAX: "8", WINDOW: "1984s"}, DEFAULT,
                 id="all-together-succeed"),
])
def test_valid_annotations_have_no_errors(annotations: dict[str, str],
                                          config: AutoscalerConfig) -> None:
    assert validate_annotations(annotations, config) == []
    check_annotations(annotations, config)


@pytest.mark.parametrize(("annotations", "config", "expected"), [
    pytest.param({CLASS: "unsupported.knative.dev"}, DEFAULT, [(CLASS, KPA)], id="class"),
    pytest.param({MIN: "-1"}, DEFAULT, [(MIN, "[0, 2147483647]")], id="min-neg"),
    pytest.param({MAX: "2147483648"}, DEFAULT, [(MAX, "[0, 2147483647]")], id="max-huge"),
    pytest.param({f"{G}/maxScale": "-1"}, DEFAULT, [(f"{G}/maxScale", "[0, 2147483647]")],
                 id="camel-max-neg"),
    pytest.param({MIN: "foo"}, DEFAULT, [(MIN, "[0, 2147483647]")], id="min-foo"),
    pytest.param({MAX: "bar", MIN: "bar"}, DEFAULT, [(MIN, "integer"), (MAX, "integer")],
                 id="both-bar"),
    pytest.param({MIN: "5", MAX: "2"}, DEFAULT, [(MAX, "at least min-scale")], id="max<min"),
    pytest.param({MAX: "11"}, LIMIT_10, [(MAX, "[1, 10]")], id="above-limit"),
    pytest.param({MAX: "0"}, LIMIT_10, [(MAX, "[1, 10]")], id="unlimited-with-limit"),
    pytest.param({MIN: "3", ACTIVATION: "2"}, DEFAULT, [(ACTIVATION, ">= min-scale")],
                 id="activation<min"),
    pytest.param({MAX: "1", ACTIVATION: "2"}, DEFAULT, [(ACTIVATION, "<= max-scale")],
                 id="activation>max"),
    pytest.param({ACTIVATION: "1"}, DEFAULT, [(ACTIVATION, ">= 2")], id="activation-1"),
    pytest.param({ACTIVATION: "two"}, DEFAULT, [(ACTIVATION, ">= 2")], id="activation-text"),
    pytest.param({ALGO: "random-selection", CLASS: KPA}, DEFAULT, [(ALGO, "linear")],
                 id="algo-kpa"),
    pytest.param({f"{G}/metricAggregationAlgorithm": "x", CLASS: KPA}, DEFAULT,
                 [(f"{G}/metricAggregationAlgorithm", "weighted-exponential")], id="algo-camel"),
    pytest.param({PWP: "-1"}, DEFAULT, [(PWP, "[1, 100]")], id="pwp-neg"),
    pytest.param({PWP: "202"}, DEFAULT, [(PWP, "[1, 100]")], id="pwp-202"),
    pytest.param({PWP: "fifty"}, DEFAULT, [(PWP, "[1, 100]")], id="pwp-text"),
    pytest.param({PTP: "109"}, DEFAULT, [(PTP, "[110, 1000]")], id="ptp-109"),
    pytest.param({PTP: "1000.5"}, DEFAULT, [(PTP, "[110, 1000]")], id="ptp-high"),
    pytest.param({PTP: "NaN"}, DEFAULT, [(PTP, "[110, 1000]")], id="ptp-nan"),
    pytest.param({TARGET: "0"}, DEFAULT, [(TARGET, ">= 0.01")], id="target-0"),
    pytest.param({TARGET: "100}"}, DEFAULT, [(TARGET, ">= 0.01")], id="target-text"),
    pytest.param({TARGET: "NaN"}, DEFAULT, [(TARGET, ">= 0.01")], id="target-nan"),
    pytest.param({TBC: "-11"}, DEFAULT, [(TBC, "-1")], id="tbc-neg"),
    pytest.param({TBC: "qarashen"}, DEFAULT, [(TBC, "-1")], id="tbc-text"),
    pytest.param({TU: "0"}, DEFAULT, [(TU, "[1, 100]")], id="tu-0"),
    pytest.param({TU: "101"}, DEFAULT, [(TU, "[1, 100]")], id="tu-101"),
    pytest.param({WINDOW: "jerry"}, DEFAULT, [(WINDOW, "[6s, 1h]")], id="window-text"),
    pytest.param({WINDOW: "5s"}, DEFAULT, [(WINDOW, "[6s, 1h]")], id="window-short"),
    pytest.param({WINDOW: "365h", CLASS: KPA}, DEFAULT, [(WINDOW, "[6s, 1h]")], id="window-long"),
    pytest.param({WINDOW: "1m9s82ms"}, DEFAULT, [(WINDOW, "whole seconds")], id="window-ms"),
    pytest.param({RETENTION: "311m"}, DEFAULT, [(RETENTION, "[0s, 1h]")], id="retention-long"),
    pytest.param({RETENTION: "-42s"}, DEFAULT, [(RETENTION, "[0s, 1h]")], id="retention-neg"),
    pytest.param({RETENTION: "twenty"}, DEFAULT, [(RETENTION, "[0s, 1h]")], id="retention-text"),
    pytest.param({DELAY: "311m"}, DEFAULT, [(DELAY, "[0s, 1h]")], id="delay-long"),
    pytest.param({DELAY: "42.5s"}, DEFAULT, [(DELAY, "whole seconds")], id="delay-precise"),
    pytest.param({DELAY: "-42s"}, DEFAULT, [(DELAY, "[0s, 1h]")], id="delay-neg"),
    pytest.param({f"{G}/scaleDownDelay": "x"}, DEFAULT, [(f"{G}/scaleDownDelay", "[0s, 1h]")],
                 id="delay-camel"),
    pytest.param({METRIC: "cpu"}, DEFAULT, [(METRIC, "concurrency or rps")], id="kpa-cpu"),
    pytest.param({METRIC: "", CLASS: HPA}, DEFAULT, [(METRIC, "non-empty")], id="hpa-empty"),
    pytest.param({INITIAL: "0"}, DEFAULT, [(INITIAL, "allow-zero-initial-scale")],
                 id="initial-0"),
    pytest.param({INITIAL: "-1"}, DEFAULT, [(INITIAL, "integer")], id="initial-neg"),
    pytest.param({INITIAL: "invalid"}, DEFAULT, [(INITIAL, "integer")], id="initial-text"),
    pytest.param({DEADLINE: "1m3s34ms"}, DEFAULT, [(DEADLINE, "whole seconds")],
                 id="deadline-precise"),
    pytest.param({DEADLINE: "-1s"}, DEFAULT, [(DEADLINE, ">= 0s")], id="deadline-neg"),
    pytest.param({DEADLINE: "soon"}, DEFAULT, [(DEADLINE, ">= 0s")], id="deadline-text"),
    pytest.param({PTP: "fifty", PWP: "-11", MIN: "-4", MAX: "never"}, DEFAULT,
                 [(MIN, "[0, 2147483647]"), (MAX, "[0, 2147483647]"), (PWP, "[1, 100]"),
                  (PTP, "[110, 1000]")], id="all-together-fail"),
])
def test_every_invalid_annotation_is_reported_with_key_value_and_range(
        annotations: dict[str, str], config: AutoscalerConfig,
        expected: list[tuple[str, str]]) -> None:
    errors = validate_annotations(annotations, config)
    assert [e.key for e in errors] == [key for key, _ in expected]
    for error, (key, allowed) in zip(errors, expected):
        assert allowed in error.allowed
        text = str(error)
        assert text.startswith(f"{key}=")
        assert allowed in text
        if key in annotations:
            assert error.value == annotations[key]
            assert repr(annotations[key]) in text
    with pytest.raises(AnnotationsInvalid) as info:
        check_annotations(annotations, config)
    assert info.value.errors == errors


def test_the_kebab_key_wins_even_when_its_value_is_bad_and_the_alias_is_good() -> None:
    annotations = {MIN: "bad", f"{G}/minScale": "3"}
    assert lookup(annotations, ann.MIN_SCALE) == (MIN, "bad")
    assert read_int32(annotations, ann.MIN_SCALE) is None
    assert [e.key for e in validate_annotations(annotations, DEFAULT)] == [MIN]


def test_the_alias_is_read_when_the_kebab_key_is_absent() -> None:
    annotations = {f"{G}/targetBurstCapacity": "-1", f"{G}/initialScale": "4",
                   f"{G}/scaleToZeroPodRetentionPeriod": "90s",
                   f"{G}/panicThresholdPercentage": "150"}
    assert read_float(annotations, ann.TARGET_BURST_CAPACITY) == -1.0
    assert read_int32(annotations, ann.INITIAL_SCALE) == 4
    assert read_duration(annotations, ann.SCALE_TO_ZERO_POD_RETENTION_PERIOD) == 90.0
    assert read_float(annotations, ann.PANIC_THRESHOLD_PERCENTAGE) == 150.0


@pytest.mark.parametrize(("reader", "keys", "value", "want"), [
    (read_int32, ann.MAX_SCALE, "7", 7),
    (read_int32, ann.MAX_SCALE, "-7", -7),          # readers do not validate ranges
    (read_int32, ann.MAX_SCALE, "2147483648", None),
    (read_int32, ann.MAX_SCALE, "7.0", None),
    (read_int32, ann.MAX_SCALE, " 7", None),
    (read_float, ann.TARGET, "1e2", 100.0),
    (read_float, ann.TARGET, "Inf", float("inf")),
    (read_float, ann.TARGET, "NaN", None),
    (read_float, ann.TARGET, "1e400", None),
    (read_float, ann.TARGET, "ten", None),
    (read_duration, ann.WINDOW, "1m30s", 90.0),
    (read_duration, ann.WINDOW, "1500ms", 1.5),
    (read_duration, ann.WINDOW, "90", None),
    (read_duration, ann.PROGRESS_DEADLINE, "0", 0.0),
])
def test_readers_parse_like_upstream_and_read_garbage_as_absent(
        reader: object, keys: tuple[str, ...], value: str, want: object) -> None:
    assert reader({keys[0]: value}, keys) == want  # type: ignore[operator]
    assert reader({}, keys) is None  # type: ignore[operator]


@pytest.mark.parametrize(("annotations", "want"), [
    ({}, "linear"),
    ({ALGO: "linear"}, "linear"),
    ({ALGO: "weighted-exponential"}, "weighted-exponential"),
    ({ALGO: "weightedExponential"}, "weighted-exponential"),
    ({f"{G}/metricAggregationAlgorithm": "weightedExponential"}, "weighted-exponential"),
    ({ALGO: "WEIGHTED-EXPONENTIAL"}, "linear"),
    ({ALGO: ""}, "linear"),
])
def test_aggregation_algorithm_normalises_the_alias(annotations: dict[str, str],
                                                     want: str) -> None:
    assert ann.aggregation_algorithm(annotations) == want


def test_class_and_metric_defaults() -> None:
    assert ann.autoscaler_class({}, KPA) == KPA
    assert ann.autoscaler_class({CLASS: HPA}, KPA) == HPA
    assert ann.metric({}, KPA) == "concurrency"
    assert ann.metric({}, HPA) == "cpu"
    assert ann.metric({}, "custom") == ""
    assert ann.metric({METRIC: "rps"}, HPA) == "rps"
