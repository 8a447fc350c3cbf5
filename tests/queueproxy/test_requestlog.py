"""Request logs: upstream's template inputs, the default line, probes, the fallback line."""
from __future__ import annotations

import io
import json
import logging

import pytest

from queueproxy.observability import DEFAULT_REQUEST_LOG_TEMPLATE, ObservabilityConfig
from queueproxy.requestlog import (
    GoHeader,
    GoURL,
    RequestLogger,
    RequestView,
    RevisionInfo,
    canonical_header_key,
    is_probe,
    remote_addr,
)

REVISION = RevisionInfo(name="hello-00001", namespace="default", service="hello",
                        configuration="hello", pod_name="hello-00001-deployment-abc",
                        pod_ip="10.0.0.7")
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sample_request(**overrides: object) -> RequestView:
    fields: dict[str, object] = dict(
        method=b"GET",
        target=b"/hello?name=world",
        http_version="1.1",
        headers=[(b"Host", b"hello.default.example.com"), (b"User-Agent", b"curl/8.5.0"),
                 (b"Accept", b"*/*"), (b"traceparent", TRACEPARENT)],
        remote_addr=("10.1.2.3", 40000),
        content_length=0,
    )
    fields.update(overrides)
    return RequestView(**fields)  # type: ignore[arg-type]


def logger_for(template: str, **kw: object) -> tuple[RequestLogger, io.BytesIO]:
    out = io.BytesIO()
    return RequestLogger(template, REVISION, stream=out, **kw), out  # type: ignore[arg-type]


def test_default_template_renders_the_upstream_json_line() -> None:
    rl, out = logger_for(DEFAULT_REQUEST_LOG_TEMPLATE)
    rl.log(sample_request(), 200, 12, 0.001655826)
    want = (
        '{"httpRequest": {"requestMethod": "GET", "requestUrl": "/hello?name\\u003Dworld", '
        '"requestSize": "0", "status": 200, "responseSize": "12", "userAgent": "curl/8.5.0", '
        '"remoteIp": "10.1.2.3:40000", "serverIp": "10.0.0.7", "referer": "", '
        '"latency": "0.001655826s", "protocol": "HTTP/1.1"}, '
        '"traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}\n'
    )
    assert out.getvalue().decode() == want
    assert json.loads(want)["httpRequest"]["requestUrl"] == "/hello?name=world"


def test_default_template_escapes_client_data_with_js() -> None:
    rl, out = logger_for(DEFAULT_REQUEST_LOG_TEMPLATE)
    view = sample_request(method=b"POST", target=b'/a"b<c>', content_length=-1,
                          headers=[(b"user-agent", b'evil"\n'), (b"Referer", b"http://r/\xff")],
                          remote_addr="[::1]:5000", http_version="2")
    rl.log(view, 503, 0, 2e-05)
    line = out.getvalue()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line.decode("utf-8", "surrogateescape"))
    assert record["httpRequest"]["requestUrl"] == '/a"b<c>'
    assert record["httpRequest"]["userAgent"] == 'evil"\n'
    assert record["httpRequest"]["requestSize"] == "-1"
    assert record["httpRequest"]["latency"] == "2e-05s"
    assert record["httpRequest"]["protocol"] == "HTTP/2.0"
    assert record["httpRequest"]["remoteIp"] == "[::1]:5000"
    assert record["traceId"] == ""
    assert b"http://r/\xff" in line  # raw bytes are written back as they came


def test_template_inputs_match_upstreams_shape() -> None:
    template = ("{{.Request.Method}} {{.Request.RequestURI}} {{.Request.Proto}} "
                "{{.Request.ProtoMajor}}.{{.Request.ProtoMinor}} {{.Request.Host}} "
                "{{.Request.ContentLength}} {{.Request.UserAgent}} [{{.Request.Referer}}] "
                "{{.Request.Header.Get \"accept\"}} {{index .Request.Header \"User-Agent\"}} "
                "{{.Response.Code}} {{.Response.Size}} {{.Response.Latency}} "
                "{{.Revision.Name}} {{.Revision.Namespace}} {{.Revision.Service}} "
                "{{.Revision.Configuration}} {{.Revision.PodName}} {{.Revision.PodIP}} {{.TraceID}}")
    rl, _ = logger_for(template)
    line = rl.render(sample_request(content_length=5), 201, 7, 1.5).decode()
    assert line == ("GET /hello?name=world HTTP/1.1 1.1 hello.default.example.com 5 curl/8.5.0 [] "
                    "*/* [curl/8.5.0] 201 7 1.5 hello-00001 default hello hello "
                    "hello-00001-deployment-abc 10.0.0.7 4bf92f3577b34da6a3ce929d0e0e4736\n")


def test_structs_print_like_go() -> None:
    rl, _ = logger_for("{{.Response}} {{.Revision}}")
    assert rl.render(sample_request(), 200, 3, 0.5) == (
        b"{200 3 0.5} {hello-00001 default hello hello hello-00001-deployment-abc 10.0.0.7}\n")


def test_a_per_request_revision_overrides_the_loggers_own() -> None:
    rl, out = logger_for("{{.Revision.Name}} {{.Revision.PodIP}}")
    rl.log(sample_request(), 200, 0, 0.0, revision=RevisionInfo(name="other-00002", pod_ip="10.9.9.9"))
    rl.log(sample_request(), 200, 0, 0.0)
    assert out.getvalue() == b"other-00002 10.9.9.9\nhello-00001 10.0.0.7\n"


def test_header_map_is_what_go_hands_a_handler() -> None:
    rl, _ = logger_for("{{.Request.Header}}")
    view = sample_request(headers=[(b"host", b"h"), (b"x-multi", b"a"), (b"X-MULTI", b" b "),
                                   (b"transfer-encoding", b"chunked"), (b"content-length", b"3"),
                                   (b":authority", b"h2host")])
    assert rl.render(view, 200, 0, 0.0) == b"map[X-Multi:[a b]]\n"


def test_url_fields_and_methods() -> None:
    rl, _ = logger_for("{{.Request.URL}}|{{.Request.URL.Path}}|{{.Request.URL.RawQuery}}|"
                       "{{.Request.URL.Query.Get \"x\"}}|{{index .Request.URL.Query \"y\"}}")
    view = sample_request(target=b"/a%20b/c%2Fd?x=1+2&y=%41&y=b&bad=%zz")
    assert rl.render(view, 200, 0, 0.0) == b"/a%20b/c%2Fd?x=1+2&y=%41&y=b&bad=%zz|/a b/c/d|" \
                                           b"x=1+2&y=%41&y=b&bad=%zz|1 2|[A b]\n"


def test_host_comes_from_the_absolute_target_or_authority() -> None:
    rl, _ = logger_for("{{.Request.Host}} {{.Request.URL}}")
    absolute = sample_request(target=b"http://Other:81/p?q", headers=[(b"host", b"ignored")])
    assert rl.render(absolute, 200, 0, 0.0) == b"Other:81 http://Other:81/p?q\n"
    h2 = sample_request(http_version="2", headers=[(b":authority", b"svc.example")])
    assert rl.render(h2, 200, 0, 0.0) == b"svc.example /hello?name=world\n"


@pytest.mark.parametrize(("target", "method", "string", "path"), [
    pytest.param("*", "OPTIONS", "*", "*", id="asterisk"),
    pytest.param("example.com:443", "CONNECT", "//example.com:443", "", id="authority form"),
    pytest.param("/a%41", "GET", "/a%41", "/aA", id="unusual escape kept"),
    pytest.param("/{x}", "GET", "/%7Bx%7D", "/{x}", id="re-escaped when not valid"),
    pytest.param("/p?", "GET", "/p?", "/p", id="force query"),
])
def test_go_url_from_request_target(target: str, method: str, string: str, path: str) -> None:
    u = GoURL.from_request_target(target, method)
    assert (u.String(), u.Path) == (string, path)


def test_go_url_host_parts() -> None:
    u = GoURL.from_request_target("http://[::1]:8080/x")
    assert (u.Hostname(), u.Port()) == ("::1", "8080")
    u = GoURL.from_request_target("http://example.com/x")
    assert (u.Hostname(), u.Port()) == ("example.com", "")


@pytest.mark.parametrize(("key", "want"), [
    ("content-type", "Content-Type"), ("X-B3-TRACEID", "X-B3-Traceid"), ("a--b", "A--B"),
    ("has space", "has space"), ("ünicode", "ünicode"), ("", ""),
])
def test_canonical_header_key_like_go(key: str, want: str) -> None:
    assert canonical_header_key(key) == want


def test_go_header_get_and_missing_keys() -> None:
    h = GoHeader.from_request_pairs([(b"accept", b"a"), (b"accept", b"b")])
    assert (h.Get("ACCEPT"), h.Values("accept"), h["Nope"], h.Get("nope")) == ("a", ["a", "b"], [], "")


def test_execution_failure_writes_the_upstream_fallback_line() -> None:
    rl, out = logger_for("{{.Request.Nope}}")
    rl.log(sample_request(), 404, 0, 0.25)
    assert out.getvalue() == (b"Invalid request log template: method: GET, response code: 404, "
                              b"latency: 0.25, url: /hello?name=world\n")


def test_a_newline_is_added_only_when_missing() -> None:
    rl, out = logger_for("{{.Response.Code}}\n")
    rl.log(sample_request(), 200, 0, 0.0)
    rl.log(sample_request(), 204, 0, 0.0)
    assert out.getvalue() == b"200\n204\n"


def test_trace_id_given_by_the_caller_wins() -> None:
    rl, _ = logger_for("{{.TraceID}}")
    assert rl.render(sample_request(), 200, 0, 0.0, trace_id="given") == b"given\n"
    b3 = sample_request(headers=[(b"X-B3-TraceId", b"b3id")])
    assert rl.render(b3, 200, 0, 0.0) == b"b3id\n"


@pytest.mark.parametrize(("headers", "probe"), [
    pytest.param([(b"User-Agent", b"kube-probe/1.30")], True, id="kubelet user agent"),
    pytest.param([(b"K-Kubelet-Probe", b"queue")], True, id="kubelet header"),
    pytest.param([(b"k-network-probe", b"probe")], True, id="knative probe"),
    pytest.param([(b"K-Network-Probe", b"")], False, id="empty probe header"),
    pytest.param([(b"User-Agent", b"curl"), (b"User-Agent", b"kube-probe/1")], False,
                 id="only the first user agent counts"),
    pytest.param([(b"User-Agent", b"Knative-Activator-Probe")], False, id="activator probe UA alone"),
    pytest.param([], False, id="no headers"),
])
def test_probe_detection_like_upstream(headers: list[tuple[bytes, bytes]], probe: bool) -> None:
    assert is_probe(headers) is probe


def test_probe_requests_are_skipped_unless_enabled() -> None:
    probe = sample_request(headers=[(b"User-Agent", b"kube-probe/1.30")])
    rl, out = logger_for("{{.Response.Code}}")
    rl.log(probe, 200, 0, 0.0)
    rl.log(sample_request(), 201, 0, 0.0, probe=True)
    assert out.getvalue() == b""
    rl, out = logger_for("{{.Response.Code}}", log_probes=True)
    rl.log(probe, 200, 0, 0.0)
    assert out.getvalue() == b"200\n"


def test_from_config_is_none_when_request_logs_are_off() -> None:
    assert RequestLogger.from_config(ObservabilityConfig(), REVISION) is None
    no_template = ObservabilityConfig.from_env('{"enableRequestLog": true, "requestLogTemplate": ""}')
    assert RequestLogger.from_config(no_template, REVISION) is None


def test_from_config_builds_the_configured_logger() -> None:
    cfg = ObservabilityConfig.from_env(
        '{"enableRequestLog": true, "requestLogTemplate": "{{.Revision.PodName}}", '
        '"enableProbeRequestLog": true}')
    out = io.BytesIO()
    rl = RequestLogger.from_config(cfg, REVISION, stream=out)
    assert rl is not None and rl.log_probes
    rl.log(sample_request(headers=[(b"K-Network-Probe", b"probe")]), 200, 0, 0.0)
    assert out.getvalue() == b"hello-00001-deployment-abc\n"


def test_an_uncompilable_template_turns_request_logs_off_with_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = ObservabilityConfig.from_env('{"enableRequestLog": true, "requestLogTemplate": "{{define}}"}')
    with caplog.at_level(logging.ERROR, logger="queueproxy.requestlog"):
        assert RequestLogger.from_config(cfg, REVISION) is None
    assert "Request logs will be unavailable" in caplog.text


class Trickle(io.RawIOBase):
    """A stream that accepts at most 7 bytes per write, like a busy pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b[:7]
        return min(len(b), 7)


def test_partial_writes_are_completed() -> None:
    stream = Trickle()
    rl = RequestLogger("{{.Request.RequestURI}} {{.Response.Code}}", REVISION, stream=stream)  # type: ignore[arg-type]
    rl.log(sample_request(), 200, 0, 0.0)
    assert bytes(stream.data) == b"/hello?name=world 200\n"


class Broken(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        raise BrokenPipeError("stdout went away")


def test_a_broken_stdout_does_not_fail_the_request() -> None:
    rl = RequestLogger("x", REVISION, stream=Broken())  # type: ignore[arg-type]
    rl.log(sample_request(), 200, 0, 0.0)  # no exception


@pytest.mark.parametrize(("peer", "want"), [
    (("127.0.0.1", 80), "127.0.0.1:80"), (("::1", 80, 0, 0), "[::1]:80"), ("1.2.3.4:5", "1.2.3.4:5"),
    (None, ""),
])
def test_remote_addr_is_gos_text(peer: object, want: str) -> None:
    assert remote_addr(peer) == want  # type: ignore[arg-type]
