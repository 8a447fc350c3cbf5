"""OBSERVABILITY_CONFIG: decoded as Go's encoding/json would, validated as upstream does."""
from __future__ import annotations

import pytest

from queueproxy.config import ConfigError
from queueproxy.observability import (
    DEFAULT_REQUEST_LOG_TEMPLATE,
    MetricsConfig,
    ObservabilityConfig,
    RuntimeConfig,
    TracingConfig,
)

# pkg/observability/config.go DefaultRequestLogTemplate, as written upstream.
UPSTREAM_DEFAULT_TEMPLATE = (
    """{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", """
    """"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": """
    """"{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", """
    """"serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": """
    """"{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}"""
)


def test_empty_value_gives_upstreams_defaults() -> None:
    cfg = ObservabilityConfig.from_env("")
    assert cfg == ObservabilityConfig()
    assert cfg.tracing == TracingConfig(protocol="none", endpoint="", sampling_rate=0.0)
    assert cfg.metrics == cfg.request_metrics == MetricsConfig(protocol="none", export_interval=0.0)
    assert cfg.runtime == RuntimeConfig(profiling="disabled", export_interval=15.0)
    assert (cfg.enable_request_log, cfg.enable_probe_request_log) == (False, False)
    assert cfg.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE == UPSTREAM_DEFAULT_TEMPLATE
    assert not cfg.request_log_enabled
    assert cfg.prometheus_address({}) is None


def test_the_controllers_shape_turns_on_prometheus_on_9091() -> None:
    cfg = ObservabilityConfig.from_env(
        '{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{"protocol":"prometheus"}}')
    assert cfg.request_metrics_protocol == "prometheus"
    assert cfg.prometheus_address({}) == ("", 9091)
    assert cfg.runtime.export_interval == 15.0  # an empty object keeps the defaults inside it


def test_a_full_config_is_read() -> None:
    cfg = ObservabilityConfig.from_env("""{
        "tracing": {"protocol": "grpc", "endpoint": "http://otel:4317", "samplingRate": 0.25},
        "metrics": {"protocol": "http/protobuf", "endpoint": "http://otel:4318", "exportInterval": 30000000000},
        "runtime": {"profiling": "enabled", "exportInterval": 5000000000},
        "requestMetrics": {"protocol": "grpc", "endpoint": "otel:4317", "exportInterval": 1500000000},
        "enableRequestLog": true, "requestLogTemplate": "{{.Request.Method}}", "enableProbeRequestLog": true
    }""")
    assert cfg.tracing == TracingConfig("grpc", "http://otel:4317", 0.25)
    assert cfg.tracing.enabled
    assert cfg.metrics == MetricsConfig("http/protobuf", "http://otel:4318", 30.0)
    assert cfg.runtime == RuntimeConfig("enabled", 5.0) and cfg.runtime.profiling_enabled
    assert cfg.request_metrics == MetricsConfig("grpc", "otel:4317", 1.5)
    assert cfg.request_log_enabled and cfg.enable_probe_request_log
    assert cfg.request_log_template == "{{.Request.Method}}"
    assert cfg.prometheus_address({}) is None


def test_keys_match_case_insensitively_and_unknown_keys_are_ignored() -> None:
    cfg = ObservabilityConfig.from_env(
        '{"EnableRequestLog": true, "REQUESTMETRICS": {"Protocol": "prometheus"}, '
        '"LoggingURLTemplate": "x", "EnableVarLogCollection": true, "somethingNew": [1, 2]}')
    assert cfg.enable_request_log
    assert cfg.request_metrics.protocol == "prometheus"


def test_null_keeps_the_default_and_the_last_repeated_key_wins() -> None:
    cfg = ObservabilityConfig.from_env(
        '{"tracing": null, "requestLogTemplate": null, "enableRequestLog": false, "enableRequestLog": true}')
    assert cfg.tracing == TracingConfig()
    assert cfg.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE
    assert cfg.enable_request_log


def test_a_repeated_object_key_merges_like_go() -> None:
    cfg = ObservabilityConfig.from_env(
        '{"tracing": {"protocol": "grpc"}, "tracing": {"endpoint": "otel:4317"}}')
    assert cfg.tracing == TracingConfig("grpc", "otel:4317", 0.0)


@pytest.mark.parametrize(("value", "fragment"), [
    pytest.param("{not json", "is not valid JSON", id="bad json"),
    pytest.param("NaN", "is not valid JSON", id="nan is not json"),
    pytest.param("[1]", "must be a JSON object, got an array", id="array"),
    pytest.param('{"tracing": 1}', "tracing must be a JSON object, got a number", id="object expected"),
    pytest.param('{"enableRequestLog": "true"}', "enableRequestLog='true' is a string; allowed: true or false",
                 id="bool as string"),
    pytest.param('{"requestLogTemplate": 5}', "requestLogTemplate=5 is a number; allowed: a string",
                 id="number as template"),
    pytest.param('{"runtime": {"exportInterval": 1.5}}', "runtime.exportInterval=1.5 is not a duration",
                 id="fractional duration"),
    pytest.param('{"runtime": {"exportInterval": "15s"}}', "runtime.exportInterval='15s' is not a duration",
                 id="string duration"),
    pytest.param('{"runtime": {"exportInterval": true}}', "runtime.exportInterval=True is not a duration",
                 id="bool duration"),
    pytest.param('{"metrics": {"exportInterval": 99999999999999999999}}', "metrics.exportInterval",
                 id="duration overflows int64"),
    pytest.param('{"requestMetrics": {"exportInterval": -1}}', "requestMetrics.exportInterval=-1 is negative",
                 id="negative duration"),
    pytest.param('{"requestMetrics": {"protocol": "opencensus"}}',
                 "requestMetrics.protocol='opencensus' is not supported; allowed: grpc, http/protobuf, "
                 "prometheus, none", id="unknown metrics protocol"),
    pytest.param('{"requestMetrics": {"protocol": ""}}', "requestMetrics.protocol='' is not supported",
                 id="empty protocol"),
    pytest.param('{"metrics": {"protocol": "grpc"}}', "metrics.endpoint must be set when protocol is 'grpc'",
                 id="grpc needs an endpoint"),
    pytest.param('{"metrics": {"endpoint": "x:1"}}', "metrics.endpoint='x:1' must be empty when protocol is 'none'",
                 id="none forbids an endpoint"),
    pytest.param('{"requestMetrics": {"protocol": "prometheus", "endpoint": "9091"}}',
                 "requestMetrics.endpoint='9091' is not an address", id="prometheus endpoint without colon"),
    pytest.param('{"tracing": {"protocol": "prometheus"}}',
                 "tracing.protocol='prometheus' is not supported; allowed: grpc, http/protobuf, none, stdout",
                 id="prometheus is not a tracing protocol"),
    pytest.param('{"tracing": {"protocol": "stdout", "endpoint": "x"}}',
                 "tracing.endpoint='x' must be empty when protocol is 'stdout'", id="stdout forbids endpoint"),
    pytest.param('{"tracing": {"samplingRate": 1.5}}', "tracing.samplingRate=1.5 is out of range; allowed: 0..1",
                 id="sampling rate above one"),
    pytest.param('{"tracing": {"samplingRate": "0.5"}}', "tracing.samplingRate='0.5' is a string",
                 id="sampling rate as string"),
    pytest.param('{"runtime": {"profiling": "on"}}',
                 "runtime.profiling='on' is not supported; allowed: enabled, disabled", id="profiling value"),
])
def test_malformed_values_name_the_variable_and_the_key(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env(value)
    message = str(info.value)
    assert message.startswith("OBSERVABILITY_CONFIG")
    assert fragment in message


def test_stdout_tracing_and_integer_sampling_rates_are_accepted() -> None:
    cfg = ObservabilityConfig.from_env('{"tracing": {"protocol": "stdout", "samplingRate": 1}}')
    assert cfg.tracing == TracingConfig("stdout", "", 1.0)


@pytest.mark.parametrize(("endpoint", "environ", "want"), [
    pytest.param("", {}, ("", 9091), id="default"),
    pytest.param(":9100", {}, ("", 9100), id="port only"),
    pytest.param("127.0.0.1:9200", {}, ("127.0.0.1", 9200), id="host and port"),
    pytest.param("[::1]:9300", {}, ("::1", 9300), id="ipv6"),
    pytest.param(":9100", {"METRICS_PROMETHEUS_PORT": "9400"}, ("", 9400), id="env port wins"),
    pytest.param("", {"METRICS_PROMETHEUS_HOST": "0.0.0.0"}, ("0.0.0.0", 9091), id="env host"),
])
def test_prometheus_address(endpoint: str, environ: dict[str, str], want: tuple[str, int]) -> None:
    cfg = ObservabilityConfig.from_env(
        f'{{"requestMetrics": {{"protocol": "prometheus", "endpoint": "{endpoint}"}}}}')
    assert cfg.prometheus_address(environ) == want


@pytest.mark.parametrize(("endpoint", "environ", "key"), [
    pytest.param(":80", {}, "requestMetrics.endpoint", id="privileged port"),
    pytest.param(":http", {}, "requestMetrics.endpoint", id="named port"),
    pytest.param("", {"METRICS_PROMETHEUS_PORT": "70000"}, "METRICS_PROMETHEUS_PORT", id="env port too big"),
])
def test_prometheus_port_must_be_1024_to_65535(endpoint: str, environ: dict[str, str], key: str) -> None:
    cfg = ObservabilityConfig.from_env(
        f'{{"requestMetrics": {{"protocol": "prometheus", "endpoint": "{endpoint}"}}}}')
    with pytest.raises(ConfigError, match=f"{key}.*allowed: 1024..65535"):
        cfg.prometheus_address(environ)
