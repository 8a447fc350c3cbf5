"""Which revision a request is for, and what the activator knows about a revision.

Three ways to name a revision, tried in this order by :class:`RevisionResolver`:

1. the ``Knative-Serving-Namespace`` and ``Knative-Serving-Revision`` headers (the ingress adds
   them to every traffic split), used when both are non-empty;
2. upstream's Host fallback: the Host is split on ``.`` into at most four parts, and it names
   ``<rev>.<ns>`` when part three is ``svc`` and part four, without ``:port``, equals the cluster
   domain (``pkg/activator/handler/context_handler.go``);
3. ours, for the local runtime where the activator is the ingress:
   ``Host: <service>.<namespace>.<domain>`` looked up in a :class:`RoutingTable`
   (route -> [(revision, percent)]), with a weighted pick from an injected random source.

:class:`RevisionInfo` is the record the throttler and the request handler work from.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "HEADER_NAMESPACE",
    "HEADER_REVISION",
    "PROTOCOLS",
    "RevisionInfo",
    "RevisionKey",
    "RevisionResolver",
    "RoutingTable",
    "Split",
    "revision_from_host",
]

logger = logging.getLogger(__name__)

HEADER_NAMESPACE = "Knative-Serving-Namespace"
HEADER_REVISION = "Knative-Serving-Revision"
PROTOCOLS = ("http1", "h2c")


class RevisionKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """What the activator needs to know about one revision.

    Timeouts are float seconds; 0 turns the response-start and idle timeouts off (upstream).
    ``target`` is the autoscaler's per-pod target concurrency (0 = unknown); the throttler uses
    it to pace fresh pods of a revision with ``container_concurrency`` 0. ``failure`` is
    non-empty while the revision is reported unable to start.
    """

    namespace: str
    name: str
    container_concurrency: int = 0
    timeout: float = 300.0
    response_start_timeout: float = 0.0
    idle_timeout: float = 0.0
    protocol: str = "http1"
    target: float = 0.0
    failure: str = ""
    service: str = ""
    configuration: str = ""

    def __post_init__(self) -> None:
        if not self.namespace or not self.name:
            raise ValueError(f"revision needs a namespace and a name, got {self.namespace!r}/{self.name!r}")
        if self.container_concurrency < 0:
            raise ValueError(f"container_concurrency must be >= 0, got {self.container_concurrency}")
        for field in ("timeout", "response_start_timeout", "idle_timeout", "target"):
            value = getattr(self, field)
            if not value >= 0.0:
                raise ValueError(f"{field} must be >= 0, got {value!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")

    @property
    def key(self) -> RevisionKey:
        return RevisionKey(self.namespace, self.name)


def revision_from_host(host: str, cluster_domain: str) -> RevisionKey | None:
    """Upstream's rule: ``<rev>.<ns>.svc.<cluster_domain>[:port]``, compared exactly."""
    parts = host.split(".", 3)
    if len(parts) == 4 and parts[2] == "svc" and parts[3].split(":", 1)[0] == cluster_domain:
        if parts[0] and parts[1]:
            return RevisionKey(parts[1], parts[0])
    return None


@dataclass(frozen=True, slots=True)
class Split:
    revision: str
    percent: float


class RoutingTable:
    """Routes for the local ingress: ``(namespace, service)`` -> traffic splits.

    ``Host: <service>.<namespace>.<domain>`` (any ``:port`` ignored, case-insensitive) picks one
    of the route's revisions with probability proportional to its percent. The local runtime
    owns the contents; this object only answers lookups. ``rng`` returns floats in [0, 1).
    """

    def __init__(self, domain: str = "localhost", rng: Callable[[], float] | None = None) -> None:
        self.domain = domain.lower().strip(".")
        self._rng = rng or random.random
        self._routes: dict[tuple[str, str], tuple[tuple[Split, ...], float]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def set_route(self, namespace: str, service: str, splits: Iterable[tuple[str, float]]) -> None:
        parsed = tuple(Split(rev, float(pct)) for rev, pct in splits)
        if not parsed:
            raise ValueError(f"route {namespace}/{service} has no revisions")
        for s in parsed:
            if not s.revision or not s.percent >= 0.0:
                raise ValueError(f"route {namespace}/{service}: bad split {s.revision!r}={s.percent!r}; "
                                 "allowed: a revision name and a percent >= 0")
        total = sum(s.percent for s in parsed)
        if not total > 0.0:
            raise ValueError(f"route {namespace}/{service}: percents sum to {total}; allowed: > 0")
        self._routes[(namespace.lower(), service.lower())] = (parsed, total)

    def delete_route(self, namespace: str, service: str) -> None:
        self._routes.pop((namespace.lower(), service.lower()), None)

    def replace(self, routes: Mapping[tuple[str, str], Sequence[tuple[str, float]]]) -> None:
        """Swap in a whole new table (all routes validated before any is applied)."""
        fresh = RoutingTable(self.domain, self._rng)
        for (namespace, service), splits in routes.items():
            fresh.set_route(namespace, service, splits)
        self._routes = fresh._routes

    def splits(self, namespace: str, service: str) -> tuple[Split, ...]:
        entry = self._routes.get((namespace.lower(), service.lower()))
        return entry[0] if entry else ()

    def lookup(self, host: str) -> RevisionKey | None:
        name = _strip_port(host).lower().rstrip(".")
        suffix = "." + self.domain if self.domain else ""
        if suffix:
            if not name.endswith(suffix):
                return None
            name = name[: -len(suffix)]
        labels = name.split(".")
        if len(labels) != 2:
            return None
        service, namespace = labels
        entry = self._routes.get((namespace, service))
        if entry is None:
            return None
        splits, total = entry
        if len(splits) == 1:
            return RevisionKey(namespace, splits[0].revision)
        point = self._rng() * total
        for s in splits:
            point -= s.percent
            if point < 0.0:
                return RevisionKey(namespace, s.revision)
        return RevisionKey(namespace, next(s.revision for s in reversed(splits) if s.percent > 0))


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.split(":", 1)[0]


class RevisionResolver:
    """Headers first, then upstream's ``<rev>.<ns>.svc.<domain>`` Host, then the routing table."""

    def __init__(self, cluster_domain: str = "cluster.local", routes: RoutingTable | None = None) -> None:
        self.cluster_domain = cluster_domain
        self.routes = routes

    def resolve(self, namespace: str | None, revision: str | None, host: str) -> RevisionKey | None:
        if namespace and revision:
            return RevisionKey(namespace, revision)
        key = revision_from_host(host, self.cluster_domain)
        if key is None and self.routes is not None:
            key = self.routes.lookup(host)
        return key
