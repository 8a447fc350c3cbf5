"""Knative Service manifests: parsing, upstream's defaults, validation, notes, the probe rewrite."""
from __future__ import annotations

import json

import pytest
import yaml

from autoscaler.config import AutoscalerConfig
from kdp.manifest import ManifestError, TrafficTarget, parse_manifests, queue_proxy_probe
from queueproxy.readiness import parse_readiness_probes


def service(spec: str = "", *, name: str = "hello", meta: str = "", template_meta: str = "",
            container: str = "command: [python3, app.py]", template_spec: str = "") -> str:
    """A Service document; each argument is YAML for that part (a mapping, or for ``container``
    a mapping or a list of them)."""
    c = yaml.safe_load(container)
    tspec = yaml.safe_load(template_spec) or {}
    tspec["containers"] = c if isinstance(c, list) else [c]
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": name, **(yaml.safe_load(meta) or {})},
           "spec": {"template": {"metadata": yaml.safe_load(template_meta) or {}, "spec": tspec},
                    **(yaml.safe_load(spec) or {})}}
    return yaml.safe_dump(doc, sort_keys=False)


def one(text: str, **kwargs: object) -> object:
    specs = parse_manifests(text, **kwargs)  # type: ignore[arg-type]
    assert len(specs) == 1
    return specs[0]


def problems(text: str, **kwargs: object) -> str:
    with pytest.raises(ManifestError) as e:
        parse_manifests(text, **kwargs)  # type: ignore[arg-type]
    return str(e.value)


def test_a_minimal_service_gets_upstreams_defaults() -> None:
    s = one(service(), base_dir="/srv/app")
    assert (s.namespace, s.name, s.base_dir) == ("default", "hello", "/srv/app")
    t = s.template
    assert (t.container_concurrency, t.timeout_seconds, t.response_start_timeout_seconds, t.idle_timeout_seconds) == \
        (0, 300, 0, 0)
    c = t.container
    assert c.command == ("python3", "app.py") and c.port == 8080 and c.protocol == "http1"
    assert json.loads(c.readiness_probe) == {"tcpSocket": {}, "successThreshold": 1}
    assert s.traffic == (TrafficTarget(percent=100, latest_revision=True),)


def test_container_fields_are_read() -> None:
    s = one(service(container="""\
command: [python3]
args: [app.py, --fast]
workingDir: sub
env: [{name: TARGET, value: kdp}, {name: EMPTY}]
ports: [{containerPort: 9000, name: h2c}]"""))
    c = s.template.container
    assert c.args == ("app.py", "--fast") and c.working_dir == "sub"
    assert c.env == (("TARGET", "kdp"), ("EMPTY", ""))
    assert (c.port, c.protocol) == (9000, "h2c")


def test_revision_settings_are_read() -> None:
    s = one(service(template_spec="containerConcurrency: 3\ntimeoutSeconds: 20\nidleTimeoutSeconds: 5\n"
                                  "responseStartTimeoutSeconds: 7"))
    t = s.template
    assert (t.container_concurrency, t.timeout_seconds, t.idle_timeout_seconds, t.response_start_timeout_seconds) == \
        (3, 20, 5, 7)


@pytest.mark.parametrize(("timeout", "expected"), [
    pytest.param(300, 0, id="not below the default timeout: no response-start timeout"),
    pytest.param(600, 300, id="a longer timeout gets upstream's 300 s response-start default"),
])
def test_response_start_timeout_defaults_only_below_the_timeout(timeout: int, expected: int) -> None:
    s = one(service(template_spec=f"timeoutSeconds: {timeout}"))
    assert s.template.response_start_timeout_seconds == expected


def test_image_and_unsupported_fields_are_noted_not_silently_dropped() -> None:
    s = one(service(container="command: [app]\nimage: ghcr.io/x/y\nresources: {limits: {cpu: 1}}\nfoo: 1",
                    template_spec="serviceAccountName: sa"))
    notes = "\n".join(s.notes)
    assert "containers[0].image: ignored (no container engine" in notes
    assert "containers[0].resources: ignored" in notes
    assert "containers[0].foo: ignored (not supported by kdp)" in notes
    assert "spec.template.spec.serviceAccountName: ignored" in notes


def test_autoscaling_annotations_on_the_service_metadata_are_pointed_to_the_template() -> None:
    s = one(service(meta="annotations: {autoscaling.knative.dev/max-scale: '3'}"))
    assert any("belong on spec.template.metadata.annotations" in n for n in s.notes)


def test_a_container_without_command_is_refused_with_a_clear_error() -> None:
    msg = problems(service(container="image: ghcr.io/knative/helloworld-go"), source="svc.yaml")
    assert "svc.yaml: spec.template.spec.containers[0].command: required" in msg
    assert "no image" in msg


@pytest.mark.parametrize(("annotations", "fragment"), [
    pytest.param("autoscaling.knative.dev/window: 5s", "autoscaling.knative.dev/window='5s'", id="window below 6s"),
    pytest.param("autoscaling.knative.dev/max-scale: '-1'", "max-scale", id="negative max-scale"),
    pytest.param("autoscaling.knative.dev/metric: cpu", "metric", id="cpu is not a KPA metric"),
])
def test_invalid_autoscaling_annotations_are_refused_naming_key_and_value(annotations: str, fragment: str) -> None:
    msg = problems(service(template_meta=f"annotations: {{{annotations}}}"))
    assert "spec.template.metadata.annotations" in msg and fragment in msg


def test_annotations_are_validated_against_the_autoscalers_config() -> None:
    text = service(template_meta="annotations: {autoscaling.knative.dev/initial-scale: '0'}")
    assert "initial-scale" in problems(text)
    s = one(text, config=AutoscalerConfig(allow_zero_initial_scale=True))
    assert s.template.annotation_map == {"autoscaling.knative.dev/initial-scale": "0"}


@pytest.mark.parametrize(("container", "fragment"), [
    pytest.param("command: [a]\nenv: [{name: PORT, value: '1'}]", "PORT is reserved", id="reserved env"),
    pytest.param("command: [a]\nenv: [{name: X, valueFrom: {secretKeyRef: {}}}]", "valueFrom: not supported",
                 id="valueFrom"),
    pytest.param("command: [a]\nports: [{containerPort: 8012}]", "8012 is a reserved port", id="reserved port"),
    pytest.param("command: [a]\nports: [{containerPort: 1}, {containerPort: 2}]", "more than one container port",
                 id="two ports"),
    pytest.param("command: [a]\nports: [{containerPort: 9000, name: grpc}]", "port name 'grpc' is not allowed",
                 id="bad port name"),
    pytest.param("command: [a]\nreadinessProbe: {tcpSocket: {}, httpGet: {}}", "exactly one of", id="two handlers"),
    pytest.param("command: [a]\nreadinessProbe: {httpGet: {port: metrics}}", "must match container port",
                 id="probe on another named port"),
    pytest.param("command: [a]\nreadinessProbe: {tcpSocket: {}, failureThreshold: 3}",
                 "failureThreshold: is disallowed when periodSeconds is zero", id="aggressive probe with threshold"),
])
def test_container_problems_are_refused(container: str, fragment: str) -> None:
    assert fragment in problems(service(container=container))


@pytest.mark.parametrize(("template_spec", "fragment"), [
    pytest.param("containerConcurrency: 1001", "containerConcurrency: 1001 is out of range; allowed: 0..1000",
                 id="cc above the limit"),
    pytest.param("timeoutSeconds: 601", "timeoutSeconds: 601 is out of range; allowed: 0..600", id="timeout too long"),
    pytest.param("containerConcurrency: two", "'two' is not an integer", id="cc not an integer"),
])
def test_revision_settings_out_of_range_are_refused(template_spec: str, fragment: str) -> None:
    assert fragment in problems(service(template_spec=template_spec))


def test_more_than_one_container_is_refused() -> None:
    text = service(container="[{command: [a]}, {command: [b]}]")
    assert "2 containers; kdp runs one container per pod" in problems(text)


def test_the_readiness_probe_gets_the_webhook_defaults_when_a_period_is_set() -> None:
    s = one(service(container="command: [a]\nreadinessProbe: {httpGet: {path: /ready}, periodSeconds: 2}"))
    assert json.loads(s.template.container.readiness_probe) == {
        "httpGet": {"path": "/ready"}, "periodSeconds": 2, "successThreshold": 1, "failureThreshold": 3,
        "timeoutSeconds": 1}


@pytest.mark.parametrize(("probe", "expected"), [
    pytest.param('{"tcpSocket":{},"successThreshold":1}',
                 {"tcpSocket": {"host": "127.0.0.1", "port": 4321}, "successThreshold": 1}, id="default tcp"),
    pytest.param('{"httpGet":{"path":"/r","port":"http"},"successThreshold":1}',
                 {"httpGet": {"path": "/r", "host": "127.0.0.1", "port": 4321, "scheme": "HTTP"},
                  "successThreshold": 1}, id="http on the named port"),
    pytest.param('{"exec":{"command":["true"]},"successThreshold":2}',
                 {"tcpSocket": {"host": "127.0.0.1", "port": 4321}, "successThreshold": 2}, id="exec becomes tcp"),
    pytest.param('{"tcpSocket":{},"periodSeconds":5,"timeoutSeconds":0,"successThreshold":1}',
                 {"tcpSocket": {"host": "127.0.0.1", "port": 4321}, "periodSeconds": 5, "timeoutSeconds": 1,
                  "successThreshold": 1}, id="timeout raised to 1 s with a period"),
])
def test_the_controller_rewrite_points_the_probe_at_the_pods_port(probe: str, expected: dict[str, object]) -> None:
    out = queue_proxy_probe(probe, 4321)
    assert json.loads(out) == expected
    parse_readiness_probes(out)  # and the queue-proxy accepts it


def test_traffic_is_read_with_upstreams_latest_revision_default() -> None:
    s = one(service(spec="""\
traffic:
- {percent: 80, revisionName: hello-00001}
- {percent: 20, tag: canary}
- {percent: 0, revisionName: hello-00001, tag: old}"""))
    assert s.traffic == (
        TrafficTarget(percent=80, revision_name="hello-00001", latest_revision=False),
        TrafficTarget(percent=20, latest_revision=True, tag="canary"),
        TrafficTarget(percent=0, revision_name="hello-00001", latest_revision=False, tag="old"))


@pytest.mark.parametrize(("traffic", "fragment"), [
    pytest.param("[{percent: 50}]", "traffic targets sum to 50, want 100", id="sum below 100"),
    pytest.param("[{percent: 100, revisionName: hello-1, latestRevision: true}]",
                 "may not set revisionName 'hello-1' when latestRevision is true", id="both senses"),
    pytest.param("[{percent: 50, tag: a}, {percent: 50, tag: a}]", "multiple definitions for 'a'", id="duplicate tag"),
    pytest.param("[{percent: 100, tag: Bad_Tag}]", "is not a DNS-1035 label", id="bad tag"),
    pytest.param("[{percent: 101}]", "percent: 101 is out of range; allowed: 0..100", id="percent above 100"),
])
def test_bad_traffic_is_refused(traffic: str, fragment: str) -> None:
    assert fragment in problems(service(spec=f"traffic: {traffic}"))


def test_a_file_holds_several_services_and_every_problem_is_listed() -> None:
    text = service(name="a") + "---\n" + service(name="b") + "---\n"
    assert [s.name for s in parse_manifests(text)] == ["a", "b"]
    bad = service(name="a", container="image: x") + "---\n" + service(name="b", template_spec="timeoutSeconds: -1")
    msg = problems(bad, source="f.yaml")
    assert "f.yaml#1: spec.template.spec.containers[0].command: required" in msg
    assert "f.yaml#2: spec.template.spec.timeoutSeconds: -1 is out of range" in msg


def test_the_same_service_twice_is_refused() -> None:
    assert "also defined in" in problems(service() + "---\n" + service())


@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "allowed: apiVersion", id="not a Service"),
    pytest.param("{", "not valid YAML", id="broken YAML"),
    pytest.param("", "no Service in the file", id="empty"),
    pytest.param(service(name="Hello"), "is not a DNS-1035 label", id="upper-case name"),
    pytest.param(service(name="a" * 58), "at most 57 characters", id="name too long for revision names"),
    pytest.param(service(template_meta="name: other-1"), "must have prefix 'hello-'", id="revision name prefix"),
])
def test_documents_that_are_not_valid_services_are_refused(text: str, fragment: str) -> None:
    assert fragment in problems(text)


def test_the_template_digest_changes_with_the_template_only() -> None:
    a = one(service()).template
    same = one(service(spec="traffic: [{percent: 100}]")).template
    other = one(service(container="command: [python3, app.py]\nenv: [{name: A, value: b}]")).template
    assert a.digest() == same.digest() != other.digest()
