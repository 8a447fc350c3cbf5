"""The collector: validation, per-second recording, hold-back of the second in progress,
pokes and bursts, duplicates; checked against the scalar reference windows."""
from __future__ import annotations

import random

import numpy as np
import pytest

from autoscaler.collector import PUSH, SCRAPE, WEBSOCKET, Collector
from autoscaler.windows import TimedBuckets
from proto import stat_pb2

T0 = 1_787_000_000
NS = 1_000_000_000
KEY = ("default", "hello-00001")


def msg(t: int | None, c: float = 1.0, r: float = 1.0, pc: float = 0.0, pr: float = 0.0,
        key: tuple[str, str] = KEY, pod: str = "pod-a") -> stat_pb2.WireStatMessage:
    return stat_pb2.WireStatMessage(namespace=key[0], name=key[1], stat=stat_pb2.Stat(
        pod_name=pod, average_concurrent_requests=c, average_proxied_concurrent_requests=pc,
        request_count=r, proxied_request_count=pr, timestamp=t or 0))


@pytest.fixture
def col() -> Collector:
    c = Collector(capacity=4)
    c.add(KEY, 60.0, 6.0)
    return c


def averages(c: Collector, now: float, key: tuple[str, str] = KEY) -> tuple[float, ...]:
    v = c.values(now, np.array([c.row(key)]))
    return (float(v.stable_concurrency[0]), float(v.panic_concurrency[0]),
            float(v.stable_rps[0]), float(v.panic_rps[0]))


def test_proxied_requests_are_subtracted_so_activator_traffic_counts_once(col: Collector) -> None:
    col.ingest([msg(T0, c=5.0, pc=2.0, r=10.0, pr=4.0)], T0 + 0.5, PUSH)
    col.flush(T0 + 1.05)
    assert averages(col, T0 + 1) == (3.0, 3.0, 6.0, 6.0)


def test_stats_of_one_second_are_summed_into_one_bucket(col: Collector) -> None:
    col.ingest([msg(T0, c=1.0, pod="a"), msg(T0, c=2.5, pod="b")], T0 + 0.2, PUSH)
    col.ingest([msg(T0, c=0.5, pod="c")], T0 + 0.9, WEBSOCKET)
    col.flush(T0 + 1.05)
    assert averages(col, T0 + 1)[0] == 4.0


def test_a_zero_timestamp_is_stamped_with_now(col: Collector) -> None:
    col.ingest([msg(None, c=7.0)], T0 + 3.7, WEBSOCKET)
    col.flush(T0 + 4.05)
    state = col.describe(KEY, T0 + 4)["concurrency_stable"]
    assert state["last_write_unix"] == T0 + 3  # type: ignore[index]


def test_the_second_in_progress_is_held_back_until_it_ends(col: Collector) -> None:
    for s in range(5):
        col.ingest([msg(T0 + s, c=10.0)], T0 + s + 0.5, PUSH)
    # Half of second 5 has been reported (say, 2 of 4 pods): a tick now must not read it.
    col.ingest([msg(T0 + 5, c=5.0)], T0 + 5.3, PUSH)
    assert col.flush(T0 + 5.4) == 5
    assert col.pending == 1
    assert averages(col, T0 + 5.4)[1] == 10.0  # panic window: five whole seconds of 10
    col.ingest([msg(T0 + 5, c=5.0)], T0 + 5.8, PUSH)
    assert col.flush(T0 + 6.05) == 2
    assert averages(col, T0 + 6.05)[1] == 10.0


def test_flush_rows_records_a_revisions_partial_second_now(col: Collector) -> None:
    other = ("default", "other")
    col.add(other, 60.0, 6.0)
    col.ingest([msg(T0, c=3.0), msg(T0, c=4.0, key=other)], T0 + 0.5, PUSH)
    assert col.flush_rows([col.row(KEY)]) == 1
    assert averages(col, T0 + 0.5)[0] == 3.0
    assert averages(col, T0 + 0.5, other)[0] == 0.0
    assert col.pending == 1  # the other revision's stat waits for its second to end


def test_recording_matches_the_scalar_windows_fed_per_second_sums() -> None:
    rng = random.Random(7)
    col = Collector(capacity=2)
    col.add(KEY, 30.0, 3.0)
    stable, panic = TimedBuckets(30.0), TimedBuckets(3.0)
    sums: dict[int, float] = {}
    for s in range(80):
        if rng.random() < 0.2:
            continue  # gaps count as zeros between writes
        pods = rng.randint(1, 4)
        vals = [round(rng.uniform(0, 9), 3) for _ in range(pods)]
        col.ingest([msg(T0 + s, c=v, pod=f"p{i}") for i, v in enumerate(vals)], T0 + s + 0.4,
                   PUSH)
        sums[T0 + s] = sum(vals)
    for s in range(81):
        col.flush(T0 + s + 0.05)
    for t, v in sorted(sums.items()):
        stable.record(t * NS, v)
        panic.record(t * NS, v)
    now = T0 + 81
    got = averages(col, now)
    assert got[0] == pytest.approx(stable.window_average(now * NS), abs=1e-6)
    assert got[1] == pytest.approx(panic.window_average(now * NS), abs=1e-6)


@pytest.mark.parametrize(("message", "reason"), [
    pytest.param(msg(T0, key=("default", "nope")), "unknown_revision", id="unknown-revision"),
    pytest.param(stat_pb2.WireStatMessage(namespace=KEY[0], name=KEY[1]), "no_stat", id="no-stat"),
    pytest.param(msg(T0, c=-1.0), "invalid_value", id="negative"),
    pytest.param(msg(T0, c=float("nan")), "invalid_value", id="nan"),
    pytest.param(msg(T0, r=float("inf")), "invalid_value", id="inf"),
    pytest.param(msg(T0, pc=-0.5), "invalid_value", id="negative-proxied"),
    pytest.param(msg(T0 + 61), "future", id="more-than-60s-ahead"),
    pytest.param(msg(T0 - 61), "stale", id="older-than-the-stable-window"),
])
def test_bad_stats_are_rejected_with_a_reason_and_others_still_count(
        col: Collector, message: stat_pb2.WireStatMessage, reason: str) -> None:
    res = col.ingest([message, msg(T0, c=2.0)], T0 + 0.5, PUSH)
    assert (res.accepted, res.rejected) == (1, 1)
    assert col.rejected == {(PUSH, reason): 1}
    col.flush(T0 + 1.05)
    assert averages(col, T0 + 1)[0] == 2.0


def test_a_stat_poking_a_revision_at_zero_is_reported_once_per_interval(col: Collector) -> None:
    row = col.row(KEY)
    assert row is not None
    col.set_hints(np.array([row]), np.array([True]), np.array([np.inf]))
    assert col.ingest([msg(T0, c=0.0)], T0 + 0.1, PUSH).pokes == []  # no concurrency
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.2, PUSH).pokes == [row]
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.25, PUSH).pokes == []  # within 100 ms
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.4, WEBSOCKET).pokes == [row]
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.6, SCRAPE).pokes == []  # scrapes never poke
    col.set_hints(np.array([row]), np.array([False]), np.array([np.inf]))
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.9, PUSH).pokes == []


def test_a_burst_fires_when_the_seconds_since_the_tick_cross_the_level(col: Collector) -> None:
    row = col.row(KEY)
    assert row is not None
    # The tick at T0 saw a panic-window value of 10; 100 this second would cross the level.
    col.set_hints(np.array([row]), np.array([False]), np.array([100.0]), np.array([10.0]), T0)
    assert col.ingest([msg(T0, c=60.0, pod="a")], T0 + 0.1, PUSH).bursts == []
    # Second T0 ended 50 above the tick's value; second T0 + 1 adds to that excess.
    assert col.ingest([msg(T0 + 1, c=20.0, pod="a")], T0 + 1.1, PUSH).bursts == []
    assert col.ingest([msg(T0 + 1, c=40.0, pod="b")], T0 + 1.2, PUSH).bursts == [row]
    assert col.ingest([msg(T0 + 1, c=500.0, pod="c")], T0 + 1.3, PUSH).bursts == []  # rate limit
    # The next tick has seen those seconds: the excess starts again from zero.
    col.set_hints(np.array([row]), np.array([False]), np.array([100.0]), np.array([90.0]),
                  T0 + 2)
    assert col.ingest([msg(T0 + 2, c=99.0)], T0 + 2.1, PUSH).bursts == []
    assert col.ingest([msg(T0 + 2, c=2.0)], T0 + 2.2, PUSH).bursts == [row]


def test_pushed_stats_of_scraped_pods_are_dropped_as_duplicates(col: Collector) -> None:
    col.set_scraped_pods(KEY, ["pod-a"])
    res = col.ingest([msg(T0, c=9.0, pod="pod-a"), msg(T0, c=1.0, pod="activator-1")],
                     T0 + 0.5, PUSH)
    assert (res.accepted, res.rejected) == (1, 1)
    assert col.rejected == {(PUSH, "duplicate"): 1}
    assert col.ingest([msg(T0, c=3.0, pod="service-scraper")], T0 + 0.6, SCRAPE).accepted == 1


def test_removing_a_revision_drops_its_pending_stats_and_frees_its_row(col: Collector) -> None:
    col.ingest([msg(T0, c=9.0)], T0 + 0.5, PUSH)
    col.remove(KEY)
    assert col.pending == 0
    assert col.ingest([msg(T0, c=1.0)], T0 + 0.6, PUSH).rejected == 1
    col.add(("default", "new"), 60.0, 6.0)
    col.flush(T0 + 1.05)
    assert averages(col, T0 + 1, ("default", "new"))[0] == 0.0


def test_a_window_change_resizes_keeping_recent_data(col: Collector) -> None:
    for s in range(10):
        col.ingest([msg(T0 + s, c=4.0)], T0 + s + 0.5, PUSH)
    col.flush(T0 + 10.05)
    col.update(KEY, 30.0, 3.0, T0 + 10.05)
    state = col.describe(KEY, T0 + 10)
    assert state["concurrency_stable"]["num_buckets"] == 30  # type: ignore[index]
    assert averages(col, T0 + 10)[1] == 4.0
