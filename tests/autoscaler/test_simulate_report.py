"""Summaries, timeline rows and comparisons of simulations (autoscaler.simulate_report)."""
from __future__ import annotations

import json

import pytest

from autoscaler.simulate import SimulationResult, Start, simulate
from autoscaler.simulate_report import (TIMELINE_FIELDS, compare_rows, compare_text, summary,
                                        summary_text, timeline_rows)
from autoscaler.simulate_scenario import ScenarioSpec, apply_variant, resolve
from autoscaler.simulate_trace import Trace

# At zero; 10 rps of 100 ms from t=5 for 60 s, then idle for 100 s.
TRACE = Trace((0.0,) * 5 + (10.0,) * 60 + (0.0,) * 100, (0.1,) * 165, "steady")


def run(variant: str | None = None) -> SimulationResult:
    spec = ScenarioSpec(name="base")
    if variant:
        spec = apply_variant(spec, variant)
    return simulate(TRACE, resolve(spec))


def test_the_summary_adds_up_the_timeline() -> None:
    r = run()
    s = summary(r)
    assert s["seconds"] == 165 and s["start"] == "zero"
    assert s["requests"]["offered"] == pytest.approx(600.0)
    assert s["requests"]["served"] == pytest.approx(600.0)
    assert s["requests"]["queued"] == pytest.approx(30.0)  # seconds 5, 6, 7 of the cold start
    assert s["requests"]["max_queue_wait_s"] == 3
    assert s["requests"]["mean_queue_wait_s"] == pytest.approx(2.0)
    assert s["cold_starts"]["count"] == 1
    assert s["cold_starts"]["episodes"][0]["duration_s"] == 3
    assert s["pods"]["pod_seconds"] == sum(x.pods for x in r.timeline)
    assert s["pods"]["peak"] == max(x.pods for x in r.timeline)
    assert s["settings"]["target"] == 70 and s["settings"]["stable_window_s"] == 60
    # Ticks every 2 s from 0 to 164, the poke of the cold start at 5; no bursts at this load.
    d = s["decisions"]
    assert (d["ticks"], d["pokes"], d["bursts"]) == (83, 1, 0)
    assert d["count"] == d["ticks"] + d["pokes"] == len(r.decisions)
    json.dumps(s)  # JSON-ready


def test_panic_periods_report_their_duration() -> None:
    r = simulate(Trace((1000.0,) * 30 + (4000.0,) * 10 + (1000.0,) * 100, (0.1,) * 140),
                 resolve(ScenarioSpec()), Start("warm"))
    s = summary(r)
    (p,) = s["panic"]["periods"]
    assert p["start"] == 32 and p["duration_s"] == p["end"] - p["start"]
    assert s["panic"]["seconds"] == p["duration_s"]


def test_timeline_rows_follow_the_field_order() -> None:
    rows = timeline_rows(run())
    assert len(rows) == 165 and tuple(rows[0]) == TIMELINE_FIELDS
    assert rows[0]["stable"] is None and rows[0]["mode"] == "proxy"


def test_the_text_summary_names_what_matters() -> None:
    text = summary_text(run())
    assert text.startswith("base: steady, 165 s, start zero")
    assert "cold starts: 1, 30 requests waited for a pod, up to 3s" in text
    assert "warning: containerConcurrency 0 and no pod capacity" in text


def test_a_comparison_has_one_column_per_scenario() -> None:
    results = [run(), run("short:stable-window=20s")]
    rows = dict(compare_rows(results))
    assert rows["scenario"] == ["base", "short"]
    assert rows["stable window (s)"] == [60.0, 20.0]
    assert rows["pod-seconds"][0] > rows["pod-seconds"][1]  # the short window lets go sooner
    text = compare_text(results)
    lines = text.splitlines()
    assert lines[0].split() == ["scenario", "base", "short"]
    assert set(lines[1]) == {"-"}
    assert any(line.startswith("cold starts") for line in lines)
