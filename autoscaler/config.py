"""``config-autoscaler``: the cluster-wide knobs, their defaults, parsing and validation.

:class:`AutoscalerConfig` is upstream's ``autoscalerconfig.Config`` (``pkg/autoscaler/config``):
defaults -> parse (Go semantics, :mod:`autoscaler.goparse`) -> legacy percentage rule ->
validate, in upstream's order, so that the first error reported is the one upstream reports.
Durations are float seconds. :class:`ConfigStore` holds the config in force and applies an
update only when it is valid. The last section resolves the config together with one
revision's annotations (:mod:`autoscaler.annotations`) into :class:`RevisionScaling`, the frozen
set of numbers the decider, the scaler and the simulator run on.

Errors: ``ConfigError`` (a ``ValueError``) names the key, the value as written, and what is
allowed. Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import NoReturn
from dataclasses import InitVar, dataclass

from autoscaler import annotations as ann
from autoscaler.goparse import (
    HOUR,
    SECOND,
    GoParseError,
    float_to_int64,
    format_duration,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    round_duration,
)
from autoscaler.spec import DeciderSpec

__all__ = [
    "CONFIG_KEYS",
    "CONFIG_NAME",
    "DEFAULT_PROGRESS_DEADLINE",
    "AutoscalerConfig",
    "ConfigError",
    "ConfigStore",
    "RevisionScaling",
    "make_decider_spec",
    "panic_window",
    "resolve_metric_target",
    "resolve_revision",
    "unknown_keys",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config-autoscaler"
KPA_CLASS = "kpa.autoscaling.knative.dev"
TARGET_MIN = 0.01
WINDOW_MIN = 6 * SECOND
WINDOW_MAX = 1 * HOUR
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# (ConfigMap key, field, kind), in upstream's parse order: the first bad key fails the map.
_KEYS: tuple[tuple[str, str, str], ...] = (
    ("pod-autoscaler-class", "pod_autoscaler_class", "str"),
    ("enable-scale-to-zero", "enable_scale_to_zero", "bool"),
    ("allow-zero-initial-scale", "allow_zero_initial_scale", "bool"),
    ("max-scale-up-rate", "max_scale_up_rate", "float"),
    ("max-scale-down-rate", "max_scale_down_rate", "float"),
    ("container-concurrency-target-percentage", "container_concurrency_target_fraction", "float"),
    ("container-concurrency-target-default", "container_concurrency_target_default", "float"),
    ("requests-per-second-target-default", "rps_target_default", "float"),
    ("target-burst-capacity", "target_burst_capacity", "float"),
    ("panic-window-percentage", "panic_window_percentage", "float"),
    ("activator-capacity", "activator_capacity", "float"),
    ("panic-threshold-percentage", "panic_threshold_percentage", "float"),
    ("initial-scale", "initial_scale", "int32"),
    ("min-scale", "min_scale", "int32"),
    ("max-scale", "max_scale", "int32"),
    ("max-scale-limit", "max_scale_limit", "int32"),
    ("stable-window", "stable_window", "duration"),
    ("scale-down-delay", "scale_down_delay", "duration"),
    ("scale-to-zero-grace-period", "scale_to_zero_grace_period", "duration"),
    ("scale-to-zero-pod-retention-period", "scale_to_zero_pod_retention_period", "duration"),
)
CONFIG_KEYS: frozenset[str] = frozenset(key for key, _, _ in _KEYS)
_KEY_OF = {name: key for key, name, _ in _KEYS}
_KIND_OF = {name: kind for _, name, kind in _KEYS}


class ConfigError(ValueError):
    """An invalid ``config-autoscaler``: which key, the value, what is wrong, what is allowed."""

    def __init__(self, key: str, value: str, problem: str, allowed: str) -> None:
        super().__init__(f"{CONFIG_NAME}: {key}={value}: {problem}; allowed: {allowed}")
        self.key = key
        self.value = value
        self.problem = problem
        self.allowed = allowed


@dataclass(frozen=True)
class _Source:
    """What from_configmap read: the raw strings and the exact durations in nanoseconds."""

    raw: Mapping[str, str]
    nanos: Mapping[str, int]


@dataclass(frozen=True)
class AutoscalerConfig:
    """The ``config-autoscaler`` ConfigMap, parsed and validated (upstream defaults).

    Construct with :meth:`from_configmap`; direct construction (and ``dataclasses.replace``)
    validates too and raises :class:`ConfigError`.
    """

    enable_scale_to_zero: bool = True
    """``enable-scale-to-zero``: if false, a desired 0 becomes 1."""
    container_concurrency_target_fraction: float = 0.7
    """``container-concurrency-target-percentage`` as a fraction (70 -> 0.7; legacy: a value
    <= 1 is already a fraction, so "1.5" means 1.5 %). Concurrency metric only."""
    container_concurrency_target_default: float = 100.0
    """``container-concurrency-target-default``: total when containerConcurrency is 0."""
    target_utilization: float = 0.7
    """Utilisation for the rps metric. Not a ConfigMap key upstream (only an annotation)."""
    rps_target_default: float = 200.0
    """``requests-per-second-target-default``: total for the rps metric."""
    target_burst_capacity: float = 211.0
    """``target-burst-capacity``: spare capacity to keep; -1 = activator always in path."""
    activator_capacity: float = 100.0
    """``activator-capacity``: concurrent requests one activator takes (subsetting)."""
    allow_zero_initial_scale: bool = False
    """``allow-zero-initial-scale``: permits initial-scale 0 in config and annotation."""
    initial_scale: int = 1
    """``initial-scale``: default initial replica count."""
    min_scale: int = 0
    """``min-scale``: default lower bound."""
    max_scale: int = 0
    """``max-scale``: default upper bound, 0 = unbounded."""
    max_scale_limit: int = 0
    """``max-scale-limit``: cap on max-scale (config and annotation), 0 = none."""
    max_scale_up_rate: float = 1000.0
    """``max-scale-up-rate``: desired <= ceil(rate x ready pods)."""
    max_scale_down_rate: float = 2.0
    """``max-scale-down-rate``: desired >= floor(ready pods / rate)."""
    stable_window: float = 60.0
    """``stable-window`` in seconds."""
    panic_window_percentage: float = 10.0
    """``panic-window-percentage``: panic window = stable window x pct / 100."""
    panic_threshold_percentage: float = 200.0
    """``panic-threshold-percentage`` (unvalidated upstream, except NaN here)."""
    scale_to_zero_grace_period: float = 30.0
    """``scale-to-zero-grace-period`` in seconds."""
    scale_to_zero_pod_retention_period: float = 0.0
    """``scale-to-zero-pod-retention-period`` in seconds."""
    scale_down_delay: float = 0.0
    """``scale-down-delay`` in seconds."""
    pod_autoscaler_class: str = KPA_CLASS
    """``pod-autoscaler-class``: default class for revisions without the class annotation."""

    source: InitVar[_Source | None] = None

    def __post_init__(self, source: _Source | None) -> None:
        _validate(self, source)

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Parse ``data`` (a ConfigMap's ``data``). Absent keys keep their defaults."""
        values: dict[str, object] = {}
        nanos: dict[str, int] = {}
        for key, name, kind in _KEYS:
            if key not in data:
                continue
            raw = data[key]
            try:
                if kind == "str":
                    values[name] = raw.strip()
                elif kind == "bool":
                    values[name] = parse_bool(raw)
                elif kind == "float":
                    values[name] = parse_float(raw)
                elif kind == "int32":
                    values[name] = parse_int(raw, 32)
                else:
                    nanos[key] = parse_duration(raw)
                    values[name] = nanos[key] / SECOND
            except GoParseError as exc:
                raise ConfigError(key, repr(raw), f"cannot parse ({exc})", _ALLOWED[key]) from None
        fraction = values.get("container_concurrency_target_fraction")
        if isinstance(fraction, float) and fraction > 1.0:
            values["container_concurrency_target_fraction"] = fraction / 100.0  # percent
        return cls(**values, source=_Source(dict(data), nanos))  # type: ignore[arg-type]


def unknown_keys(data: Mapping[str, str]) -> list[str]:
    """Keys upstream would ignore silently (``_``-prefixed keys such as ``_example`` excepted)."""
    return sorted(k for k in data if k not in CONFIG_KEYS and not k.startswith("_"))


_PCT_ALLOWED = "a percentage in (0, 100]; a value <= 1 is read as a fraction (legacy)"
_ALLOWED = {
    "pod-autoscaler-class": "any string",
    "enable-scale-to-zero": "a Go bool (true/false/1/0/t/f)",
    "allow-zero-initial-scale": "a Go bool (true/false/1/0/t/f)",
    "max-scale-up-rate": "a number > 1",
    "max-scale-down-rate": "a number > 1",
    "container-concurrency-target-percentage": _PCT_ALLOWED,
    "container-concurrency-target-default": "a number; x the target percentage >= 0.01",
    "requests-per-second-target-default": "a number >= 0.01",
    "target-burst-capacity": "a number >= 0, or -1 (activator always in the path)",
    "panic-window-percentage": "a number in [1, 100]",
    "activator-capacity": "a number >= 1",
    "panic-threshold-percentage": "a number (200 = panic at twice the target)",
    "initial-scale": "an integer >= 1 (>= 0 with allow-zero-initial-scale: true)",
    "min-scale": "an integer >= 0, <= max-scale when max-scale > 0",
    "max-scale": "an integer >= 0 (0 = unbounded; [1, max-scale-limit] with a limit)",
    "max-scale-limit": "an integer >= 0 (0 = no limit)",
    "stable-window": "a duration in [6s, 1h], whole seconds",
    "scale-down-delay": "a duration >= 0s, whole seconds",
    "scale-to-zero-grace-period": "a duration > 0s",
    "scale-to-zero-pod-retention-period": "a duration >= 0s",
}


def _fmt_float(x: float) -> str:
    text = repr(x)
    return text[:-2] if text.endswith(".0") else text


def _validate(cfg: AutoscalerConfig, source: _Source | None) -> None:
    """Raise ConfigError for the first broken rule, in upstream's order."""
    raw = source.raw if source else {}
    nanos = dict(source.nanos) if source else {}

    def fail(name: str, problem: str, allowed: str | None = None) -> NoReturn:
        key = _KEY_OF[name]
        if key in raw:
            shown = repr(raw[key])
        elif _KIND_OF[name] == "duration":
            shown = format_duration(nanos[key])
        else:
            shown = str(getattr(cfg, name)) if _KIND_OF[name] != "float" else \
                _fmt_float(getattr(cfg, name))
        raise ConfigError(key, shown, problem, allowed or _ALLOWED[key])

    # Beyond upstream: NaN compares false with every bound, so it would slip through the range
    # checks below; direct construction can also produce non-finite durations, non-int32 ints.
    for _, name, kind in _KEYS:
        value = getattr(cfg, name)
        if kind == "float" and math.isnan(value):
            fail(name, "NaN is not a usable value")
        if kind == "duration":
            key = _KEY_OF[name]
            if key not in nanos:
                if not math.isfinite(value) or abs(value) > 9.2e9:
                    raise ConfigError(key, repr(value), "not a representable duration",
                                      _ALLOWED[key])
                nanos[key] = round(value * SECOND)
        if kind == "int32" and not _INT32_MIN <= value <= _INT32_MAX:
            fail(name, "outside the int32 range")

    if not 0 < cfg.target_utilization <= 1:  # not a ConfigMap key: direct construction only
        raise ConfigError("target_utilization", _fmt_float(cfg.target_utilization),
                          "outside (0, 1]", "a fraction in (0, 1] (not a ConfigMap key)")

    if nanos["scale-to-zero-grace-period"] <= 0:
        fail("scale_to_zero_grace_period", "must be positive")
    delay = nanos["scale-down-delay"]
    if delay < 0:
        fail("scale_down_delay", "cannot be negative")
    if round_duration(delay, SECOND) != delay:
        fail("scale_down_delay", "must be specified with at most second precision")
    if nanos["scale-to-zero-pod-retention-period"] < 0:
        fail("scale_to_zero_pod_retention_period", "cannot be negative")
    tbc = cfg.target_burst_capacity
    if tbc < 0 and tbc != -1:
        fail("target_burst_capacity", "negative and not -1")
    fraction = cfg.container_concurrency_target_fraction
    if fraction <= 0 or fraction > 1:
        fail("container_concurrency_target_fraction",
             f"reads as {_fmt_float(fraction * 100)} %, outside (0, 100]")
    product = fraction * cfg.container_concurrency_target_default
    if product < TARGET_MIN:
        fail("container_concurrency_target_default",
             f"target concurrency {_fmt_float(fraction)} x "
             f"{_fmt_float(cfg.container_concurrency_target_default)} = {product:g} is below "
             f"{TARGET_MIN:g}",
             "container-concurrency-target-percentage (as a fraction) x "
             "container-concurrency-target-default >= 0.01")
    if cfg.rps_target_default < TARGET_MIN:
        fail("rps_target_default", f"below {TARGET_MIN:g}")
    if cfg.activator_capacity < 1:
        fail("activator_capacity", "below 1")
    if cfg.max_scale_up_rate <= 1.0:
        fail("max_scale_up_rate", "must be greater than 1")
    if cfg.max_scale_down_rate <= 1.0:
        fail("max_scale_down_rate", "must be greater than 1")
    window = nanos["stable-window"]
    if window < WINDOW_MIN or window > WINDOW_MAX:
        fail("stable_window", "out of range")
    if round_duration(window, SECOND) != window:
        fail("stable_window", "must be specified with at most second precision")
    pwp = cfg.panic_window_percentage
    if pwp < 1.0 or pwp > 100.0:
        fail("panic_window_percentage", "out of range")
    if cfg.initial_scale < 0 or (cfg.initial_scale == 0 and not cfg.allow_zero_initial_scale):
        fail("initial_scale", "0 needs allow-zero-initial-scale: true" if cfg.initial_scale == 0
             else "negative")
    if cfg.min_scale < 0:
        fail("min_scale", "negative")
    limit = cfg.max_scale_limit
    min_max_scale = 1 if limit > 0 else 0
    if cfg.max_scale < min_max_scale or (limit > 0 and cfg.max_scale > limit):
        fail("max_scale", "out of range",
             f"an integer in [1, max-scale-limit ({limit})]" if limit > 0 else None)
    if limit < 0:
        fail("max_scale_limit", "negative")
    if cfg.min_scale > cfg.max_scale > 0:
        fail("min_scale", f"greater than max-scale ({cfg.max_scale})")


Listener = Callable[[AutoscalerConfig, AutoscalerConfig], None]


class ConfigStore:
    """The ``config-autoscaler`` in force. An invalid update is refused and the old one stays.

    ``ConfigStore(data)`` raises ConfigError on an invalid initial map (fatal at start, as
    upstream). ``update(data)`` raises ConfigError for an invalid map and keeps the current
    config (``last_error`` remembers why); on a valid map that changes anything, every
    listener is called with ``(new, old)``.
    """

    def __init__(self, initial: AutoscalerConfig | Mapping[str, str] | None = None) -> None:
        if initial is None:
            initial = AutoscalerConfig()
        elif not isinstance(initial, AutoscalerConfig):
            initial = AutoscalerConfig.from_configmap(initial)
        self._current: AutoscalerConfig = initial
        self._listeners: list[Listener] = []
        self.last_error: ConfigError | None = None

    @property
    def current(self) -> AutoscalerConfig:
        return self._current

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(new, old)`` after each valid change; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def update(self, data: Mapping[str, str]) -> AutoscalerConfig:
        ignored = unknown_keys(data)
        if ignored:
            logger.warning("%s: ignoring unknown keys %s", CONFIG_NAME, ", ".join(ignored))
        try:
            new = AutoscalerConfig.from_configmap(data)
        except ConfigError as exc:
            self.last_error = exc
            raise
        self.last_error = None
        old, self._current = self._current, new
        if new != old:
            for listener in list(self._listeners):
                try:
                    listener(new, old)
                except Exception:
                    logger.exception("%s listener %r failed", CONFIG_NAME, listener)
        return new



# --- per revision: config + annotations -> the numbers the autoscaler runs on --------------
# Upstream: pkg/reconciler/autoscaling/resources/{target,metric}.go, kpa/resources/decider.go,
# kpa/scaler.go (bounds, retention, activation timeout). The activator count needs ready pods
# and lives with the decider (autoscaler.decider.num_activators).

DEFAULT_PROGRESS_DEADLINE = 600.0
"""config-deployment ``progress-deadline`` default, seconds."""
ACTIVATION_TIMEOUT_BUFFER = 30.0


def resolve_metric_target(config: AutoscalerConfig, annotations: Mapping[str, str],
                          container_concurrency: int) -> tuple[float, float]:
    """(TargetValue, TotalValue) for a revision, as upstream's ResolveMetricTarget."""
    klass = ann.autoscaler_class(annotations, config.pod_autoscaler_class)
    metric = ann.metric(annotations, klass)
    if metric == ann.RPS:
        total = config.rps_target_default
        utilization = config.target_utilization
    else:  # anything but rps scales on concurrency
        total = float(container_concurrency)
        if total == 0:
            total = config.container_concurrency_target_default
        utilization = config.container_concurrency_target_fraction
    target = ann.read_float(annotations, ann.TARGET)
    if target is not None:
        total = target
        if metric == ann.CONCURRENCY and container_concurrency != 0:
            total = min(target, float(container_concurrency))  # never aim above the limit
    percentage = ann.read_float(annotations, ann.TARGET_UTILIZATION_PERCENTAGE)
    if percentage is not None:
        utilization = percentage / 100
    return max(TARGET_MIN, total * utilization), total


def panic_window(stable_window: float, percentage: float) -> float:
    """Stable window x pct / 100 in Go Duration arithmetic, rounded to whole seconds half
    away from zero, at least 1 s: 60 s/10 % -> 6 s, 6 s/10 % -> 1 s, 25 s/10 % -> 3 s."""
    nanos = float_to_int64(float(round(stable_window * SECOND)) * percentage / 100.0)
    return max(round_duration(nanos, SECOND), SECOND) / SECOND


@dataclass(frozen=True)
class RevisionScaling:
    """Everything the autoscaler needs about one revision, resolved once per config or
    annotation change: each knob is the annotation when present and parsable, else config."""

    autoscaler_class: str
    """Class annotation, else config ``pod-autoscaler-class``. Only KPA is ours to scale."""
    scaling_metric: str
    """``rps`` or ``concurrency`` (any other metric value scales on concurrency)."""
    target_value: float
    total_value: float
    target_burst_capacity: float
    activator_capacity: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    panic_threshold: float
    """A fraction: 2.0 == 200 %."""
    stable_window: float
    panic_window: float
    scale_down_delay: float
    aggregation_algorithm: str
    """``linear`` or ``weighted-exponential``."""
    initial_scale: int
    activation_scale: int
    min_scale: int
    """0 while the revision is unreachable."""
    max_scale: int
    """0 = unbounded."""
    reachable: bool
    enable_scale_to_zero: bool
    scale_to_zero_grace_period: float
    last_pod_retention: float
    """0 while the revision is unreachable."""
    activation_timeout: float
    """progress-deadline (annotation, else config-deployment) + 30 s."""

    @property
    def is_kpa(self) -> bool:
        return self.autoscaler_class == ann.KPA

    @property
    def activator_always_in_path(self) -> bool:
        """TBC -1: no scrape target, so "no data" is not an error, and no activator probe."""
        return self.target_burst_capacity == -1

    def decider_spec(self) -> DeciderSpec:
        return DeciderSpec(
            max_scale_up_rate=self.max_scale_up_rate,
            max_scale_down_rate=self.max_scale_down_rate,
            scaling_metric=self.scaling_metric,
            target_value=self.target_value,
            total_value=self.total_value,
            target_burst_capacity=self.target_burst_capacity,
            activator_capacity=self.activator_capacity,
            activation_scale=self.activation_scale,
            panic_threshold=self.panic_threshold,
            stable_window=self.stable_window,
            scale_down_delay=self.scale_down_delay,
            initial_scale=self.initial_scale,
            reachable=self.reachable,
        )

    def scale_bounds(self, scale_target_initialized: bool) -> tuple[int, int]:
        """(min, max) the scaler applies: until the scale target first reaches its initial
        scale, an initial-scale above 1 raises min (not while unreachable)."""
        lo = self.min_scale
        if self.initial_scale > 1 and not scale_target_initialized and self.reachable:
            lo = max(lo, self.initial_scale)
        return lo, self.max_scale

    def apply_bounds(self, desired: int, scale_target_initialized: bool) -> int:
        lo, hi = self.scale_bounds(scale_target_initialized)
        if desired < lo:
            return lo
        if hi != 0 and desired > hi:
            return hi
        return desired


def resolve_revision(config: AutoscalerConfig, annotations: Mapping[str, str],
                     container_concurrency: int = 0, reachable: bool = True,
                     progress_deadline: float = DEFAULT_PROGRESS_DEADLINE) -> RevisionScaling:
    """Resolve a revision's knobs. ``reachable`` is False only for an Unreachable PA
    (routing state ``reserve``); ``progress_deadline`` is config-deployment's, in seconds."""
    klass = ann.autoscaler_class(annotations, config.pod_autoscaler_class)
    target, total = resolve_metric_target(config, annotations, container_concurrency)

    def pick(value: float | int | None, default: float | int) -> float | int:
        return default if value is None else value

    stable = pick(ann.read_duration(annotations, ann.WINDOW), config.stable_window)
    panic_pct = pick(ann.read_float(annotations, ann.PANIC_WINDOW_PERCENTAGE),
                     config.panic_window_percentage)
    threshold_pct = pick(ann.read_float(annotations, ann.PANIC_THRESHOLD_PERCENTAGE),
                         config.panic_threshold_percentage)
    initial = ann.read_int32(annotations, ann.INITIAL_SCALE)
    if initial is None or (initial == 0 and not config.allow_zero_initial_scale):
        initial = config.initial_scale
    lo = pick(ann.read_int32(annotations, ann.MIN_SCALE), config.min_scale) if reachable else 0
    retention = pick(ann.read_duration(annotations, ann.SCALE_TO_ZERO_POD_RETENTION_PERIOD),
                     config.scale_to_zero_pod_retention_period) if reachable else 0.0
    return RevisionScaling(
        autoscaler_class=klass,
        scaling_metric=ann.RPS if ann.metric(annotations, klass) == ann.RPS else ann.CONCURRENCY,
        target_value=target,
        total_value=total,
        target_burst_capacity=pick(ann.read_float(annotations, ann.TARGET_BURST_CAPACITY),
                                   config.target_burst_capacity),
        activator_capacity=config.activator_capacity,
        max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate,
        panic_threshold=threshold_pct / 100.0,
        stable_window=stable,
        panic_window=panic_window(stable, panic_pct),
        scale_down_delay=pick(ann.read_duration(annotations, ann.SCALE_DOWN_DELAY),
                              config.scale_down_delay),
        aggregation_algorithm=ann.aggregation_algorithm(annotations),
        initial_scale=initial,
        activation_scale=pick(ann.read_int32(annotations, ann.ACTIVATION_SCALE), 0),
        min_scale=lo,
        max_scale=pick(ann.read_int32(annotations, ann.MAX_SCALE), config.max_scale),
        reachable=reachable,
        enable_scale_to_zero=config.enable_scale_to_zero,
        scale_to_zero_grace_period=config.scale_to_zero_grace_period,
        last_pod_retention=retention,
        activation_timeout=pick(ann.read_duration(annotations, ann.PROGRESS_DEADLINE),
                                progress_deadline) + ACTIVATION_TIMEOUT_BUFFER,
    )


def make_decider_spec(config: AutoscalerConfig, annotations: Mapping[str, str],
                      container_concurrency: int, reachable: bool) -> DeciderSpec:
    """Upstream's MakeDecider: the decider's inputs for one revision."""
    return resolve_revision(config, annotations, container_concurrency, reachable).decider_spec()
