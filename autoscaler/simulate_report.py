"""What a simulation says, for people and for files: the summary, the timeline rows, and the
side-by-side comparison of several scenarios over one trace.

:func:`summary` is a JSON-ready dict (settings, requests, cold starts, panic, pods);
:func:`summary_text` and :func:`compare_text` are what ``kdp simulate`` prints;
:func:`timeline_rows` are the per-second rows written as CSV or JSON. Pure: builds values and
strings; no I/O.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from autoscaler.simulate import SimulationResult
from autoscaler.simulate_scenario import Scenario

__all__ = ["TIMELINE_FIELDS", "compare_rows", "compare_text", "settings", "summary",
           "summary_text", "timeline_rows"]

TIMELINE_FIELDS = (
    "t", "rps", "latency_ms", "offered_concurrency", "served_rps", "rejected", "concurrency",
    "waiting", "stable", "panic", "desired", "want", "replicas", "pods", "ready", "in_panic",
    "mode", "state", "decision", "excess_burst_capacity",
)


def _r(x: float, digits: int = 3) -> float:
    return round(x, digits)


def settings(sc: Scenario) -> dict[str, Any]:
    """The numbers the scenario resolved to (what the autoscaler would run on)."""
    s = sc.scaling
    return {
        "metric": s.scaling_metric,
        "target": _r(s.target_value, 6),
        "total": _r(s.total_value, 6),
        "container_concurrency": sc.container_concurrency,
        "pod_capacity": sc.pod_capacity(),
        "startup_delay_s": sc.pod.startup_delay,
        "stable_window_s": s.stable_window,
        "panic_window_s": s.panic_window,
        "panic_threshold_pct": _r(s.panic_threshold * 100.0, 6),
        "target_burst_capacity": s.target_burst_capacity,
        "aggregation": s.aggregation_algorithm,
        "max_scale_up_rate": s.max_scale_up_rate,
        "max_scale_down_rate": s.max_scale_down_rate,
        "scale_down_delay_s": s.scale_down_delay,
        "min_scale": s.min_scale,
        "max_scale": s.max_scale,
        "initial_scale": s.initial_scale,
        "activation_scale": s.activation_scale,
        "enable_scale_to_zero": s.enable_scale_to_zero,
        "scale_to_zero_grace_period_s": s.scale_to_zero_grace_period,
        "scale_to_zero_pod_retention_s": s.last_pod_retention,
    }


def summary(result: SimulationResult) -> dict[str, Any]:
    """Everything worth knowing about one run, JSON-ready."""
    tl = result.timeline
    seconds = len(tl)
    offered = sum(s.rps for s in tl)
    queued = result.queued_requests
    pod_seconds = sum(s.pods for s in tl)
    colds = result.cold_starts
    invalid = sum(1 for d in result.decisions if not d.result.scale_valid)
    warnings = list(result.scenario.warnings)
    if result.trace.assumed_latency:
        warnings.append(f"some rows gave only concurrency: latency assumed "
                        f"{result.trace.latency[0] * 1000.0:g} ms; request counts and rps "
                        "scale with it")
    return {
        "name": result.scenario.name,
        "trace": result.trace.source,
        "seconds": seconds,
        "start": result.start.kind if result.start.pods is None else
        f"{result.start.kind} ({result.start.pods} pods)",
        "settings": settings(result.scenario),
        "requests": {
            "offered": _r(offered),
            "served": _r(sum(s.served_rps for s in tl)),
            "rejected": _r(sum(s.rejected for s in tl)),
            "queued": _r(queued),
            "queued_fraction": _r(queued / offered, 6) if offered else 0.0,
            "queue_wait_request_seconds": _r(result.queue_wait_request_seconds),
            "mean_queue_wait_s": _r(result.queue_wait_request_seconds / queued) if queued
            else 0.0,
            "max_queue_wait_s": result.max_queue_wait_s,
            "unserved_at_end": _r(result.unserved_at_end),
        },
        "cold_starts": {
            "count": len(colds),
            "requests": _r(sum(c.requests for c in colds)),
            "wait_request_seconds": _r(sum(c.wait_request_seconds for c in colds)),
            "max_wait_s": max((c.max_wait_s for c in colds), default=0),
            "episodes": [{**asdict(c), "duration_s": c.duration_s,
                          "requests": _r(c.requests),
                          "wait_request_seconds": _r(c.wait_request_seconds)} for c in colds],
        },
        "panic": {
            "count": len(result.panic_periods),
            "seconds": sum(1 for s in tl if s.in_panic),
            "periods": [{**asdict(p), "duration_s": (p.end if p.end is not None else seconds)
                         - p.start} for p in result.panic_periods],
        },
        "pods": {
            "pod_seconds": pod_seconds,
            "ready_pod_seconds": sum(s.ready for s in tl),
            "mean": _r(pod_seconds / seconds) if seconds else 0.0,
            "peak": max((s.pods for s in tl), default=0),
            "peak_ready": max((s.ready for s in tl), default=0),
            "scale_changes": result.scale_changes,
        },
        "decisions": {"count": len(result.decisions), "invalid": invalid,
                      **{f"{kind}s": sum(1 for x in tl if kind in x.decision.split("+"))
                         for kind in ("tick", "poke", "burst")}},
        "warnings": warnings,
    }


def timeline_rows(result: SimulationResult) -> list[dict[str, Any]]:
    """One dict per second, keys in :data:`TIMELINE_FIELDS` order, floats rounded."""
    rows = []
    for s in result.timeline:
        row = {}
        for k in TIMELINE_FIELDS:
            v = getattr(s, k)
            row[k] = round(v, 6) if type(v) is float else v
        rows.append(row)
    return rows


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:,.2f}"


def summary_text(result: SimulationResult) -> str:
    """A short plain-text report of one run."""
    s = summary(result)
    st, rq, cs, pn, pd = s["settings"], s["requests"], s["cold_starts"], s["panic"], s["pods"]
    cap = "unlimited" if st["pod_capacity"] is None else _fmt(st["pod_capacity"])
    lines = [
        f"{s['name']}: {s['trace']}, {s['seconds']} s, start {s['start']}",
        f"  settings: {st['metric']} target {_fmt(st['target'])} per pod (of "
        f"{_fmt(st['total'])}), pod capacity {cap}, stable window {st['stable_window_s']:g}s, "
        f"panic window {st['panic_window_s']:g}s at {st['panic_threshold_pct']:g}%, "
        f"burst capacity {st['target_burst_capacity']:g}, pods ready after "
        f"{st['startup_delay_s']:g}s",
        f"  requests: {_fmt(rq['offered'])} offered, {_fmt(rq['served'])} served, "
        f"{_fmt(rq['rejected'])} rejected (503), {_fmt(rq['unserved_at_end'])} still waiting "
        "at the end",
        f"  waited: {_fmt(rq['queued'])} requests ({rq['queued_fraction'] * 100:.2f}%), "
        f"mean {rq['mean_queue_wait_s']:.2f}s, max {rq['max_queue_wait_s']}s",
        f"  cold starts: {cs['count']}" + (
            f", {_fmt(cs['requests'])} requests waited for a pod, up to {cs['max_wait_s']}s"
            if cs["count"] else ""),
        f"  panic: {pn['count']} period(s), {pn['seconds']} s in panic" + "".join(
            f"; {p['start']}s-{'end' if p['end'] is None else str(p['end']) + 's'} "
            f"(peak {p['peak_desired']} pods)" for p in pn["periods"][:5]),
        f"  pods: {_fmt(pd['pod_seconds'])} pod-seconds (mean {pd['mean']:.2f}), peak "
        f"{pd['peak']} ({pd['peak_ready']} ready), {pd['scale_changes']} scale changes",
    ]
    lines += [f"  warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)


Row = tuple[str, Callable[[dict[str, Any]], Any]]
_COMPARE: tuple[Row, ...] = (
    ("metric", lambda s: s["settings"]["metric"]),
    ("target per pod", lambda s: s["settings"]["target"]),
    ("containerConcurrency", lambda s: s["settings"]["container_concurrency"]),
    ("stable window (s)", lambda s: s["settings"]["stable_window_s"]),
    ("panic window (s)", lambda s: s["settings"]["panic_window_s"]),
    ("panic threshold (%)", lambda s: s["settings"]["panic_threshold_pct"]),
    ("target burst capacity", lambda s: s["settings"]["target_burst_capacity"]),
    ("scale-down delay (s)", lambda s: s["settings"]["scale_down_delay_s"]),
    ("min / max scale", lambda s: f"{s['settings']['min_scale']} / "
                                  f"{s['settings']['max_scale'] or '-'}"),
    ("pod start-up (s)", lambda s: s["settings"]["startup_delay_s"]),
    ("pod-seconds", lambda s: s["pods"]["pod_seconds"]),
    ("mean pods", lambda s: s["pods"]["mean"]),
    ("peak pods", lambda s: s["pods"]["peak"]),
    ("scale changes", lambda s: s["pods"]["scale_changes"]),
    ("cold starts", lambda s: s["cold_starts"]["count"]),
    ("cold-start wait, max (s)", lambda s: s["cold_starts"]["max_wait_s"]),
    ("requests that waited", lambda s: s["requests"]["queued"]),
    ("  % of requests", lambda s: round(s["requests"]["queued_fraction"] * 100, 2)),
    ("  mean wait (s)", lambda s: s["requests"]["mean_queue_wait_s"]),
    ("  max wait (s)", lambda s: s["requests"]["max_queue_wait_s"]),
    ("rejected (503)", lambda s: s["requests"]["rejected"]),
    ("panic periods", lambda s: s["panic"]["count"]),
    ("seconds in panic", lambda s: s["panic"]["seconds"]),
)


def compare_rows(results: Sequence[SimulationResult]) -> list[tuple[str, list[Any]]]:
    """(label, one value per scenario) rows for the side-by-side comparison."""
    sums = [summary(r) for r in results]
    return [("scenario", [s["name"] for s in sums])] + [
        (label, [get(s) for s in sums]) for label, get in _COMPARE]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return _fmt(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def compare_text(results: Sequence[SimulationResult]) -> str:
    """The comparison as an aligned plain-text table, one column per scenario."""
    rows = [(label, [_cell(v) for v in values]) for label, values in compare_rows(results)]
    label_w = max(len(label) for label, _ in rows)
    widths = [max(len(values[j]) for _, values in rows) for j in range(len(results))]
    lines = []
    for label, values in rows:
        cells = "  ".join(v.rjust(w) for v, w in zip(values, widths))
        lines.append(f"{label.ljust(label_w)}  {cells}")
        if label == "scenario":
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)
