"""What a local pod's two processes are started with: argv, environment and working directory.

The user container gets its manifest's command, args and env plus upstream's ``PORT``,
``K_SERVICE``, ``K_CONFIGURATION`` and ``K_REVISION``, and runs in the manifest's directory
(or its ``workingDir`` below it). The queue-proxy gets upstream's environment as the
controller builds it (``makeQueueContainer``), with every port on 127.0.0.1 chosen per pod and
our ``KDP_*`` knobs for running many sidecars on one machine.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from kdp.catalog import Revision
from kdp.manifest import queue_proxy_probe

__all__ = ["PodPorts", "ProcessSpec", "SidecarSettings", "queue_proxy_process", "user_process"]

# Variables of kdp's own environment that must not leak into a child.
_STRIP_PREFIXES = ("SERVING_", "QUEUE_SERVING_", "KDP_", "K_")
_STRIP = frozenset({"PORT", "USER_PORT", "CONTAINER_CONCURRENCY", "REVISION_TIMEOUT_SECONDS",
                    "REVISION_RESPONSE_START_TIMEOUT_SECONDS", "REVISION_IDLE_TIMEOUT_SECONDS",
                    "OBSERVABILITY_CONFIG", "METRICS_PROMETHEUS_PORT", "ENABLE_MULTI_CONTAINER_PROBES",
                    "ENABLE_HTTP2_AUTO_DETECTION", "ENABLE_HTTP_FULL_DUPLEX", "POD_NAME", "POD_IP"})


@dataclass(frozen=True, slots=True)
class PodPorts:
    user: int
    serving: int
    tls: int
    admin: int
    stat: int
    metrics: int


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    python: str
    """The interpreter that runs ``-m queueproxy``."""
    autoscaler_address: str = ""
    """host:port of the autoscaler's StatIngest; empty = no push."""
    drain_quiet_period: float = 1.0
    logging_level: str = "info"
    cert_dir: str = "/nonexistent/kdp-certs"
    """Where the queue-proxy looks for TLS certs; kdp serves plain HTTP, so none is there."""
    host: str = "127.0.0.1"


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """kdp's environment minus anything that would configure a child by accident."""
    return {k: v for k, v in environ.items() if k not in _STRIP and not k.startswith(_STRIP_PREFIXES)}


def user_process(rev: Revision, port: int, environ: Mapping[str, str]) -> ProcessSpec:
    c = rev.template.container
    cwd = os.path.normpath(os.path.join(rev.base_dir, c.working_dir)) if c.working_dir else rev.base_dir
    env = base_env(environ)
    # kdp's own Python first on PATH, as in an activated virtual environment: `python3` in a
    # manifest then starts at once (a pyenv shim costs ~100 ms on every cold start).
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if bindir and bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + path
    env.update(c.env)
    env.update(PORT=str(port), K_SERVICE=rev.service, K_CONFIGURATION=rev.service, K_REVISION=rev.name)
    return ProcessSpec(argv=(*c.command, *c.args), env=env, cwd=cwd)


def queue_proxy_process(rev: Revision, pod: str, ports: PodPorts, settings: SidecarSettings,
                        environ: Mapping[str, str]) -> ProcessSpec:
    t = rev.template
    env = base_env(environ)
    env.update({
        "SERVING_NAMESPACE": rev.namespace,
        "SERVING_SERVICE": rev.service,
        "SERVING_CONFIGURATION": rev.service,
        "SERVING_REVISION": rev.name,
        "SERVING_POD": pod,
        "SERVING_POD_IP": settings.host,
        "QUEUE_SERVING_PORT": str(ports.serving),
        "QUEUE_SERVING_TLS_PORT": str(ports.tls),
        "USER_PORT": str(ports.user),
        "CONTAINER_CONCURRENCY": str(t.container_concurrency),
        "REVISION_TIMEOUT_SECONDS": str(t.timeout_seconds),
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": str(t.response_start_timeout_seconds),
        "REVISION_IDLE_TIMEOUT_SECONDS": str(t.idle_timeout_seconds),
        "SERVING_READINESS_PROBE": queue_proxy_probe(t.container.readiness_probe, ports.user),
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": settings.logging_level,
        "OBSERVABILITY_CONFIG": "",
        "METRICS_PROMETHEUS_PORT": str(ports.metrics),
        "KDP_BIND_HOST": settings.host,
        "KDP_ADMIN_PORT": str(ports.admin),
        "KDP_STAT_PORT": str(ports.stat),
        "KDP_DRAIN_QUIET_PERIOD": repr(float(settings.drain_quiet_period)),
        "KDP_CERT_DIR": settings.cert_dir,
        "KDP_AUTOSCALER_ADDRESS": settings.autoscaler_address,
    })
    return ProcessSpec(argv=(settings.python, "-m", "queueproxy"), env=env, cwd=rev.base_dir)
