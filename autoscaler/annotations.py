"""Per-revision ``autoscaling.knative.dev/*`` annotations: keys, validation and readers.

What belongs here is everything about the annotation *text*: the key names with their
camelCase aliases and lookup priority (upstream ``pkg/apis/autoscaling/register.go``, ``kmap``),
the admission rules (``annotation_validation.go``, plus the
``serving.knative.dev/progress-deadline`` rule from ``revision_validation.go``), and the
readers the reconciler uses (``v1alpha1/pa_lifecycle.go``). Resolving annotations against
``config-autoscaler`` into the numbers the autoscaler runs on lives in :mod:`autoscaler.config`.

Two rules shape the readers and must not be "fixed":

* lookup goes through a priority list and the first key *present* wins, even if its value is
  malformed and a later alias holds a good one;
* a reader that cannot parse the winning value reports "absent" (``None``), so the
  ``config-autoscaler`` value applies. Validation is what rejects bad values, at admission.

One deliberate difference from upstream: ``NaN`` parses as a Go float but is rejected by
validation and read as absent (upstream lets it through some range checks and then computes
garbage).

Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoscaler.goparse import (
    HOUR,
    SECOND,
    GoParseError,
    GoRangeError,
    parse_duration,
    parse_float,
    parse_int,
    round_duration,
    truncate_duration,
)

if TYPE_CHECKING:  # only for type hints: config imports this module
    from autoscaler.config import AutoscalerConfig

__all__ = [
    "ACTIVATION_SCALE",
    "AnnotationError",
    "AnnotationsInvalid",
    "CLASS",
    "CONCURRENCY",
    "GROUP",
    "HPA",
    "INITIAL_SCALE",
    "KPA",
    "LINEAR",
    "MAX_SCALE",
    "METRIC",
    "METRIC_AGGREGATION_ALGORITHM",
    "MIN_SCALE",
    "PANIC_THRESHOLD_PERCENTAGE",
    "PANIC_WINDOW_PERCENTAGE",
    "PROGRESS_DEADLINE",
    "RPS",
    "SCALE_DOWN_DELAY",
    "SCALE_TO_ZERO_POD_RETENTION_PERIOD",
    "TARGET",
    "TARGET_BURST_CAPACITY",
    "TARGET_UTILIZATION_PERCENTAGE",
    "WEIGHTED_EXPONENTIAL",
    "WINDOW",
    "aggregation_algorithm",
    "autoscaler_class",
    "check_annotations",
    "lookup",
    "metric",
    "read_duration",
    "read_float",
    "read_int32",
    "validate_annotations",
]

logger = logging.getLogger(__name__)

GROUP = "autoscaling.knative.dev"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
_DOMAIN = ".knative.dev"

CONCURRENCY = "concurrency"
RPS = "rps"
CPU = "cpu"
LINEAR = "linear"
WEIGHTED_EXPONENTIAL = "weighted-exponential"
WEIGHTED_EXPONENTIAL_ALT = "weightedExponential"

TARGET_MIN = 0.01
WINDOW_MIN = 6 * SECOND
WINDOW_MAX = 1 * HOUR
INT32_MAX = 2**31 - 1

# Each knob is a priority list: the kebab-case key first, then its camelCase alias.
CLASS = (f"{GROUP}/class",)
METRIC = (f"{GROUP}/metric",)
TARGET = (f"{GROUP}/target",)
TARGET_UTILIZATION_PERCENTAGE = (
    f"{GROUP}/target-utilization-percentage",
    f"{GROUP}/targetUtilizationPercentage",
)
TARGET_BURST_CAPACITY = (f"{GROUP}/target-burst-capacity", f"{GROUP}/targetBurstCapacity")
WINDOW = (f"{GROUP}/window",)
PANIC_WINDOW_PERCENTAGE = (f"{GROUP}/panic-window-percentage", f"{GROUP}/panicWindowPercentage")
PANIC_THRESHOLD_PERCENTAGE = (
    f"{GROUP}/panic-threshold-percentage",
    f"{GROUP}/panicThresholdPercentage",
)
MIN_SCALE = (f"{GROUP}/min-scale", f"{GROUP}/minScale")
MAX_SCALE = (f"{GROUP}/max-scale", f"{GROUP}/maxScale")
INITIAL_SCALE = (f"{GROUP}/initial-scale", f"{GROUP}/initialScale")
ACTIVATION_SCALE = (f"{GROUP}/activation-scale",)
SCALE_DOWN_DELAY = (f"{GROUP}/scale-down-delay", f"{GROUP}/scaleDownDelay")
SCALE_TO_ZERO_POD_RETENTION_PERIOD = (
    f"{GROUP}/scale-to-zero-pod-retention-period",
    f"{GROUP}/scaleToZeroPodRetentionPeriod",
)
METRIC_AGGREGATION_ALGORITHM = (
    f"{GROUP}/metric-aggregation-algorithm",
    f"{GROUP}/metricAggregationAlgorithm",
)
PROGRESS_DEADLINE = ("serving.knative.dev/progress-deadline",)


def lookup(annotations: Mapping[str, str], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """(key, value) for the first key of ``keys`` present in ``annotations``, else None."""
    for key in keys:
        if key in annotations:
            return key, annotations[key]
    return None


# --- readers: an unparsable value reads as absent ------------------------------------------

def read_int32(annotations: Mapping[str, str], keys: tuple[str, ...]) -> int | None:
    found = lookup(annotations, keys)
    if found is None:
        return None
    try:
        return parse_int(found[1], 32)
    except GoParseError:
        return None


def read_float(annotations: Mapping[str, str], keys: tuple[str, ...]) -> float | None:
    found = lookup(annotations, keys)
    if found is None:
        return None
    try:
        value = parse_float(found[1])
    except GoParseError:
        return None
    return None if math.isnan(value) else value


def read_duration(annotations: Mapping[str, str], keys: tuple[str, ...]) -> float | None:
    """The duration in float seconds, or None when absent or not a Go duration."""
    found = lookup(annotations, keys)
    if found is None:
        return None
    try:
        return parse_duration(found[1]) / SECOND
    except GoParseError:
        return None


def autoscaler_class(annotations: Mapping[str, str], default: str) -> str:
    """The class annotation, else ``default`` (the PA defaulting webhook stamps the config's)."""
    found = lookup(annotations, CLASS)
    return found[1] if found else default


def metric(annotations: Mapping[str, str], klass: str) -> str:
    """The metric annotation as written, else the class default (KPA: concurrency, HPA: cpu)."""
    found = lookup(annotations, METRIC)
    if found is not None:
        return found[1]
    return {KPA: CONCURRENCY, HPA: CPU}.get(klass, "")


def aggregation_algorithm(annotations: Mapping[str, str]) -> str:
    """``weighted-exponential`` (either spelling) or ``linear`` (absent, empty or unknown)."""
    found = lookup(annotations, METRIC_AGGREGATION_ALGORITHM)
    if found is not None and found[1] in (WEIGHTED_EXPONENTIAL, WEIGHTED_EXPONENTIAL_ALT):
        return WEIGHTED_EXPONENTIAL
    return LINEAR


# --- validation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotationError:
    """One rejected annotation: the key, the value as written, what is wrong, what is allowed."""

    key: str
    value: str
    problem: str
    allowed: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.problem}; allowed: {self.allowed}"


class AnnotationsInvalid(ValueError):
    """Raised by :func:`check_annotations`; ``errors`` lists every problem found."""

    def __init__(self, errors: list[AnnotationError]) -> None:
        super().__init__("invalid annotations: " + "; ".join(str(e) for e in errors))
        self.errors = errors


def _float_rule(
    annotations: Mapping[str, str], keys: tuple[str, ...], allowed: str, ok: Callable[[float], bool]
) -> list[AnnotationError]:
    found = lookup(annotations, keys)
    if found is None:
        return []
    key, raw = found
    try:
        value = parse_float(raw)
    except GoParseError as exc:
        return [AnnotationError(key, raw, f"not a number ({exc.reason})", allowed)]
    if math.isnan(value):
        return [AnnotationError(key, raw, "NaN is not a usable value", allowed)]
    if not ok(value):
        return [AnnotationError(key, raw, "out of range", allowed)]
    return []


def _validate_class(annotations: Mapping[str, str]) -> list[AnnotationError]:
    found = lookup(annotations, CLASS)
    if found and found[1].endswith(_DOMAIN) and found[1] not in (KPA, HPA):
        return [AnnotationError(found[0], found[1], "unknown knative.dev autoscaler class",
                                f"{KPA}, {HPA}, or a class outside *{_DOMAIN}")]
    return []


def _int_ge0(annotations: Mapping[str, str], keys: tuple[str, ...],
             errors: list[AnnotationError]) -> int:
    found = lookup(annotations, keys)
    if found is None:
        return 0
    key, raw = found
    allowed = f"an integer in [0, {INT32_MAX}]"
    try:
        value = parse_int(raw, 32)
    except GoRangeError:
        errors.append(AnnotationError(key, raw, "out of range", allowed))
        return 0
    except GoParseError:
        errors.append(AnnotationError(key, raw, "not an integer", allowed))
        return 0
    if value < 0:
        errors.append(AnnotationError(key, raw, "out of range", allowed))
        return 0
    return value


def _validate_min_max_scale(config: AutoscalerConfig,
                            annotations: Mapping[str, str]) -> list[AnnotationError]:
    errors: list[AnnotationError] = []
    lo = _int_ge0(annotations, MIN_SCALE, errors)
    hi = _int_ge0(annotations, MAX_SCALE, errors)
    found_max = lookup(annotations, MAX_SCALE)
    if found_max is not None and hi != 0 and hi < lo:
        errors.append(AnnotationError(
            found_max[0], found_max[1], f"max-scale={hi} is less than min-scale={lo}",
            f"0 (unbounded) or at least min-scale ({MIN_SCALE[0]})"))
    limit = config.max_scale_limit
    if found_max is not None and limit != 0:
        key = found_max[0]
        if hi > limit:
            errors.append(AnnotationError(key, found_max[1], "above max-scale-limit",
                                          f"[1, {limit}] (config-autoscaler max-scale-limit)"))
        if hi == 0:
            errors.append(AnnotationError(key, found_max[1],
                                          "0 (unlimited) is not allowed with a max-scale-limit",
                                          f"[1, {limit}] (config-autoscaler max-scale-limit)"))
    found_as = lookup(annotations, ACTIVATION_SCALE)
    if found_as is not None:
        key, raw = found_as
        allowed = "an integer >= 2, >= min-scale, and <= max-scale when max-scale > 0"
        try:
            nz = parse_int(raw, 32)
        except GoParseError as exc:
            errors.append(AnnotationError(key, raw, f"not an int32 ({exc.reason})", allowed))
        else:
            if lo > nz:
                errors.append(AnnotationError(
                    key, raw, f"min-scale={lo} is greater than activation-scale={nz}", allowed))
            elif hi < nz and hi != 0:
                errors.append(AnnotationError(
                    key, raw, f"max-scale={hi} is less than activation-scale={nz}", allowed))
            elif nz < 2:
                errors.append(AnnotationError(
                    key, raw, f"activation-scale={nz} must be greater than 1", allowed))
    return errors


def _validate_floats(annotations: Mapping[str, str]) -> list[AnnotationError]:
    return [
        *_float_rule(annotations, PANIC_WINDOW_PERCENTAGE, "a number in [1, 100]",
                     lambda v: 1.0 <= v <= 100.0),
        *_float_rule(annotations, PANIC_THRESHOLD_PERCENTAGE, "a number in [110, 1000]",
                     lambda v: 110.0 <= v <= 1000.0),
        *_float_rule(annotations, TARGET, f"a number >= {TARGET_MIN:g}",
                     lambda v: v >= TARGET_MIN),
        *_float_rule(annotations, TARGET_UTILIZATION_PERCENTAGE, "a number in [1, 100]",
                     lambda v: 1.0 <= v <= 100.0),
        *_float_rule(annotations, TARGET_BURST_CAPACITY, "a number >= 0, or -1 (unlimited)",
                     lambda v: v >= 0 or v == -1),
    ]


def _duration_rule(annotations: Mapping[str, str], keys: tuple[str, ...], lo: int, hi: int,
                   whole_seconds: bool, allowed: str) -> list[AnnotationError]:
    found = lookup(annotations, keys)
    if found is None:
        return []
    key, raw = found
    try:
        d = parse_duration(raw)
    except GoParseError as exc:
        return [AnnotationError(key, raw, f"not a duration ({exc.reason})", allowed)]
    if d < lo or d > hi:
        return [AnnotationError(key, raw, "out of range", allowed)]
    if whole_seconds and round_duration(d, SECOND) != d:
        return [AnnotationError(key, raw, "must be specified with at most second precision",
                                allowed)]
    return []


def _validate_metric(config: AutoscalerConfig,
                     annotations: Mapping[str, str]) -> list[AnnotationError]:
    found = lookup(annotations, METRIC)
    if found is None:
        return []
    metric = found[1]
    klass_found = lookup(annotations, CLASS)
    klass = klass_found[1] if klass_found else config.pod_autoscaler_class
    if klass == KPA and metric not in (CONCURRENCY, RPS):
        return [AnnotationError(METRIC[0], metric, "not a KPA metric",
                                f"{CONCURRENCY} or {RPS} (class {KPA})")]
    if klass == HPA and metric == "":
        return [AnnotationError(METRIC[0], metric, "empty metric", f"any non-empty metric "
                                f"(class {HPA})")]
    return []


def _validate_algorithm(annotations: Mapping[str, str]) -> list[AnnotationError]:
    klass = lookup(annotations, CLASS)
    if klass is None or klass[1] != KPA:  # other autoscalers may define their own values
        return []
    found = lookup(annotations, METRIC_AGGREGATION_ALGORITHM)
    if found is None or found[1] == "":
        return []
    if found[1] not in (LINEAR, WEIGHTED_EXPONENTIAL, WEIGHTED_EXPONENTIAL_ALT):
        return [AnnotationError(found[0], found[1], "unknown aggregation algorithm",
                                f"{LINEAR}, {WEIGHTED_EXPONENTIAL} or {WEIGHTED_EXPONENTIAL_ALT}")]
    return []


def _validate_initial_scale(config: AutoscalerConfig,
                            annotations: Mapping[str, str]) -> list[AnnotationError]:
    found = lookup(annotations, INITIAL_SCALE)
    if found is None:
        return []
    key, raw = found
    allowed = ("an integer >= 0" if config.allow_zero_initial_scale else
               "an integer >= 1 (0 needs allow-zero-initial-scale in config-autoscaler)")
    try:
        value = parse_int(raw, 64)  # upstream validates with Atoi (int64), reads as int32
    except GoParseError as exc:
        return [AnnotationError(key, raw, f"not an integer ({exc.reason})", allowed)]
    if value < 0:
        return [AnnotationError(key, raw, "negative", allowed)]
    if value == 0 and not config.allow_zero_initial_scale:
        return [AnnotationError(key, raw, "0 is not allowed by the cluster", allowed)]
    return []


def _validate_progress_deadline(annotations: Mapping[str, str]) -> list[AnnotationError]:
    found = lookup(annotations, PROGRESS_DEADLINE)
    if found is None or found[1] == "":
        return []
    key, raw = found
    allowed = "a duration >= 0s in whole seconds"
    try:
        d = parse_duration(raw)
    except GoParseError as exc:
        return [AnnotationError(key, raw, f"not a duration ({exc.reason})", allowed)]
    if round_duration(d, SECOND) != d:
        return [AnnotationError(key, raw, "not at second precision", allowed)]
    if d < 0:
        return [AnnotationError(key, raw, "negative", allowed)]
    return []


def validate_annotations(annotations: Mapping[str, str],
                         config: AutoscalerConfig) -> list[AnnotationError]:
    """Every problem with the autoscaling annotations, in upstream's order; [] when valid."""
    window_allowed = "a duration in [6s, 1h], whole seconds"
    errors = [
        *_validate_class(annotations),
        *_validate_min_max_scale(config, annotations),
        *_validate_floats(annotations),
    ]
    found_window = lookup(annotations, WINDOW)
    if found_window is not None:
        # upstream checks whole seconds with Truncate here (Round elsewhere); same verdict
        # for the in-range, positive durations that reach that check.
        raw = found_window[1]
        try:
            d = parse_duration(raw)
        except GoParseError as exc:
            errors.append(AnnotationError(WINDOW[0], raw, f"not a duration ({exc.reason})",
                                          window_allowed))
        else:
            if d < WINDOW_MIN or d > WINDOW_MAX:
                errors.append(AnnotationError(WINDOW[0], raw, "out of range", window_allowed))
            elif truncate_duration(d, SECOND) != d:
                errors.append(AnnotationError(
                    WINDOW[0], raw, "must be specified with at most second precision",
                    window_allowed))
    errors += _duration_rule(annotations, SCALE_TO_ZERO_POD_RETENTION_PERIOD, 0, WINDOW_MAX,
                             False, "a duration in [0s, 1h]")
    errors += _duration_rule(annotations, SCALE_DOWN_DELAY, 0, WINDOW_MAX, True,
                             "a duration in [0s, 1h], whole seconds")
    errors += _validate_metric(config, annotations)
    errors += _validate_algorithm(annotations)
    errors += _validate_initial_scale(config, annotations)
    errors += _validate_progress_deadline(annotations)
    return errors


def check_annotations(annotations: Mapping[str, str], config: AutoscalerConfig) -> None:
    """Raise :class:`AnnotationsInvalid` listing every problem, or return when valid."""
    errors = validate_annotations(annotations, config)
    if errors:
        raise AnnotationsInvalid(errors)
