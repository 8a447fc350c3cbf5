"""Timelines for the scalar reference windows (autoscaler.windows).

Times are whole seconds after T0 (a Unix second that is a multiple of 5), turned into ns.
"""
from __future__ import annotations

import pytest

from autoscaler.windows import MaxTimeWindow, TimedBuckets, WeightedBuckets

T0 = 1_787_315_305


def at(s: float) -> int:
    """Unix nanoseconds of T0 + s."""
    return T0 * 1_000_000_000 + round(s * 1e9)


def fill(w: TimedBuckets, seconds: range, value: float) -> None:
    for s in seconds:
        w.record(at(s), value)


# -- linear average ---------------------------------------------------------------------------

def test_partial_window_averages_only_the_seconds_written() -> None:
    w = TimedBuckets(60)
    fill(w, range(0, 30), 14.0)
    assert w.window_average(at(29)) == 14.0  # 420 / 30, not 420 / 60


def test_trailing_silence_is_excluded_from_the_average() -> None:
    w = TimedBuckets(60)
    fill(w, range(0, 30), 14.0)
    assert w.window_average(at(35)) == 14.0


def test_gaps_between_writes_count_as_zeros() -> None:
    w = TimedBuckets(60)
    fill(w, range(0, 10), 14.0)
    fill(w, range(20, 30), 14.0)
    assert w.window_average(at(29)) == 9.333333  # 280 / 30, rounded to 6 digits


def test_buckets_from_one_ring_ago_are_subtracted_when_stale() -> None:
    w = TimedBuckets(5)
    for s, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        w.record(at(s), v)
    # Three seconds later the slots of seconds 0..2 would be reused: only 4 and 5 remain.
    assert w.window_average(at(7)) == 4.5


def test_values_in_the_same_second_are_summed() -> None:
    w = TimedBuckets(10)
    w.record(at(3.1), 2.0)
    w.record(at(3.9), 5.0)
    assert w.window_average(at(3)) == 7.0


def test_a_full_window_of_silence_gives_zero_but_is_only_empty_after_it() -> None:
    w = TimedBuckets(10)
    w.record(at(0), 8.0)
    assert w.window_average(at(9)) == 8.0
    assert w.window_average(at(10)) == 0.0 and not w.is_empty(at(10))
    assert w.is_empty(at(11))


def test_a_write_after_a_window_of_silence_starts_a_fresh_partial_window() -> None:
    w = TimedBuckets(60)
    fill(w, range(0, 60), 100.0)
    w.record(at(119), 2.0)
    assert w.window_average(at(119)) == 2.0
    assert w.state().first_write_ns == at(119)


def test_a_write_a_window_older_than_the_last_is_dropped() -> None:
    w = TimedBuckets(60)
    w.record(at(100), 6.0)
    w.record(at(40), 1000.0)
    assert w.window_average(at(100)) == 6.0
    assert w.state().window_total == 6.0


def test_an_older_write_inside_the_window_lands_in_its_own_second() -> None:
    w = TimedBuckets(60)
    w.record(at(10), 6.0)
    w.record(at(5), 6.0)  # moves firstWrite back: six seconds now count
    assert w.window_average(at(10)) == 2.0
    assert w.buckets(at(10))[0] == (at(10), 6.0) and w.buckets(at(10))[5] == (at(5), 6.0)


def test_no_data_is_empty_and_averages_to_zero() -> None:
    w = TimedBuckets(60)
    assert w.is_empty(at(0)) and w.window_average(at(0)) == 0.0
    assert w.state().last_write_ns is None


def test_granularity_groups_seconds_into_buckets() -> None:
    w = TimedBuckets(10, granularity=5)
    assert w.num_buckets == 2
    w.record(at(0), 1.0)
    w.record(at(3), 11.0)
    w.record(at(6), 1.0)
    assert w.buckets(at(6)) == [(at(5), 1.0), (at(0), 12.0)]
    assert w.window_average(at(6)) == 6.5


def test_granularity_must_be_whole_seconds() -> None:
    with pytest.raises(ValueError, match="granularity: 0.5"):
        TimedBuckets(10, granularity=0.5)


# -- resize -----------------------------------------------------------------------------------

def test_growing_a_window_keeps_recent_data_and_backdates_the_first_write() -> None:
    w = TimedBuckets(5)
    for s, v in enumerate([2.0, 3.0, 4.0, 5.0, 6.0]):
        w.record(at(s), v)
    w.resize(10, now_ns=at(5))
    st = w.state()
    assert (st.num_buckets, st.window_total) == (10, 20.0)
    assert st.first_write_ns == at(4 - 4)  # lastWrite - (old buckets - 1) s
    assert w.window_average(at(4)) == 4.0


def test_shrinking_a_window_keeps_only_the_newest_buckets() -> None:
    w = TimedBuckets(10)
    for s, v in enumerate([2.0, 3.0, 4.0, 5.0, 6.0, 7.0]):
        w.record(at(s), v)
    w.resize(4, now_ns=at(5))
    assert w.state().window_total == 22.0  # 7 + 6 + 5 + 4
    assert w.window_average(at(5)) == 5.5


def test_resizing_after_the_data_went_stale_clears_it() -> None:
    w = TimedBuckets(5)
    w.record(at(0), 9.0)
    w.resize(10, now_ns=at(60))
    st = w.state()
    assert st.window_total == 0.0 and st.first_write_ns is None
    assert st.last_write_ns == at(0)  # kept: later averages use the whole ring


def test_resizing_to_the_same_window_changes_nothing() -> None:
    w = TimedBuckets(5)
    w.record(at(0), 9.0)
    before = w.state()
    w.resize(5, now_ns=at(600))
    assert w.state() == before


# -- weighted average -------------------------------------------------------------------------

def test_weighted_average_underestimates_a_ramp_up() -> None:
    w = WeightedBuckets(60)
    assert w.smoothing_coeff == 0.2
    fill(w, range(0, 5), 14.0)
    assert w.window_average(at(4)) == pytest.approx(14 * (1 - 0.8 ** 5), rel=1e-12)  # 9.41


def test_weighted_average_decays_over_trailing_silence() -> None:
    w = WeightedBuckets(60)
    fill(w, range(0, 5), 14.0)
    assert w.window_average(at(6)) == pytest.approx(14 * (1 - 0.8 ** 5) * 0.64, rel=1e-12)


def test_weighted_average_favours_recent_values() -> None:
    new_last, old_last = WeightedBuckets(4), WeightedBuckets(4)
    for s, v in enumerate([10.0, 10.0, 5.0, 5.0]):
        new_last.record(at(s), v)
    for s, v in enumerate([5.0, 5.0, 10.0, 10.0]):
        old_last.record(at(s), v)
    assert old_last.window_average(at(3)) > new_last.window_average(at(3))


def test_weighted_resize_recomputes_the_coefficient() -> None:
    w = WeightedBuckets(5)
    w.resize(10, now_ns=at(0))
    assert w.smoothing_coeff == 0.6018928294465027


# -- max window (scale-down delay) ------------------------------------------------------------

def unix(s: int) -> int:
    return s * 1_000_000_000


def test_delay_window_holds_a_high_value_for_its_duration() -> None:
    # autoscaler-kpa.md §3.4 example 4: 15 s delay, 2 s slots -> 8 slots.
    w = MaxTimeWindow(15, granularity=2)
    assert w.size == 8
    w.record(unix(100), 5)  # index 50
    for t in range(102, 116, 2):
        w.record(unix(t), 2)
        assert w.current() == 5, t
    w.record(unix(116), 2)  # index 58: 58 - 50 >= 8, the 5 expires
    assert w.current() == 2


def test_a_higher_value_takes_over_at_once() -> None:
    w = MaxTimeWindow(10, granularity=2)
    w.record(unix(0), 3)
    w.record(unix(2), 7)
    assert w.current() == 7


def test_two_records_in_one_slot_keep_the_larger() -> None:
    w = MaxTimeWindow(10, granularity=2)
    w.record(unix(0), 3)
    w.record(unix(1), 1)
    assert w.current() == 3


def test_current_does_not_expire_anything_by_itself() -> None:
    w = MaxTimeWindow(4, granularity=2)
    w.record(unix(0), 9)
    assert w.current() == 9  # however much later it is read: expiry happens in record()
    w.record(unix(100), 1)
    assert w.current() == 1


def test_nothing_recorded_reads_zero() -> None:
    assert MaxTimeWindow(4, granularity=1).current() == 0


def test_a_step_back_in_time_that_would_overfill_drops_the_oldest() -> None:
    w = MaxTimeWindow(2, granularity=1)
    w.record_index(10, 5)
    w.record_index(11, 4)
    w.record_index(9, 3)  # upstream panics here
    assert w.overflows == 1 and w.current() == 4
