"""The activator's Prometheus metrics, constructed against an injected ``CollectorRegistry``.

Upstream's names (``pkg/activator/handler/metrics.go``, ``pkg/activator/metrics.go``; OTel
instruments exported to Prometheus with dots as underscores, ``{unit}`` annotations dropped
and ``_total`` on counters):

* ``kn_revision_request_concurrency`` gauge — the reporter's adjusted concurrency each second,
  labels ``kn_service_name``, ``kn_configuration_name``, ``kn_revision_name``, ``k8s_namespace_name``;
* ``kn_revision_request_queued`` / ``kn_revision_request_active`` gauges (upstream up-down
  counters) — requests waiting for a pod / being proxied, labels ``k8s_namespace_name``,
  ``kn_revision_name``;
* ``kn_activator_stats_conn_reachable`` gauge (1/0) and ``kn_activator_stats_conn_errors_total``
  counter, label ``peer="autoscaler"``.

Ours (``kdp_`` prefix):

* ``kdp_activator_wait_seconds`` histogram — time each request waited in the activator for a
  pod (the cold-start wait; 0 for requests that found a pod at once);
* ``kdp_activator_rejected_requests_total`` counter — requests refused while waiting or
  before, label ``reason`` (``queue_full``, ``revision_failed``, ``timeout``, ``not_found``);
* ``kdp_activator_probes_total`` counter — pod probes, label ``result`` (``ok``, ``failed``).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from activator.revisions import RevisionKey

__all__ = ["PEER_AUTOSCALER", "WAIT_BUCKETS", "ActivatorMetrics", "RevisionMetrics"]

PEER_AUTOSCALER = "autoscaler"
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_REV = ["k8s_namespace_name", "kn_revision_name"]


class RevisionMetrics:
    """The labelled children for one revision, looked up once and cached."""

    __slots__ = ("queued", "active", "wait")

    def __init__(self, metrics: ActivatorMetrics, key: RevisionKey) -> None:
        self.queued = metrics.request_queued.labels(key.namespace, key.name)
        self.active = metrics.request_active.labels(key.namespace, key.name)
        self.wait = metrics.wait_seconds.labels(key.namespace, key.name)


class ActivatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.request_concurrency = Gauge(
            "kn_revision_request_concurrency", "Concurrent requests that are routed to Activator",
            ["kn_service_name", "kn_configuration_name", "kn_revision_name", "k8s_namespace_name"],
            registry=registry)
        self.request_queued = Gauge(
            "kn_revision_request_queued",
            "Number of requests currently queued in the activator waiting for capacity", _REV, registry=registry)
        self.request_active = Gauge(
            "kn_revision_request_active",
            "Number of requests currently being proxied by the activator", _REV, registry=registry)
        self.stats_conn_reachable = Gauge(
            "kn_activator_stats_conn_reachable",
            "Whether a peer is reachable from the activator (1 = reachable, 0 = not reachable)",
            ["peer"], registry=registry)
        self.stats_conn_errors = Counter(
            "kn_activator_stats_conn_errors", "Number of connection errors from the activator",
            ["peer"], registry=registry)
        self.wait_seconds = Histogram(
            "kdp_activator_wait_seconds", "Time a request waited in the activator for a pod",
            _REV, buckets=WAIT_BUCKETS, registry=registry)
        self.rejected = Counter(
            "kdp_activator_rejected_requests", "Requests the activator refused, by reason",
            [*_REV, "reason"], registry=registry)
        self.probes = Counter(
            "kdp_activator_probes", "Pod probes sent by the activator, by result", ["result"], registry=registry)
        self._revisions: dict[RevisionKey, RevisionMetrics] = {}

    def revision(self, key: RevisionKey) -> RevisionMetrics:
        m = self._revisions.get(key)
        if m is None:
            m = self._revisions[key] = RevisionMetrics(self, key)
        return m

    def reject(self, key: RevisionKey, reason: str) -> None:
        self.rejected.labels(key.namespace, key.name, reason).inc()

    def autoscaler_reachable(self, reachable: bool) -> None:
        self.stats_conn_reachable.labels(PEER_AUTOSCALER).set(1 if reachable else 0)
        if not reachable:
            self.stats_conn_errors.labels(PEER_AUTOSCALER).inc()
