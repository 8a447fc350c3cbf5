"""Knative Service manifests (``serving.knative.dev/v1``, ``kind: Service``) for the local runtime.

What belongs here: reading the YAML text (one or more documents) into frozen
:class:`ServiceSpec` records, with upstream's webhook defaulting and validation for the fields
kdp honours, and a note for every field it cannot honour (no container engine, no cluster):

* the one container's ``command``/``args``/``env``/``ports``/``readinessProbe``/``workingDir``;
  ``image`` is ignored with a note, a container without ``command`` is refused;
* ``containerConcurrency``, ``timeoutSeconds``, ``responseStartTimeoutSeconds``,
  ``idleTimeoutSeconds`` (``pkg/apis/serving/v1/revision_defaults.go``, ``config-defaults``);
* the template's ``autoscaling.knative.dev/*`` annotations, validated with
  :func:`autoscaler.annotations.check_annotations` against the autoscaler's config;
* ``traffic`` (``percent``, ``revisionName``, ``latestRevision``, ``tag``) with upstream's
  defaulting (``latestRevision`` = no revisionName) and validation (sum 100, unique tags);
* the readiness probe with the webhook defaults (an empty ``tcpSocket`` when none is given,
  ``successThreshold`` 1; ``failureThreshold`` 3 and ``timeoutSeconds`` 1 once
  ``periodSeconds`` is set); :func:`queue_proxy_probe` adds the controller's part when a pod
  starts (host ``127.0.0.1``, the pod's port, scheme ``HTTP``, exec -> tcpSocket).

Errors raise :class:`ManifestError` listing every problem with its source and field path.
Pure: no I/O (the caller reads the file), no clock.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoscaler.annotations import GROUP, AnnotationsInvalid, check_annotations
from autoscaler.config import AutoscalerConfig

__all__ = [
    "API_VERSION",
    "ContainerSpec",
    "ManifestError",
    "RESERVED_ENV",
    "RESERVED_PORTS",
    "RevisionTemplate",
    "ServiceSpec",
    "TrafficTarget",
    "parse_manifests",
    "queue_proxy_probe",
]

logger = logging.getLogger(__name__)

API_VERSION = "serving.knative.dev/v1"
DEFAULT_NAMESPACE = "default"
DEFAULT_USER_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 600
DEFAULT_RESPONSE_START_TIMEOUT_SECONDS = 300
MAX_CONTAINER_CONCURRENCY = 1000
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})
PORT_NAMES = ("", "http1", "h2c")
REVISION_SUFFIX_LEN = len("-00001")
MAX_NAME_LEN = 63

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Fields read by this module, per object; anything else gets a note.
_IGNORED_WHY = {
    "resources": "no resource limits on local processes",
    "livenessProbe": "kdp runs readiness probes only",
    "startupProbe": "kdp runs readiness probes only",
    "securityContext": "processes run as the current user",
    "volumeMounts": "no volumes",
    "imagePullPolicy": "no container engine",
    "volumes": "no volumes",
    "serviceAccountName": "no cluster",
    "imagePullSecrets": "no container engine",
    "enableServiceLinks": "no cluster",
    "nodeSelector": "no cluster",
    "affinity": "no cluster",
    "tolerations": "no cluster",
}


class ManifestError(ValueError):
    """A manifest that cannot run; ``problems`` lists each as ``source: path: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    port: int = DEFAULT_USER_PORT
    """The declared ``containerPort``; locally every pod gets its own port, passed as $PORT."""
    protocol: str = "http1"
    """``h2c`` when the port is named so (the queue-proxy then speaks h2c to the app)."""
    readiness_probe: str = '{"successThreshold":1,"tcpSocket":{"port":0}}'
    """The webhook-defaulted probe as canonical JSON (a Kubernetes ``corev1.Probe``)."""
    working_dir: str = ""
    """Relative to the manifest's directory; empty = that directory."""
    name: str = "user-container"


@dataclass(frozen=True, slots=True)
class RevisionTemplate:
    container: ContainerSpec
    annotations: tuple[tuple[str, str], ...] = ()
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    name: str = ""
    """``spec.template.metadata.name`` when the user names the revision; else generated."""

    @property
    def annotation_map(self) -> dict[str, str]:
        return dict(self.annotations)

    def digest(self) -> str:
        """Identifies the template: a change of any field makes a new revision."""
        blob = json.dumps(_template_json(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    percent: int = 0
    revision_name: str = ""
    latest_revision: bool = True
    tag: str = ""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    namespace: str
    name: str
    template: RevisionTemplate
    traffic: tuple[TrafficTarget, ...] = (TrafficTarget(percent=100),)
    base_dir: str = "."
    """The manifest's directory: the user process runs there."""
    source: str = ""
    """``file#document`` for messages."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Fields that were ignored, and why."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


# ---- parsing ------------------------------------------------------------------------------

def parse_manifests(text: str, *, source: str = "manifest", base_dir: str = ".",
                    config: AutoscalerConfig | None = None) -> list[ServiceSpec]:
    """Every ``Service`` in ``text`` (YAML, one or more documents; empty documents skipped).

    ``config`` is the autoscaler's config the annotations are validated against (upstream's
    defaults when None). Raises :class:`ManifestError` with every problem found.
    """
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ManifestError([f"{source}: not valid YAML: {e}"]) from None
    config = config or AutoscalerConfig()
    specs: list[ServiceSpec] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"{source}#{i + 1}" if len(docs) > 1 else source
        parser = _Parser(where, base_dir, config)
        spec = parser.service(doc)
        problems += parser.problems
        if spec is not None:
            if spec.key in seen:
                problems.append(f"{where}: service {spec.namespace}/{spec.name} is also defined in {seen[spec.key]}")
            seen[spec.key] = where
            specs.append(spec)
    if problems:
        raise ManifestError(problems)
    if not specs:
        raise ManifestError([f"{source}: no Service in the file"])
    return specs


class _Parser:
    def __init__(self, source: str, base_dir: str, config: AutoscalerConfig) -> None:
        self.source = source
        self.base_dir = base_dir
        self.config = config
        self.problems: list[str] = []
        self.notes: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def note(self, path: str, why: str) -> None:
        self.notes.append(f"{path}: ignored ({why})")

    def unknown(self, obj: Mapping[str, Any], path: str, known: set[str]) -> None:
        for key in obj:
            if key not in known:
                self.note(f"{path}.{key}" if path else str(key), _IGNORED_WHY.get(str(key), "not supported by kdp"))

    def mapping(self, obj: Any, path: str) -> dict[str, Any]:
        if obj is None:
            return {}
        if not isinstance(obj, dict):
            self.fail(path, f"expected a mapping, got {_kind(obj)}")
            return {}
        return obj

    def seq(self, obj: Any, path: str) -> list[Any]:
        if obj is None:
            return []
        if not isinstance(obj, list):
            self.fail(path, f"expected a list, got {_kind(obj)}")
            return []
        return obj

    def integer(self, obj: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
        if key not in obj or obj[key] is None:
            return None
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"{value!r} is not an integer; allowed: {lo}..{hi}")
            return None
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"{value} is out of range; allowed: {lo}..{hi}")
            return None
        return value

    def string_map(self, obj: Any, path: str) -> dict[str, str]:
        result: dict[str, str] = {}
        for k, v in self.mapping(obj, path).items():
            if not isinstance(v, str):
                self.fail(f"{path}.{k}", f"{v!r} must be a string (quote it in YAML)")
            else:
                result[str(k)] = v
        return result

    # -- the Service --------------------------------------------------------------------

    def service(self, doc: Any) -> ServiceSpec | None:
        doc = self.mapping(doc, "(document)")
        if not doc:
            return None
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if api != API_VERSION or kind != "Service":
            self.fail("(document)", f"apiVersion {api!r}, kind {kind!r}; allowed: apiVersion {API_VERSION!r}, "
                                    "kind 'Service'")
            return None
        self.unknown(doc, "", {"apiVersion", "kind", "metadata", "spec", "status"})
        meta = self.mapping(doc.get("metadata"), "metadata")
        self.unknown(meta, "metadata", {"name", "namespace", "labels", "annotations"})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            self.fail("metadata.name", "required")
            return None
        if not _DNS1035.match(name) or len(name) > MAX_NAME_LEN - REVISION_SUFFIX_LEN:
            self.fail("metadata.name", f"{name!r} is not a DNS-1035 label of at most "
                      f"{MAX_NAME_LEN - REVISION_SUFFIX_LEN} characters (lower-case letters, digits, '-'; "
                      "starting with a letter), so that revision names fit in 63")
        namespace = meta.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(namespace, str) or not _DNS1123.match(namespace) or len(namespace) > MAX_NAME_LEN:
            self.fail("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
        svc_annotations = self.string_map(meta.get("annotations"), "metadata.annotations")
        for key in svc_annotations:
            if key.startswith(GROUP + "/"):
                self.note(f"metadata.annotations.{key}", "autoscaling annotations belong on "
                                                         "spec.template.metadata.annotations")
        spec = self.mapping(doc.get("spec"), "spec")
        self.unknown(spec, "spec", {"template", "traffic"})
        template = self.template(self.mapping(spec.get("template"), "spec.template"), name)
        traffic = self.traffic(spec.get("traffic"), name)
        if template is None or self.problems:
            return None
        return ServiceSpec(namespace=str(namespace), name=name, template=template, traffic=traffic,
                           base_dir=self.base_dir, source=self.source, notes=tuple(self.notes))

    def template(self, tpl: dict[str, Any], service: str) -> RevisionTemplate | None:
        path = "spec.template"
        self.unknown(tpl, path, {"metadata", "spec"})
        meta = self.mapping(tpl.get("metadata"), f"{path}.metadata")
        self.unknown(meta, f"{path}.metadata", {"name", "annotations", "labels"})
        rev_name = meta.get("name") or ""
        if rev_name:
            if not isinstance(rev_name, str) or not _DNS1035.match(rev_name) or len(rev_name) > MAX_NAME_LEN:
                self.fail(f"{path}.metadata.name", f"{rev_name!r} is not a DNS-1035 label")
            elif not rev_name.startswith(service + "-"):
                self.fail(f"{path}.metadata.name", f"{rev_name!r} must have prefix {service + '-'!r}")
        annotations = self.string_map(meta.get("annotations"), f"{path}.metadata.annotations")
        try:
            check_annotations(annotations, self.config)
        except AnnotationsInvalid as e:
            for err in e.errors:
                self.fail(f"{path}.metadata.annotations", str(err))
        spec = self.mapping(tpl.get("spec"), f"{path}.spec")
        sp = f"{path}.spec"
        self.unknown(spec, sp, {"containers", "containerConcurrency", "timeoutSeconds",
                                "responseStartTimeoutSeconds", "idleTimeoutSeconds"})
        cc = self.integer(spec, "containerConcurrency", sp, 0, MAX_CONTAINER_CONCURRENCY)
        timeout = self.integer(spec, "timeoutSeconds", sp, 0, MAX_TIMEOUT_SECONDS)
        if not timeout:
            timeout = DEFAULT_TIMEOUT_SECONDS
        rst = self.integer(spec, "responseStartTimeoutSeconds", sp, 0, 2**31 - 1)
        if rst is None:  # upstream: the 300 s default only when it is below the total timeout
            rst = DEFAULT_RESPONSE_START_TIMEOUT_SECONDS if DEFAULT_RESPONSE_START_TIMEOUT_SECONDS < timeout else 0
        idle = self.integer(spec, "idleTimeoutSeconds", sp, 0, 2**31 - 1) or 0
        containers = self.seq(spec.get("containers"), f"{sp}.containers")
        if not containers:
            self.fail(f"{sp}.containers", "required: exactly one container")
            return None
        if len(containers) > 1:
            self.fail(f"{sp}.containers", f"{len(containers)} containers; kdp runs one container per pod "
                                          "(plus the queue-proxy)")
            return None
        container = self.container(self.mapping(containers[0], f"{sp}.containers[0]"), f"{sp}.containers[0]")
        if container is None:
            return None
        return RevisionTemplate(
            container=container, annotations=tuple(sorted(annotations.items())),
            container_concurrency=cc or 0, timeout_seconds=timeout, response_start_timeout_seconds=rst,
            idle_timeout_seconds=idle, name=rev_name if isinstance(rev_name, str) else "")

    def container(self, c: dict[str, Any], path: str) -> ContainerSpec | None:
        self.unknown(c, path, {"name", "image", "command", "args", "env", "ports", "readinessProbe", "workingDir"})
        if "image" in c:
            self.note(f"{path}.image", "no container engine: kdp runs the container's command")
        command = c.get("command")
        if not command:
            self.fail(f"{path}.command", "required: kdp runs the command as a local process (there is no image "
                                         "to take an entrypoint from), e.g. command: [python3, app.py]")
            return None
        cmd = self.strings(command, f"{path}.command")
        args = self.strings(c.get("args") or [], f"{path}.args")
        env: list[tuple[str, str]] = []
        for i, item in enumerate(self.seq(c.get("env"), f"{path}.env")):
            ep = f"{path}.env[{i}]"
            item = self.mapping(item, ep)
            name = item.get("name")
            if not isinstance(name, str) or not name:
                self.fail(f"{ep}.name", "required")
                continue
            if name in RESERVED_ENV:
                self.fail(f"{ep}.name", f"{name} is reserved (set by the runtime)")
            if "valueFrom" in item:
                self.fail(f"{ep}.valueFrom", "not supported by kdp (no secrets, config maps or downward API); "
                                             "use value")
                continue
            self.unknown(item, ep, {"name", "value"})
            value = item.get("value", "")
            if not isinstance(value, str):
                self.fail(f"{ep}.value", f"{value!r} must be a string (quote it in YAML)")
                continue
            env.append((name, value))
        port, protocol, port_name = DEFAULT_USER_PORT, "http1", ""
        ports = self.seq(c.get("ports"), f"{path}.ports")
        if len(ports) > 1:
            self.fail(f"{path}.ports", "more than one container port is set; only one is allowed")
        elif ports:
            pp = f"{path}.ports[0]"
            p = self.mapping(ports[0], pp)
            self.unknown(p, pp, {"containerPort", "name", "protocol"})
            port = self.integer(p, "containerPort", pp, 0, 65535) or DEFAULT_USER_PORT
            if port in RESERVED_PORTS:
                self.fail(f"{pp}.containerPort", f"{port} is a reserved port, please use a different value")
            port_name = p.get("name") or ""
            if port_name not in PORT_NAMES:
                self.fail(f"{pp}.name", f"port name {port_name!r} is not allowed; allowed: empty, 'http1', 'h2c'")
            if p.get("protocol") not in (None, "", "TCP"):
                self.fail(f"{pp}.protocol", f"{p.get('protocol')!r}; allowed: TCP")
            protocol = "h2c" if port_name == "h2c" else "http1"
        probe = self.readiness_probe(c.get("readinessProbe"), f"{path}.readinessProbe", port_name or "http")
        working_dir = c.get("workingDir") or ""
        if not isinstance(working_dir, str):
            self.fail(f"{path}.workingDir", "must be a string")
            working_dir = ""
        name = c.get("name") or "user-container"
        return ContainerSpec(command=tuple(cmd), args=tuple(args), env=tuple(env), port=port, protocol=protocol,
                             readiness_probe=probe, working_dir=working_dir, name=str(name))

    def strings(self, obj: Any, path: str) -> list[str]:
        items = self.seq(obj, path)
        out = []
        for i, s in enumerate(items):
            if isinstance(s, bool) or not isinstance(s, (str, int, float)):
                self.fail(f"{path}[{i}]", f"{s!r} must be a string")
            else:
                out.append(str(s))
        return out

    def readiness_probe(self, raw: Any, path: str, port_name: str) -> str:
        probe = copy.deepcopy(self.mapping(raw, path)) if raw is not None else {}
        handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
        if len(handlers) > 1:
            self.fail(path, f"expected exactly one of httpGet, tcpSocket, exec, grpc; got {', '.join(handlers)}")
        if not handlers:
            probe["tcpSocket"] = {}
            handlers = ["tcpSocket"]
        self.unknown(probe, path, {"httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "timeoutSeconds",
                                   "periodSeconds", "successThreshold", "failureThreshold",
                                   "terminationGracePeriodSeconds"})
        h = handlers[0]
        action = probe[h] = self.mapping(probe.get(h), f"{path}.{h}")
        if h in ("httpGet", "tcpSocket"):
            p = action.get("port")
            if isinstance(p, str) and p and not p.isdigit() and p != port_name:
                self.fail(f"{path}.{h}.port", f"{p!r}: probe port must match container port")
        if h == "exec":
            self.note(f"{path}.exec", "the queue-proxy checks the port with TCP instead, as upstream")
        for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
            v = probe.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                self.fail(f"{path}.{key}", f"{v!r}; allowed: an integer >= 0")
                probe[key] = 0
        if "initialDelaySeconds" in probe:
            self.note(f"{path}.initialDelaySeconds", "the queue-proxy ignores it, as upstream")
        # webhook defaults (revision_defaults.go)
        if not probe.get("successThreshold"):
            probe["successThreshold"] = 1
        if probe.get("periodSeconds"):
            probe.setdefault("failureThreshold", 0)
            probe["failureThreshold"] = probe["failureThreshold"] or 3
            probe["timeoutSeconds"] = probe.get("timeoutSeconds") or 1
        else:  # aggressive probing: upstream validation forbids these
            for key in ("failureThreshold", "timeoutSeconds"):
                if probe.get(key):
                    self.fail(f"{path}.{key}", "is disallowed when periodSeconds is zero")
        return json.dumps(probe, sort_keys=True, separators=(",", ":"))

    def traffic(self, raw: Any, service: str) -> tuple[TrafficTarget, ...]:
        if raw is None:
            return (TrafficTarget(percent=100),)
        targets = []
        tags: dict[str, int] = {}
        total = 0
        for i, t in enumerate(self.seq(raw, "spec.traffic")):
            tp = f"spec.traffic[{i}]"
            t = self.mapping(t, tp)
            self.unknown(t, tp, {"percent", "revisionName", "latestRevision", "tag"})
            if "configurationName" in t:
                self.fail(f"{tp}.configurationName", "not allowed in a Service (it has its own configuration)")
            percent = self.integer(t, "percent", tp, 0, 100) or 0
            total += percent
            rev = t.get("revisionName") or ""
            if not isinstance(rev, str):
                self.fail(f"{tp}.revisionName", "must be a string")
                rev = ""
            latest = t.get("latestRevision")
            if latest is None:
                latest = rev == ""
            if not isinstance(latest, bool):
                self.fail(f"{tp}.latestRevision", f"{latest!r}; allowed: true, false")
                latest = rev == ""
            if latest == bool(rev):
                self.fail(f"{tp}.latestRevision", f"may not set revisionName {rev!r} when latestRevision is "
                                                  f"{str(latest).lower()}")
            tag = t.get("tag") or ""
            if tag:
                if not isinstance(tag, str) or not _DNS1035.match(tag):
                    self.fail(f"{tp}.tag", f"{tag!r} is not a DNS-1035 label")
                elif tag in tags:
                    self.fail(f"{tp}.tag", f"multiple definitions for {tag!r} (also spec.traffic[{tags[tag]}])")
                else:
                    tags[tag] = i
            targets.append(TrafficTarget(percent=percent, revision_name=rev, latest_revision=bool(latest),
                                         tag=str(tag)))
        if total != 100:
            self.fail("spec.traffic", f"traffic targets sum to {total}, want 100")
        return tuple(targets)


def _kind(obj: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(obj), type(obj).__name__)


def _template_json(t: RevisionTemplate) -> dict[str, Any]:
    c = t.container
    return {
        "annotations": dict(t.annotations), "cc": t.container_concurrency, "timeout": t.timeout_seconds,
        "rst": t.response_start_timeout_seconds, "idle": t.idle_timeout_seconds, "name": t.name,
        "container": {"command": list(c.command), "args": list(c.args), "env": [list(e) for e in c.env],
                      "port": c.port, "protocol": c.protocol, "probe": json.loads(c.readiness_probe),
                      "workingDir": c.working_dir, "name": c.name},
    }


# ---- the controller's part of the probe -------------------------------------------------

def queue_proxy_probe(probe_json: str, port: int) -> str:
    """``SERVING_READINESS_PROBE`` for a pod whose user container listens on ``port``: the
    webhook-defaulted probe with upstream's controller rewrite (``applyReadinessProbeDefaults``
    in ``pkg/reconciler/revision/resources/queue.go``)."""
    probe: dict[str, Any] = json.loads(probe_json)
    if "httpGet" in probe:
        action = probe["httpGet"]
        action["host"] = "127.0.0.1"
        action["port"] = port
        action.setdefault("scheme", "HTTP")
        if not action["scheme"]:
            action["scheme"] = "HTTP"
    elif "tcpSocket" in probe:
        probe["tcpSocket"] = {**probe["tcpSocket"], "host": "127.0.0.1", "port": port}
    elif "exec" in probe:
        del probe["exec"]
        probe["tcpSocket"] = {"host": "127.0.0.1", "port": port}
    elif "grpc" in probe:
        probe["grpc"] = {**probe["grpc"], "port": port}
        probe["grpc"].setdefault("service", "")
    if probe.get("periodSeconds", 0) > 0 and probe.get("timeoutSeconds", 0) < 1:
        probe["timeoutSeconds"] = 1
    for key in [k for k, v in probe.items() if v == 0 and k != "successThreshold"]:
        del probe[key]  # omitempty, as the controller's JSON
    return json.dumps(probe, separators=(",", ":"))
