"""Go's time and float64 semantics that the KPA's numbers depend on, reproduced exactly.

Upstream's windows and decider are written against Go's ``time.Time``, ``time.Duration`` and
``math`` packages; to give bit-identical answers we follow them rather than Python's:

* **Instants** are ``int`` nanoseconds since the Unix epoch (``time.time_ns()`` in a service).
  Python ints do not overflow, so Go's zero time ``time.Time{}`` (0001-01-01 UTC) is the
  ordinary value :data:`GO_ZERO_NS`. Callers that only need whole seconds (the vectorised
  windows) use ``int`` Unix seconds, floored (:func:`unix_floor_s`).
* **Durations** are ``int`` nanoseconds here; :func:`duration_ns` converts a config value in
  float seconds. ``a.Sub(b)`` saturates (:func:`sub`); ``Duration / Duration`` and Go's ``/`` on
  ints truncate toward zero (:func:`go_div`), unlike Python's ``//``.
* ``Time.Truncate(d)`` counts from Go's zero time, not from the Unix epoch (:func:`truncate`).
* ``math.Round`` rounds half away from zero (:func:`go_round`), not to even.
* ``math.Pow`` is Go's own algorithm, not C's ``pow`` (:func:`go_pow`); it differs from
  ``x ** y`` in the last bit for about a quarter of the weighted-window multipliers.
* ``int32(f)`` on amd64 truncates and yields ``-2**31`` for NaN and out-of-range values
  (:func:`go_int32`); float division by zero gives ``±Inf``/``NaN`` (:func:`fdiv`).

Each scalar helper has a numpy twin (``np_*``) used by the vectorised cores.
Pure: no I/O, no clock.
"""
from __future__ import annotations

import math
import struct

import numpy as np

__all__ = [
    "GO_ZERO_NS",
    "GO_ZERO_UNIX_S",
    "INT32_MIN",
    "MAX_DURATION",
    "MIN_DURATION",
    "NS_PER_S",
    "duration_ns",
    "duration_seconds",
    "fdiv",
    "go_div",
    "go_fmax",
    "go_fmin",
    "go_int32",
    "go_pow",
    "go_round",
    "np_go_div",
    "np_go_int32",
    "np_round6",
    "round6",
    "smoothing_coeff",
    "sub",
    "time_to_index",
    "truncate",
    "unix_floor_s",
]

NS_PER_S = 1_000_000_000
#: Go's zero time ``time.Time{}`` (0001-01-01T00:00:00Z) in Unix seconds and nanoseconds.
GO_ZERO_UNIX_S = -62_135_596_800
GO_ZERO_NS = GO_ZERO_UNIX_S * NS_PER_S
MAX_DURATION = (1 << 63) - 1
MIN_DURATION = -(1 << 63)
INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


# -- time -------------------------------------------------------------------------------------

def duration_ns(seconds: float) -> int:
    """``time.Duration(math.Round(seconds * 1e9))``: a float-seconds config value in ns."""
    return int(go_round(seconds * 1e9))


def duration_seconds(d_ns: int) -> float:
    """``Duration.Seconds()``: whole seconds plus the fraction, each converted separately."""
    sec = go_div(d_ns, NS_PER_S)
    return float(sec) + float(d_ns - sec * NS_PER_S) / 1e9


def sub(a_ns: int, b_ns: int) -> int:
    """``a.Sub(b)``: the duration between two instants, saturated to the int64 range."""
    return min(max(a_ns - b_ns, MIN_DURATION), MAX_DURATION)


def go_div(a: int, b: int) -> int:
    """Go's integer ``a / b``: truncates toward zero (Python's ``//`` floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def truncate(t_ns: int, d_ns: int) -> int:
    """``t.Truncate(d)``: round down to a multiple of ``d`` counted from Go's zero time."""
    if d_ns <= 0:
        return t_ns
    rel = t_ns - GO_ZERO_NS
    return t_ns - rel % d_ns


def unix_floor_s(t_ns: int) -> int:
    """``t.Unix()``: whole seconds since the Unix epoch, rounded down."""
    return t_ns // NS_PER_S


def time_to_index(t_ns: int, granularity_ns: int) -> int:
    """Upstream's ring index ``int(t.Unix()) / int(granularity.Seconds())`` (truncating)."""
    return go_div(unix_floor_s(t_ns), int(duration_seconds(granularity_ns)))


# -- float64 ----------------------------------------------------------------------------------

def go_round(x: float) -> float:
    """``math.Round``: to the nearest integer, halves away from zero; keeps the sign of zero."""
    if not math.isfinite(x):
        return x
    r = float(math.trunc(x))
    if r == 0.0:
        r = math.copysign(0.0, x)
    if abs(x - r) >= 0.5:
        r += math.copysign(1.0, x)
    return r


def round6(x: float) -> float:
    """Upstream's ``roundToNDigits(6, x)``: ``math.Round(x*1e6) / 1e6``."""
    return go_round(x * 1e6) / 1e6


def fdiv(a: float, b: float) -> float:
    """IEEE float64 division: a zero divisor gives ±Inf or NaN instead of raising."""
    if b != 0.0:
        return a / b
    if a != a or a == 0.0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def go_fmax(a: float, b: float) -> float:
    """``math.Max``: NaN wins, +0 beats -0."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b == 0.0:
        return a if math.copysign(1.0, a) > 0 else b
    return a if a > b else b


def go_fmin(a: float, b: float) -> float:
    """``math.Min``: NaN wins, -0 beats +0."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b == 0.0:
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def go_int32(x: float) -> int:
    """``int32(x)`` for a float64 on amd64: truncation; NaN and out-of-range give -2**31."""
    if not math.isfinite(x):
        return INT32_MIN
    t = math.trunc(x)
    return t if INT32_MIN <= t <= _INT32_MAX else INT32_MIN


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _from_bits(b: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", b))[0]


_SMALLEST_NORMAL = 2.2250738585072014e-308


def _go_ldexp(frac: float, exp: int) -> float:
    """``math.Ldexp`` as Go computes it in software (a final scaling multiply for denormals)."""
    if frac == 0.0 or not math.isfinite(frac):
        return frac
    if abs(frac) < _SMALLEST_NORMAL:
        frac *= float(1 << 52)
        exp -= 52
    x = _bits(frac)
    exp += ((x >> 52) & 0x7FF) - 1023
    if exp < -1075:
        return math.copysign(0.0, frac)
    if exp > 1023:
        return math.copysign(math.inf, frac)
    scale = 1.0
    if exp < -1022:
        exp += 53
        scale = 1.0 / float(1 << 53)
    x &= ~(0x7FF << 52)
    x |= (exp + 1023) << 52
    return scale * _from_bits(x)


def _is_odd_int(x: float) -> bool:
    frac, whole = math.modf(x)
    return frac == 0.0 and abs(whole) < 2.0**63 and int(whole) & 1 == 1


def go_pow(x: float, y: float) -> float:
    """Go's ``math.Pow``: integer powers by squaring the ``frexp`` mantissa, then ``ldexp``.

    A fractional part of the exponent goes through ``exp(yf * log(x))``; ``y == ±0.5`` uses a
    square root. Special cases follow Go's documented order.
    """
    if y == 0.0 or x == 1.0:
        return 1.0
    if y == 1.0:
        return x
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0.0:
        if y < 0:
            return math.copysign(math.inf, x) if _is_odd_int(y) else math.inf
        return x if _is_odd_int(y) else 0.0
    if math.isinf(y):
        if x == -1.0:
            return 1.0
        return 0.0 if (abs(x) < 1) == (y > 0) else math.inf
    if math.isinf(x):
        if x < 0:
            return go_pow(1.0 / x, -y)
        return 0.0 if y < 0 else math.inf
    if y == 0.5:
        return math.sqrt(x)
    if y == -0.5:
        return 1.0 / math.sqrt(x)

    yf, yi = math.modf(abs(y))
    if yf != 0.0 and x < 0:
        return math.nan
    if yi >= 2.0**63:
        if x == -1.0:
            return 1.0
        return 0.0 if (abs(x) < 1) == (y > 0) else math.inf

    a1 = 1.0
    ae = 0
    if yf != 0.0:
        if yf > 0.5:
            yf -= 1.0
            yi += 1.0
        a1 = math.exp(yf * math.log(x))

    x1, xe = math.frexp(x)
    i = int(yi)
    while i != 0:
        if xe < -(1 << 12) or (1 << 12) < xe:
            ae += xe
            break
        if i & 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1

    if y < 0:
        a1 = 1.0 / a1
        ae = -ae
    return _go_ldexp(a1, ae)


#: Upstream's weight-precision base, ``1 - 0.9999`` folded exactly at compile time.
_WEIGHT_BASE = 1e-4
_MIN_COEFF = 0.2


def smoothing_coeff(num_buckets: float) -> float:
    """The weighted average's decay ``max(1 - Pow(1e-4, 1/nb), 0.2)``."""
    return go_fmax(1.0 - go_pow(_WEIGHT_BASE, 1.0 / num_buckets), _MIN_COEFF)


# -- numpy twins ------------------------------------------------------------------------------

def np_go_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Go integer division (truncating toward zero) of int64 arrays, ``b > 0``."""
    q = np.abs(a) // b
    return np.where(a >= 0, q, -q)


def np_round6(x: np.ndarray) -> np.ndarray:
    """Element-wise :func:`round6`."""
    y = x * 1e6
    with np.errstate(invalid="ignore"):
        r = np.trunc(y)
        up = np.abs(y - r) >= 0.5
    r = np.where(up, r + np.copysign(1.0, y), r)
    return r / 1e6


def np_go_int32(x: np.ndarray) -> np.ndarray:
    """Element-wise :func:`go_int32`, as int64."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (x > INT32_MIN - 1.0) & (x < _INT32_MAX + 1.0)
    return np.where(ok, np.trunc(np.where(ok, x, 0.0)), INT32_MIN).astype(np.int64)
