"""``python -m autoscaler replay``: every corpus answer, exactly, through the real command."""
from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys

import pytest

from autoscaler import replay
from tests.autoscaler.conformance import corpus

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoscaler", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [corpus.DECIDER, corpus.WINDOWS], ids=lambda p: p.name)
def test_replay_reproduces_every_corpus_answer_bit_exactly(path: pathlib.Path) -> None:
    proc = run_cli("replay", str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    scenarios = corpus.load(path)
    assert len(lines) == len(scenarios)
    mismatches = []
    for sc, line in zip(scenarios, lines):
        got = json.loads(line)
        assert got["name"] == sc["name"]
        if "ticks" in sc:
            want = {"name": sc["name"], "ticks": corpus.expected_ticks(sc)}
        else:
            want = {"name": sc["name"], "answers": corpus.expected_answers(sc)}
        if not corpus.same(got, want):
            mismatches.append(sc["name"])
    assert mismatches == []


def test_replay_reads_stdin_and_keeps_the_tick_key_order() -> None:
    first = corpus.DECIDER.read_text(encoding="utf-8").splitlines()[0]
    proc = run_cli("replay", "-", stdin=first + "\n")
    assert proc.returncode == 0, proc.stderr
    tick = json.loads(proc.stdout)["ticks"][0]
    assert list(tick) == ["desired_pod_count", "excess_burst_capacity", "scale_valid",
                          "num_activators", "in_panic", "status"]
    assert list(tick["status"]) == ["desired_scale", "excess_burst_capacity", "informed"]


def test_a_bad_line_is_reported_with_its_number(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = corpus.WINDOWS.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(good + "\n\n" + '{"name": "x", "kind": "sliding_pyramid", "ops": []}\n')
    proc = run_cli("replay", str(bad))
    assert proc.returncode == 1
    assert "line 3" in proc.stderr and "sliding_pyramid" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1  # the good scenario was answered


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: pathlib.Path) -> None:
    proc = run_cli("replay", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_a_max_window_that_would_overflow_ends_the_scenario_with_a_panic() -> None:
    sc = {"name": "back-in-time", "kind": "max_time_window", "window_s": 2.0,
          "granularity_s": 1.0, "t0_unix_s": 1_787_315_305, "t0_nanos": 0,
          "ops": [{"op": "record", "t": 10.0, "value": 5}, {"op": "current", "expect": 5},
                  {"op": "record", "t": 11.0, "value": 4},
                  {"op": "record", "t": 9.0, "value": 3, "expect": {"panic": "..."}},
                  {"op": "current", "expect": 4}]}
    out = io.StringIO()
    assert replay.run(io.StringIO(json.dumps(sc) + "\n"), out) == 1
    answers = json.loads(out.getvalue())["answers"]
    assert answers[0] == 5 and "panic" in answers[1] and len(answers) == 2
