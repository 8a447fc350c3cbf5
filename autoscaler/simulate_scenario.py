"""What the simulator runs a trace against: a revision's autoscaling settings and its pods.

A :class:`ScenarioSpec` is the unresolved input, as strings, the way users write it:
``config-autoscaler`` keys, ``autoscaling.knative.dev/*`` annotations, ``containerConcurrency``
and the pod model. It comes from config documents (:func:`spec_from_documents`), is refined by
``key=value`` variants (:func:`apply_variant`), and :func:`resolve` validates it with the
autoscaler's own rules (:mod:`autoscaler.config`, :mod:`autoscaler.annotations`) into a
:class:`Scenario`, whose :class:`~autoscaler.config.RevisionScaling` is what the service would
run on.

Config documents (already parsed from YAML or JSON) are either the simulator's own form::

    name: short-window            # optional label (default: the file name)
    config: {stable-window: 30s}  # config-autoscaler data
    annotations: {autoscaling.knative.dev/target: "50"}
    containerConcurrency: 10
    pod: {startupDelay: 5s, capacity: 40}
    progressDeadline: 600s        # config-deployment progress-deadline

or Kubernetes manifests: a ``ConfigMap`` named ``config-autoscaler`` (and ``config-deployment``),
and a Knative ``Service``, ``Configuration`` or ``Revision`` (annotations and containerConcurrency
from its revision template). Scalar values are turned into the strings a ConfigMap holds.

Errors: :class:`ScenarioError` (a ``ValueError``) names the source, the key, the value and
what is allowed. Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from autoscaler import annotations as ann
from autoscaler.config import (
    CONFIG_KEYS,
    DEFAULT_PROGRESS_DEADLINE,
    AutoscalerConfig,
    ConfigError,
    RevisionScaling,
    resolve_revision,
    unknown_keys,
)
from autoscaler.goparse import SECOND, GoParseError, parse_duration

__all__ = [
    "CC_MAX",
    "DEFAULT_STARTUP_DELAY",
    "PodModel",
    "Scenario",
    "ScenarioError",
    "ScenarioSpec",
    "apply_variant",
    "resolve",
    "spec_from_documents",
]

#: containerConcurrency's upper bound (config-defaults container-concurrency-max-limit).
CC_MAX = 1000
#: Seconds from a pod being asked for to being ready, when nothing says otherwise.
DEFAULT_STARTUP_DELAY = 3.0
_MAX_STARTUP_DELAY = 3600.0


class ScenarioError(ValueError):
    """Settings the simulator cannot run: where, which key, the value, what is allowed."""


@dataclass(frozen=True)
class PodModel:
    """How a simulated pod behaves.

    A pod is ready ``startup_delay`` seconds after it is asked for (rounded up to a whole
    second). It works on at most ``containerConcurrency`` requests at once; with
    containerConcurrency 0 (unlimited) it works on at most ``capacity`` requests, or on any
    number when ``capacity`` is None. Each request takes the trace's latency once it is
    being worked on; requests beyond the pods' capacity wait.
    """

    startup_delay: float = DEFAULT_STARTUP_DELAY
    capacity: float | None = None

    def __post_init__(self) -> None:
        d = self.startup_delay
        if not (math.isfinite(d) and 0 <= d <= _MAX_STARTUP_DELAY):
            raise ScenarioError(f"startup delay: {d!r} s; allowed: 0 to "
                                f"{_MAX_STARTUP_DELAY:g} s")
        c = self.capacity
        if c is not None and not (math.isfinite(c) and c > 0):
            raise ScenarioError(f"pod capacity: {c!r}; allowed: a number > 0 (concurrent "
                                "requests one pod works on when containerConcurrency is 0)")


@dataclass(frozen=True)
class ScenarioSpec:
    """Unresolved settings for one simulated revision (None = not given here)."""

    name: str = "defaults"
    config: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int | None = None
    startup_delay: float | None = None
    pod_capacity: float | None = None
    progress_deadline: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Validated, resolved settings: what one simulation runs on."""

    name: str
    config: AutoscalerConfig
    annotations: Mapping[str, str]
    container_concurrency: int
    scaling: RevisionScaling
    pod: PodModel
    warnings: tuple[str, ...] = ()
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    """config-deployment's progress-deadline, seconds (the autoscaler's own setting)."""

    def pod_capacity(self) -> float | None:
        """Concurrent requests one ready pod works on (None = unlimited)."""
        if self.container_concurrency > 0:
            return float(self.container_concurrency)
        return self.pod.capacity


def resolve(spec: ScenarioSpec) -> Scenario:
    """Validate ``spec`` as the autoscaler would and resolve it for one reachable revision."""
    where = spec.name
    try:
        config = AutoscalerConfig.from_configmap(spec.config)
    except ConfigError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    try:
        ann.check_annotations(spec.annotations, config)
    except ann.AnnotationsInvalid as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    cc = 0 if spec.container_concurrency is None else spec.container_concurrency
    if not 0 <= cc <= CC_MAX:
        raise ScenarioError(f"{where}: containerConcurrency={cc}: out of range; allowed: an "
                            f"integer in [0, {CC_MAX}] (0 = unlimited)")
    try:
        pod = PodModel(
            DEFAULT_STARTUP_DELAY if spec.startup_delay is None else spec.startup_delay,
            spec.pod_capacity)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    deadline = (DEFAULT_PROGRESS_DEADLINE if spec.progress_deadline is None
                else spec.progress_deadline)
    scaling = resolve_revision(config, spec.annotations, cc, reachable=True,
                               progress_deadline=deadline)
    if not scaling.is_kpa:
        raise ScenarioError(f"{where}: autoscaling.knative.dev/class="
                            f"{scaling.autoscaler_class}: the simulator runs the KPA only; "
                            f"allowed: {ann.KPA}")
    warnings = [f"config-autoscaler key {k!r} is not one upstream reads; ignored"
                for k in unknown_keys(spec.config)]
    warnings += [f"annotation {k!r} is not an autoscaling annotation the KPA reads; ignored"
                 for k in spec.annotations if k not in _KNOWN_ANNOTATIONS]
    if cc == 0 and pod.capacity is None:
        warnings.append("containerConcurrency 0 and no pod capacity: a ready pod takes any "
                        "number of requests, so requests wait only while no pod is ready")
    return Scenario(spec.name, config, dict(spec.annotations), cc, scaling, pod,
                    tuple(warnings), deadline)


_KNOWN_ANNOTATIONS = frozenset(
    key for keys in (ann.CLASS, ann.METRIC, ann.TARGET, ann.TARGET_UTILIZATION_PERCENTAGE,
                     ann.TARGET_BURST_CAPACITY, ann.WINDOW, ann.PANIC_WINDOW_PERCENTAGE,
                     ann.PANIC_THRESHOLD_PERCENTAGE, ann.MIN_SCALE, ann.MAX_SCALE,
                     ann.INITIAL_SCALE, ann.ACTIVATION_SCALE, ann.SCALE_DOWN_DELAY,
                     ann.SCALE_TO_ZERO_POD_RETENTION_PERIOD, ann.METRIC_AGGREGATION_ALGORITHM,
                     ann.PROGRESS_DEADLINE)
    for key in keys)


# --- values as users write them -------------------------------------------------------------

def _as_string(value: object, where: str) -> str:
    """A ConfigMap/annotation value: strings as they are, scalars as their YAML text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ScenarioError(f"{where}: {value!r} is not a string, number or bool")


def _string_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where}: expected a mapping of keys to values, got "
                            f"{type(value).__name__}")
    return {str(k): _as_string(v, f"{where}.{k}") for k, v in value.items()}


def _seconds(value: object, where: str) -> float:
    """A number of seconds, or a Go duration string such as "5s" or "1m30s"."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: {value!r} is not a number of seconds or a duration")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return parse_duration(value.strip()) / SECOND
        except GoParseError as exc:
            raise ScenarioError(f"{where}: {value!r} is not a number of seconds or a "
                                f"duration such as 5s ({exc})") from None
    raise ScenarioError(f"{where}: {value!r} is not a number of seconds or a duration")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ScenarioError(f"{where}: {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise ScenarioError(f"{where}: {value!r} is not a number") from None


def _cc(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: {value!r} is not an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ScenarioError(f"{where}: {value!r} is not an integer") from None
    if not isinstance(value, int):
        raise ScenarioError(f"{where}: {value!r} is not an integer")
    return value


# --- documents ------------------------------------------------------------------------------

_OWN_KEYS = ("name", "config", "annotations", "containerConcurrency", "pod",
             "progressDeadline")
_POD_KEYS = ("startupDelay", "capacity")


def spec_from_documents(docs: list[object], source: str, name: str | None = None
                        ) -> ScenarioSpec:
    """Merge the documents of one config file into a spec; ``name`` is the fallback label."""
    spec = ScenarioSpec(name=name or source)
    found = False
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        where = source if len(docs) == 1 else f"{source} (document {index + 1})"
        if not isinstance(doc, Mapping):
            raise ScenarioError(f"{where}: expected a mapping, got {type(doc).__name__}")
        found = True
        spec = (_from_manifest(spec, doc, where) if "kind" in doc
                else _from_own_form(spec, doc, where))
    if not found:
        raise ScenarioError(f"{source}: no settings found (an empty file?)")
    return spec


def _from_own_form(spec: ScenarioSpec, doc: Mapping[str, object], where: str) -> ScenarioSpec:
    for key in doc:
        if key not in _OWN_KEYS:
            raise ScenarioError(f"{where}: unknown key {key!r}; allowed: "
                                f"{', '.join(_OWN_KEYS)} (or a Kubernetes manifest with kind)")
    changes: dict[str, object] = {}
    if "name" in doc:
        changes["name"] = _as_string(doc["name"], f"{where}: name")
    if "config" in doc:
        changes["config"] = {**spec.config, **_string_map(doc["config"], f"{where}: config")}
    if "annotations" in doc:
        changes["annotations"] = {**spec.annotations,
                                  **_string_map(doc["annotations"], f"{where}: annotations")}
    if doc.get("containerConcurrency") is not None:
        changes["container_concurrency"] = _cc(doc["containerConcurrency"],
                                               f"{where}: containerConcurrency")
    if doc.get("progressDeadline") is not None:
        changes["progress_deadline"] = _seconds(doc["progressDeadline"],
                                                f"{where}: progressDeadline")
    pod = doc.get("pod")
    if pod is not None:
        if not isinstance(pod, Mapping):
            raise ScenarioError(f"{where}: pod: expected a mapping with {', '.join(_POD_KEYS)}")
        for key in pod:
            if key not in _POD_KEYS:
                raise ScenarioError(f"{where}: pod: unknown key {key!r}; allowed: "
                                    f"{', '.join(_POD_KEYS)}")
        if pod.get("startupDelay") is not None:
            changes["startup_delay"] = _seconds(pod["startupDelay"], f"{where}: pod.startupDelay")
        if pod.get("capacity") is not None:
            changes["pod_capacity"] = _number(pod["capacity"], f"{where}: pod.capacity")
    return replace(spec, **changes)  # type: ignore[arg-type]


def _get(doc: Mapping[str, object], *path: str) -> object:
    node: object = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _from_manifest(spec: ScenarioSpec, doc: Mapping[str, object], where: str) -> ScenarioSpec:
    kind = doc.get("kind")
    meta_name = _get(doc, "metadata", "name")
    if kind == "ConfigMap":
        data = _string_map(doc.get("data"), f"{where}: data")
        if meta_name == "config-autoscaler":
            return replace(spec, config={**spec.config, **data})
        if meta_name == "config-deployment":
            if "progress-deadline" in data:
                return replace(spec, progress_deadline=_seconds(
                    data["progress-deadline"], f"{where}: data.progress-deadline"))
            return spec
        raise ScenarioError(f"{where}: ConfigMap {meta_name!r}: the simulator reads "
                            "config-autoscaler and config-deployment")
    if kind in ("Service", "Configuration"):
        annotations = _get(doc, "spec", "template", "metadata", "annotations")
        cc = _get(doc, "spec", "template", "spec", "containerConcurrency")
    elif kind == "Revision":
        annotations = _get(doc, "metadata", "annotations")
        cc = _get(doc, "spec", "containerConcurrency")
    else:
        raise ScenarioError(f"{where}: kind {kind!r}: expected ConfigMap, Service, "
                            "Configuration or Revision")
    changes: dict[str, object] = {
        "annotations": {**spec.annotations, **_string_map(annotations, f"{where}: annotations")}}
    if cc is not None:
        changes["container_concurrency"] = _cc(cc, f"{where}: containerConcurrency")
    if isinstance(meta_name, str) and meta_name:
        changes["name"] = meta_name
    return replace(spec, **changes)  # type: ignore[arg-type]


# --- variants -------------------------------------------------------------------------------

def apply_variant(base: ScenarioSpec, text: str) -> ScenarioSpec:
    """``[NAME:]key=value[,key=value...]`` on top of ``base``.

    A key is a ``config-autoscaler`` key (``stable-window=30s``), ``containerConcurrency``,
    ``startup-delay`` or ``pod-capacity``, a full annotation key (``autoscaling.knative.dev/
    target=50``), or an annotation's short name (``window=30s``, ``target=50``, ``metric=rps``).
    The name defaults to the text itself.
    """
    head, colon, rest = text.partition(":")
    if colon and "=" not in head:
        name, body = head.strip(), rest
    else:
        name, body = text, text
    if not name:
        raise ScenarioError(f"variant {text!r}: empty name before ':'")
    config = dict(base.config)
    annotations = dict(base.annotations)
    changes: dict[str, object] = {"name": name}
    pairs = [p for p in body.split(",") if p.strip()]
    if not pairs:
        raise ScenarioError(f"variant {text!r}: no key=value settings")
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        where = f"variant {name!r}: {key}"
        if not eq or not key:
            raise ScenarioError(f"variant {text!r}: {pair.strip()!r} is not key=value")
        if key in CONFIG_KEYS:
            config[key] = value
        elif key in ("containerConcurrency", "container-concurrency"):
            changes["container_concurrency"] = _cc(value, where)
        elif key in ("startup-delay", "startupDelay"):
            changes["startup_delay"] = _seconds(value, where)
        elif key in ("pod-capacity", "podCapacity"):
            changes["pod_capacity"] = _number(value, where)
        elif "/" in key:
            annotations[key] = value
        else:
            annotations[f"{ann.GROUP}/{key}"] = value
    return replace(base, config=config, annotations=annotations,  # type: ignore[arg-type]
                   **changes)
