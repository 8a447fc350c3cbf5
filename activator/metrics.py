"""The activator's Prometheus metrics, constructed against an injected ``CollectorRegistry``.

Upstream's names (``pkg/activator/handler/metrics.go``, ``pkg/activator/metrics.go``; OTel
instruments exported to Prometheus with dots as underscores, ``{unit}`` annotations dropped
and ``_total`` on counters):

* ``kn_revision_request_concurrency`` gauge — the reporter's adjusted concurrency each second,
  labels ``kn_service_name``, ``kn_configuration_name``, ``kn_revision_name``, ``k8s_namespace_name``;
* ``kn_revision_request_queued`` / ``kn_revision_request_active`` gauges (upstream up-down
  counters) — requests waiting for a pod / being proxied, labels ``k8s_namespace_name``,
  ``kn_revision_name``. Given a ``load`` source (the throttler's own counts), they are read from
  it at scrape time, so the request path does nothing for them; without one they are ordinary
  gauges moved by ``RevisionMetrics.queued`` / ``.active``;
* ``kn_activator_stats_conn_reachable`` gauge (1/0) and ``kn_activator_stats_conn_errors_total``
  counter, label ``peer="autoscaler"``.

Ours (``kdp_`` prefix):

* ``kdp_activator_wait_seconds`` histogram — time each request waited in the activator for a
  pod (the cold-start wait; 0 for requests that found a pod at once). Observed on every
  request, so it is a plain-Python histogram (:class:`WaitHistogram`: a bisect and two
  additions, no lock) exposed by a collector;
* ``kdp_activator_rejected_requests_total`` counter — requests refused while waiting or
  before, label ``reason`` (``queue_full``, ``revision_failed``, ``timeout``, ``not_found``);
* ``kdp_activator_probes_total`` counter — pod probes, label ``result`` (``ok``, ``failed``).
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from activator.revisions import RevisionKey

__all__ = ["PEER_AUTOSCALER", "WAIT_BUCKETS", "ActivatorMetrics", "LoadSource", "RevisionMetrics", "WaitHistogram"]

LoadSource = Callable[[], Iterable[tuple[RevisionKey, int, int]]]
"""Yields ``(revision, requests waiting, requests being proxied)`` for every revision."""

PEER_AUTOSCALER = "autoscaler"
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_REV = ["k8s_namespace_name", "kn_revision_name"]
_WAIT_LES = [floatToGoString(b) for b in WAIT_BUCKETS] + ["+Inf"]
_QUEUED, _QUEUED_HELP = "kn_revision_request_queued", \
    "Number of requests currently queued in the activator waiting for capacity"
_ACTIVE, _ACTIVE_HELP = "kn_revision_request_active", "Number of requests currently being proxied by the activator"
_WAIT, _WAIT_HELP = "kdp_activator_wait_seconds", "Time a request waited in the activator for a pod"


class WaitHistogram:
    """One revision's wait times: bucket counts (not cumulative; the last is +Inf) and sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.total += seconds


class _NoGauge:
    """Stands in for the queued/active children when a load source serves those gauges."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass


_NO_GAUGE = _NoGauge()


class RevisionMetrics:
    """The labelled children for one revision, looked up once and cached."""

    __slots__ = ("queued", "active", "wait")

    def __init__(self, metrics: ActivatorMetrics, key: RevisionKey) -> None:
        if metrics.request_queued is not None and metrics.request_active is not None:
            self.queued: Gauge | _NoGauge = metrics.request_queued.labels(key.namespace, key.name)
            self.active: Gauge | _NoGauge = metrics.request_active.labels(key.namespace, key.name)
        else:
            self.queued = self.active = _NO_GAUGE
        self.wait = metrics.wait_histogram(key)


class _Collector(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self.collect = collect  # type: ignore[method-assign]

    def collect(self) -> Iterator[Metric]:  # pragma: no cover - replaced per instance
        return iter(())


class ActivatorMetrics:
    def __init__(self, registry: CollectorRegistry, load: LoadSource | None = None) -> None:
        self.registry = registry
        self.request_concurrency = Gauge(
            "kn_revision_request_concurrency", "Concurrent requests that are routed to Activator",
            ["kn_service_name", "kn_configuration_name", "kn_revision_name", "k8s_namespace_name"],
            registry=registry)
        self.request_queued: Gauge | None = None
        self.request_active: Gauge | None = None
        if load is None:
            self.request_queued = Gauge(_QUEUED, _QUEUED_HELP, _REV, registry=registry)
            self.request_active = Gauge(_ACTIVE, _ACTIVE_HELP, _REV, registry=registry)
        else:
            registry.register(_Collector(lambda: self._collect_load(load)))
        self.stats_conn_reachable = Gauge(
            "kn_activator_stats_conn_reachable",
            "Whether a peer is reachable from the activator (1 = reachable, 0 = not reachable)",
            ["peer"], registry=registry)
        self.stats_conn_errors = Counter(
            "kn_activator_stats_conn_errors", "Number of connection errors from the activator",
            ["peer"], registry=registry)
        self._waits: dict[RevisionKey, WaitHistogram] = {}
        registry.register(_Collector(self._collect_waits))
        self.rejected = Counter(
            "kdp_activator_rejected_requests", "Requests the activator refused, by reason",
            [*_REV, "reason"], registry=registry)
        self.probes = Counter(
            "kdp_activator_probes", "Pod probes sent by the activator, by result", ["result"], registry=registry)
        self._revisions: dict[RevisionKey, RevisionMetrics] = {}

    def wait_histogram(self, key: RevisionKey) -> WaitHistogram:
        h = self._waits.get(key)
        if h is None:
            h = self._waits[key] = WaitHistogram()
        return h

    def _collect_waits(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(_WAIT, _WAIT_HELP, labels=_REV)
        for key, h in list(self._waits.items()):
            buckets, running = [], 0
            for le, n in zip(_WAIT_LES, h.counts):
                running += n
                buckets.append((le, running))
            family.add_metric([key.namespace, key.name], buckets, h.total)
        yield family

    @staticmethod
    def _collect_load(load: LoadSource) -> Iterator[Metric]:
        queued = GaugeMetricFamily(_QUEUED, _QUEUED_HELP, labels=_REV)
        active = GaugeMetricFamily(_ACTIVE, _ACTIVE_HELP, labels=_REV)
        for key, waiting, proxied in load():
            queued.add_metric([key.namespace, key.name], waiting)
            active.add_metric([key.namespace, key.name], proxied)
        yield queued
        yield active

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
