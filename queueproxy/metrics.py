"""queue-proxy's Prometheus metrics (served on :9091), under upstream's names.

Upstream exports through OpenTelemetry's Prometheus exporter, which yields
``kn_serving_invocation_duration_seconds`` (histogram, label ``http_response_status_code``)
and ``kn_serving_queue_depth``. The per-request cost matters here, so the histogram is
ours: one list increment per request, summed into Prometheus' cumulative form only when
scraped. Gauges are read at scrape time from the objects that own the numbers.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

# prometheus_client is imported only when :9091 is served (it costs ~40 ms of start-up,
# which every cold start would pay).

__all__ = ["InvocationHistogram", "QueueProxyCollector", "DURATION_BUCKETS"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class InvocationHistogram:
    """Request durations by response status; ``observe`` is the hot-path call."""

    __slots__ = ("_counts", "_sums")

    def __init__(self) -> None:
        self._counts: dict[int, list[int]] = {}
        self._sums: dict[int, float] = {}

    def observe(self, status: int, seconds: float) -> None:
        counts = self._counts.get(status)
        if counts is None:
            counts = self._counts[status] = [0] * (len(DURATION_BUCKETS) + 1)
            self._sums[status] = 0.0
        counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self._sums[status] += seconds

    def family(self, name: str, doc: str) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        fam = HistogramMetricFamily(name, doc, labels=["http_response_status_code"])
        for status, counts in sorted(self._counts.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), counts):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            fam.add_metric([str(status)], buckets, self._sums[status])
        return fam


class QueueProxyCollector:
    """A prometheus_client collector (anything with ``collect()``)."""

    def __init__(self, histogram: InvocationHistogram, queue_depth: Callable[[], int] | None,
                 rejected: Callable[[], dict[str, int]], labels: dict[str, str]) -> None:
        self.histogram = histogram
        self.queue_depth = queue_depth
        self.rejected = rejected
        self.labels = labels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield self.histogram.family("kn_serving_invocation_duration_seconds",
                                    "The time the user container took to answer, by status code")
        if self.queue_depth is not None:
            g = GaugeMetricFamily("kn_serving_queue_depth", "Requests holding or waiting for a slot")
            g.add_metric([], self.queue_depth())
            yield g
        c = CounterMetricFamily("kdp_queue_rejected_requests", "Requests refused by the queue-proxy",
                                labels=["reason"])
        for reason, n in sorted(self.rejected().items()):
            c.add_metric([reason], n)
        yield c
        info = GaugeMetricFamily("target_info", "Target metadata", labels=list(self.labels))
        info.add_metric(list(self.labels.values()), 1)
        yield info


def make_registry(collector: QueueProxyCollector) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
