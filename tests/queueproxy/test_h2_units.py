"""The HTTP/2 engine's small pieces without sockets: the GOAWAY filter (at every split of the
byte stream), window-limited sends between two in-memory ``h2`` connections, and the
settings' validation messages."""
from __future__ import annotations

from collections import deque

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, PingFrame, SettingsFrame

from queueproxy.h2upstream import GoawayFilter, H2Settings, goaway_frame, send_window_limited

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frames() -> list[bytes]:
    d = DataFrame(1)
    d.data = b"x" * 300
    h = HeadersFrame(3)
    h.data = b"\x82"
    h.flags.add("END_HEADERS")
    p = PingFrame(0)
    p.opaque_data = b"12345678"
    return [SettingsFrame(0).serialize(), d.serialize(), goaway_frame(5, 0),
            h.serialize(), p.serialize(), goaway_frame(7, 2)]


def feed_in_pieces(f: GoawayFilter, data: bytes, cuts: list[int]) -> tuple[bytes, list[tuple[int, int]]]:
    out = b""
    found: list[tuple[int, int]] = []
    start = 0
    for cut in [*cuts, len(data)]:
        passed, got = f.feed(data[start:cut])
        out += passed
        found += got
        start = cut
    return out, found


def test_the_filter_takes_out_only_goaway_frames_and_reports_them() -> None:
    fs = frames()
    out, found = GoawayFilter(len(PREFACE)).feed(PREFACE + b"".join(fs))
    assert out == PREFACE + fs[0] + fs[1] + fs[3] + fs[4]
    assert found == [(5, 0), (7, 2)]


def test_without_goaway_the_filter_returns_the_very_same_bytes() -> None:
    data = b"".join(f for f in frames() if f[3] != 7)
    out, found = GoawayFilter().feed(data)
    assert out is data and found == []


@pytest.mark.parametrize("cut", range(1, 140))
def test_the_filter_gives_the_same_result_wherever_the_stream_is_split_once(cut: int) -> None:
    data = PREFACE + b"".join(frames())
    whole = GoawayFilter(len(PREFACE)).feed(data)
    assert feed_in_pieces(GoawayFilter(len(PREFACE)), data, [cut]) == whole


def test_the_filter_gives_the_same_result_when_fed_one_byte_at_a_time() -> None:
    data = PREFACE + b"".join(frames())
    whole = GoawayFilter(len(PREFACE)).feed(data)
    assert feed_in_pieces(GoawayFilter(len(PREFACE)), data, list(range(1, len(data)))) == whole


def test_the_filter_passes_large_frames_across_many_reads() -> None:
    d = DataFrame(1)
    d.data = b"y" * 50_000
    data = d.serialize() + goaway_frame(1)
    out, found = feed_in_pieces(GoawayFilter(), data, list(range(1000, len(data), 1000)))
    assert out == d.serialize() and found == [(1, 0)]


def pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def test_window_limited_send_stops_at_the_peers_window_and_resumes_after_an_update() -> None:
    client, server = pair()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")])
    buf = deque([b"a" * 50_000, b"b" * 50_000])
    assert send_window_limited(client, 1, buf) == 65535
    assert sum(map(len, buf)) == 100_000 - 65535
    assert send_window_limited(client, 1, buf) == 0
    events = server.receive_data(client.data_to_send())
    got = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert got == b"a" * 50_000 + b"b" * 15535
    assert max(len(e.data) for e in events if isinstance(e, h2.events.DataReceived)) <= 16384
    server.acknowledge_received_data(65535, 1)
    client.receive_data(server.data_to_send())
    assert send_window_limited(client, 1, buf) == 100_000 - 65535 and not buf


def test_window_limited_send_reports_a_closed_stream() -> None:
    client, server = pair()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
                        end_stream=True)
    client.reset_stream(1, 8)
    assert send_window_limited(client, 1, deque([b"late"])) == -1


@pytest.mark.parametrize("key, value, allowed", [
    ("max_concurrent_streams", 0, "[1, 2147483647]"),
    ("stream_window", 1000, "[65535, 2147483647]"),
    ("connection_window", 2**31, "[65535, 2147483647]"),
    ("upstream_connection_window", 1, "[65535, 2147483647]"),
    ("max_header_list_size", 10, "[1024, 2147483647]"),
    ("connect_timeout", 0.0, "[0.001, 3600.0]"),
    ("upstream_idle_timeout", -1.0, "[0.001, 86400.0]"),
])
def test_settings_errors_name_the_key_the_value_and_the_allowed_range(key: str, value: float, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        H2Settings(**{key: value})
    assert str(info.value) == f"H2Settings.{key}: {value!r} is outside the allowed range {allowed}"
