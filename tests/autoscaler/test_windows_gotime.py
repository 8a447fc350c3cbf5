"""Go time and float64 semantics the windows depend on (autoscaler.gotime)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler import gotime
from autoscaler.gotime import GO_ZERO_NS, NS_PER_S


@pytest.mark.parametrize(("x", "want"), [
    pytest.param(2.5, 3.0, id="half-up"),
    pytest.param(-2.5, -3.0, id="half-away-from-zero-negative"),
    pytest.param(0.5, 1.0, id="half"),
    pytest.param(0.49999999999999994, 0.0, id="just-below-half"),
    pytest.param(-0.2, -0.0, id="keeps-sign-of-zero"),
    pytest.param(4503599627370497.0, 4503599627370497.0, id="already-integral"),
])
def test_go_round_rounds_halves_away_from_zero(x: float, want: float) -> None:
    got = gotime.go_round(x)
    assert got == want and math.copysign(1, got) == math.copysign(1, want)
    arr = gotime.np_round6(np.array([x / 1e6]))
    assert arr[0] == gotime.round6(x / 1e6)


def test_python_round_would_differ_on_halves() -> None:
    assert round(2.5) == 2 and gotime.go_round(2.5) == 3.0


def test_go_division_truncates_toward_zero() -> None:
    assert gotime.go_div(-7, 2) == -3 and -7 // 2 == -4
    assert gotime.go_div(7, 2) == 3
    assert list(gotime.np_go_div(np.array([-7, 7, -1]), 2)) == [-3, 3, 0]


def test_truncate_counts_from_go_zero_time_not_the_unix_epoch() -> None:
    t = 1_787_315_305 * NS_PER_S  # a multiple of 5 s from both epochs
    assert gotime.truncate(t + 4 * NS_PER_S, 5 * NS_PER_S) == t
    # 62135596800 s is not a multiple of 7 s, so 7 s buckets are not Unix-aligned.
    seven = 7 * NS_PER_S
    tr = gotime.truncate(t, seven)
    assert (tr - GO_ZERO_NS) % seven == 0
    assert tr % seven != 0


def test_sub_saturates_at_the_int64_range() -> None:
    now = 1_787_315_305 * NS_PER_S
    assert gotime.sub(now, GO_ZERO_NS) == gotime.MAX_DURATION
    assert gotime.sub(GO_ZERO_NS, now) == gotime.MIN_DURATION
    assert gotime.sub(5, 3) == 2


def test_unix_seconds_round_down_before_the_epoch() -> None:
    assert gotime.unix_floor_s(-1) == -1
    assert gotime.time_to_index(-1, 2 * NS_PER_S) == 0  # int(-1) / 2 truncates to 0


def test_duration_seconds_adds_whole_and_fractional_parts() -> None:
    assert gotime.duration_seconds(-3_700_000_000) == -3.7
    assert gotime.duration_ns(0.001) == 1_000_000


@pytest.mark.parametrize(("nb", "want"), [
    pytest.param(6, 0.7845565309968116, id="nb=6"),
    pytest.param(5, 0.8415106807538886, id="nb=5"),
    pytest.param(3, 0.9535841116638721, id="nb=3"),
    pytest.param(40, 0.2056717652757185, id="nb=40"),
    pytest.param(60, 0.2, id="floor-0.2"),
])
def test_smoothing_coefficient_is_bit_exact_with_go(nb: int, want: float) -> None:
    assert gotime.smoothing_coeff(float(nb)) == want


def test_go_pow_differs_from_c_pow_in_the_last_bit() -> None:
    x = 1.0 - 0.7845565309968116
    diffs = [k for k in range(2, 60) if gotime.go_pow(x, float(k)) != x ** k]
    assert diffs  # why the windows need the port
    assert all(math.isclose(gotime.go_pow(x, float(k)), x ** k, rel_tol=1e-14)
               for k in range(60))


@pytest.mark.parametrize(("x", "y", "want"), [
    (0.5, 3.0, 0.125), (2.0, -2.0, 0.25), (0.0, -1.0, math.inf), (-0.0, -1.0, -math.inf),
    (9.0, 0.5, 3.0), (1.0, math.nan, 1.0), (-8.0, 1.0 / 3.0, math.nan), (0.8, 5000.0, 0.0),
])
def test_go_pow_special_cases(x: float, y: float, want: float) -> None:
    got = gotime.go_pow(x, y)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_int32_conversion_truncates_and_maps_nan_to_min() -> None:
    assert gotime.go_int32(-9.5) == -9
    assert gotime.go_int32(math.nan) == gotime.INT32_MIN
    assert gotime.go_int32(3e9) == gotime.INT32_MIN
    assert list(gotime.np_go_int32(np.array([-9.5, math.nan, 3e9, 7.9]))) == [
        -9, gotime.INT32_MIN, gotime.INT32_MIN, 7]


def test_float_division_by_zero_gives_infinities() -> None:
    assert gotime.fdiv(1.0, 0.0) == math.inf
    assert gotime.fdiv(-1.0, 0.0) == -math.inf
    assert math.isnan(gotime.fdiv(0.0, 0.0))
