"""Upstream's scrape sampling: sample size, pod order, extrapolation, URLs."""
from __future__ import annotations

import random

import pytest

from autoscaler.sampling import (SCRAPER_POD_NAME, ScrapePod, extrapolate, sample_size,
                                 scrape_order, split_by_age, stat_url)
from proto import stat_pb2


@pytest.mark.parametrize(("population", "n"), [
    (0, 0), (1, 1), (3, 3), (4, 4), (5, 4), (6, 5), (10, 7), (15, 8), (20, 9), (30, 11),
    (50, 12), (100, 14), (148, 15), (588, 15), (589, 16), (100_000, 16),
])
def test_sample_size_follows_upstreams_table(population: int, n: int) -> None:
    assert sample_size(population) == n


def test_pods_a_stable_window_old_are_old_and_unknown_start_counts_as_old() -> None:
    pods = [ScrapePod("a", 0.0), ScrapePod("b", 41.0), ScrapePod("c", 40.0), ScrapePod("d")]
    assert split_by_age(pods, 60.0, 100.0) == (["a", "c", "d"], ["b"])


def test_with_enough_old_pods_the_old_are_shuffled_and_the_young_come_last() -> None:
    old, young = [f"o{i}" for i in range(8)], ["y0", "y1", "y2"]
    order = scrape_order(old, young, 4, random.Random(1))
    assert sorted(order[:8]) == old and order[8:] == young


def test_with_too_few_old_pods_the_old_come_first_then_the_shuffled_young() -> None:
    old, young = ["o0", "o1"], [f"y{i}" for i in range(6)]
    order = scrape_order(old, young, 5, random.Random(1))
    assert order[:2] == old and sorted(order[2:]) == young


def test_the_estimate_is_the_sample_sum_over_n_times_the_population() -> None:
    stats = [stat_pb2.Stat(pod_name="p1", average_concurrent_requests=2.0, request_count=4.0,
                           average_proxied_concurrent_requests=1.0, proxied_request_count=1.0),
             stat_pb2.Stat(pod_name="p2", average_concurrent_requests=3.0, request_count=6.0)]
    est = extrapolate(stats, 2.0, 10.0)
    assert est.pod_name == SCRAPER_POD_NAME
    assert (est.average_concurrent_requests, est.request_count) == (25.0, 50.0)
    assert (est.average_proxied_concurrent_requests, est.proxied_request_count) == (5.0, 5.0)


@pytest.mark.parametrize(("address", "url"), [
    ("10.0.0.5", "http://10.0.0.5:9090/metrics"),
    ("127.0.0.1:19090", "http://127.0.0.1:19090/metrics"),
    ("fd00::5", "http://[fd00::5]:9090/metrics"),
    ("[fd00::5]:9091", "http://[fd00::5]:9091/metrics"),
])
def test_a_pod_address_without_a_port_gets_9090(address: str, url: str) -> None:
    assert stat_url(address) == url
