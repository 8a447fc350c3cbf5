"""Trace context: the trace id for the request log, and the headers that carry a trace.

Two readers of the same headers, on purpose:

- ``extract_trace_id`` is upstream's ``ExtractTraceID`` (``pkg/http/trace.go``) exactly: the
  second dash-separated part of the first ``traceparent`` value, else the first
  ``X-B3-TraceId`` value, else ``""``. It does not validate, so the request log shows what
  upstream's would, even for a malformed header.
- ``parse_traceparent`` is the W3C Trace Context parser (version ``00``, and later versions
  read as ``00``), for code that must act only on a valid context.

Propagation: upstream installs the W3C ``traceparent``/``tracestate`` and ``baggage``
propagators. We export no spans, so the correct thing to forward is what came in:
``propagation_headers`` picks those headers out unchanged (the proxy forwards them anyway as
end-to-end headers). ``TraceParent.child`` builds the header a span-emitting hop would send.

Headers are ``(name, value)`` byte pairs as the HTTP parser delivers them; names match
case-insensitively. Pure: no I/O.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "TRACE_HEADERS",
    "TraceParent",
    "extract_trace_id",
    "first_header",
    "new_span_id",
    "parse_traceparent",
    "propagation_headers",
]

TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def first_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase), as Go's ``Header.Get`` finds it."""
    for k, v in headers:
        if len(k) == len(name) and k.lower() == name:
            return v
    return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def extract_trace_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """Upstream's request-log trace id: from ``traceparent``, else ``X-B3-TraceId``."""
    traceparent = b""
    b3 = b""
    seen_tp = seen_b3 = False
    for k, v in headers:
        n = len(k)
        if n == 11 and not seen_tp and k.lower() == b"traceparent":
            traceparent, seen_tp = v, True
        elif n == 12 and not seen_b3 and k.lower() == b"x-b3-traceid":
            b3, seen_b3 = v, True
    traceparent = traceparent.strip(b" \t")  # Go's header reader trims values
    if traceparent:
        parts = traceparent.split(b"-", 2)
        if len(parts) >= 2:
            return _text(parts[1])
    return _text(b3.strip(b" \t"))


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid W3C ``traceparent``: ids are lowercase hex strings, flags an int."""

    trace_id: str
    parent_id: str
    flags: int
    version: str = "00"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def child(self, span_id: str, *, sampled: bool | None = None) -> TraceParent:
        """The context a hop that starts span ``span_id`` sends on (version 00)."""
        flags = self.flags if sampled is None else (self.flags & ~1) | int(sampled)
        return TraceParent(self.trace_id, span_id, flags & 0xFF)

    def encode(self) -> bytes:
        """Serialised as version 00, the only version one may send."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}".encode()


def parse_traceparent(value: bytes | str) -> TraceParent | None:
    """Parse a ``traceparent`` value by the W3C rules; None when it is not valid.

    Version ``ff`` is invalid; version ``00`` must be exactly 55 characters; a later version
    may carry more after a ``-``, which is ignored. Ids must not be all zeros. Surrounding
    spaces and tabs (optional whitespace in a header) are tolerated.
    """
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip(" \t")
    m = _TRACEPARENT.match(text)
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.groups()
    if version == "ff" or (version == "00" and len(text) != 55):
        return None
    if len(text) > 55 and text[55] != "-":
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16), version)


def propagation_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The trace-context headers present (``traceparent``, ``tracestate``, ``baggage``), in
    order and unchanged: what a hop that records no spans must forward."""
    out = []
    for k, v in headers:
        if len(k) in (7, 10, 11) and k.lower() in TRACE_HEADERS:
            out.append((k, v))
    return out


def new_span_id(randbits: Callable[[int], int] = random.getrandbits) -> str:
    """A random, non-zero 8-byte span id in lowercase hex."""
    while True:
        n = randbits(64)
        if n:
            return f"{n:016x}"
