from __future__ import annotations

import pytest

from activator.config import ActivatorConfig, ConfigError, cluster_domain_from_resolv_conf, parse_go_duration

BASE = {"POD_NAME": "activator-0", "POD_IP": "10.0.0.5", "KDP_BACKENDS": "grpc://127.0.0.1:7000"}


def load(**overrides: str) -> ActivatorConfig:
    env = {k: v for k, v in (BASE | overrides).items() if v is not None}
    return ActivatorConfig.from_env(env, resolv_conf="")


@pytest.mark.parametrize(("text", "seconds"), [
    ("300ms", 0.3), ("200ms", 0.2), ("1.5s", 1.5), ("2m", 120.0), ("1h2m3s", 3723.0), ("0", 0.0),
    ("-1s", -1.0), ("+5s", 5.0), (".5s", 0.5), ("1.s", 1.0), ("100us", 1e-4), ("100µs", 1e-4),
    ("250ns", 2.5e-7), ("1m30.5s", 90.5),
])
def test_go_durations_parse_as_go_does(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1.5", "s", "1sec", "1m5", ".s", "-", "1d", "3000000h", "1 s"])
def test_bad_go_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_upstream_defaults() -> None:
    cfg = load()
    assert (cfg.pod_name, cfg.pod_ip) == ("activator-0", "10.0.0.5")
    assert (cfg.max_idle_proxy_conns, cfg.max_idle_proxy_conns_per_host) == (1000, 100)
    assert (cfg.probe_timeout, cfg.probe_frequency) == (0.3, 0.2)
    assert cfg.probe_fast_retry == 0.01  # ours; 0 restores upstream's fixed probe period
    assert (cfg.system_namespace, cfg.cluster_domain, cfg.metrics_port) == ("knative-serving", "cluster.local", 9090)
    assert (cfg.http_port, cfg.h2c_port, cfg.drain_timeout) == (8012, 8013, 45.0)


def test_the_default_autoscaler_is_upstreams_websocket_service() -> None:
    cfg = load(SYSTEM_NAMESPACE="kn", CLUSTER_DOMAIN="corp.local")
    assert cfg.autoscaler_protocol == "websocket"
    assert cfg.autoscaler_address == "ws://autoscaler.kn.svc.corp.local:8080"


def test_the_cluster_domain_comes_from_resolv_conf_when_not_set() -> None:
    conf = "nameserver 10.96.0.10\nsearch default.svc.example.org svc.example.org example.org\noptions ndots:5\n"
    assert cluster_domain_from_resolv_conf(conf) == "example.org"
    assert cluster_domain_from_resolv_conf("search a.b\n") is None
    cfg = ActivatorConfig.from_env(BASE, resolv_conf=conf)
    assert cfg.cluster_domain == "example.org"
    assert ActivatorConfig.from_env(BASE | {"CLUSTER_DOMAIN": "x.y"}, resolv_conf=conf).cluster_domain == "x.y"


@pytest.mark.parametrize("key", ["POD_NAME", "POD_IP"])
def test_required_variables_must_be_present_but_may_be_empty(key: str) -> None:
    env = dict(BASE)
    del env[key]
    with pytest.raises(ConfigError, match=key):
        ActivatorConfig.from_env(env, resolv_conf="")
    assert getattr(ActivatorConfig.from_env(BASE | {key: ""}, resolv_conf=""), key.lower()) == ""


def test_go_integers_and_durations_are_read() -> None:
    cfg = load(MAX_IDLE_PROXY_CONNS="0x10", MAX_IDLE_PROXY_CONNS_PER_HOST="1_000", PROBE_TIMEOUT="1s",
               PROBE_FREQUENCY="50ms", KDP_FRESH_POD_WARMUP="0", KDP_RETRY_AFTER="2s", KDP_TRUST_READY="true",
               KDP_PROBE_FAST_RETRY="0")
    assert (cfg.max_idle_proxy_conns, cfg.max_idle_proxy_conns_per_host) == (16, 1000)
    assert cfg.probe_fast_retry == 0.0
    assert (cfg.probe_timeout, cfg.probe_frequency, cfg.fresh_pod_warmup) == (1.0, 0.05, 0.0)
    params = cfg.throttler_params()
    assert params.queue_full_retry_after == 2.0 and params.pacing.warmup == 0.0 and params.self_ip == "10.0.0.5"
    assert cfg.trust_ready


@pytest.mark.parametrize(("key", "value", "allowed"), [
    pytest.param("MAX_IDLE_PROXY_CONNS", "lots", "0..", id="not-an-int"),
    pytest.param("MAX_IDLE_PROXY_CONNS_PER_HOST", "-1", "0..", id="negative-int"),
    pytest.param("PROBE_TIMEOUT", "300", "Go duration > 0", id="duration-without-unit"),
    pytest.param("PROBE_FREQUENCY", "0s", "Go duration > 0", id="zero-frequency"),
    pytest.param("KDP_RETRY_AFTER", "-1s", "Go duration >= 0", id="negative-retry-after"),
    pytest.param("KDP_MAX_WAITING", "0", "1..", id="zero-cap"),
    pytest.param("KDP_HTTP_PORT", "70000", "0..65535", id="bad-port"),
    pytest.param("KDP_TRUST_READY", "yes", "true, false", id="bad-bool"),
    pytest.param("KDP_AUTOSCALER_PROTOCOL", "http", "websocket, grpc", id="bad-protocol"),
])
def test_errors_name_the_key_the_value_and_what_is_allowed(key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(**{key: value})
    assert key in str(err.value) and repr(value) in str(err.value) and allowed in str(err.value)


def test_grpc_autoscaler_needs_an_address() -> None:
    with pytest.raises(ConfigError, match="KDP_AUTOSCALER_ADDRESS=''.*host:port"):
        load(KDP_AUTOSCALER_PROTOCOL="grpc")
    cfg = load(KDP_AUTOSCALER_PROTOCOL="grpc", KDP_AUTOSCALER_ADDRESS="127.0.0.1:7001")
    assert cfg.autoscaler_address == "127.0.0.1:7001"


def test_a_websocket_address_must_be_a_websocket_url() -> None:
    with pytest.raises(ConfigError, match="KDP_AUTOSCALER_ADDRESS"):
        load(KDP_AUTOSCALER_ADDRESS="127.0.0.1:8080")


@pytest.mark.parametrize(("value", "kind", "target"), [
    ("grpc://127.0.0.1:7000", "grpc", "127.0.0.1:7000"),
    ("/etc/kdp/backends.yaml", "file", "/etc/kdp/backends.yaml"),
    ("file:backends.json", "file", "backends.json"),
])
def test_backends_are_a_grpc_feed_or_a_file(value: str, kind: str, target: str) -> None:
    cfg = load(KDP_BACKENDS=value)
    assert (cfg.backends_kind, cfg.backends_target) == (kind, target)


@pytest.mark.parametrize("value", ["", "grpc://nohost", "file:"])
def test_backends_must_be_given_and_well_formed(value: str) -> None:
    with pytest.raises(ConfigError, match="KDP_BACKENDS"):
        load(KDP_BACKENDS=value)
