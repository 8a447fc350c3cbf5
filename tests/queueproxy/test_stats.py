from __future__ import annotations

import pytest

from queueproxy.stats import RequestStats


def test_two_half_second_requests_average_one() -> None:
    s = RequestStats(started_at=100.0)
    s.request_in(100.0)
    s.request_out(100.5)
    s.request_in(100.5)
    s.request_out(101.0)
    r = s.report(101.0)
    assert r.average_concurrency == pytest.approx(1.0)
    assert r.request_count == 2.0
    assert r.proxied_request_count == 0.0


def test_concurrency_carries_over_into_the_next_window() -> None:
    s = RequestStats(started_at=0.0)
    s.request_in(0.5)
    assert s.report(1.0).average_concurrency == pytest.approx(0.5)
    r = s.report(2.0)
    assert r.average_concurrency == pytest.approx(1.0)
    assert r.request_count == 0.0


def test_proxied_requests_count_in_both_totals() -> None:
    s = RequestStats(started_at=0.0)
    s.request_in(0.0, proxied=True)
    s.request_in(0.0)
    s.request_out(0.5, proxied=True)
    r = s.report(1.0)
    assert r.average_concurrency == pytest.approx(1.5)
    assert r.average_proxied_concurrency == pytest.approx(0.5)
    assert (r.request_count, r.proxied_request_count) == (2.0, 1.0)


def test_empty_window_reports_zero() -> None:
    s = RequestStats(started_at=5.0)
    r = s.report(5.0)
    assert (r.average_concurrency, r.request_count) == (0.0, 0.0)


def test_events_out_of_order_in_time_do_not_go_backwards() -> None:
    s = RequestStats(started_at=10.0)
    s.request_in(10.0)
    s.request_out(9.0)  # a clock older than the last change adds no area
    assert s.report(11.0).average_concurrency == pytest.approx(0.0)
