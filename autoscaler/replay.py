"""Conformance replay: run recorded scenarios through the production decider and windows.

``python -m autoscaler replay FILE`` reads scenarios, one JSON object per line, in the format
of ``shared/conformance/README.md``, and writes one JSON line per scenario with the answers
(see :func:`replay_decider` and :func:`replay_windows`). It drives the same vectorised code
the service runs (:class:`~autoscaler.batch_decider.BatchDecider`,
:class:`~autoscaler.batch_windows.BatchBuckets`, :class:`~autoscaler.batch_max.BatchMaxWindows`),
one row per scenario.

Scenario times are seconds relative to ``t0``; an event at ``t`` happens at
``t0 + round(t * 1e9)`` ns. ``resize`` in the corpus records which branch upstream took
(``data_recent``) because upstream reads the wall clock there; the replay passes an instant
that takes the same branch.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from autoscaler import gotime
from autoscaler.batch_decider import BatchDecider
from autoscaler.batch_max import BatchMaxWindows
from autoscaler.batch_windows import BatchBuckets
from autoscaler.spec import DeciderSpec

__all__ = ["ReplayError", "replay_decider", "replay_lines", "replay_scenario",
           "replay_windows", "run", "spec_from_json"]

logger = logging.getLogger(__name__)

_NEVER_STALE_S = gotime.GO_ZERO_UNIX_S  # "now" before any write: the data counts as recent
_ALWAYS_STALE_S = 253_402_300_799  # 9999-12-31T23:59:59Z: the data counts as stale
Json = dict[str, Any]


class ReplayError(ValueError):
    """A scenario line that cannot be replayed (bad JSON, unknown kind or op, missing key)."""


def spec_from_json(d: Json) -> DeciderSpec:
    """A corpus ``spec`` object (snake_case, ``*_s`` durations) as a :class:`DeciderSpec`."""
    return DeciderSpec(
        max_scale_up_rate=float(d["max_scale_up_rate"]),
        max_scale_down_rate=float(d["max_scale_down_rate"]),
        scaling_metric=str(d["scaling_metric"]),
        target_value=float(d["target_value"]), total_value=float(d["total_value"]),
        target_burst_capacity=float(d["target_burst_capacity"]),
        activator_capacity=float(d["activator_capacity"]),
        activation_scale=int(d["activation_scale"]),
        panic_threshold=float(d["panic_threshold"]),
        stable_window=float(d["stable_window_s"]),
        scale_down_delay=float(d["scale_down_delay_s"]),
        initial_scale=int(d["initial_scale"]), reachable=bool(d["reachable"]))


def _t0_ns(sc: Json) -> int:
    return int(sc["t0_unix_s"]) * gotime.NS_PER_S + int(sc["t0_nanos"])


def replay_decider(sc: Json) -> Json:
    """``{"name", "ticks": [{desired_pod_count, excess_burst_capacity, scale_valid,
    num_activators, in_panic, status: {desired_scale, excess_burst_capacity, informed}}]}``."""
    t0 = _t0_ns(sc)
    decider = BatchDecider(row_capacity=1)
    ready0 = None if sc.get("initial_pod_error") else int(sc["initial_ready_pods"])
    row = decider.add(spec_from_json(sc["spec"]), t0, ready0)
    override = sc.get("state_override")
    if override:
        pt = override.get("panic_time_s")
        decider.set_panic_state(row, None if pt is None else t0 + gotime.duration_ns(pt),
                                int(override["max_panic_pods"]))
    ticks = []
    for tick in sc["ticks"]:
        if "update_spec" in tick:
            decider.update(row, spec_from_json(tick["update_spec"]))
        pod_error = tick.get("pod_error")
        res = decider.scale(
            t0 + gotime.duration_ns(float(tick["t"])), [row], [int(tick["ready_pods"])],
            [float(tick["stable"])], [float(tick["panic"])],
            pod_ok=[pod_error in (None, "not_found")], metrics_ok=[not tick.get("metric_error")])
        ticks.append({
            "desired_pod_count": int(res.desired_pod_count[0]),
            "excess_burst_capacity": int(res.excess_burst_capacity[0]),
            "scale_valid": bool(res.scale_valid[0]),
            "num_activators": int(res.num_activators[0]),
            "in_panic": bool(res.in_panic[0]),
            "status": {"desired_scale": int(res.desired_scale[0]),
                       "excess_burst_capacity": int(res.status_excess_burst_capacity[0]),
                       "informed": bool(res.informed[0])},
        })
    return {"name": sc["name"], "ticks": ticks}


def replay_windows(sc: Json) -> Json:
    """``{"name", "answers": [...]}``: one answer per op with an ``expect``, in its shape."""
    kind = sc["kind"]
    if kind not in ("max_time_window", "timed_buckets", "weighted_buckets"):
        raise ReplayError(f"kind: unknown window kind {kind!r}")
    t0 = _t0_ns(sc)

    def at(t: float) -> int:  # Unix second of the instant t0 + t
        return (t0 + gotime.duration_ns(float(t))) // gotime.NS_PER_S

    def rel(s: int | None) -> float | None:  # Unix second -> seconds after t0
        return None if s is None else gotime.duration_seconds(s * gotime.NS_PER_S - t0)

    if kind == "max_time_window":
        mw = BatchMaxWindows(float(sc["granularity_s"]), row_capacity=1)
        row = mw.add(float(sc["window_s"]))
    else:
        bb = BatchBuckets(float(sc["granularity_s"]), row_capacity=1)
        row = bb.add(float(sc["window_s"]), weighted=kind == "weighted_buckets")

    answers: list[Any] = []
    for op in sc["ops"]:
        name = op["op"]
        if name == "record" and kind == "max_time_window":
            if mw.record([row], at(op["t"]), [int(op["value"])]):
                answers.append({"panic": "max window overflow: index went back in time"})
                break
            continue
        if name == "record":
            bb.record([row], at(op["t"]), [float(op["value"])])
            continue
        if name == "current":
            ans: Any = int(mw.current([row])[0])
        elif name == "window_average":
            ans = float(bb.window_average(at(op["t"]), [row])[0])
        elif name == "is_empty":
            ans = bool(bb.is_empty(at(op["t"]), [row])[0])
        elif name == "resize":
            bb.resize(row, float(op["window_s"]),
                      _NEVER_STALE_S if op["data_recent"] else _ALWAYS_STALE_S)
            ans = {"num_buckets": bb.num_buckets(row)}
            if kind == "weighted_buckets":
                ans["smoothing_coeff"] = bb.smoothing_coeff(row)
        elif name == "buckets":
            ans = [{"t": rel(t), "value": v} for t, v in bb.buckets(row, at(op["t"]))]
        elif name == "state":
            st = bb.state(row)
            ans = {"first_write_s": rel(_sec(st.first_write_ns)),
                   "last_write_s": rel(_sec(st.last_write_ns)),
                   "window_total": st.window_total, "num_buckets": st.num_buckets,
                   "window_s": st.window_ns / 1e9}
            if kind == "weighted_buckets":
                ans["smoothing_coeff"] = st.smoothing_coeff
        else:
            raise ReplayError(f"op: unknown op {name!r} for {kind}")
        if "expect" in op:
            answers.append(ans)
    return {"name": sc["name"], "answers": answers}


def _sec(ns: int | None) -> int | None:
    return None if ns is None else ns // gotime.NS_PER_S


def replay_scenario(sc: Json) -> Json:
    """Replay one decider or window scenario."""
    if "kind" in sc:
        return replay_windows(sc)
    if "ticks" in sc:
        return replay_decider(sc)
    raise ReplayError("scenario: neither a window scenario (kind) nor a decider one (ticks)")


def replay_lines(lines: Iterable[str]) -> Iterator[Json]:
    """Replay every non-blank line; a bad line raises :class:`ReplayError` naming it."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sc = json.loads(line)
            yield replay_scenario(sc)
        except ReplayError as e:
            raise ReplayError(f"line {lineno}: {e}") from None
        except KeyError as e:
            raise ReplayError(f"line {lineno}: missing key {e}") from None
        except (ValueError, TypeError, AttributeError) as e:
            raise ReplayError(f"line {lineno}: {type(e).__name__}: {e}") from None


def run(src: TextIO, out: TextIO) -> int:
    """Replay ``src`` into ``out`` as JSON lines; returns the number of scenarios."""
    n = 0
    for answer in replay_lines(src):
        out.write(json.dumps(answer, separators=(",", ":")) + "\n")
        n += 1
    logger.info("replayed %d scenarios", n)
    return n
