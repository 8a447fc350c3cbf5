"""``kdp simulate``: files in, files out (kdp.simulate_cmd)."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from kdp import simulate_cmd

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "traces"
PNG = b"\x89PNG\r\n\x1a\n"
TRACE = "t,rps,latency_ms\n0,0,100\n5,30,100\n60,0,100\n119,0,100\n"


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE)
    return path


def run(*argv: object) -> int:
    return simulate_cmd.main([str(a) for a in argv])


def test_a_run_writes_the_timeline_summary_and_plot(trace: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run(trace, "--container-concurrency", 10, "-o", out) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("defaults: ")
    assert "cold starts: 1" in printed and f"wrote {out / 'timeline.csv'}" in printed
    with (out / "timeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and rows[0]["t"] == "0" and rows[0]["stable"] == ""
    assert rows[5]["decision"] == "poke" and rows[5]["in_panic"] in ("true", "false")
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["container_concurrency"] == 10 and s["cold_starts"]["count"] == 1
    assert (out / "plot.png").read_bytes().startswith(PNG)


def test_the_timeline_can_be_json(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(trace, "--timeline-format", "json", "--no-plot", "-o", out) == 0
    rows = json.loads((out / "timeline.json").read_text())
    assert len(rows) == 120 and rows[5]["rps"] == 30.0
    assert not (out / "plot.png").exists()


def test_compare_runs_every_scenario_and_writes_them_side_by_side(
        trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "tbc0", "config": {"target-burst-capacity": "0"}}))
    assert run(trace, "-c", EXAMPLES / "cc10.yaml", "--compare", other,
               "--variant", "short:window=20s", "-o", out) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["scenario", "cc10-defaults", "tbc0", "short"]
    for name in ("cc10-defaults", "tbc0", "short"):
        assert (out / name / "timeline.csv").exists()
        assert (out / name / "plot.png").read_bytes().startswith(PNG)
    summaries = json.loads((out / "compare.json").read_text())
    assert [s["name"] for s in summaries] == ["cc10-defaults", "tbc0", "short"]
    assert summaries[2]["settings"]["stable_window_s"] == 20  # variant of the base: CC 10 too
    assert summaries[2]["settings"]["container_concurrency"] == 10
    with (out / "compare.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["scenario", "cc10-defaults", "tbc0", "short"]
    assert (out / "compare.png").read_bytes().startswith(PNG)


def test_flags_apply_to_every_scenario_and_variants_win_over_flags(trace: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(trace, "--startup-delay", 7, "--container-concurrency", 4, "--variant",
               "cc8:containerConcurrency=8", "--no-plot", "-o", out) == 0
    summaries = json.loads((out / "compare.json").read_text())
    assert [s["settings"]["startup_delay_s"] for s in summaries] == [7, 7]
    assert [s["settings"]["container_concurrency"] for s in summaries] == [4, 8]


def test_a_variant_that_changes_nothing_is_flagged(trace: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("annotations:\n  autoscaling.knative.dev/window: 30s\n")
    assert run(trace, "-c", base, "--variant", "stable-window=90s", "--no-plot", "-o",
               tmp_path / "out") == 0
    assert "resolves to the same settings as 'base'" in capsys.readouterr().out


def test_duration_and_start_shape_the_run(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(trace, "--duration", 30, "--start", "3", "--no-plot", "-o", out) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["seconds"] == 30 and s["start"] == "warm (3 pods)"


def test_a_concurrency_only_trace_uses_the_latency_flag(tmp_path: Path) -> None:
    path = tmp_path / "conc.txt"  # no extension: the format is sniffed
    path.write_text("concurrency\n5\n5\n")
    out = tmp_path / "out"
    assert run(path, "--latency-ms", 250, "--no-plot", "-o", out) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["requests"]["offered"] == 40.0
    assert any("latency assumed 250 ms" in w for w in s["warnings"])


@pytest.mark.parametrize(("text", "message"), [
    ("t,rps,latency_ms\n0,1,100\n1,x,100\n", "trace.csv:3: rps: 'x' is not a number"),
    ("rps\n1\n", "trace.csv:2: rps without a latency"),
])
def test_a_bad_trace_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             text: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    assert run(path, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("kdp simulate: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_bad_settings_exit_2_naming_the_key(trace: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("config:\n  max-scale-up-rate: '0.5'\n")
    assert run(trace, "-c", bad, "-o", tmp_path / "out") == 2
    assert "max-scale-up-rate='0.5': must be greater than 1" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("config: {a: [}\n")
    assert run(trace, "-c", broken) == 2
    assert f"{broken}:1: invalid YAML" in capsys.readouterr().err
    assert run(trace, "-c", tmp_path / "missing.yaml") == 2
    assert "cannot read" in capsys.readouterr().err
    assert run(trace, "--start", "lukewarm") == 2
    assert "allowed: zero, new, warm" in capsys.readouterr().err


def test_the_command_registers_on_kdps_subparsers(trace: Path, tmp_path: Path) -> None:
    ap = argparse.ArgumentParser(prog="kdp")
    sub = ap.add_subparsers(dest="command", required=True)
    simulate_cmd.add_parser(sub)
    args = ap.parse_args(["simulate", str(trace), "--no-plot", "-o", str(tmp_path / "o")])
    assert args.func is simulate_cmd.run
    assert args.func(args) == 0
    assert (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("name", ["burst.csv", "spiky.csv"])
def test_the_example_traces_run_end_to_end(name: str, tmp_path: Path) -> None:
    assert run(EXAMPLES / name, "-c", EXAMPLES / "cc10.yaml", "--no-plot", "-o", tmp_path) == 0
