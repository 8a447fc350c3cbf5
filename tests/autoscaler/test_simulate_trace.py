"""Trace parsing and validation for the simulator (autoscaler.simulate_trace)."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.simulate_trace import MAX_SECONDS, Trace, TraceError, parse_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "traces"


def csv(text: str, **kw: object) -> Trace:
    return parse_trace(text, "csv", source="t.csv", **kw)  # type: ignore[arg-type]


def js(text: str, **kw: object) -> Trace:
    return parse_trace(text, "json", source="t.json", **kw)  # type: ignore[arg-type]


def error(fn: object, text: str, **kw: object) -> TraceError:
    with pytest.raises(TraceError) as info:
        fn(text, **kw)  # type: ignore[operator]
    return info.value


# -- what rows mean ---------------------------------------------------------------------------

def test_rps_and_latency_give_concurrency_by_littles_law() -> None:
    t = csv("rps,latency_ms\n10,200\n20,50\n")
    assert t.rps == (10.0, 20.0) and t.latency == (0.2, 0.05)
    assert [t.concurrency(i) for i in range(2)] == pytest.approx([2.0, 1.0])


def test_concurrency_with_a_latency_gives_the_rate() -> None:
    t = csv("concurrency,latency_s\n3,0.5\n")
    assert t.rps == (6.0,) and t.latency == (0.5,)


def test_rps_with_concurrency_gives_the_latency() -> None:
    t = csv("rps,concurrency\n8,2\n0,0\n")
    assert t.latency[0] == pytest.approx(0.25)
    assert t.rps[1] == 0.0 and t.latency[1] == pytest.approx(0.25)  # idle: latency carries


def test_concurrency_alone_takes_the_default_latency_and_says_so() -> None:
    t = csv("concurrency\n5\n", default_latency=0.1)
    assert t.rps == (50.0,) and t.assumed_latency
    assert not csv("rps,latency_ms\n1,100\n").assumed_latency


def test_an_empty_latency_cell_carries_the_row_above() -> None:
    t = csv("rps,latency_ms\n10,100\n20,\n")
    assert t.latency == (0.1, 0.1)


def test_a_t_column_makes_a_step_function_with_idle_seconds_before_the_first_row() -> None:
    t = csv("t,rps,latency_ms\n2,10,100\n5,30,\n6,0,\n")
    assert t.rps == (0.0, 0.0, 10.0, 10.0, 10.0, 30.0, 0.0)
    assert t.seconds == 7


def test_comments_and_blank_lines_are_skipped() -> None:
    t = csv("# a comment\n\nrps,latency_ms\n# more\n1,100\n\n2,100\n")
    assert t.rps == (1.0, 2.0)


def test_json_lists_of_objects_parse_like_csv_rows() -> None:
    t = js('[{"t": 0, "rps": 10, "latency_ms": 100}, {"t": 3, "rps": 5, "latency_ms": null}]')
    assert t.rps == (10.0, 10.0, 10.0, 5.0) and t.latency[-1] == pytest.approx(0.1)


def test_with_duration_cuts_or_holds_the_last_second() -> None:
    t = csv("rps,latency_ms\n1,100\n2,100\n")
    assert t.with_duration(1).rps == (1.0,)
    assert t.with_duration(4).rps == (1.0, 2.0, 2.0, 2.0)


@pytest.mark.parametrize("name", ["burst.csv", "spiky.csv", "daily.json"])
def test_the_example_traces_parse(name: str) -> None:
    path = EXAMPLES / name
    t = parse_trace(path.read_text(), path.suffix[1:], source=name)
    assert t.seconds >= 300 and max(t.rps) > 0


# -- errors name the line ---------------------------------------------------------------------

def test_a_bad_number_names_the_line_and_column() -> None:
    e = error(csv, "rps,latency_ms\n1,100\nten,100\n")
    assert (e.source, e.line) == ("t.csv", 3)
    assert str(e) == "t.csv:3: rps: 'ten' is not a number"


def test_non_finite_and_negative_values_are_rejected() -> None:
    assert "not a finite number" in str(error(csv, "rps,latency_ms\nnan,100\n"))
    e = error(csv, "rps,latency_ms\n-1,100\n")
    assert e.line == 2 and "negative" in str(e)
    assert "must be > 0" in str(error(csv, "rps,latency_ms\n1,0\n"))


def test_unknown_and_duplicate_columns_are_rejected_at_the_header() -> None:
    e = error(csv, "# c\nrps,latency\n1,2\n")
    assert e.line == 2 and "unknown column 'latency'" in str(e)
    assert "appears twice" in str(error(csv, "rps,rps\n1,2\n"))


def test_a_row_with_the_wrong_number_of_cells_is_rejected() -> None:
    e = error(csv, "rps,latency_ms\n1,100,7\n")
    assert e.line == 2 and "3 cells for 2 columns" in str(e)


def test_rows_must_carry_a_load_and_a_latency_where_one_is_needed() -> None:
    assert "rps without a latency" in str(error(csv, "rps\n5\n"))
    assert "no load" in str(error(csv, "rps,latency_ms\n,100\n"))  # latency alone
    e = error(csv, "rps,latency_ms,concurrency\n1,100,0.1\n")
    assert "at most two" in str(e)
    assert "latency_ms and latency_s" in str(error(csv, "rps,latency_ms,latency_s\n1,1,1\n"))
    assert "no latency fits" in str(error(csv, "rps,concurrency\n0,3\n"))


def test_t_must_be_whole_and_strictly_increasing() -> None:
    e = error(csv, "t,rps,latency_ms\n0,1,100\n0,2,100\n")
    assert e.line == 3 and "strictly increase" in str(e)
    assert "whole number" in str(error(csv, "t,rps,latency_ms\n0.5,1,100\n"))
    e = error(csv, "t,rps,latency_ms\n0,1,100\n,2,100\n")
    assert e.line == 3 and "every row needs it" in str(e)
    assert "7 days" in str(error(csv, f"t,rps,latency_ms\n{MAX_SECONDS},1,100\n"))


def test_an_empty_trace_is_rejected() -> None:
    assert "needs a header" in str(error(csv, "# nothing\n"))
    assert "no rows" in str(error(csv, "rps,latency_ms\n"))
    assert "no rows" in str(error(js, "[]"))


def test_json_errors_name_the_line_of_the_item() -> None:
    text = '[\n  {"rps": 1, "latency_ms": 100},\n  {"rps": "x", "latency_ms": 100}\n]\n'
    e = error(js, text)
    assert e.line == 3 and "rps: 'x' is not a number" in str(e)
    e = error(js, '[\n  {"rps": 1, "latency_ms": 100},\n  {"rps": 2 "latency_ms": 1}\n]')
    assert e.line == 3 and "invalid JSON" in str(e)
    e = error(js, '[\n  {"rps": 1, "latency_ms": 100},\n  {"bogus": 2}\n]')
    assert e.line == 3 and "unknown key 'bogus'" in str(e)
    assert "list of objects" in str(error(js, '{"rps": 1}'))
    assert "not an object" in str(error(js, "[1]"))
    assert "text after the list" in str(error(js, "[{\"concurrency\": 1}] x"))
    assert "is not a number" in str(error(js, '[{"rps": true, "latency_ms": 1}]'))
    assert "not a finite number" in str(error(js, '[{"rps": NaN, "latency_ms": 1}]'))


def test_a_trace_validates_its_own_values() -> None:
    with pytest.raises(TraceError, match="must be >= 0"):
        Trace((1.0, -1.0), (0.1, 0.1))
    with pytest.raises(TraceError, match="at least one second"):
        Trace((), ())
    with pytest.raises(TraceError, match="duration 0 s"):
        Trace((1.0,), (0.1,)).with_duration(0)
