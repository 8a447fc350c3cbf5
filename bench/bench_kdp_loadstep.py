"""A load-step run against ``kdp up`` next to what ``kdp simulate`` predicts for the same trace.

``kdp up`` runs the hello example (target 10, max-scale 10, containerConcurrency 0) with a
20 s stable window and a 5 s scale-to-zero grace. Once the revision is at zero, an open-loop client sends ``GET /?sleep=0.2`` at a fixed rate per
phase (arrivals evenly spaced, whatever the answers do)::

    idle 10 s -> 50 req/s 30 s -> 150 req/s 30 s -> 50 req/s 30 s -> idle 45 s

and samples, half-way through every second, kdp's status (the decider's desired pods, the pods
the runtime was asked for, ready pods, panic, mode) and the autoscaler's debug endpoint (the
stable and panic window averages its last tick saw). The load starts on an even Unix second:
the autoscaler ticks on even wall-clock seconds, and the simulator on even instants.

The same trace then goes through the simulator's engine (:func:`autoscaler.simulate.simulate`,
what ``kdp simulate`` runs), from zero, with the same config-autoscaler keys, annotations and
containerConcurrency, and a pod start-up delay taken from ``bench/out/kdp_coldstart.json``
(p50 of scale call -> pod ready; ``--startup-delay`` overrides it). The trace's rps are the
requests sent in each second; its latency is the median answer time of the run minus the time
requests waited in the activator. Trace and settings are written as files, and the equivalent
``kdp simulate`` command is run on them too (its own plot and summary land in
``bench/out/kdp_loadstep_sim/``). The simulator makes a pod ready a whole number of seconds after
it is asked for (the delay rounded up), so a second simulation with a 0 s start-up brackets the
local pods' sub-second start-ups from below.

By default the revision has scaled to zero long ago (it starts at one pod, scales to zero, and
the load waits one more stable window so its windows are empty), which is the simulator's
``--start zero``. ``--start new`` creates it at zero instead (initial-scale 0, so the decider
has never decided: a first request does not poke it, as upstream, and the scale-up waits for
the next 2 s tick), the simulator's ``--start new``; its files end in ``_new``.

Writes ``bench/out/kdp_loadstep.{md,json,png}``, ``kdp_loadstep_trace.csv``,
``kdp_loadstep_settings.yaml`` and ``kdp_loadstep_sim/``.

    python -m bench.bench_kdp_loadstep [--start zero|new] [--startup-delay SECONDS]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import aiohttp
import yaml

from autoscaler.simulate import SimulationResult, Start, simulate
from autoscaler.simulate_scenario import ScenarioSpec, resolve
from autoscaler.simulate_trace import Trace
from bench.kdp_harness import (HOST, OUT, ROOT, KdpUp, hello_manifest, manifest_annotations, percentile, record_text,
                               revision, wait_until)
from kdp.statusapi import read_state

CONFIG = {"stable-window": "20s", "scale-to-zero-grace-period": "5s"}
STABLE_WINDOW = 20.0
# --start new: a revision created at zero (no decision yet), as `kdp simulate --start new`
NEW_CONFIG = {**CONFIG, "allow-zero-initial-scale": "true"}
NEW_ANNOTATIONS = {"autoscaling.knative.dev/initial-scale": "0"}
SLEEP = 0.2
PHASES = [("idle", 10, 0.0), ("step 1", 30, 50.0), ("step 2", 30, 150.0), ("down", 30, 50.0), ("idle", 45, 0.0)]


@dataclass
class Sample:
    t: int
    phase: str
    sent: int
    answered: int
    errors: int
    in_flight: int
    desired: int  # the decider's (-1: none yet)
    asked: int  # pods the runtime was asked for
    ready: int
    pods: int
    panic: bool
    mode: str
    observed_stable: float | None  # the decider's last tick (autoscaler debug endpoint)
    observed_panic: float | None
    status_stable: float  # kdp status's stable_concurrency (from the last published decision)


@dataclass
class Load:
    sent: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    answered: int = 0
    errors: int = 0
    in_flight: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def _request(session: aiohttp.ClientSession, url: str, load: Load, t0: float) -> None:
    load.in_flight += 1
    start = time.monotonic()
    load.sent.append(start - t0)
    try:
        async with session.get(url, params={"sleep": str(SLEEP)}, headers={"Host": HOST},
                               timeout=aiohttp.ClientTimeout(total=60)) as r:
            await r.read()
            load.statuses[r.status] = load.statuses.get(r.status, 0) + 1
            if r.status == 200:
                load.answered += 1
                load.latency.append(time.monotonic() - start)
                m = re.search(r"activator-wait;dur=([\d.]+)", r.headers.get("Server-Timing", ""))
                load.waited.append(float(m.group(1)) / 1e3 if m else 0.0)
            else:
                load.errors += 1
    except (aiohttp.ClientError, asyncio.TimeoutError):
        load.errors += 1
    finally:
        load.in_flight -= 1


async def _generate(session: aiohttp.ClientSession, url: str, load: Load, t0: float, tasks: set[asyncio.Task]) -> None:
    """Open loop: request k of a phase at rate R is sent at phase start + k / R."""
    loop = asyncio.get_running_loop()
    begin = 0.0
    for _, seconds, rate in PHASES:
        if rate > 0:
            n = int(seconds * rate)
            for k in range(n):
                at = t0 + begin + k / rate
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = loop.create_task(_request(session, url, load, t0))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        begin += seconds


def _phase_at(t: float) -> str:
    begin = 0.0
    for name, seconds, _ in PHASES:
        if t < begin + seconds:
            return name
        begin += seconds
    return PHASES[-1][0]


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return dict(await r.json()) if r.status == 200 else {}
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return {}


def _even_second_start() -> float:
    """A time.monotonic() instant on an even Unix second, 1-3 s from now: the autoscaler ticks
    on even wall-clock seconds, as the simulator does on even instants, so the two line up."""
    now = time.time()
    start = math.ceil((now + 1.0) / 2) * 2
    return time.monotonic() + (start - now)


async def drive(up: KdpUp) -> tuple[list[Sample], Load]:
    api = read_state(str(up.state_dir))["api"] + "/status"
    status = up.status()
    rev_name = revision(status).get("name", "")
    debug = f"{status.get('autoscaler_debug', '')}/debug/revisions/default/{rev_name}"
    load = Load()
    samples: list[Sample] = []
    tasks: set[asyncio.Task] = set()
    total = sum(s for _, s, _ in PHASES)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2000)) as session:
        t0 = _even_second_start()
        gen = asyncio.get_running_loop().create_task(_generate(session, up.url, load, t0, tasks))
        last_sent = last_answered = last_errors = 0
        print(f"{'t':>4} {'phase':<7} {'sent':>5} {'ok':>5} {'err':>4} {'in fl.':>6} {'desired':>7} {'asked':>5} "
              f"{'ready':>5} {'panic':<5} {'mode':<5} {'stable':>6} {'panic':>6}", flush=True)
        for t in range(1, total + 1):
            # sample half-way through second t: the tick at instant t (when even) has been applied
            delay = t0 + t + 0.5 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rev = revision(await _get_json(session, api))
            tick = ((await _get_json(session, debug)).get("decider") or {}).get("last_tick") or {}
            a = rev.get("autoscaler") or {}
            sent = sum(1 for x in load.sent[last_sent:] if x < t)
            s = Sample(t, _phase_at(t - 0.5), sent, load.answered - last_answered,
                       load.errors - last_errors, load.in_flight, int(a.get("desired", -1)), int(rev.get("desired", 0)),
                       int(rev.get("ready", 0)), len(rev.get("pods", [])), bool(a.get("in_panic")),
                       str(a.get("mode", "")), tick.get("observed_stable"), tick.get("observed_panic"),
                       float(a.get("stable_concurrency", 0.0)))
            last_sent, last_answered, last_errors = last_sent + sent, load.answered, load.errors
            samples.append(s)
            print(f"{s.t:>4} {s.phase:<7} {s.sent:>5} {s.answered:>5} {s.errors:>4} {s.in_flight:>6} {s.desired:>7} "
                  f"{s.asked:>5} {s.ready:>5} {'yes' if s.panic else '-':<5} {s.mode:<5} "
                  f"{s.observed_stable if s.observed_stable is not None else float('nan'):>6.1f} "
                  f"{s.observed_panic if s.observed_panic is not None else float('nan'):>6.1f}", flush=True)
        await gen
        if tasks:
            await asyncio.wait(list(tasks), timeout=30)
    return samples, load


def simulator_version() -> str:
    """The commit the simulator ran from, and whether its files had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "autoscaler/"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = sorted({line[3:] for line in dirty if line.strip()})
    return head + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def startup_delay(override: float | None) -> tuple[float, str]:
    if override is not None:
        return override, "--startup-delay"
    path = OUT / "kdp_coldstart.json"
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return 0.25, f"default (no {path.name}; run bench_kdp_coldstart first)"
    xs = [(r["spawn_ms"] + r["pod_start_ms"]) / 1e3 for r in runs]
    return round(percentile(xs, 50), 3), f"p50 of scale call -> pod ready over {len(xs)} runs in {path.name}"


def build_trace(load: Load, seconds: int) -> tuple[Trace, float]:
    rps = [0.0] * seconds
    for s in load.sent:
        i = int(s)
        if 0 <= i < seconds:
            rps[i] += 1
    service = [lat - w for lat, w in zip(load.latency, load.waited)]
    latency = statistics.median(service) if service else SLEEP
    return Trace(tuple(rps), tuple([latency] * seconds), source="kdp_loadstep"), latency


def compare(samples: list[Sample], results: list[SimulationResult]) -> list[list[str]]:
    """Rows of [what, measured, simulated (one column per result)]."""
    n = min([len(samples)] + [len(r.timeline) - 1 for r in results])
    ts = [s.t for s in samples[:n]]
    series = [("kdp up", [s.ready for s in samples[:n]], [s.desired for s in samples[:n]],
               [s.panic for s in samples[:n]])]
    series += [(r.scenario.name, [r.timeline[t].ready for t in ts], [r.timeline[t].desired for t in ts],
                [r.timeline[t].in_panic for t in ts]) for r in results]

    def first(xs: list[int], pred, after: int = 0) -> str:  # type: ignore[no-untyped-def]
        for i in range(after, len(xs)):
            if pred(xs[i]):
                return f"{ts[i]} s"
        return "never"

    def peak(xs: list[int]) -> str:
        top = max(xs)
        return f"{top} (first at {first(xs, lambda x: x == top)})"

    rows = [["first ready pod"] + [first(r, lambda x: x >= 1) for _, r, _, _ in series],
            ["peak ready pods"] + [peak(r) for _, r, _, _ in series],
            ["peak desired (decider)"] + [str(max(d)) for _, _, d, _ in series]]
    begin = 0
    for name, seconds, rate in PHASES:
        idx = [i for i in range(n) if begin < ts[i] <= begin + seconds]
        if idx:
            rows.append([f"mean ready pods, {name} ({rate:g} req/s, {begin}-{begin + seconds} s)"]
                        + [f"{statistics.fmean(r[i] for i in idx):.2f}" for _, r, _, _ in series])
        begin += seconds
    last_load = sum(s for _, s, _ in PHASES[:-1])
    rows.append(["back at zero ready pods"] + [first(r, lambda x: x == 0, last_load - 1) for _, r, _, _ in series])
    rows.append(["ready pod-seconds"] + [str(sum(r)) for _, r, _, _ in series])
    rows.append(["panic seconds"] + [str(sum(p)) for _, _, _, p in series])
    meas = series[0][1]
    diffs = [[abs(a - b) for a, b in zip(meas, r)] for _, r, _, _ in series[1:]]
    rows.append(["seconds with ready pods equal to kdp up's / within 1", "-"]
                + [f"{sum(d == 0 for d in x)} / {sum(d <= 1 for d in x)} of {n}" for x in diffs])
    rows.append(["mean abs(kdp up - simulated) ready pods", "-"] + [f"{statistics.fmean(x):.2f}" for x in diffs])
    return rows


def plot(samples: list[Sample], result: SimulationResult, bracket: SimulationResult, trace: Trace, path,
         start: str) -> None:  # type: ignore[no-untyped-def]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = result.timeline
    t = [s.t for s in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    ax1.step(range(trace.seconds), trace.rps, where="post", color="grey", label="sent (the trace)")
    ax1.plot(t, [s.answered for s in samples], color="black", lw=0.8, label="answered 200 / s")
    ax1.set_ylabel("requests / s")
    ax2.plot(t, [s.in_flight for s in samples], color="tab:purple", label="in flight (client side)")
    nan = float("nan")
    ax2.step(t, [s.observed_stable if s.observed_stable is not None else nan for s in samples], where="post",
             color="tab:blue", label="stable window (kdp autoscaler's last tick)")
    ax2.step(t, [s.observed_panic if s.observed_panic is not None else nan for s in samples], where="post",
             color="tab:red", lw=0.8, label="panic window (kdp autoscaler's last tick)")
    ax2.plot(t, [sim[i].stable if i < len(sim) and sim[i].stable is not None else nan for i in t],
             color="tab:blue", ls="--", label="stable window (simulated)")
    ax2.plot(t, [sim[i].panic if i < len(sim) and sim[i].panic is not None else nan for i in t],
             color="tab:red", ls="--", lw=0.8, label="panic window (simulated)")
    ax2.step(t, [s.status_stable for s in samples], where="post", color="grey", ls=":",
             label="kdp status stable_concurrency (last published decision)")
    ax2.set_ylabel("concurrency")
    ax3.step(t, [s.ready for s in samples], where="post", color="tab:blue", lw=2, label="ready pods (kdp up)")
    ax3.step(t, [s.desired if s.desired >= 0 else float("nan") for s in samples], where="post", color="tab:orange",
             label="desired (kdp autoscaler)")
    ax3.step(t, [sim[i].ready for i in t if i < len(sim)], where="post", color="tab:blue", ls="--", lw=2,
             label="ready pods (kdp simulate)")
    ax3.step(t, [sim[i].desired if sim[i].desired >= 0 else float("nan") for i in t if i < len(sim)], where="post",
             color="tab:orange", ls="--", label="desired (kdp simulate)")
    ax3.step(t, [bracket.timeline[i].ready for i in t if i < len(bracket.timeline)], where="post", color="tab:green",
             ls=":", lw=1.5, label="ready pods (kdp simulate, start-up 0 s)")
    ax3.set_ylabel("pods")
    ax3.set_xlabel("seconds since the load started")
    _shade(ax3, [s.t for s in samples if s.panic], "tab:red", 0.12, "panic (kdp up)")
    _shade(ax3, [i for i in t if i < len(sim) and sim[i].in_panic], "tab:green", 0.12, "panic (simulated)")
    begin = 0
    for _, seconds, _ in PHASES:
        begin += seconds
        for ax in (ax1, ax2, ax3):
            ax.axvline(begin, color="grey", lw=0.6, ls=":")
    for ax in (ax1, ax2, ax3):
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    ax1.set_title(f"kdp up (solid) vs kdp simulate --start {start} (dashed): hello example, 200 ms requests, "
                  "open-loop steps")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _shade(ax, seconds: list[int], color: str, alpha: float, label: str) -> None:  # type: ignore[no-untyped-def]
    labelled = False
    for s in seconds:
        ax.axvspan(s - 1, s, color=color, alpha=alpha, lw=0, label=None if labelled else label)
        labelled = True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--startup-delay", type=float, help="simulated pod start-up delay, seconds "
                    "(default: from bench/out/kdp_coldstart.json)")
    ap.add_argument("--start", choices=("zero", "new"), default="zero",
                    help="zero: the revision scaled to zero long ago (it starts at one pod, goes to zero, and "
                         "the load waits one more stable window); new: created at zero (initial-scale 0), "
                         "never decided on")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    config = CONFIG if args.start == "zero" else NEW_CONFIG
    manifest = hello_manifest({} if args.start == "zero" else NEW_ANNOTATIONS)
    suffix = "" if args.start == "zero" else "_new"
    up = KdpUp(manifest, config, name=f"kdp-loadstep{suffix}")
    print("starting:", up.command, flush=True)
    up.start()
    try:
        def at_zero() -> bool:
            rev = revision(up.status())
            decided = (rev.get("autoscaler") or {}).get("desired")
            return rev.get("desired") == 0 and not rev.get("pods") and (args.start == "new" or decided == 0)

        waited = wait_until(at_zero, 120.0, 0.2, "revision at zero")
        if args.start == "zero":
            # nothing left in the windows, as in the simulator's "scaled to zero long ago"
            print(f"at zero after {waited:.0f} s; waiting one stable window ({STABLE_WINDOW:.0f} s)", flush=True)
            time.sleep(STABLE_WINDOW)
        samples, load = asyncio.run(drive(up))
        starts = [float(m.group(1)) for r in up.log()
                  if (m := re.match(r"pod \S+ ready ([\d.]+)s after it was created", record_text(r)))]
        failures = [record_text(r) for r in up.log() if "before becoming ready; restarting" in record_text(r)]
    finally:
        code = up.stop()
        print(f"kdp up stopped (exit {code}); leftover pod processes: {up.leftovers or 'none'}", flush=True)
    seconds = sum(s for _, s, _ in PHASES) + 1
    trace, latency = build_trace(load, seconds)
    name = f"kdp_loadstep{suffix}"
    # the measured half first, so a simulator error does not lose the run
    (OUT / f"{name}.json").write_text(json.dumps({
        "command": up.command, "start": args.start, "autoscaler_config": config, "phases": PHASES,
        "sleep_s": SLEEP, "exit_code": code, "trace_rps": trace.rps, "trace_latency_s": latency,
        "samples": [asdict(s) for s in samples]}, indent=1))
    delay, delay_from = startup_delay(args.startup_delay)
    annotations = manifest_annotations(manifest)
    spec = ScenarioSpec(name=f"kdp-loadstep{suffix}", config=dict(config), annotations=annotations,
                        container_concurrency=0, startup_delay=delay)
    version = simulator_version()
    result = simulate(trace, resolve(spec), Start(args.start))
    # the simulator makes a pod ready a whole number of seconds after it is asked for (the delay
    # rounded up); a 0 s start-up brackets the sub-second start-ups of local pods from below
    bracket = simulate(trace, resolve(replace(spec, name="start-up 0 s", startup_delay=0.0)), Start(args.start))

    trace_path, settings_path = OUT / f"{name}_trace.csv", OUT / f"{name}_settings.yaml"
    trace_path.write_text("t,rps,latency_ms\n" + "".join(f"{i},{r:g},{lat * 1e3:.3f}\n"
                                                          for i, (r, lat) in enumerate(zip(trace.rps, trace.latency))))
    settings_path.write_text(yaml.safe_dump({"name": spec.name, "config": dict(config), "annotations": annotations,
                                             "containerConcurrency": 0, "pod": {"startupDelay": delay}}, sort_keys=False))
    sim_cmd = ["simulate", str(trace_path), "-c", str(settings_path), "--start", args.start, "-o",
               str(OUT / f"{name}_sim")]
    from kdp.simulate_cmd import main as simulate_main
    print("\n$ kdp " + " ".join(sim_cmd[0:1]) + " " + " ".join(sim_cmd[1:]))
    simulate_main(sim_cmd[1:])

    ok = load.statuses.get(200, 0)
    lat = sorted(load.latency)
    head = [f"load: {len(load.sent)} requests sent, {ok} answered 200, {load.errors} failed "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(load.statuses.items()) if k != 200) or 'no other status'}); "
            f"latency p50 {percentile(lat, 50) * 1e3:.0f} ms, p99 {percentile(lat, 99) * 1e3:.0f} ms, "
            f"max {lat[-1] * 1e3:.0f} ms" if lat else "load: nothing answered",
            f"trace latency (median answer minus activator wait): {latency * 1e3:.1f} ms",
            f"simulated pod start-up delay: {delay} s ({delay_from}); pods started during this run became "
            f"ready after p50 {percentile(starts, 50) * 1e3:.0f} ms, max {max(starts) * 1e3:.0f} ms "
            f"({len(starts)} starts)" if starts else f"simulated pod start-up delay: {delay} s ({delay_from})",
            f"simulator: autoscaler/ at {version}",
            f"start: {args.start} (simulator --start {args.start}); container restarts before ready: "
            f"{len(failures)}" + (f" (first: ...{failures[0][-150:]})" if failures else ""),
            ""]
    rows = compare(samples, [result, bracket])
    table = [f"| | kdp up (measured) | kdp simulate (start-up {delay} s) | kdp simulate (start-up 0 s) |",
             "|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(head + table)
    print()
    print(text)
    (OUT / f"{name}.md").write_text(text + "\n")
    (OUT / f"{name}.json").write_text(json.dumps({
        "command": up.command, "simulator_version": version, "start": args.start, "autoscaler_config": config, "annotations": annotations,
        "phases": PHASES, "container_restarts_before_ready": failures,
        "sleep_s": SLEEP, "exit_code": code, "startup_delay_s": delay, "trace_latency_s": latency,
        "pod_startups_s": starts, "samples": [asdict(s) for s in samples],
        "simulated": [{"t": s.t, "desired": s.desired, "ready": s.ready, "in_panic": s.in_panic, "stable": s.stable,
                       "panic": s.panic} for s in result.timeline],
        "simulated_startup_0": [{"t": s.t, "desired": s.desired, "ready": s.ready, "in_panic": s.in_panic}
                                for s in bracket.timeline],
        "comparison": rows}, indent=1))
    plot(samples, result, bracket, trace, OUT / f"{name}.png", args.start)
    print(f"\nwrote {OUT / name}.md, {name}.json, {name}.png, {trace_path.name}, {settings_path.name}, {name}_sim/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
