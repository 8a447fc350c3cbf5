"""Trace context: upstream's lax trace id for logs, the strict W3C parser, propagation."""
from __future__ import annotations

import itertools

import pytest

from queueproxy.tracecontext import (
    TraceParent,
    extract_trace_id,
    first_header,
    new_span_id,
    parse_traceparent,
    propagation_headers,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


@pytest.mark.parametrize(("headers", "want"), [
    pytest.param([(b"traceparent", VALID)], TRACE_ID, id="w3c"),
    pytest.param([(b"Traceparent", VALID), (b"X-B3-TraceId", b"b3")], TRACE_ID, id="w3c wins over b3"),
    pytest.param([(b"X-B3-TraceId", b"80f198ee56343ba864fe8b2a57d3eff7")],
                 "80f198ee56343ba864fe8b2a57d3eff7", id="b3 fallback"),
    pytest.param([(b"x-b3-traceid", b"abc")], "abc", id="b3 any case"),
    pytest.param([(b"x-b3-traceid", b" abc\t")], "abc", id="values are trimmed like Go's"),
    pytest.param([(b"traceparent", b" \t")], "", id="blank traceparent"),
    pytest.param([(b"traceparent", b"garbage"), (b"X-B3-TraceId", b"b3")], "b3",
                 id="no dash falls back to b3"),
    pytest.param([(b"traceparent", b""), (b"X-B3-TraceId", b"b3")], "b3", id="empty falls back"),
    pytest.param([(b"traceparent", b"not-validated-at-all")], "validated", id="lax like upstream"),
    pytest.param([(b"traceparent", b"00--x")], "", id="empty second part is kept"),
    pytest.param([(b"traceparent", b"00-first-x"), (b"traceparent", b"00-second-x")], "first",
                 id="first value counts"),
    pytest.param([], "", id="none"),
])
def test_extract_trace_id_like_upstream(headers: list[tuple[bytes, bytes]], want: str) -> None:
    assert extract_trace_id(headers) == want


def test_parse_a_valid_traceparent() -> None:
    tp = parse_traceparent(VALID)
    assert tp == TraceParent(TRACE_ID, "00f067aa0ba902b7", 1, "00")
    assert tp is not None and tp.sampled
    assert parse_traceparent(" " + VALID.decode() + "\t") == tp


@pytest.mark.parametrize("value", [
    pytest.param(VALID.upper(), id="uppercase hex"),
    pytest.param(b"ff" + VALID[2:], id="version ff"),
    pytest.param(b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", id="zero trace id"),
    pytest.param(f"00-{TRACE_ID}-0000000000000000-01".encode(), id="zero parent id"),
    pytest.param(VALID + b"-extra", id="version 00 with more"),
    pytest.param(b"01" + VALID[2:] + b"extra", id="later version without a dash"),
    pytest.param(VALID[:-1], id="short"),
    pytest.param(b"00_" + VALID[3:], id="bad separator"),
    pytest.param(b"", id="empty"),
])
def test_invalid_traceparents_are_rejected(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_reads_as_00() -> None:
    tp = parse_traceparent(b"cc" + VALID[2:] + b"-what-the-future-holds")
    assert tp is not None and tp.version == "cc" and tp.trace_id == TRACE_ID
    assert tp.encode() == VALID


def test_child_keeps_the_trace_and_replaces_the_parent() -> None:
    tp = parse_traceparent(VALID)
    assert tp is not None
    child = tp.child("b7ad6b7169203331")
    assert child.encode() == f"00-{TRACE_ID}-b7ad6b7169203331-01".encode()
    assert tp.child("b7ad6b7169203331", sampled=False).encode().endswith(b"-00")


def test_propagation_forwards_trace_headers_unchanged_and_in_order() -> None:
    headers = [(b"Host", b"x"), (b"Baggage", b"k=v"), (b"traceparent", b"not even valid"),
               (b"TraceState", b"vendor=1"), (b"Trace", b"no"), (b"baggage", b"k2=v2")]
    assert propagation_headers(headers) == [(b"Baggage", b"k=v"), (b"traceparent", b"not even valid"),
                                            (b"TraceState", b"vendor=1"), (b"baggage", b"k2=v2")]


def test_new_span_ids_are_never_zero() -> None:
    draws = itertools.chain([0, 0], itertools.repeat(0xABC))
    assert new_span_id(lambda bits: next(draws)) == "0000000000000abc"
    assert len(new_span_id()) == 16


def test_first_header_matches_names_case_insensitively() -> None:
    headers = [(b"X-A", b"1"), (b"x-a", b"2")]
    assert first_header(headers, b"x-a") == b"1"
    assert first_header(headers, b"x-b") is None
