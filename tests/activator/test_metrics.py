from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from activator.metrics import ActivatorMetrics
from activator.revisions import RevisionKey


def test_metric_names_are_upstreams_prometheus_escaped_names_plus_ours() -> None:
    registry = CollectorRegistry()
    m = ActivatorMetrics(registry)
    key = RevisionKey("ns", "rev")
    m.request_concurrency.labels("svc", "cfg", "rev", "ns").set(2.5)
    r = m.revision(key)
    r.queued.inc()
    r.active.inc()
    r.wait.observe(0.3)
    m.autoscaler_reachable(True)
    m.reject(key, "queue_full")
    m.probes.labels("ok").inc()
    text = generate_latest(registry).decode()
    for line in [
        'kn_revision_request_concurrency{k8s_namespace_name="ns",kn_configuration_name="cfg",'
        'kn_revision_name="rev",kn_service_name="svc"} 2.5',
        'kn_revision_request_queued{k8s_namespace_name="ns",kn_revision_name="rev"} 1.0',
        'kn_revision_request_active{k8s_namespace_name="ns",kn_revision_name="rev"} 1.0',
        'kn_activator_stats_conn_reachable{peer="autoscaler"} 1.0',
        'kdp_activator_wait_seconds_bucket{k8s_namespace_name="ns",kn_revision_name="rev",le="0.5"} 1.0',
        'kdp_activator_rejected_requests_total{k8s_namespace_name="ns",kn_revision_name="rev",reason="queue_full"} 1.0',
        'kdp_activator_probes_total{result="ok"} 1.0',
    ]:
        assert line in text, line


def test_losing_the_autoscaler_counts_an_error_and_marks_it_unreachable() -> None:
    registry = CollectorRegistry()
    m = ActivatorMetrics(registry)
    m.autoscaler_reachable(True)
    m.autoscaler_reachable(False)
    m.autoscaler_reachable(False)
    assert registry.get_sample_value("kn_activator_stats_conn_reachable", {"peer": "autoscaler"}) == 0
    assert registry.get_sample_value("kn_activator_stats_conn_errors_total", {"peer": "autoscaler"}) == 2


def test_per_revision_children_are_created_once() -> None:
    m = ActivatorMetrics(CollectorRegistry())
    key = RevisionKey("ns", "rev")
    assert m.revision(key) is m.revision(key)


def test_two_registries_do_not_share_metrics() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ActivatorMetrics(a).autoscaler_reachable(True)
    ActivatorMetrics(b)
    assert b.get_sample_value("kn_activator_stats_conn_reachable", {"peer": "autoscaler"}) is None


def test_with_a_load_source_queued_and_active_are_read_from_it_at_scrape_time() -> None:
    registry = CollectorRegistry()
    load = [(RevisionKey("ns", "a"), 3, 1), (RevisionKey("ns", "b"), 0, 7)]
    m = ActivatorMetrics(registry, load=lambda: load)
    m.revision(RevisionKey("ns", "a")).queued.inc()  # no effect: the source is the truth
    sample = registry.get_sample_value
    assert sample("kn_revision_request_queued", {"k8s_namespace_name": "ns", "kn_revision_name": "a"}) == 3
    assert sample("kn_revision_request_active", {"k8s_namespace_name": "ns", "kn_revision_name": "b"}) == 7
    load[0] = (RevisionKey("ns", "a"), 0, 2)
    assert sample("kn_revision_request_queued", {"k8s_namespace_name": "ns", "kn_revision_name": "a"}) == 0
    assert sample("kn_revision_request_active", {"k8s_namespace_name": "ns", "kn_revision_name": "a"}) == 2


def test_the_wait_histogram_counts_each_wait_in_its_bucket_cumulatively() -> None:
    registry = CollectorRegistry()
    m = ActivatorMetrics(registry)
    h = m.revision(RevisionKey("ns", "rev")).wait
    for seconds in (0.0, 0.0, 0.001, 0.3, 400.0):
        h.observe(seconds)
    labels = {"k8s_namespace_name": "ns", "kn_revision_name": "rev"}
    sample = registry.get_sample_value
    assert sample("kdp_activator_wait_seconds_bucket", labels | {"le": "0.001"}) == 3  # le is inclusive
    assert sample("kdp_activator_wait_seconds_bucket", labels | {"le": "0.25"}) == 3
    assert sample("kdp_activator_wait_seconds_bucket", labels | {"le": "0.5"}) == 4
    assert sample("kdp_activator_wait_seconds_bucket", labels | {"le": "300.0"}) == 4
    assert sample("kdp_activator_wait_seconds_bucket", labels | {"le": "+Inf"}) == 5
    assert sample("kdp_activator_wait_seconds_count", labels) == 5
    assert sample("kdp_activator_wait_seconds_sum", labels) == 400.301
