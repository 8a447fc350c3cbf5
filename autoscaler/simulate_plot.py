"""PNG plots of simulations (matplotlib, Agg canvas; no pyplot, no global state).

:func:`plot_result` draws one run: request rate, concurrency (offered, in flight, the stable
and panic window averages, and the capacity the ready pods give), and pods (desired, asked
for, ready), with panic periods shaded and cold starts marked. :func:`plot_compare` draws
several runs over the same trace: the load, then ready pods and waiting requests per scenario.
Both write the file at ``path``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoscaler.simulate import SimulationResult

__all__ = ["plot_compare", "plot_result"]

_PANIC = "#f4a582"
_COLD = "#92c5de"


def _time_axis(seconds: int) -> tuple[float, str]:
    if seconds > 2 * 86400:
        return 3600.0, "hours"
    if seconds > 2 * 3600:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _shade(ax: Axes, result: SimulationResult, scale: float) -> None:
    end = len(result.timeline)
    for p in result.panic_periods:
        ax.axvspan(p.start / scale, (p.end if p.end is not None else end) / scale,
                   color=_PANIC, alpha=0.35, lw=0)
    for c in result.cold_starts:
        ax.axvspan(c.start / scale, (c.ready_at if c.ready_at is not None else end) / scale,
                   color=_COLD, alpha=0.5, lw=0)


def plot_result(result: SimulationResult, path: str | Path) -> None:
    """Load, concurrency and pods of one run, panic shaded orange, cold starts blue."""
    tl = result.timeline
    scale, unit = _time_axis(len(tl))
    x = [s.t / scale for s in tl]
    fig = Figure(figsize=(12, 9), layout="constrained")
    FigureCanvasAgg(fig)
    ax_rps, ax_conc, ax_pods = fig.subplots(3, 1, sharex=True)
    sc = result.scenario
    st = sc.scaling
    fig.suptitle(
        f"{sc.name}: {st.scaling_metric} target {st.target_value:g}/pod, stable window "
        f"{st.stable_window:g}s, panic window {st.panic_window:g}s, burst capacity "
        f"{st.target_burst_capacity:g}, CC {sc.container_concurrency}, pods ready after "
        f"{sc.pod.startup_delay:g}s", fontsize=11)

    ax_rps.plot(x, [s.rps for s in tl], label="offered", color="black", lw=1)
    ax_rps.plot(x, [s.served_rps for s in tl], label="started", color="tab:green", lw=1)
    if any(s.rejected for s in tl):
        ax_rps.plot(x, [s.rejected for s in tl], label="rejected (503)", color="tab:red", lw=1)
    ax_rps.set_ylabel("requests / s")

    ax_conc.plot(x, [s.offered_concurrency for s in tl], label="offered", color="black", lw=1)
    ax_conc.plot(x, [s.concurrency for s in tl], label="in flight (incl. waiting)",
                 color="tab:purple", lw=1)
    ax_conc.plot(x, [s.stable if s.stable is not None else float("nan") for s in tl],
                 label=f"stable window ({st.scaling_metric})", color="tab:blue", lw=1.5)
    ax_conc.plot(x, [s.panic if s.panic is not None else float("nan") for s in tl],
                 label=f"panic window ({st.scaling_metric})", color="tab:orange", lw=1)
    cap = sc.pod_capacity()
    if cap is not None:
        ax_conc.step(x, [s.ready * cap for s in tl], where="post", color="grey", lw=1,
                     ls="--", label="capacity of ready pods")
    ax_conc.set_ylabel("concurrency" if st.scaling_metric != "rps" else "concurrency / rps")

    ax_pods.step(x, [max(s.desired, 0) for s in tl], where="post", label="desired (decider)",
                 color="tab:orange", lw=1)
    ax_pods.step(x, [s.replicas for s in tl], where="post", label="asked for", color="grey",
                 lw=1, ls="--")
    ax_pods.step(x, [s.ready for s in tl], where="post", label="ready", color="tab:blue",
                 lw=1.5)
    ax_pods.set_ylabel("pods")
    ax_pods.set_xlabel(f"time ({unit})")

    for ax in (ax_rps, ax_conc, ax_pods):
        _shade(ax, result, scale)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    ax_pods.text(0.01, 0.95, "orange: panic   blue: cold start (no pod ready)",
                 transform=ax_pods.transAxes, fontsize=8, va="top")
    fig.savefig(path, dpi=100)


def plot_compare(results: Sequence[SimulationResult], path: str | Path) -> None:
    """The trace's load, then ready pods and waiting requests for each scenario."""
    if not results:
        raise ValueError("plot_compare: no results")
    tl0 = results[0].timeline
    scale, unit = _time_axis(len(tl0))
    fig = Figure(figsize=(12, 9), layout="constrained")
    FigureCanvasAgg(fig)
    ax_load, ax_pods, ax_wait = fig.subplots(3, 1, sharex=True)
    fig.suptitle(f"{results[0].trace.source}: {len(results)} scenarios", fontsize=11)
    x = [s.t / scale for s in tl0]
    ax_load.plot(x, [s.offered_concurrency for s in tl0], color="black", lw=1,
                 label="offered concurrency")
    ax_load.set_ylabel("concurrency")
    for r in results:
        xs = [s.t / scale for s in r.timeline]
        line = ax_pods.step(xs, [s.ready for s in r.timeline], where="post", lw=1.2,
                            label=r.scenario.name)[0]
        ax_wait.plot(xs, [s.waiting for s in r.timeline], lw=1, color=line.get_color(),
                     label=r.scenario.name)
    ax_pods.set_ylabel("ready pods")
    ax_wait.set_ylabel("requests waiting")
    ax_wait.set_xlabel(f"time ({unit})")
    for ax in (ax_load, ax_pods, ax_wait):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=100)
