"""Go's string-to-value parsers, reproduced exactly, for config and annotation values.

Upstream reads ``config-autoscaler`` values and ``autoscaling.knative.dev/*`` annotations with
Go's ``strconv`` and ``time`` packages; a value Knative accepts must be accepted here and a
value it rejects must be rejected, so these functions follow Go's grammar rather than Python's:

* :func:`parse_float` is ``strconv.ParseFloat(s, 64)``: decimal and hexadecimal (``0x1p-2``,
  exponent required) forms, an optional sign, ``Inf``/``Infinity`` (signed) and ``NaN``
  (unsigned) in any case, underscores only between digits (or right after ``0x``), no
  whitespace; a finite literal that overflows float64 is a range error.
* :func:`parse_int` is ``strconv.ParseInt(s, 10, bits)``: base 10, optional sign, no
  underscores, no whitespace, range checked against ``bits``.
* :func:`parse_bool` is ``strconv.ParseBool``.
* :func:`parse_duration` is ``time.ParseDuration``, returning integer nanoseconds.
* :func:`round_duration` / :func:`truncate_duration` are ``Duration.Round`` (half away from
  zero, saturating) and ``Duration.Truncate``; :func:`format_duration` is ``Duration.String``.
* :func:`float_to_int64` is Go's float64 -> int64 conversion as it behaves on amd64.

Errors: ``GoParseError`` (a ``ValueError``) > ``GoSyntaxError`` | ``GoRangeError``.
Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
import math
import re

__all__ = [
    "GoParseError",
    "GoRangeError",
    "GoSyntaxError",
    "HOUR",
    "MICROSECOND",
    "MILLISECOND",
    "MINUTE",
    "NANOSECOND",
    "SECOND",
    "float_to_int64",
    "format_duration",
    "parse_bool",
    "parse_duration",
    "parse_float",
    "parse_int",
    "round_duration",
    "truncate_duration",
]

logger = logging.getLogger(__name__)

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class GoParseError(ValueError):
    """A value Go's parser would reject. ``func`` names the Go function, ``value`` the input."""

    def __init__(self, func: str, value: str, reason: str) -> None:
        super().__init__(f"{func}: parsing {value!r}: {reason}")
        self.func = func
        self.value = value
        self.reason = reason


class GoSyntaxError(GoParseError):
    """The text is not well-formed for the parser (Go's ``strconv.ErrSyntax``)."""


class GoRangeError(GoParseError):
    """Well-formed, but outside the representable range (Go's ``strconv.ErrRange``)."""


# --- strconv.ParseBool -------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def parse_bool(s: str) -> bool:
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise GoSyntaxError("ParseBool", s, "invalid syntax")


# --- strconv.ParseInt(s, 10, bits) -------------------------------------------------------

def parse_int(s: str, bits: int = 64) -> int:
    """Base-10 integer in the signed range of ``bits`` bits (Go ParseInt with base 10)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], was {bits}")
    body = s[1:] if s[:1] in ("+", "-") else s
    neg = s[:1] == "-"
    if not body:
        raise GoSyntaxError("ParseInt", s, "invalid syntax")
    # Go scans left to right and reports overflow as soon as the unsigned value passes
    # 2**bits - 1, even if a bad character follows; a bad character first is a syntax error.
    max_unsigned = (1 << bits) - 1
    n = 0
    for c in body:
        if not "0" <= c <= "9":
            raise GoSyntaxError("ParseInt", s, "invalid syntax")
        n = n * 10 + (ord(c) - 48)
        if n > max_unsigned:
            raise GoRangeError("ParseInt", s, "value out of range")
    cutoff = 1 << (bits - 1)
    if (not neg and n >= cutoff) or (neg and n > cutoff):
        raise GoRangeError("ParseInt", s, "value out of range")
    return -n if neg else n


# --- strconv.ParseFloat(s, 64) -----------------------------------------------------------

_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE | re.ASCII)  # Go folds ASCII only


def _underscores_ok(s: str) -> bool:
    """Go's rule: an underscore sits between two digits, or between a base prefix and a digit."""
    if s[:1] in ("+", "-"):
        s = s[1:]
    saw = "^"  # ^ start, 0 digit or base prefix, _ underscore, ! anything else
    i = 0
    is_hex = False
    if len(s) >= 2 and s[0] == "0" and s[1] in "bBoOxX":
        i = 2
        saw = "0"
        is_hex = s[1] in "xX"
    for c in s[i:]:
        if "0" <= c <= "9" or (is_hex and c in "abcdefABCDEF"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _well_formed_float(s: str) -> bool | None:
    """Scan like Go's readFloat over the whole string. None if malformed, else True if hex."""
    i, n = 0, len(s)
    if i < n and s[i] in "+-":
        i += 1
    is_hex = i + 2 < n and s[i] == "0" and s[i + 1] in "xX"
    if is_hex:
        i += 2
    digits = "0123456789abcdefABCDEF" if is_hex else "0123456789"
    saw_dot = saw_digits = False
    while i < n:
        c = s[i]
        if c == "_":
            pass
        elif c == ".":
            if saw_dot:
                return None
            saw_dot = True
        elif c in digits:
            saw_digits = True
        else:
            break
        i += 1
    if not saw_digits:
        return None
    exp_char = "pP" if is_hex else "eE"
    if i < n and s[i] in exp_char:
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        if i >= n or not "0" <= s[i] <= "9":
            return None
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            i += 1
    elif is_hex:
        return None  # a hexadecimal float needs its p exponent
    if i != n:
        return None
    if "_" in s and not _underscores_ok(s):
        return None
    return is_hex


def parse_float(s: str) -> float:
    """float64 exactly as Go's ParseFloat(s, 64) returns it, or GoSyntaxError/GoRangeError."""
    if _SPECIAL.fullmatch(s):
        low = s.lower()
        if low == "nan":
            return math.nan
        return -math.inf if low.startswith("-") else math.inf
    kind = _well_formed_float(s)
    if kind is None:
        raise GoSyntaxError("ParseFloat", s, "invalid syntax")
    text = s.replace("_", "")
    # Both Python and Go round a literal to the nearest float64 (ties to even).
    if kind:
        try:
            value = float.fromhex(text)
        except OverflowError:
            raise GoRangeError("ParseFloat", s, "value out of range") from None
    else:
        value = float(text)
    if math.isinf(value):
        raise GoRangeError("ParseFloat", s, "value out of range")
    return value


# --- time.ParseDuration ------------------------------------------------------------------

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_OVERFLOW = 1 << 63


def _leading_int(s: str, i: int) -> tuple[int, int]:
    x = 0
    while i < len(s) and "0" <= s[i] <= "9":
        x = x * 10 + (ord(s[i]) - 48)
        if x > _OVERFLOW:
            raise OverflowError
        i += 1
    return x, i


def _leading_fraction(s: str, i: int) -> tuple[int, float, int]:
    # Stops accumulating precision on overflow instead of failing, as Go does.
    x, scale, overflow = 0, 1.0, False
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            y = x * 10 + (ord(s[i]) - 48)
            if x > (_OVERFLOW - 1) // 10 or y > _OVERFLOW:
                overflow = True
            else:
                x = y
                scale *= 10
        i += 1
    return x, scale, i


def parse_duration(s: str) -> int:
    """Nanoseconds, as Go's time.ParseDuration: "1h2m3.5s", "300ms", "1us", "-5s", "0"."""
    orig = s
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise GoSyntaxError("ParseDuration", orig, "invalid duration")
    total = 0
    i = 0
    while i < len(s):
        if not (s[i] == "." or "0" <= s[i] <= "9"):
            raise GoSyntaxError("ParseDuration", orig, "invalid duration")
        start = i
        try:
            whole, i = _leading_int(s, i)
        except OverflowError:
            raise GoRangeError("ParseDuration", orig, "invalid duration (overflow)") from None
        pre = i != start
        frac, scale, post = 0, 1.0, False
        if i < len(s) and s[i] == ".":
            i += 1
            frac_start = i
            frac, scale, i = _leading_fraction(s, i)
            post = i != frac_start
        if not pre and not post:
            raise GoSyntaxError("ParseDuration", orig, "invalid duration")
        unit_start = i
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == unit_start:
            raise GoSyntaxError("ParseDuration", orig, "missing unit in duration")
        unit_text = s[unit_start:i]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise GoSyntaxError("ParseDuration", orig, f"unknown unit {unit_text!r} in duration")
        if whole > _OVERFLOW // unit:
            raise GoRangeError("ParseDuration", orig, "invalid duration (overflow)")
        v = whole * unit
        if frac > 0:
            # Go computes the fraction in float64 and truncates; so do we, step for step.
            v += int(float(frac) * (float(unit) / scale))
            if v > _OVERFLOW:
                raise GoRangeError("ParseDuration", orig, "invalid duration (overflow)")
        total += v
        if total > _OVERFLOW:
            raise GoRangeError("ParseDuration", orig, "invalid duration (overflow)")
    if neg:
        return -total
    if total > _INT64_MAX:
        raise GoRangeError("ParseDuration", orig, "invalid duration (overflow)")
    return total


# --- Duration arithmetic and formatting --------------------------------------------------

def _go_rem(a: int, b: int) -> int:
    """Go's % on integers: the remainder takes the sign of the dividend."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def round_duration(d: int, m: int) -> int:
    """Go Duration.Round: to the nearest multiple of m, halves away from zero, saturating."""
    if m <= 0:
        return d
    r = _go_rem(d, m)
    if d < 0:
        r = -r
        if r + r < m:
            return d + r
        d1 = d - m + r
        return d1 if d1 >= _INT64_MIN else _INT64_MIN
    if r + r < m:
        return d - r
    d1 = d + m - r
    return d1 if d1 <= _INT64_MAX else _INT64_MAX


def truncate_duration(d: int, m: int) -> int:
    """Go Duration.Truncate: toward zero, to a multiple of m."""
    if m <= 0:
        return d
    return d - _go_rem(d, m)


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    digits = ""
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def format_duration(d: int) -> str:
    """Go Duration.String: "1h0m0s", "1.5s", "300ms", "1µs", "0s"."""
    if d == 0:
        return "0s"
    u = abs(d)
    if u < SECOND:
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        frac, u = _fmt_frac(u, prec)
        text = f"{u}{frac}{unit}"
    else:
        frac, u = _fmt_frac(u, 9)
        text = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            text = f"{u % 60}m{text}"
            u //= 60
            if u > 0:
                text = f"{u}h{text}"
    return "-" + text if d < 0 else text


def float_to_int64(x: float) -> int:
    """Go's int64(x) on amd64: truncation toward zero; NaN and out-of-range give -2**63."""
    if math.isnan(x) or not -9.223372036854775808e18 <= x < 9.223372036854775808e18:
        return _INT64_MIN
    return int(x)
