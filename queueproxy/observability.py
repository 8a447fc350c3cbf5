"""The ``OBSERVABILITY_CONFIG`` value: metrics, tracing, runtime and request-log settings.

The upstream controller serialises serving's observability config (``config-observability``)
to JSON and hands it to the queue-proxy in ``OBSERVABILITY_CONFIG``; upstream decodes it with
Go's ``encoding/json`` into a struct pre-filled with defaults. We decode it the same way:

- keys match case-insensitively, unknown keys are ignored, a repeated key's last value wins;
- a missing key or a JSON ``null`` keeps the default;
- durations are integer nanoseconds (a fraction or a string is an error, as in Go);
- a value of the wrong JSON type is an error.

Then the protocols, endpoints and rates are checked with upstream's validation rules (upstream
checks them while building its exporters and exits; we check them here, once). Every error is
a ``ConfigError`` whose message starts with ``OBSERVABILITY_CONFIG`` and names the key.

Pure: no I/O. Durations are float seconds.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from queueproxy.config import ConfigError

__all__ = [
    "DEFAULT_REQUEST_LOG_TEMPLATE",
    "ENV_KEY",
    "METRICS_PROTOCOLS",
    "MetricsConfig",
    "ObservabilityConfig",
    "RuntimeConfig",
    "TRACING_PROTOCOLS",
    "TracingConfig",
]

ENV_KEY = "OBSERVABILITY_CONFIG"

# Upstream's DefaultRequestLogTemplate (pkg/observability/config.go), character for character.
DEFAULT_REQUEST_LOG_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", '
    '"requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", '
    '"status": {{.Response.Code}}, '
    '"responseSize": "{{.Response.Size}}", '
    '"userAgent": "{{js .Request.UserAgent}}", '
    '"remoteIp": "{{js .Request.RemoteAddr}}", '
    '"serverIp": "{{.Revision.PodIP}}", '
    '"referer": "{{js .Request.Referer}}", '
    '"latency": "{{.Response.Latency}}s", '
    '"protocol": "{{.Request.Proto}}"}, '
    '"traceId": "{{.TraceID}}"}'
)

METRICS_PROTOCOLS = ("grpc", "http/protobuf", "prometheus", "none")
TRACING_PROTOCOLS = ("grpc", "http/protobuf", "none", "stdout")
PROFILING_VALUES = ("enabled", "disabled")
DEFAULT_PROMETHEUS_PORT = 9091  # networking.UserQueueMetricsPort
_NS_PER_S = 1_000_000_000
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """One ``metrics``-shaped block (``metrics`` and ``requestMetrics``)."""

    protocol: str = "none"
    endpoint: str = ""
    export_interval: float = 0.0
    """Seconds; 0 lets the exporter pick its default."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    protocol: str = "none"
    endpoint: str = ""
    sampling_rate: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.protocol != "none"


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    profiling: str = "disabled"
    export_interval: float = 15.0

    @property
    def profiling_enabled(self) -> bool:
        return self.profiling == "enabled"


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    tracing: TracingConfig = field(default_factory=TracingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    request_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    enable_request_log: bool = False
    request_log_template: str = DEFAULT_REQUEST_LOG_TEMPLATE
    enable_probe_request_log: bool = False

    @property
    def request_metrics_protocol(self) -> str:
        """``prometheus`` means: serve the request metrics on :9091."""
        return self.request_metrics.protocol

    @property
    def request_log_enabled(self) -> bool:
        """Upstream writes request logs only when enabled *and* the template is non-empty."""
        return self.enable_request_log and self.request_log_template != ""

    def prometheus_address(self, environ: Mapping[str, str]) -> tuple[str, int] | None:
        """Where to serve request metrics, or None unless the protocol is ``prometheus``.

        The endpoint defaults to ``:9091``; ``METRICS_PROMETHEUS_HOST`` and
        ``METRICS_PROMETHEUS_PORT`` override it, and the port must be 1024..65535, as upstream.
        An empty host means every interface.
        """
        if self.request_metrics.protocol != "prometheus":
            return None
        host, port = "", str(DEFAULT_PROMETHEUS_PORT)
        if self.request_metrics.endpoint:
            host, port = _split_host_port(self.request_metrics.endpoint, "requestMetrics.endpoint")
        host = environ.get("METRICS_PROMETHEUS_HOST") or host
        key = "METRICS_PROMETHEUS_PORT" if environ.get("METRICS_PROMETHEUS_PORT") else \
            f"{ENV_KEY} requestMetrics.endpoint"
        port = environ.get("METRICS_PROMETHEUS_PORT") or port
        if not port.isascii() or not port.isdigit() or not 1024 <= int(port) <= 65535:
            raise ConfigError(f"{key}: prometheus port {port!r} is not allowed; allowed: 1024..65535")
        return host, int(port)

    @classmethod
    def from_env(cls, value: str) -> ObservabilityConfig:
        """Parse the ``OBSERVABILITY_CONFIG`` value; ``""`` gives upstream's defaults."""
        if value == "":
            return cls()
        try:
            doc = json.loads(value, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ConfigError(f"{ENV_KEY}={_clip(value)!r} is not valid JSON: {exc}") from None
        if doc is None:
            return cls()
        top = _expect_object(doc, "")
        tracing = _decode(top, "tracing", _decode_tracing, TracingConfig())
        metrics = _decode(top, "metrics", _decode_metrics, MetricsConfig())
        runtime = _decode(top, "runtime", _decode_runtime, RuntimeConfig())
        request_metrics = _decode(top, "requestMetrics", _decode_metrics, MetricsConfig())
        _validate_tracing(tracing, "tracing")
        _validate_metrics(metrics, "metrics")
        _validate_metrics(request_metrics, "requestMetrics")
        _validate_runtime(runtime, "runtime")
        return cls(
            tracing=tracing,
            metrics=metrics,
            runtime=runtime,
            request_metrics=request_metrics,
            enable_request_log=_scalar(top, "enableRequestLog", bool, False),
            request_log_template=_scalar(top, "requestLogTemplate", str, DEFAULT_REQUEST_LOG_TEMPLATE),
            enable_probe_request_log=_scalar(top, "enableProbeRequestLog", bool, False),
        )


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object kept as its ordered (key, value) pairs, as Go's decoder walks it."""

    def find_all(self, name: str) -> list[Any]:
        """Every value whose key matches ``name`` as Go matches fields: case-insensitively."""
        folded = name.casefold()
        return [val for key, val in self if key == name or key.casefold() == folded]

    def find(self, name: str) -> Any:
        """The value Go ends up with: the last matching key wins."""
        found = self.find_all(name)
        return found[-1] if found else _MISSING


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _clip(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(val: Any) -> str:
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "a boolean"
    if isinstance(val, (int, float)):
        return "a number"
    if isinstance(val, str):
        return "a string"
    if isinstance(val, _Pairs):
        return "an object"
    return "an array"


def _expect_object(val: Any, path: str) -> _Pairs:
    if not isinstance(val, _Pairs):
        where = f" {path}" if path else ""
        raise ConfigError(f"{ENV_KEY}{where} must be a JSON object, got {_type_name(val)}")
    return val


def _decode(top: _Pairs, name: str, decoder: Any, default: Any) -> Any:
    # Go decodes a repeated object key into the same struct again, so the values merge.
    for val in top.find_all(name):
        if val is not None:
            default = decoder(_expect_object(val, name), name, default)
    return default


def _scalar(obj: _Pairs, name: str, kind: type, default: Any, prefix: str = "") -> Any:
    val = obj.find(name)
    if val is _MISSING or val is None:
        return default
    ok = isinstance(val, kind) and (kind is bool or not isinstance(val, bool))
    if kind is float:
        ok = isinstance(val, (int, float)) and not isinstance(val, bool)
    if not ok:
        want = {bool: "true or false", str: "a string", float: "a number"}[kind]
        raise ConfigError(f"{ENV_KEY} {_path(prefix, name)}={val!r} is {_type_name(val)}; allowed: {want}")
    return float(val) if kind is float else val


def _duration(obj: _Pairs, name: str, default: float, prefix: str) -> float:
    val = obj.find(name)
    if val is _MISSING or val is None:
        return default
    if isinstance(val, bool) or not isinstance(val, int) or not _INT64[0] <= val <= _INT64[1]:
        raise ConfigError(f"{ENV_KEY} {_path(prefix, name)}={val!r} is not a duration; "
                          "allowed: an integer number of nanoseconds")
    return val / _NS_PER_S


def _decode_metrics(obj: _Pairs, prefix: str, d: MetricsConfig) -> MetricsConfig:
    return MetricsConfig(
        protocol=_scalar(obj, "protocol", str, d.protocol, prefix),
        endpoint=_scalar(obj, "endpoint", str, d.endpoint, prefix),
        export_interval=_duration(obj, "exportInterval", d.export_interval, prefix),
    )


def _decode_tracing(obj: _Pairs, prefix: str, d: TracingConfig) -> TracingConfig:
    return TracingConfig(
        protocol=_scalar(obj, "protocol", str, d.protocol, prefix),
        endpoint=_scalar(obj, "endpoint", str, d.endpoint, prefix),
        sampling_rate=_scalar(obj, "samplingRate", float, d.sampling_rate, prefix),
    )


def _decode_runtime(obj: _Pairs, prefix: str, d: RuntimeConfig) -> RuntimeConfig:
    return RuntimeConfig(
        profiling=_scalar(obj, "profiling", str, d.profiling, prefix),
        export_interval=_duration(obj, "exportInterval", d.export_interval, prefix),
    )


def _validate_metrics(m: MetricsConfig, prefix: str) -> None:
    if m.protocol not in METRICS_PROTOCOLS:
        raise ConfigError(f"{ENV_KEY} {prefix}.protocol={m.protocol!r} is not supported; "
                          f"allowed: {', '.join(METRICS_PROTOCOLS)}")
    if m.protocol in ("grpc", "http/protobuf") and not m.endpoint:
        raise ConfigError(f"{ENV_KEY} {prefix}.endpoint must be set when protocol is {m.protocol!r}")
    if m.protocol == "none" and m.endpoint:
        raise ConfigError(f"{ENV_KEY} {prefix}.endpoint={m.endpoint!r} must be empty when protocol is 'none'")
    if m.protocol == "prometheus" and m.endpoint:
        _split_host_port(m.endpoint, f"{prefix}.endpoint")
    if m.export_interval < 0:
        raise ConfigError(f"{ENV_KEY} {prefix}.exportInterval={round(m.export_interval * _NS_PER_S)} "
                          "is negative; allowed: >= 0 nanoseconds")


def _validate_tracing(t: TracingConfig, prefix: str) -> None:
    if t.protocol not in TRACING_PROTOCOLS:
        raise ConfigError(f"{ENV_KEY} {prefix}.protocol={t.protocol!r} is not supported; "
                          f"allowed: {', '.join(TRACING_PROTOCOLS)}")
    if t.protocol in ("grpc", "http/protobuf") and not t.endpoint:
        raise ConfigError(f"{ENV_KEY} {prefix}.endpoint must be set when protocol is {t.protocol!r}")
    if t.protocol in ("none", "stdout") and t.endpoint:
        raise ConfigError(f"{ENV_KEY} {prefix}.endpoint={t.endpoint!r} must be empty when protocol is "
                          f"{t.protocol!r}")
    if not 0.0 <= t.sampling_rate <= 1.0:
        raise ConfigError(f"{ENV_KEY} {prefix}.samplingRate={t.sampling_rate!r} is out of range; "
                          "allowed: 0..1")


def _validate_runtime(r: RuntimeConfig, prefix: str) -> None:
    if r.profiling not in PROFILING_VALUES:
        raise ConfigError(f"{ENV_KEY} {prefix}.profiling={r.profiling!r} is not supported; "
                          f"allowed: {', '.join(PROFILING_VALUES)}")
    if r.export_interval < 0:
        raise ConfigError(f"{ENV_KEY} {prefix}.exportInterval={round(r.export_interval * _NS_PER_S)} "
                          "is negative; allowed: >= 0 nanoseconds")


def _split_host_port(endpoint: str, key: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort`` (host may be empty; the port is checked by the caller)."""
    bad = ConfigError(f"{ENV_KEY} {key}={endpoint!r} is not an address; allowed: "
                      '"host:port", "[host]:port" or ":port"')
    if endpoint.startswith("["):
        end = endpoint.find("]")
        if end < 0 or endpoint[end + 1:end + 2] != ":" or "[" in endpoint[1:] or \
                "]" in endpoint[end + 1:]:
            raise bad
        return endpoint[1:end], endpoint[end + 2:]
    colon = endpoint.rfind(":")
    if colon < 0 or ":" in endpoint[:colon] or "[" in endpoint or "]" in endpoint:
        raise bad
    return endpoint[:colon], endpoint[colon + 1:]
