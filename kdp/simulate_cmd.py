"""``kdp simulate``: replay a traffic trace through the autoscaler offline, and compare settings.

The thin I/O layer around :mod:`autoscaler.simulate`: argument parsing, reading the trace and
config files (YAML or JSON), writing the timeline (CSV or JSON), the summary (JSON) and the
plots (PNG), and printing the summary or the side-by-side comparison.

Hook into the ``kdp`` command line with ``add_parser(subparsers)`` (it sets ``func=run``) and
call ``run(args)``; ``main(argv)`` runs it on its own. Exit status: 0 done, 2 bad input.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from autoscaler.simulate import SimulationResult, Start, simulate
from autoscaler.simulate_report import (TIMELINE_FIELDS, compare_rows, compare_text, summary,
                                        summary_text, timeline_rows)
from autoscaler.simulate_scenario import (Scenario, ScenarioError, ScenarioSpec, apply_variant,
                                          resolve, spec_from_documents)
from autoscaler.simulate_trace import DEFAULT_LATENCY, Trace, TraceError, parse_trace

__all__ = ["add_parser", "build_parser", "main", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Replay a traffic trace through the autoscaler service's own core (its stat windows, decider
and scaler, driven second by second as the service drives them), with a simple pod and
request model, and report pods over time, panic periods, cold starts, requests that waited, and
pod-seconds used; draw it as a PNG. Run several settings over the same trace (--compare,
--variant) to see how windows and targets change the outcome.
"""

EPILOG = """\
trace (CSV with a header, or a JSON list of objects), one row per second, or with a t column
(seconds) as a step function:
  t,rps,latency_ms          rps and mean latency: concurrency = rps x latency
  0,5,120                   (or concurrency alone, or any two of rps/latency/concurrency)
  60,400,
config (YAML or JSON): {name, config: {config-autoscaler keys}, annotations: {...},
  containerConcurrency, pod: {startupDelay, capacity}}, or Kubernetes manifests: the
  config-autoscaler ConfigMap and a Knative Service.
examples:
  kdp simulate burst.csv --container-concurrency 10
  kdp simulate day.json -c prod.yaml --variant window=30s --variant target=50
  kdp simulate spiky.csv -c a.yaml --compare b.yaml c.yaml -o out/
"""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add ``kdp simulate``'s arguments to ``parser`` (a new one when None)."""
    p = parser or argparse.ArgumentParser(prog="kdp simulate")
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("trace", help="the traffic trace, .csv or .json")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="settings to simulate (YAML or JSON); default: upstream's defaults")
    p.add_argument("--compare", nargs="+", default=[], metavar="FILE",
                   help="more settings files to run over the same trace, side by side")
    p.add_argument("--variant", action="append", default=[], metavar="[NAME:]KEY=VALUE[,...]",
                   help="the base settings with changes, e.g. 'short:window=20s,target=50'; "
                        "KEY is a config-autoscaler key, an annotation (full or short name), "
                        "containerConcurrency, startup-delay or pod-capacity; repeatable")
    p.add_argument("--container-concurrency", type=int, metavar="N",
                   help="containerConcurrency for every scenario (0 = unlimited)")
    p.add_argument("--startup-delay", type=float, metavar="SECONDS",
                   help="seconds from asking for a pod to its being ready (default 3)")
    p.add_argument("--pod-capacity", type=float, metavar="N",
                   help="requests one pod works on at once when containerConcurrency is 0 "
                        "(default: unlimited)")
    p.add_argument("--latency-ms", type=float, metavar="MS",
                   help=f"latency for trace rows that give only concurrency (default "
                        f"{DEFAULT_LATENCY * 1000:g})")
    p.add_argument("--start", default="zero", metavar="STATE",
                   help="the revision at t=0: zero (idle long ago, where the autoscaler "
                        "rests: zero pods unless min-scale says otherwise; the default), new "
                        "(just deployed), warm (running at the first second's load), or a "
                        "number of ready pods")
    p.add_argument("--duration", type=int, metavar="SECONDS",
                   help="cut the trace, or extend it holding its last second")
    p.add_argument("--trace-format", choices=("csv", "json"),
                   help="default: from the file name")
    p.add_argument("-o", "--out", default="simulate-out", metavar="DIR",
                   help="directory for the timeline, summary and plot (default simulate-out)")
    p.add_argument("--timeline-format", choices=("csv", "json"), default="csv")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on the ``kdp`` command's subparsers."""
    return build_parser(subparsers.add_parser(
        "simulate", help="replay a traffic trace through the autoscaler offline"))


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


class _InputError(Exception):
    """Bad input: printed as one line, exit status 2."""


def run(args: argparse.Namespace) -> int:
    try:
        trace = _load_trace(args)
        scenarios = _scenarios(args)
        start = Start.parse(args.start)
    except (_InputError, TraceError, ScenarioError, ValueError) as exc:
        print(f"kdp simulate: error: {exc}", file=sys.stderr)
        return 2
    results = [simulate(trace, sc, start) for sc in scenarios]
    out = Path(args.out)
    try:
        written = _write(results, out, args)
    except OSError as exc:
        print(f"kdp simulate: error: cannot write {exc.filename}: {exc.strerror}",
              file=sys.stderr)
        return 2
    print(summary_text(results[0]) if len(results) == 1 else compare_text(results))
    for sc in scenarios:
        if len(results) > 1:
            for w in sc.warnings:
                print(f"warning: {sc.name}: {w}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# --- inputs ---------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise _InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _load_trace(args: argparse.Namespace) -> Trace:
    text = _read(args.trace)
    fmt = args.trace_format
    if fmt is None:
        suffix = Path(args.trace).suffix.lower()
        fmt = {".csv": "csv", ".json": "json"}.get(suffix)
        if fmt is None:
            fmt = "json" if text.lstrip().startswith("[") else "csv"
    latency = DEFAULT_LATENCY if args.latency_ms is None else args.latency_ms / 1000.0
    trace = parse_trace(text, fmt, source=args.trace, default_latency=latency)
    if args.duration is not None:
        trace = trace.with_duration(args.duration)
    return trace


def _load_documents(path: str) -> list[object]:
    text = _read(path)
    try:
        if Path(path).suffix.lower() == ".json":
            return [json.loads(text)]
        return list(yaml.safe_load_all(text))
    except json.JSONDecodeError as exc:
        raise _InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise _InputError(f"{where}: invalid YAML: {problem}") from None


def _with_flags(spec: ScenarioSpec, args: argparse.Namespace) -> ScenarioSpec:
    changes: dict[str, object] = {}
    if args.container_concurrency is not None:
        changes["container_concurrency"] = args.container_concurrency
    if args.startup_delay is not None:
        changes["startup_delay"] = args.startup_delay
    if args.pod_capacity is not None:
        changes["pod_capacity"] = args.pod_capacity
    return replace(spec, **changes)  # type: ignore[arg-type]


def _spec_from_file(path: str) -> ScenarioSpec:
    return spec_from_documents(_load_documents(path), path, name=Path(path).stem)


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    base = _spec_from_file(args.config) if args.config else ScenarioSpec(name="defaults")
    base = _with_flags(base, args)
    specs = [base]
    specs += [_with_flags(_spec_from_file(path), args) for path in args.compare]
    specs += [apply_variant(base, text) for text in args.variant]
    seen: dict[str, int] = {}
    unique = []
    for spec in specs:
        count = seen.get(spec.name, 0) + 1
        seen[spec.name] = count
        unique.append(spec if count == 1 else replace(spec, name=f"{spec.name} ({count})"))
    scenarios = [resolve(spec) for spec in unique]
    first = scenarios[0]
    for k, sc in enumerate(scenarios[1:], start=1):
        if (sc.scaling, sc.container_concurrency, sc.pod) == (
                first.scaling, first.container_concurrency, first.pod):
            scenarios[k] = replace(sc, warnings=sc.warnings + (
                f"resolves to the same settings as {first.name!r} (an annotation in the "
                "base may take precedence over a config-autoscaler key)",))
    return scenarios


# --- outputs --------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "scenario"


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_timeline(result: SimulationResult, path: Path, fmt: str) -> None:
    rows = timeline_rows(result)
    with path.open("w", encoding="utf-8", newline="") as f:
        if fmt == "json":
            json.dump(rows, f, indent=None, separators=(",", ":"))
            f.write("\n")
            return
        writer = csv.DictWriter(f, fieldnames=TIMELINE_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _write_run(result: SimulationResult, directory: Path, args: argparse.Namespace
               ) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    timeline = directory / f"timeline.{args.timeline_format}"
    _write_timeline(result, timeline, args.timeline_format)
    summary_path = directory / "summary.json"
    summary_path.write_text(json.dumps(summary(result), indent=2) + "\n", encoding="utf-8")
    written = [timeline, summary_path]
    if not args.no_plot:
        from autoscaler.simulate_plot import plot_result  # matplotlib only when plotting
        plot = directory / "plot.png"
        plot_result(result, plot)
        written.append(plot)
    return written


def _write(results: list[SimulationResult], out: Path, args: argparse.Namespace) -> list[Path]:
    if len(results) == 1:
        return _write_run(results[0], out, args)
    written: list[Path] = []
    used: set[str] = set()
    for r in results:
        slug = _slug(r.scenario.name)
        while slug in used:
            slug += "_"
        used.add(slug)
        written += _write_run(r, out / slug, args)
    compare_json = out / "compare.json"
    compare_json.write_text(json.dumps([summary(r) for r in results], indent=2) + "\n",
                            encoding="utf-8")
    compare_csv = out / "compare.csv"
    with compare_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        for label, values in compare_rows(results):
            writer.writerow([label.strip(), *values])
    written += [compare_json, compare_csv]
    if not args.no_plot:
        from autoscaler.simulate_plot import plot_compare
        plot = out / "compare.png"
        plot_compare(results, plot)
        written.append(plot)
    return written


if __name__ == "__main__":
    sys.exit(main())
