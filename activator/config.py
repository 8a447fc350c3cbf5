"""Activator configuration from upstream's environment variables, plus our own ``KDP_*`` knobs.

``ActivatorConfig.from_env(environ)`` applies defaults, parses and validates; every error names
the variable, the bad value and what is allowed. Upstream's (``cmd/activator/main.go``):

* ``POD_NAME``, ``POD_IP`` — required (present; empty accepted, as envconfig does);
* ``MAX_IDLE_PROXY_CONNS`` (1000), ``MAX_IDLE_PROXY_CONNS_PER_HOST`` (100) — Go integers;
* ``PROBE_TIMEOUT`` (300ms), ``PROBE_FREQUENCY`` (200ms) — Go durations, > 0 here;
* ``SYSTEM_NAMESPACE`` (knative-serving) and ``CLUSTER_DOMAIN``; without it the domain comes
  from the ``search svc.<domain>`` entry of /etc/resolv.conf, else ``cluster.local``;
* ``METRICS_PROMETHEUS_PORT`` (9090).

Ours (durations are Go durations, like upstream's):

* ``KDP_AUTOSCALER_PROTOCOL`` ``websocket`` (default: upstream's and ours both accept it) or
  ``grpc``; ``KDP_AUTOSCALER_ADDRESS``, default ``ws://autoscaler.<ns>.svc.<domain>:8080``
  for websocket, required (``host:port``) for grpc;
* ``KDP_BACKENDS`` — required until the Kubernetes source exists: ``grpc://host:port`` (the
  local runtime's feeds) or the path of a JSON/YAML file (``file:`` prefix optional);
* ``KDP_MAX_WAITING_PER_REVISION`` (10000), ``KDP_MAX_WAITING`` (20000);
  ``KDP_RETRY_AFTER`` (1s) for a full queue, ``KDP_FAILED_RETRY_AFTER`` (10s) for a revision
  that cannot start; ``KDP_FRESH_POD_WARMUP`` (10s, 0 = no pacing of fresh CC=0 pods);
* ``KDP_PROBE_FAST_RETRY`` (10ms): after a failed probe round the next comes this soon, the
  delay growing to ``PROBE_FREQUENCY``, and a round a live queue-proxy held until its timeout
  is followed at once (0 = upstream's fixed ``PROBE_FREQUENCY``);
* ``KDP_ROUTE_DOMAIN`` (localhost) for ``Host: <service>.<namespace>.<domain>`` routing;
  ``KDP_TRUST_READY`` (false) to use endpoints-ready pods without probing them;
* ``KDP_BIND_HOST`` (0.0.0.0), ``KDP_HTTP_PORT`` (8012), ``KDP_H2C_PORT`` (8013),
  ``KDP_DRAIN_TIMEOUT`` (45s, upstream's drain sleep after SIGTERM).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from activator.throttler import PacingParams, ThrottlerParams
from autoscaler.goparse import SECOND, parse_duration
from queueproxy.config import parse_go_bool, parse_go_int

__all__ = ["ActivatorConfig", "ConfigError", "cluster_domain_from_resolv_conf", "parse_go_duration"]

RESOLV_CONF = "/etc/resolv.conf"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, in float seconds ("300ms", "1h2m3.5s", "-1s", "0"); the
    autoscaler's exact port of it does the parsing (a ValueError naming the input if Go would
    refuse it)."""
    return parse_duration(text) / SECOND


def cluster_domain_from_resolv_conf(text: str) -> str | None:
    """The ``svc.<domain>`` search entry of a resolv.conf, as upstream reads it."""
    for line in text.splitlines():
        elements = line.split(" ")
        if elements[0] != "search":
            continue
        for e in elements[1:]:
            if e.startswith("svc."):
                return e[4:].removesuffix(".")
    return None


@dataclass(frozen=True, slots=True)
class ActivatorConfig:
    pod_name: str
    pod_ip: str
    max_idle_proxy_conns: int = 1000
    max_idle_proxy_conns_per_host: int = 100
    probe_timeout: float = 0.3
    probe_frequency: float = 0.2
    probe_fast_retry: float = 0.01
    system_namespace: str = "knative-serving"
    cluster_domain: str = "cluster.local"
    metrics_port: int = 9090
    autoscaler_protocol: str = "websocket"
    autoscaler_address: str = ""
    backends_kind: str = "file"
    """``grpc`` or ``file``."""
    backends_target: str = ""
    """``host:port`` for grpc, a path for file."""
    max_waiting_per_revision: int = 10_000
    max_waiting: int = 20_000
    retry_after: float = 1.0
    failed_retry_after: float = 10.0
    fresh_pod_warmup: float = 10.0
    route_domain: str = "localhost"
    trust_ready: bool = False
    bind_host: str = "0.0.0.0"
    http_port: int = 8012
    h2c_port: int = 8013
    drain_timeout: float = 45.0

    def throttler_params(self) -> ThrottlerParams:
        return ThrottlerParams(
            max_waiting_per_revision=self.max_waiting_per_revision, max_waiting=self.max_waiting,
            queue_full_retry_after=self.retry_after, failed_retry_after=self.failed_retry_after,
            self_ip=self.pod_ip, pacing=PacingParams(warmup=self.fresh_pod_warmup))

    @classmethod
    def from_env(cls, env: Mapping[str, str], resolv_conf: str | None = None) -> ActivatorConfig:
        """``resolv_conf`` is the text of /etc/resolv.conf (read here when None)."""

        def req(key: str) -> str:
            if key not in env:
                raise ConfigError(f"required environment variable {key} is not set")
            return env[key]

        def opt(key: str, default: str) -> str:
            return env.get(key) or default

        def integer(key: str, default: int, lo: int, hi: int = 2**31 - 1) -> int:
            raw = env.get(key) or ""
            if not raw:
                return default
            try:
                n = parse_go_int(raw)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not an integer; allowed: {lo}..{hi}") from None
            if not lo <= n <= hi:
                raise ConfigError(f"{key}={raw!r} is out of range; allowed: {lo}..{hi}")
            return n

        def duration(key: str, default: float, positive: bool) -> float:
            raw = env.get(key) or ""
            allowed = f"a Go duration {'> 0' if positive else '>= 0'}, e.g. 300ms, 1.5s, 2m"
            if not raw:
                return default
            try:
                value = parse_go_duration(raw)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not a duration; allowed: {allowed}") from None
            if value < 0 or (positive and value == 0):
                raise ConfigError(f"{key}={raw!r} is out of range; allowed: {allowed}")
            return value

        def boolean(key: str, default: bool) -> bool:
            raw = env.get(key) or ""
            if not raw:
                return default
            try:
                return parse_go_bool(raw)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not a boolean; allowed: true, false, 1, 0, t, f") from None

        namespace = opt("SYSTEM_NAMESPACE", "knative-serving")
        domain = env.get("CLUSTER_DOMAIN") or ""
        if not domain:
            if resolv_conf is None:
                try:
                    with open(RESOLV_CONF, encoding="utf-8", errors="replace") as f:
                        resolv_conf = f.read()
                except OSError:
                    resolv_conf = ""
            domain = cluster_domain_from_resolv_conf(resolv_conf) or "cluster.local"

        protocol = opt("KDP_AUTOSCALER_PROTOCOL", "websocket")
        if protocol not in ("websocket", "grpc"):
            raise ConfigError(f"KDP_AUTOSCALER_PROTOCOL={protocol!r} is not supported; allowed: websocket, grpc")
        address = env.get("KDP_AUTOSCALER_ADDRESS") or ""
        if protocol == "websocket":
            address = address or f"ws://autoscaler.{namespace}.svc.{domain}:8080"
            if not address.startswith(("ws://", "wss://")):
                raise ConfigError(f"KDP_AUTOSCALER_ADDRESS={address!r} is not a websocket URL; "
                                  "allowed: ws://host:port with KDP_AUTOSCALER_PROTOCOL=websocket")
        elif not _host_port(address):
            raise ConfigError(f"KDP_AUTOSCALER_ADDRESS={address!r} is not host:port; "
                              "allowed: host:port (required with KDP_AUTOSCALER_PROTOCOL=grpc)")

        backends = env.get("KDP_BACKENDS") or ""
        if backends.startswith("grpc://"):
            kind, target = "grpc", backends.removeprefix("grpc://")
            if not _host_port(target):
                raise ConfigError(f"KDP_BACKENDS={backends!r} is not grpc://host:port")
        elif backends:
            kind, target = "file", backends.removeprefix("file:")
            if not target:
                raise ConfigError(f"KDP_BACKENDS={backends!r} names no file")
        else:
            raise ConfigError("required environment variable KDP_BACKENDS is not set; allowed: "
                              "grpc://host:port (the local runtime's feeds) or the path of a JSON/YAML file")

        return cls(
            pod_name=req("POD_NAME"),
            pod_ip=req("POD_IP"),
            max_idle_proxy_conns=integer("MAX_IDLE_PROXY_CONNS", 1000, 0),
            max_idle_proxy_conns_per_host=integer("MAX_IDLE_PROXY_CONNS_PER_HOST", 100, 0),
            probe_timeout=duration("PROBE_TIMEOUT", 0.3, positive=True),
            probe_frequency=duration("PROBE_FREQUENCY", 0.2, positive=True),
            probe_fast_retry=duration("KDP_PROBE_FAST_RETRY", 0.01, positive=False),
            system_namespace=namespace,
            cluster_domain=domain,
            metrics_port=integer("METRICS_PROMETHEUS_PORT", 9090, 0, 65535),
            autoscaler_protocol=protocol,
            autoscaler_address=address,
            backends_kind=kind,
            backends_target=target,
            max_waiting_per_revision=integer("KDP_MAX_WAITING_PER_REVISION", 10_000, 1),
            max_waiting=integer("KDP_MAX_WAITING", 20_000, 1),
            retry_after=duration("KDP_RETRY_AFTER", 1.0, positive=False),
            failed_retry_after=duration("KDP_FAILED_RETRY_AFTER", 10.0, positive=False),
            fresh_pod_warmup=duration("KDP_FRESH_POD_WARMUP", 10.0, positive=False),
            route_domain=opt("KDP_ROUTE_DOMAIN", "localhost"),
            trust_ready=boolean("KDP_TRUST_READY", False),
            bind_host=opt("KDP_BIND_HOST", "0.0.0.0"),
            http_port=integer("KDP_HTTP_PORT", 8012, 0, 65535),
            h2c_port=integer("KDP_H2C_PORT", 8013, 0, 65535),
            drain_timeout=duration("KDP_DRAIN_TIMEOUT", 45.0, positive=False),
        )


def _host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(host and sep and port.isdigit() and int(port) <= 65535)
