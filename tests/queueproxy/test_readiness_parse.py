"""Decoding SERVING_READINESS_PROBE as upstream's controller writes it (pkg/queue/readiness)."""
from __future__ import annotations

import json

import pytest

from queueproxy.readiness import (
    GRPCAction,
    HTTPGetAction,
    ProbeConfigError,
    ProbeSpec,
    TCPSocketAction,
    parse_readiness_probes,
)

# What the controller emits for a container without a probe (webhook default + queue.go rewrite).
DEFAULT_ENV = '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'


def test_the_controllers_default_probe_is_an_aggressive_tcp_probe() -> None:
    (spec,) = parse_readiness_probes(DEFAULT_ENV)
    assert spec == ProbeSpec(action=TCPSocketAction(port=8080, host="127.0.0.1"), success_threshold=1)
    assert spec.aggressive and spec.attempt_timeout == 0.1


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_an_empty_value_means_no_probes(value: str) -> None:
    assert parse_readiness_probes(value) == ()
    assert parse_readiness_probes(value, multi_container=True) == ()


def test_an_http_probe_keeps_every_field() -> None:
    env = json.dumps(
        {
            "httpGet": {
                "host": "127.0.0.1",
                "port": 8080,
                "path": "/healthz",
                "scheme": "HTTPS",
                "httpHeaders": [{"name": "X-Probe", "value": "yes"}, {"name": "X-Two", "value": "a b"}],
            },
            "successThreshold": 2,
            "failureThreshold": 3,
            "timeoutSeconds": 4,
            "periodSeconds": 5,
            "initialDelaySeconds": 6,
            "terminationGracePeriodSeconds": 7,
        }
    )
    (spec,) = parse_readiness_probes(env)
    assert spec == ProbeSpec(
        action=HTTPGetAction(
            port=8080, host="127.0.0.1", path="/healthz", scheme="HTTPS", headers=(("X-Probe", "yes"), ("X-Two", "a b"))
        ),
        success_threshold=2,
        failure_threshold=3,
        timeout_seconds=4,
        period_seconds=5,
        initial_delay_seconds=6,
    )
    assert not spec.aggressive and spec.attempt_timeout == 4.0


def test_absent_fields_take_go_zero_values_and_local_defaults() -> None:
    (spec,) = parse_readiness_probes('{"httpGet":{"port":9000}}')
    assert spec == ProbeSpec(action=HTTPGetAction(port=9000, host="127.0.0.1", path="", scheme="HTTP"))
    assert spec.success_threshold == 0 and spec.period_seconds == 0 and spec.timeout_seconds == 0


def test_a_string_port_is_accepted_as_kubernetes_int_or_string() -> None:
    (spec,) = parse_readiness_probes('{"tcpSocket":{"port":"8080","host":"127.0.0.1"},"periodSeconds":1}')
    assert spec.action == TCPSocketAction(port=8080)


def test_a_grpc_probe_has_a_port_and_an_optional_service() -> None:
    (with_service,) = parse_readiness_probes('{"grpc":{"port":8080,"service":"orders"}}')
    (without,) = parse_readiness_probes('{"grpc":{"port":8080,"service":null}}')
    assert with_service.action == GRPCAction(port=8080, service="orders")
    assert without.action == GRPCAction(port=8080, service="")


def test_field_names_match_case_insensitively_as_in_go() -> None:
    (spec,) = parse_readiness_probes('{"HttpGet":{"Port":8080,"PATH":"/x"},"PeriodSeconds":2}')
    assert spec.action == HTTPGetAction(port=8080, path="/x") and spec.period_seconds == 2


def test_a_lowercase_scheme_is_normalised() -> None:
    (spec,) = parse_readiness_probes('{"httpGet":{"port":8443,"scheme":"https"}}')
    assert isinstance(spec.action, HTTPGetAction) and spec.action.scheme == "HTTPS"


def test_headers_the_prober_sets_itself_are_dropped() -> None:
    env = '{"httpGet":{"port":1,"httpHeaders":[{"name":"Host","value":"x"},{"name":"user-agent","value":"y"},{"name":"A","value":"b"}]}}'
    (spec,) = parse_readiness_probes(env)
    assert isinstance(spec.action, HTTPGetAction) and spec.action.headers == (("A", "b"),)


def test_the_multi_container_array_gives_one_spec_per_container() -> None:
    env = json.dumps(
        [
            {"tcpSocket": {"port": 8080, "host": "127.0.0.1"}, "successThreshold": 1},
            {"httpGet": {"port": "8090", "path": "/ready"}, "periodSeconds": 3, "timeoutSeconds": 1},
        ]
    )
    specs = parse_readiness_probes(env, multi_container=True)
    assert [s.action for s in specs] == [TCPSocketAction(port=8080), HTTPGetAction(port=8090, path="/ready")]
    assert [s.aggressive for s in specs] == [True, False]


@pytest.mark.parametrize("env", ["[]", "null"])
def test_an_empty_multi_container_array_means_no_probes(env: str) -> None:
    assert parse_readiness_probes(env, multi_container=True) == ()


@pytest.mark.parametrize(
    ("path", "target"),
    [
        pytest.param("", "/", id="empty"),
        pytest.param("/healthz", "/healthz", id="absolute"),
        pytest.param("healthz", "/healthz", id="relative"),
        pytest.param("//double", "//double", id="only-one-slash-trimmed"),
        pytest.param("/a b?q=1 2&r", "/a%20b?q=1%202&r", id="spaces-escaped"),
        pytest.param("/x?y=1#frag", "/x?y=1", id="fragment-dropped"),
        pytest.param("/%7Euser", "/%7Euser", id="escapes-kept"),
    ],
)
def test_the_request_target_is_built_as_upstream_builds_the_url(path: str, target: str) -> None:
    assert HTTPGetAction(port=1, path=path).target == target


def test_normal_mode_never_uses_a_timeout_under_one_second() -> None:
    (spec,) = parse_readiness_probes('{"tcpSocket":{"port":1},"periodSeconds":10,"timeoutSeconds":0}')
    assert spec.attempt_timeout == 1.0


@pytest.mark.parametrize(
    ("env", "multi", "says"),
    [
        pytest.param("{not json", False, "is not valid JSON", id="malformed-json"),
        pytest.param('"wrongProbeObject"', False, "must be a JSON object", id="a-json-string"),
        pytest.param("null", False, "must be a JSON object", id="null-single"),
        pytest.param(
            "[" + DEFAULT_ENV + "]",
            False,
            "ENABLE_MULTI_CONTAINER_PROBES is false",
            id="array-when-single",
        ),
        pytest.param(DEFAULT_ENV, True, "ENABLE_MULTI_CONTAINER_PROBES is true", id="object-when-multi"),
        pytest.param("[null]", True, "probe [0] must be a JSON object", id="null-in-array"),
        pytest.param("{}", False, "has no handler", id="no-handler"),
        pytest.param('{"exec":{"command":["true"]}}', False, "exec probes are not supported", id="exec"),
        pytest.param(
            '{"tcpSocket":{}}',
            False,
            "port must be a number from 1 to 65535",
            id="missing-port",
        ),
        pytest.param('{"tcpSocket":{"port":"http"}}', False, "got 'http'", id="named-port"),
        pytest.param('{"tcpSocket":{"port":0}}', False, "from 1 to 65535", id="port-zero"),
        pytest.param('{"tcpSocket":{"port":70000}}', False, "from 1 to 65535", id="port-too-big"),
        pytest.param('{"tcpSocket":{"port":80.5}}', False, "from 1 to 65535", id="port-float"),
        pytest.param('{"tcpSocket":{"port":true}}', False, "from 1 to 65535", id="port-bool"),
        pytest.param(
            '{"tcpSocket":"127.0.0.1:80"}',
            False,
            "tcpSocket must be a JSON object",
            id="handler-not-object",
        ),
        pytest.param(
            '{"tcpSocket":{"port":1,"host":5}}',
            False,
            "host must be a string",
            id="host-not-string",
        ),
        pytest.param(
            '{"grpc":{"port":1,"service":7}}',
            False,
            "service must be a string",
            id="service-not-string",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"scheme":"FTP"}}',
            False,
            "scheme must be HTTP or HTTPS",
            id="bad-scheme",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"path":"/a\\nb"}}',
            False,
            "control characters",
            id="path-newline",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"httpHeaders":{"a":"b"}}}',
            False,
            "httpHeaders must be a JSON array",
            id="headers-not-list",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"httpHeaders":["a"]}}',
            False,
            "must be an object with name",
            id="header-not-object",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"httpHeaders":[{"name":"a b","value":"c"}]}}',
            False,
            "header token",
            id="header-name",
        ),
        pytest.param(
            '{"httpGet":{"port":1,"httpHeaders":[{"name":"X-A\\n","value":"c"}]}}',
            False,
            "header token",
            id="header-name-trailing-newline",  # the old ^...$ pattern let a final LF through
        ),
        pytest.param(
            '{"httpGet":{"port":1,"httpHeaders":[{"name":"a","value":"c\\r\\nX: y"}]}}',
            False,
            "CR, LF or NUL",
            id="header-injection",
        ),
        pytest.param(
            '{"tcpSocket":{"port":1},"periodSeconds":-1}',
            False,
            "periodSeconds must be an integer from 0",
            id="negative-period",
        ),
        pytest.param(
            '{"tcpSocket":{"port":1},"successThreshold":"1"}',
            False,
            "successThreshold must be an integer",
            id="threshold-string",
        ),
        pytest.param(
            '{"tcpSocket":{"port":1},"timeoutSeconds":1.5}',
            False,
            "timeoutSeconds must be an integer",
            id="timeout-float",
        ),
    ],
)
def test_a_probe_that_cannot_be_used_is_refused_naming_the_env_var(env: str, multi: bool, says: str) -> None:
    with pytest.raises(ProbeConfigError) as caught:
        parse_readiness_probes(env, multi_container=multi)
    message = str(caught.value)
    assert message.startswith("SERVING_READINESS_PROBE: ")
    assert says in message
    assert caught.value.key == "SERVING_READINESS_PROBE"
    assert isinstance(caught.value, ValueError)


def test_an_error_in_the_array_says_which_probe_and_field() -> None:
    env = '[{"tcpSocket":{"port":1}},{"httpGet":{"port":"x"}}]'
    with pytest.raises(ProbeConfigError, match=r"probe \[1\]\.httpGet: port must be a number"):
        parse_readiness_probes(env, multi_container=True)
