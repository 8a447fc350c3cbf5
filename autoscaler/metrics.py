"""The autoscaler's Prometheus metrics, against an injected ``CollectorRegistry``.

Upstream's names (OTel instruments exported with ``UnderscoreEscapingWithSuffixes``: dots become
underscores, ``{...}`` unit annotations are dropped, ``/s`` becomes ``_per_second``, ``s``
becomes ``_seconds``), per revision with labels ``k8s_namespace_name``, ``kn_service_name``,
``kn_configuration_name`` (the service's name: a revision's configuration is named after its
service) and ``kn_revision_name``:

* decider (``pkg/autoscaler/scaling/metrics.go``): ``kn_revision_pods_desired``,
  ``kn_revision_capacity_excess``, ``kn_revision_panic_mode``, and for the concurrency metric
  ``kn_revision_concurrency_{stable,panic,target}``, for rps
  ``kn_revision_rps_{stable,panic,target}_per_second``;
* KPA reconciler (``pkg/reconciler/autoscaling/kpa/metrics.go``): ``kn_revision_pods_requested``,
  ``kn_revision_pods_count``, ``kn_revision_pods_not_ready_count``,
  ``kn_revision_pods_pending_count``, ``kn_revision_pods_terminating_count``;
* scraper: ``kn_autoscaler_scrape_duration_seconds`` (histogram, upstream's buckets).

Ours (``kdp_autoscaler_`` prefix): ``revisions``, ``stats_accepted_total{source}``,
``stats_rejected_total{source,reason}``, ``stats_pending``, ``ticks_total``,
``tick_seconds`` (histogram: one tick for all revisions), ``out_of_band_decisions_total{reason}``
(``poke``, ``burst``), ``decisions_published_total``, ``decision_subscribers``,
``scale_requests_total{result}``, ``scale_failing`` (revisions whose last scale call failed),
``config_reloads_total{result}`` (``applied``, ``rejected``), ``scrapes_total{result}``.

Per-revision values are read from the service's arrays when Prometheus scrapes (as upstream's
observable gauges are), so a tick costs nothing here whatever the number of revisions.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.service import AutoscalerService

__all__ = ["AutoscalerMetrics", "SCRAPE_BUCKETS", "TICK_BUCKETS"]

SCRAPE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REV = ["k8s_namespace_name", "kn_service_name", "kn_configuration_name", "kn_revision_name"]


class AutoscalerMetrics:
    """Registers everything; the scraper and config watcher report through the attributes."""

    def __init__(self, registry: CollectorRegistry, service: AutoscalerService) -> None:
        self.registry = registry
        self.tick_seconds = Histogram(
            "kdp_autoscaler_tick_seconds", "Time one tick took to decide for every revision",
            buckets=TICK_BUCKETS, registry=registry)
        self.scrape_duration = Histogram(
            "kn_autoscaler_scrape_duration_seconds", "The duration of scraping the revision",
            ["k8s_namespace_name", "kn_service_name", "kn_configuration_name"],
            buckets=SCRAPE_BUCKETS, registry=registry)
        self.scrapes = Counter("kdp_autoscaler_scrapes", "Revision scrapes, by result",
                               ["result"], registry=registry)
        self.config_reloads = Counter(
            "kdp_autoscaler_config_reloads", "config-autoscaler file reloads, by result",
            ["result"], registry=registry)
        service.on_tick.append(self.tick_seconds.observe)
        registry.register(_StateCollector(service))


class _StateCollector(Collector):
    def __init__(self, service: AutoscalerService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        ms = svc.ms
        col = ms.collector
        yield GaugeMetricFamily("kdp_autoscaler_revisions", "Revisions being autoscaled",
                                value=len(ms))
        acc = CounterMetricFamily("kdp_autoscaler_stats_accepted",
                                  "Stats accepted, by source", labels=["source"])
        for source, n in sorted(col.accepted.items()):
            acc.add_metric([source], n)
        yield acc
        rej = CounterMetricFamily("kdp_autoscaler_stats_rejected",
                                  "Stats or frames rejected, by source and reason",
                                  labels=["source", "reason"])
        for (source, reason), n in sorted(col.rejected.items()):
            rej.add_metric([source, reason], n)
        yield rej
        yield GaugeMetricFamily("kdp_autoscaler_stats_pending",
                                "Stats received but not yet recorded (second in progress)",
                                value=col.pending)
        yield CounterMetricFamily("kdp_autoscaler_ticks", "Ticks run", value=ms.ticks)
        oob = CounterMetricFamily("kdp_autoscaler_out_of_band_decisions",
                                  "Revisions decided between ticks, by reason", labels=["reason"])
        oob.add_metric(["poke"], svc.pokes)
        oob.add_metric(["burst"], svc.bursts)
        yield oob
        yield CounterMetricFamily("kdp_autoscaler_decisions_published",
                                  "Decisions published to the decision feed",
                                  value=svc.hub.published)
        yield GaugeMetricFamily("kdp_autoscaler_decision_subscribers",
                                "Open DecisionFeed.Watch streams",
                                value=len(svc.hub.subscriptions))
        sc = CounterMetricFamily("kdp_autoscaler_scale_requests",
                                 "Calls to the scale target, by result", labels=["result"])
        sc.add_metric(["ok"], svc.dispatcher.applied_ok)
        sc.add_metric(["error"], svc.dispatcher.applied_failed)
        yield sc
        yield GaugeMetricFamily("kdp_autoscaler_scale_failing",
                                "Revisions whose last scale call failed (being retried)",
                                value=svc.dispatcher.failing)
        yield from self._revisions()

    def _revisions(self) -> Iterator[Metric]:
        ms = self.service.ms
        a = ms.columns()

        def fam(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=_REV)

        desired = fam("kn_revision_pods_desired", "Number of pods the autoscaler wants to allocate")
        excess = fam("kn_revision_capacity_excess",
                     "Excess burst capacity observed over the stable window")
        panic = fam("kn_revision_panic_mode", "If greater than 0 the autoscaler is in panic mode")
        c_st = fam("kn_revision_concurrency_stable",
                   "Average of request count per observed pod over the stable window")
        c_pa = fam("kn_revision_concurrency_panic",
                   "Average of request count per observed pod over the panic window")
        c_ta = fam("kn_revision_concurrency_target", "The desired concurrent requests for each pod")
        r_st = fam("kn_revision_rps_stable_per_second",
                   "Average of requests-per-second per observed pod over the stable window")
        r_pa = fam("kn_revision_rps_panic_per_second",
                   "Average of requests-per-second per observed pod over the panic window")
        r_ta = fam("kn_revision_rps_target_per_second",
                   "The desired concurrent requests for each pod")
        requested = fam("kn_revision_pods_requested",
                        "Number of pods autoscaler requested from Kubernetes")
        count = fam("kn_revision_pods_count", "Number of pods that are allocated currently")
        not_ready = fam("kn_revision_pods_not_ready_count",
                        "Number of pods that are not ready currently")
        pending = fam("kn_revision_pods_pending_count", "Number of pods that are pending currently")
        terminating = fam("kn_revision_pods_terminating_count",
                          "Number of pods that are terminating currently")
        for (ns, name), spec, row, pods, last in ms.snapshot_rows():
            labels = [ns, spec.service, spec.service, name]
            if pods is not None:
                count.add_metric(labels, pods.ready)
                not_ready.add_metric(labels, pods.not_ready)
                pending.add_metric(labels, pods.pending)
                terminating.add_metric(labels, pods.terminating)
            if last is not None:
                requested.add_metric(labels, last.desired_scale)
            if row is None:
                continue
            st = ms.decider.status(row)
            desired.add_metric(labels, st.desired_scale)
            excess.add_metric(labels, st.excess_burst_capacity)
            panic.add_metric(labels, 1 if a["in_panic"][row] else 0)
            if a["rps"][row]:
                r_st.add_metric(labels, float(a["sr"][row]))
                r_pa.add_metric(labels, float(a["pr"][row]))
                r_ta.add_metric(labels, float(a["target"][row]))
            else:
                c_st.add_metric(labels, float(a["sc"][row]))
                c_pa.add_metric(labels, float(a["pc"][row]))
                c_ta.add_metric(labels, float(a["target"][row]))
        yield from (desired, excess, panic, c_st, c_pa, c_ta, r_st, r_pa, r_ta, requested, count,
                    not_ready, pending, terminating)
