"""Go's strconv/time parsing as upstream reads config values: accepted, rejected, and exact values.

Expected values are Go's documented behaviour and cases from Go's own strconv and time test
tables (facts, not code).
"""
from __future__ import annotations

import math

import pytest

from autoscaler.goparse import (
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    GoParseError,
    GoRangeError,
    GoSyntaxError,
    float_to_int64,
    format_duration,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    round_duration,
    truncate_duration,
)


@pytest.mark.parametrize(("text", "want"), [
    ("1e3", 1000.0),
    ("+5", 5.0),
    ("-2.5", -2.5),
    (".5", 0.5),
    ("5.", 5.0),
    ("1.e2", 100.0),
    ("1E-2", 0.01),
    ("007", 7.0),
    ("0x1p-2", 0.25),
    ("0X1.8P1", 3.0),
    ("-0x.8p1", -1.0),
    ("0x1_ep-1", 15.0),
    ("0x_1_2.3_4_5p+1_2", 74565.0),
    ("1_23.50_0_0e+1_2", 1.235e14),
    ("1e-400", 0.0),
    ("1.7976931348623157e308", 1.7976931348623157e308),
    ("0.1", 0.1),
    ("1.00000000000000011102230246251565404236316680908203126", 1.0000000000000002),
    ("1090544144181609348671888949248", 1.0905441441816093e30),
])
def test_parse_float_accepts_go_literals(text: str, want: float) -> None:
    assert parse_float(text) == want


@pytest.mark.parametrize(("text", "want"), [
    ("Inf", math.inf), ("inf", math.inf), ("+INF", math.inf), ("-Inf", -math.inf),
    ("Infinity", math.inf), ("-infinity", -math.inf),
])
def test_parse_float_reads_signed_infinity_in_any_case(text: str, want: float) -> None:
    assert parse_float(text) == want


@pytest.mark.parametrize("text", ["NaN", "nan", "NAN"])
def test_parse_float_reads_unsigned_nan(text: str) -> None:
    assert math.isnan(parse_float(text))


def test_parse_float_keeps_the_sign_of_negative_zero() -> None:
    assert math.copysign(1.0, parse_float("-0")) == -1.0


@pytest.mark.parametrize("text", [
    "", " 1", "1 ", "1\n", "+", "-", ".", "e1", "1e", "1e+", "1.2.3", "1,5",
    "+nan", "-nan", "nan(1)", "infin", "infinit", "infx", "+-1",
    "0x", "0x1", "0x1.8", "0x1e2", "0xg", "1p2",
    "1__23.5", "_123.5", "-_123.5e+12", "123_.5", "123._5", "123.5_", "123.5e_+12",
    "123.5e+1__2", "123.5e+12_", "0x__12.345p+12", "0x12.345p+12_",
    "1_", "\u0661", "\u0131nf", "\u0131nfinity",
])
def test_parse_float_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(GoSyntaxError):
        parse_float(text)


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1.7976931348623159e308", "0x1p1024"])
def test_parse_float_overflow_is_a_range_error(text: str) -> None:
    with pytest.raises(GoRangeError):
        parse_float(text)


@pytest.mark.parametrize(("text", "want"), [
    ("0", 0), ("+5", 5), ("-5", -5), ("007", 7), ("-0", 0),
    ("2147483647", 2**31 - 1), ("-2147483648", -(2**31)),
])
def test_parse_int32_accepts_base_10_in_range(text: str, want: int) -> None:
    assert parse_int(text, 32) == want


@pytest.mark.parametrize("text", [
    "", "+", "-", " 5", "5 ", "5_0", "0x10", "1e3", "1.0", "five", "--5", "+-5",
])
def test_parse_int_rejects_non_decimal_text(text: str) -> None:
    with pytest.raises(GoSyntaxError):
        parse_int(text, 32)


@pytest.mark.parametrize("text", ["2147483648", "-2147483649", "99999999999999999999",
                                  "99999999999999999999x"])
def test_parse_int32_out_of_range_is_a_range_error(text: str) -> None:
    # Like Go, overflow is reported as soon as it happens, even before a later bad character.
    with pytest.raises(GoRangeError):
        parse_int(text, 32)


def test_parse_int64_bounds() -> None:
    assert parse_int("9223372036854775807") == 2**63 - 1
    assert parse_int("-9223372036854775808") == -(2**63)
    with pytest.raises(GoRangeError):
        parse_int("9223372036854775808")


@pytest.mark.parametrize(("text", "want"), [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("FALSE", False), ("false", False),
    ("False", False),
])
def test_parse_bool_accepts_exactly_go_spellings(text: str, want: bool) -> None:
    assert parse_bool(text) is want


@pytest.mark.parametrize("text", ["", "yes", "no", "on", "tRUE", "true ", " 1", "2", "y"])
def test_parse_bool_rejects_everything_else(text: str) -> None:
    with pytest.raises(GoSyntaxError):
        parse_bool(text)


@pytest.mark.parametrize(("text", "want"), [
    ("0", 0), ("+0", 0), ("-0", 0),
    ("5s", 5 * SECOND), ("+5s", 5 * SECOND), ("-5s", -5 * SECOND),
    ("300ms", 300 * MILLISECOND), (".5s", 500 * MILLISECOND), ("1.s", SECOND),
    ("1h2m3.5s", HOUR + 2 * MINUTE + 3500 * MILLISECOND),
    ("1us", MICROSECOND), ("1\u00b5s", MICROSECOND), ("1\u03bcs", MICROSECOND),
    ("100ns", 100), ("0.5ns", 0), ("1.9ns", 1),
    ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
    ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
    ("0.3333333333333333333h", 20 * MINUTE),
    ("9007199254740993ns", 2**53 + 1),
    ("9223372036854775807ns", 2**63 - 1),
    ("9223372036854775.807us", 2**63 - 1),
    ("9223372036s854ms775us807ns", 2**63 - 1),
    ("-9223372036854775808ns", -(2**63)),
    ("-2562047h47m16.854775808s", -(2**63)),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
])
def test_parse_duration_matches_go(text: str, want: int) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", [
    "", "3", "60", "-", "s", ".", "-.", ".s", "+.s", "1d", "1S", "1 s", " 1s", "1s ",
    "1s2", "1.5.s", "..2s", "\ufffd", "1e3s",
])
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    with pytest.raises(GoSyntaxError):
        parse_duration(text)


@pytest.mark.parametrize("text", [
    "3000000h", "9223372036854775808ns", "9223372036854775.808us",
    "9223372036854ms775us808ns", "-9223372036854775809ns",
])
def test_parse_duration_overflow_is_an_error(text: str) -> None:
    with pytest.raises(GoParseError):
        parse_duration(text)


@pytest.mark.parametrize(("d", "want"), [
    (2_500_000_000, 3 * SECOND),
    (-2_500_000_000, -3 * SECOND),
    (2_499_999_999, 2 * SECOND),
    (-2_499_999_999, -2 * SECOND),
    (500_000_000, SECOND),
    (600_000_000, SECOND),
    (0, 0),
    (2**63 - 1, 2**63 - 1),   # saturates instead of overflowing
    (-(2**63), -(2**63)),
])
def test_round_duration_rounds_half_away_from_zero(d: int, want: int) -> None:
    assert round_duration(d, SECOND) == want


def test_round_and_truncate_with_non_positive_multiple_return_input() -> None:
    assert round_duration(1234, 0) == 1234
    assert truncate_duration(1234, -1) == 1234


def test_truncate_duration_goes_toward_zero() -> None:
    assert truncate_duration(2_900_000_000, SECOND) == 2 * SECOND
    assert truncate_duration(-2_900_000_000, SECOND) == -2 * SECOND


@pytest.mark.parametrize(("d", "want"), [
    (0, "0s"), (1, "1ns"), (1100, "1.1\u00b5s"), (2_200_000, "2.2ms"),
    (3_300_000_000, "3.3s"), (4 * MINUTE + 5 * SECOND, "4m5s"),
    (HOUR, "1h0m0s"), (-5 * SECOND, "-5s"), (-(2**63), "-2562047h47m16.854775808s"),
])
def test_format_duration_matches_go_string(d: int, want: str) -> None:
    assert format_duration(d) == want


@pytest.mark.parametrize(("x", "want"), [
    (2.9, 2), (-2.9, -2), (1e18, 10**18),
    (math.nan, -(2**63)), (math.inf, -(2**63)), (9.3e18, -(2**63)),
])
def test_float_to_int64_truncates_and_maps_invalid_to_min(x: float, want: int) -> None:
    assert float_to_int64(x) == want
