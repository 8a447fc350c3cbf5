"""Traffic traces for the simulator: what a trace holds, and parsing it from CSV or JSON text.

A trace is the offered load of one revision, second by second: the arrival rate (requests per
second) and the mean request latency (seconds), so the offered concurrency is ``rps x latency``
(Little's law). Input rows may give any two of the three, or concurrency alone:

* ``rps`` + ``latency_ms`` (or ``latency_s``): concurrency = rps x latency;
* ``concurrency`` + a latency: rps = concurrency / latency;
* ``rps`` + ``concurrency``: latency = concurrency / rps;
* ``concurrency`` alone: the latency is taken from the row above, else the default latency
  (1 s unless the caller passes another), and :attr:`Trace.assumed_latency` says so;
* ``rps`` alone: the latency is taken from the row above; a first row without one is an error.

An optional ``t`` column (whole seconds, strictly increasing) makes the trace a step function:
each row holds until the next row's ``t``; seconds before the first row are idle; the last row
lasts one second. Without ``t`` every row is one second.

CSV: a header line, then rows; blank lines and lines starting with ``#`` are skipped; empty cells
mean "not given". JSON: a list of objects with the same keys (``null`` = not given). Every
error is a :class:`TraceError` naming the source, the line and the column.

Pure: parses text it is given; no I/O, no clock.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["COLUMNS", "DEFAULT_LATENCY", "MAX_SECONDS", "Trace", "TraceError", "parse_trace",
           "trace_from_rows"]

#: The columns a trace may have.
COLUMNS = ("t", "rps", "latency_ms", "latency_s", "concurrency")
#: Latency assumed for concurrency-only rows when none is given, seconds.
DEFAULT_LATENCY = 1.0
#: Longest trace accepted (7 days of seconds).
MAX_SECONDS = 7 * 24 * 3600


class TraceError(ValueError):
    """A trace that cannot be used: ``source:line: message`` (``line`` None = the whole trace)."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Trace:
    """Per-second offered load: ``rps[i]`` arrivals and ``latency[i]`` mean seconds in second i."""

    rps: tuple[float, ...]
    latency: tuple[float, ...]
    source: str = "trace"
    assumed_latency: bool = False
    """Some rows gave only concurrency and took the default latency."""

    def __post_init__(self) -> None:
        if not self.rps or len(self.rps) != len(self.latency):
            raise TraceError(self.source, None, "a trace needs at least one second, with an "
                             "rps and a latency for every second")
        if len(self.rps) > MAX_SECONDS:
            raise TraceError(self.source, None, f"{len(self.rps)} seconds is longer than the "
                             f"{MAX_SECONDS} s (7 days) allowed")
        for i, (r, lat) in enumerate(zip(self.rps, self.latency)):
            if not (math.isfinite(r) and r >= 0 and math.isfinite(lat) and lat > 0):
                raise TraceError(self.source, None, f"second {i}: rps {r!r} must be >= 0 and "
                                 f"latency {lat!r} s > 0, both finite")

    @property
    def seconds(self) -> int:
        return len(self.rps)

    def concurrency(self, i: int) -> float:
        """Offered concurrency in second ``i`` (Little's law)."""
        return self.rps[i] * self.latency[i]

    def with_duration(self, seconds: int) -> Trace:
        """Cut to ``seconds``, or extend by holding the last second's load."""
        if seconds < 1:
            raise TraceError(self.source, None, f"duration {seconds} s: must be >= 1")
        n = self.seconds
        if seconds <= n:
            return Trace(self.rps[:seconds], self.latency[:seconds], self.source,
                         self.assumed_latency)
        extra = seconds - n
        return Trace(self.rps + (self.rps[-1],) * extra,
                     self.latency + (self.latency[-1],) * extra, self.source,
                     self.assumed_latency)


Row = tuple[int, Mapping[str, float | None]]


def parse_trace(text: str, fmt: str, *, source: str = "trace",
                default_latency: float = DEFAULT_LATENCY) -> Trace:
    """Parse ``text`` as a ``csv`` or ``json`` trace (see the module docstring)."""
    if fmt == "csv":
        rows = _csv_rows(text, source)
    elif fmt == "json":
        rows = _json_rows(text, source)
    else:
        raise ValueError(f"trace format {fmt!r}: expected 'csv' or 'json'")
    return trace_from_rows(rows, source=source, default_latency=default_latency)


def trace_from_rows(rows: Iterable[Row], *, source: str = "trace",
                    default_latency: float = DEFAULT_LATENCY) -> Trace:
    """Build a trace from ``(line, {column: value or None})`` rows."""
    if not (math.isfinite(default_latency) and default_latency > 0):
        raise TraceError(source, None, f"default latency {default_latency!r} s must be > 0")
    rows = list(rows)
    if not rows:
        raise TraceError(source, None, "no rows: a trace needs at least one second of load")
    timed = any(r.get("t") is not None for _, r in rows)
    starts: list[int] = []
    values: list[tuple[float, float]] = []
    prev_latency: float | None = None
    assumed = False
    for line, row in rows:
        if timed:
            starts.append(_row_start(line, row, starts[-1] if starts else None, source))
        rps, latency, took_default = _row_load(line, row, prev_latency, default_latency, source)
        assumed = assumed or took_default
        prev_latency = latency
        values.append((rps, latency))
    if not timed:
        return Trace(tuple(v[0] for v in values), tuple(v[1] for v in values), source, assumed)
    end = starts[-1] + 1
    if end > MAX_SECONDS:
        raise TraceError(source, rows[-1][0], f"t: {starts[-1]} is beyond the {MAX_SECONDS} s "
                         "(7 days) allowed")
    rps_out = [0.0] * end
    lat_out = [values[0][1]] * end  # idle seconds before the first row: latency irrelevant
    bounds = [*starts[1:], end]
    for (rps, latency), lo, hi in zip(values, starts, bounds):
        rps_out[lo:hi] = [rps] * (hi - lo)
        lat_out[lo:hi] = [latency] * (hi - lo)
    return Trace(tuple(rps_out), tuple(lat_out), source, assumed)


def _row_start(line: int, row: Mapping[str, float | None], prev: int | None,
               source: str) -> int:
    t = row.get("t")
    if t is None:
        raise TraceError(source, line, "t: missing; once one row has t, every row needs it")
    if t < 0 or not float(t).is_integer():
        raise TraceError(source, line, f"t: {t!r} is not a whole number of seconds >= 0")
    if prev is not None and t <= prev:
        raise TraceError(source, line, f"t: {int(t)} does not come after {prev}; t must "
                         "strictly increase")
    return int(t)


def _row_load(line: int, row: Mapping[str, float | None], prev_latency: float | None,
              default_latency: float, source: str) -> tuple[float, float, bool]:
    """(rps, latency seconds, took the default latency) for one row."""
    ms, s = row.get("latency_ms"), row.get("latency_s")
    if ms is not None and s is not None:
        raise TraceError(source, line, "latency_ms and latency_s: give one of them, not both")
    latency = ms / 1000.0 if ms is not None else s
    rps, conc = row.get("rps"), row.get("concurrency")
    for name, value in (("rps", rps), ("concurrency", conc), ("latency_ms", ms),
                        ("latency_s", s)):
        if value is not None and value < 0:
            raise TraceError(source, line, f"{name}: {value!r} is negative")
    if latency is not None and latency <= 0:
        raise TraceError(source, line, f"latency: {latency * 1000.0:g} ms; must be > 0")
    if rps is not None and conc is not None and latency is not None:
        raise TraceError(source, line, "rps, latency and concurrency: give at most two of "
                         "them (Little's law gives the third)")
    if rps is not None and conc is not None:
        if rps > 0:
            return rps, conc / rps, False
        if conc > 0:
            raise TraceError(source, line, f"concurrency {conc:g} with rps 0: no latency fits")
        return 0.0, prev_latency or default_latency, False
    if latency is not None:
        if rps is not None:
            return rps, latency, False
        if conc is not None:
            return conc / latency, latency, False
        raise TraceError(source, line, "a latency alone is no load: add rps or concurrency")
    if rps is not None:
        if prev_latency is None:
            raise TraceError(source, line, "rps without a latency: add latency_ms (or "
                             "latency_s) to this row, or concurrency")
        return rps, prev_latency, False
    if conc is not None:
        took_default = prev_latency is None
        latency = default_latency if prev_latency is None else prev_latency
        return conc / latency, latency, took_default
    raise TraceError(source, line, "no load: give rps (with latency_ms) or concurrency")


# --- CSV -----------------------------------------------------------------------------------

def _number(text: str, column: str, line: int, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(source, line, f"{column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(source, line, f"{column}: {text!r} is not a finite number")
    return value


def _check_header(columns: list[str], line: int, source: str) -> None:
    for name in columns:
        if name not in COLUMNS:
            raise TraceError(source, line, f"unknown column {name!r}; the columns are "
                             f"{', '.join(COLUMNS)}")
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise TraceError(source, line, f"column {name!r} appears twice")
        seen.add(name)


def _csv_rows(text: str, source: str) -> list[Row]:
    header: list[str] | None = None
    rows: list[Row] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader([raw]))]
        if header is None:
            header = [c.lower() for c in cells]
            _check_header(header, number, source)
            continue
        if len(cells) != len(header):
            raise TraceError(source, number, f"{len(cells)} cells for {len(header)} columns "
                             f"({', '.join(header)})")
        rows.append((number, {name: None if cell == "" else
                              _number(cell, name, number, source)
                              for name, cell in zip(header, cells)}))
    if header is None:
        raise TraceError(source, None, "empty: a CSV trace needs a header line such as "
                         "'t,rps,latency_ms'")
    return rows


# --- JSON ----------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_items(text: str, source: str) -> list[tuple[int, object]]:
    """The items of a top-level JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] != "[":
        raise TraceError(source, _line_of(text, pos), "a JSON trace is a list of objects, "
                         "such as [{\"rps\": 10, \"latency_ms\": 100}, ...]")
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    items: list[tuple[int, object]] = []
    if text[pos:pos + 1] == "]":
        pos += 1
    else:
        while True:
            try:
                item, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise TraceError(source, exc.lineno, f"invalid JSON: {exc.msg}") from None
            items.append((_line_of(text, pos), item))
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            sep = text[pos:pos + 1]
            if sep == "]":
                pos += 1
                break
            if sep != ",":
                raise TraceError(source, _line_of(text, pos), "invalid JSON: expected ',' or "
                                 "']' after a list item")
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise TraceError(source, _line_of(text, pos), "invalid JSON: text after the list")
    return items


def _json_rows(text: str, source: str) -> list[Row]:
    rows: list[Row] = []
    for line, item in _json_items(text, source):
        if not isinstance(item, dict):
            raise TraceError(source, line, f"a list item is {type(item).__name__}, not an "
                             "object")
        row: dict[str, float | None] = {}
        for key, value in item.items():
            if key not in COLUMNS:
                raise TraceError(source, line, f"unknown key {key!r}; the keys are "
                                 f"{', '.join(COLUMNS)}")
            if value is None:
                row[key] = None
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TraceError(source, line, f"{key}: {value!r} is not a number")
            elif not math.isfinite(value):
                raise TraceError(source, line, f"{key}: {value!r} is not a finite number")
            else:
                row[key] = float(value)
        rows.append((line, row))
    return rows
