"""The offline simulator: replay a traffic trace through the autoscaler service's own core, and
say what would have happened, second by second.

The autoscaling is the service's, not a model of it: :mod:`autoscaler.simulate_scaler` runs
the revision through :class:`~autoscaler.multiscaler.MultiScaler` (the collector's windows, the
vectorised decider, :class:`~autoscaler.scaler.Scaler`) called as the service calls it. This
module holds what the simulator adds: the requests, the activator's and the pods' reports, and
the results. Each instant ``i`` (second ``i`` runs from it to ``i + 1``):

1. **Pods** that became ready are reported (as the local runtime's supervisor reports them).
2. **Stats** about second ``i - 1`` are pushed as that second ends (so stamped ``i - 1``): the
   pods' (revision totals: in-flight requests and arrivals, and how many of those came through
   the activator), while some pod was ready, and the activator's (its in-flight and arrivals,
   the first report after its immediate message lowered by 1, never below 0) while it tracks
   the revision. The collector spots pokes (desired scale 0, concurrency != 0) and bursts; the
   service decides those at once.
3. **The service's second**: on even instants the 2 s tick (record the completed seconds, run
   due timers, decide, reconcile what changed); on odd ones record and run due timers. Every
   replica count the scaler applies is given to the deployment at once (pods are ready a
   start-up delay later) and the new pod counts are reported back.
4. **Activator**: when requests go through it (proxy mode, or no pod ready) and it does not
   track the revision yet, its first request sends the immediate stat ``{concurrency 1,
   requests 1}`` (stamped ``i``), which pokes at desired scale 0.
5. **Load** (a fluid model): the second's arrivals join a FIFO backlog; ready pods work on at
   most ``pods x capacity`` requests at once (capacity = containerConcurrency, or the pod
   model's capacity when that is 0, else unlimited), so at most ``pods x capacity / latency``
   requests start per second; the rest wait. Waiting is bounded as upstream bounds it:
   10 x containerConcurrency per ready pod at the queue-proxies in serve mode, 10,000 per
   activator in proxy mode; beyond that requests are rejected (503). Concurrency (what pods
   and activator report) = requests being worked on + requests waiting.

Consequences of the service's rules worth knowing when reading a timeline: a tick at ``i``
averages the seconds up to ``i - 1`` (the collector holds back the second in progress), so a
window of ``w`` seconds covers ``w - 1`` completed ones at the tick; the scaler reconciles on
decisions, pod changes and its own timers, not every second.

Simplifications, all in the open: stats are exact revision totals (as the gRPC push gives
them; upstream's scrape samples at most 16 pods); every report about a second arrives as it
ends; the activators are modelled as one and always answer the autoscaler's probe; the path
of in-flight requests follows the mode of the second; pods stop at once when removed; waiting
requests never time out (upstream fails them after the revision's timeout).

Instants are whole seconds, ``T0_UNIX_S + i`` in Unix time. Pure: no I/O, no clock;
:mod:`autoscaler.simulate_report` turns the result into a summary.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from autoscaler.annotations import RPS
from autoscaler.config import RevisionScaling
from autoscaler.decider import Decision, num_activators
from autoscaler.gotime import NS_PER_S
from autoscaler.multiscaler import TICK_INTERVAL
from autoscaler.scaler import ACTIVATING, SCALE_UNKNOWN
from autoscaler.simulate_scaler import (MODE_PROXY, MODE_SERVE, T0_UNIX_S, Deployment,
                                        SimulatedRevision, StatReport)
from autoscaler.simulate_scenario import Scenario
from autoscaler.simulate_trace import Trace

__all__ = [
    "ACTIVATOR_QUEUE_DEPTH",
    "QUEUE_PROXY_QUEUE_FACTOR",
    "T0_UNIX_S",
    "TICK_INTERVAL",
    "ColdStart",
    "PanicPeriod",
    "Second",
    "SimulationResult",
    "Start",
    "panic_periods",
    "simulate",
    "zero_run_up",
]

#: Requests one activator holds per revision (upstream throttler ``breakerQueueDepth``).
ACTIVATOR_QUEUE_DEPTH = 10_000
#: A queue-proxy queues up to this many x containerConcurrency requests.
QUEUE_PROXY_QUEUE_FACTOR = 10
_EPS = 1e-9


@dataclass(frozen=True)
class Start:
    """The revision at the start of the trace.

    ``zero``: idle long ago: the service has taken one idle pod to where it rests (no pods,
    inactive, behind the activator, desired scale 0 -- or min-scale pods, or one pod without
    scale to zero) before instant 0; ``new``: just created (the deployment starting its
    initial-scale pods, the autoscaler seeing the revision for the first time); ``warm``:
    running at the first second's load with ``pods`` ready pods (None: as many as that load
    needs), a stable window of that load in the windows, first seen by the autoscaler at
    instant 0 (active from then on, as after a restart, but not in restart panic).
    """

    kind: str = "zero"
    pods: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("zero", "new", "warm"):
            raise ValueError(f"start: {self.kind!r}; allowed: zero, new, warm or a pod count")
        if self.pods is not None and (self.kind != "warm" or self.pods < 1):
            raise ValueError(f"start: {self.pods} pods; allowed: a pod count >= 1 (warm)")

    @classmethod
    def parse(cls, text: str) -> Start:
        """``zero``, ``new``, ``warm`` or a pod count (warm with that many pods)."""
        text = text.strip()
        if text.isdigit():
            return cls("warm", int(text))
        return cls(text)


@dataclass(frozen=True, slots=True)
class Second:
    """One second of the timeline. Load fields cover the second; the autoscaler's fields are
    as they stand once the instant that starts it has been handled."""

    t: int
    rps: float  # offered arrivals
    latency_ms: float
    offered_concurrency: float  # rps x latency
    served_rps: float  # requests that started being worked on
    rejected: float  # 503s: queue full
    concurrency: float  # in flight (worked on + waiting): what the stats report
    waiting: float  # of which waiting, time-averaged
    stable: float | None  # the scaling metric's window averages the latest decision read
    panic: float | None  # (None: no decision yet, or it found no data)
    desired: int  # the decider's desired scale (-1: no decision yet)
    want: int  # the scaler's answer (-1: unknown, touch nothing)
    replicas: int  # pods asked for
    pods: int  # pods that exist (starting + ready)
    ready: int
    in_panic: bool
    mode: str  # the request path: proxy (the scaler's SKS mode, or no pod ready) | serve
    state: str  # the PA's Active condition: activating | active | inactive
    decision: str  # decisions at the instant: "", "tick", "poke", "burst", joined with "+"
    excess_burst_capacity: int


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Requests arrived while no pod was ready; they waited until one was."""

    start: int  # second of the first request with no pod ready
    ready_at: int | None  # first second with a ready pod (None: none by the end)
    requests: float  # arrivals until then
    wait_request_seconds: float  # seconds those requests waited, summed (to the second)
    max_wait_s: int

    @property
    def duration_s(self) -> int | None:
        return None if self.ready_at is None else self.ready_at - self.start


@dataclass(frozen=True, slots=True)
class PanicPeriod:
    start: int  # tick that entered panic
    end: int | None  # tick that left it (None: still panicking at the end)
    peak_desired: int


@dataclass(frozen=True)
class SimulationResult:
    scenario: Scenario
    trace: Trace
    start: Start
    timeline: tuple[Second, ...]
    decisions: tuple[Decision, ...]
    cold_starts: tuple[ColdStart, ...]
    panic_periods: tuple[PanicPeriod, ...]
    queued_requests: float  # requests that had to wait (cold starts included)
    queue_wait_request_seconds: float  # their waits, summed (to the second)
    max_queue_wait_s: int
    unserved_at_end: float  # still waiting when the trace ends
    scale_changes: int  # times the replica count changed


def simulate(trace: Trace, scenario: Scenario, start: Start | None = None) -> SimulationResult:
    """Run ``trace`` through ``scenario`` (see the module docstring)."""
    return _Run(trace, scenario, start or Start()).run()


def instant(now_ns: int) -> int:
    """The simulation instant of Unix nanoseconds ``now_ns``."""
    return now_ns // NS_PER_S - T0_UNIX_S


class _Episode:
    """A cold start being measured."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.ready_at: int | None = None
        self.requests = 0.0
        self.wait = 0.0
        self.max_wait = 0

    def result(self) -> ColdStart:
        return ColdStart(self.start, self.ready_at, self.requests, self.wait, self.max_wait)


@dataclass(slots=True)
class _Chunk:
    arrived: int
    amount: float
    episode: _Episode | None


@dataclass(frozen=True, slots=True)
class _Stats:
    """What the pods (None: none ready, nothing to report) and the activator report about
    one second."""

    pods: StatReport | None
    activator: StatReport


class _Run:
    def __init__(self, trace: Trace, scenario: Scenario, start: Start) -> None:
        self.trace = trace
        self.sc = scenario
        self.start = start
        self.spec = scenario.scaling.decider_spec()
        self.capacity = scenario.pod_capacity()
        self.deploy = Deployment(scenario.pod.startup_delay)
        self.queue: deque[_Chunk] = deque()
        self.backlog = 0.0
        self.tracked = False  # the activator tracks the revision
        self.first_adj = 0.0
        self.pending: _Stats | None = None
        self.timeline: list[Second] = []
        self.episodes: list[_Episode] = []
        self.episode: _Episode | None = None
        self.queued = 0.0
        self.wait_total = 0.0
        self.max_wait = 0
        self.rev, self.first = self._begin()

    # --- start -------------------------------------------------------------------------

    def _begin(self) -> tuple[SimulatedRevision, int]:
        """The revision as the start says, and the first instant to run (< 0: a run-up)."""
        s, kind = self.sc.scaling, self.start.kind
        if kind == "new":  # the revision reconciler creates the deployment at initial scale
            rev = SimulatedRevision(self.sc, self.deploy, at=0)
            self.deploy.scale(s.initial_scale, 0.0)
            rev.report_pods(0)
            return rev, 0
        if kind == "zero":  # one idle pod, long before: the service takes it to its idle state
            first = -zero_run_up(s)
            rev = SimulatedRevision(self.sc, self.deploy, at=first)
            self.deploy.add_ready(1, float(first))
            rev.report_pods(first)
            return rev, first
        conc0, rps0 = self.trace.concurrency(0), self.trace.rps[0]
        pods = self.start.pods
        if pods is None:
            load = rps0 if s.scaling_metric == RPS else conc0
            pods = max(1, s.apply_bounds(math.ceil(load / s.target_value), True))
        window = math.ceil(s.stable_window)
        rev = SimulatedRevision(self.sc, self.deploy, at=-window)
        rev.prefill(StatReport(concurrency=conc0, request_count=rps0), window, 0)
        self.deploy.add_ready(pods, 0.0)
        rev.report_pods(0)  # first seen running: active, as after an autoscaler restart
        rev.forget_restart_panic()
        self.tracked = rps0 > 0
        return rev, 0

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SimulationResult:
        rev = self.rev
        for i in range(self.first, self.trace.seconds):
            rev.report_pods(i)  # pods that became ready
            kinds = rev.push(self._reports(i), i)
            kinds += rev.step(i)
            path = rev.path(i)
            arrivals = self.trace.rps[i] if i >= 0 else 0.0
            if path == MODE_PROXY and arrivals > 0 and not self.tracked:
                # The activator's first request: its immediate stat (which pokes at zero).
                self.tracked, self.first_adj = True, 1.0
                kinds += rev.push([("activator", i, StatReport(1.0, 0.0, 1.0, 0.0))], i)
                path = rev.path(i)
            self._serve(i, path, "+".join(dict.fromkeys(kinds)))
        return self._result()

    def _reports(self, i: int) -> list[tuple[str, int, StatReport]]:
        """The stats about second ``i - 1``, pushed as it ends (stamped ``i - 1``)."""
        st = self.pending
        if st is None:
            return []
        out = []
        if st.pods is not None:  # pods report while one is ready
            out.append(("pods", i - 1, st.pods))
        if self.tracked:
            act = st.activator
            adj = self.first_adj
            # Upstream lowers the first report by its immediate message; a fluid second may
            # hold less than one arrival, and a Stat field cannot be negative.
            out.append(("activator", i - 1, StatReport(
                concurrency=max(0.0, act.concurrency - adj),
                request_count=max(0.0, act.request_count - adj))))
            self.first_adj = 0.0
            if act.concurrency == 0:
                self.tracked = False  # an idle period: the activator forgets the revision
        return out

    # --- the load ----------------------------------------------------------------------

    def _queue_limit(self, path: str, ready: int) -> float:
        cc = self.sc.container_concurrency
        if path == MODE_PROXY and (cc > 0 or ready == 0):
            return float(ACTIVATOR_QUEUE_DEPTH * num_activators(ready, self.spec))
        if path == MODE_SERVE and cc > 0:
            return float(QUEUE_PROXY_QUEUE_FACTOR * cc * ready)
        return math.inf

    def _serve(self, i: int, path: str, decision: str) -> None:
        """Second ``i``'s load (none before instant 0); the timeline from instant 0 on."""
        if i >= 0:
            arrivals, latency = self.trace.rps[i], self.trace.latency[i]
        else:
            arrivals, latency = 0.0, self.trace.latency[0]
        ready = self.deploy.ready(i)
        if ready and self.episode is not None:
            self.episode.ready_at = i
            self.episode = None
        elif not ready and arrivals > 0 and self.episode is None:
            self.episode = _Episode(i)
            self.episodes.append(self.episode)
        if self.episode is not None:
            self.episode.requests += arrivals
        if ready == 0:
            slots = 0.0
        else:
            slots = math.inf if self.capacity is None else ready * self.capacity
        budget = slots / latency  # requests that can start this second
        before = self.backlog
        started = 0.0
        while self.queue and budget > _EPS:
            chunk = self.queue[0]
            take = min(chunk.amount, budget)
            self._waited(chunk, take, i - chunk.arrived)
            chunk.amount -= take
            budget -= take
            started += take
            self.backlog -= take
            if chunk.amount <= _EPS:
                self.backlog -= chunk.amount
                self.queue.popleft()
        if not self.queue:
            self.backlog = 0.0
        direct = min(arrivals, budget)
        started += direct
        rest = arrivals - direct
        room = max(0.0, self._queue_limit(path, ready) - self.backlog)
        admitted = min(rest, room)
        rejected = rest - admitted
        if admitted > _EPS:
            self.queue.append(_Chunk(i, admitted, self.episode))
            self.backlog += admitted
            self.queued += admitted
        working = started * latency
        waiting = (before + self.backlog) / 2.0
        conc = working + waiting
        if path == MODE_PROXY:  # everything came through the activator, which counts it
            pods = StatReport(working, working, started, started)
            self.pending = _Stats(pods if ready else None, StatReport(conc, 0.0, arrivals, 0.0))
        else:  # straight to the queue-proxies, where the waiting requests queue
            self.pending = _Stats(StatReport(conc, 0.0, arrivals, 0.0) if ready else None,
                                  StatReport())
        if i < 0:
            return
        rev = self.rev
        desired, ebc, in_panic = rev.decider_status()
        stable, panic = rev.observed()
        last = rev.last
        self.timeline.append(Second(
            t=i, rps=arrivals, latency_ms=latency * 1000.0,
            offered_concurrency=arrivals * latency, served_rps=started, rejected=rejected,
            concurrency=conc, waiting=waiting, stable=stable, panic=panic,
            desired=desired, want=SCALE_UNKNOWN if last is None else last.want,
            replicas=len(self.deploy), pods=len(self.deploy), ready=ready, in_panic=in_panic,
            mode=path, state=ACTIVATING if last is None else last.active, decision=decision,
            excess_burst_capacity=ebc))

    def _waited(self, chunk: _Chunk, amount: float, wait: int) -> None:
        self.wait_total += amount * wait
        self.max_wait = max(self.max_wait, wait)
        if chunk.episode is not None:
            chunk.episode.wait += amount * wait
            chunk.episode.max_wait = max(chunk.episode.max_wait, wait)

    def _result(self) -> SimulationResult:
        decisions = tuple(self.rev.decisions)
        return SimulationResult(
            scenario=self.sc, trace=self.trace, start=self.start,
            timeline=tuple(self.timeline), decisions=decisions,
            cold_starts=tuple(e.result() for e in self.episodes),
            panic_periods=panic_periods(decisions),
            queued_requests=self.queued, queue_wait_request_seconds=self.wait_total,
            max_queue_wait_s=self.max_wait, unserved_at_end=max(0.0, self.backlog),
            scale_changes=self.rev.scale_changes)


def panic_periods(decisions: tuple[Decision, ...]) -> tuple[PanicPeriod, ...]:
    """Panic periods from the decider's explained ticks, in order."""
    periods: list[list[int | None]] = []  # [start, end, peak]
    for d in decisions:
        i = instant(d.now_ns)
        if d.panic_transition == "enter":
            periods.append([i, None, d.result.desired_pod_count])
        elif d.panic_transition == "exit" and periods:
            periods[-1][1] = i
        if d.in_panic and periods and d.result.scale_valid:
            periods[-1][2] = max(periods[-1][2] or 0, d.result.desired_pod_count)
    return tuple(PanicPeriod(int(p[0] or 0), p[1], int(p[2] or 0)) for p in periods)


def zero_run_up(s: RevisionScaling) -> int:
    """Seconds the service needs to take one idle pod to its idle state (and its windows to
    empty): a stable window to go inactive, the grace period or retention to remove the pod,
    a stable window of silence; rounded up to an even number of seconds."""
    seconds = 2 * math.ceil(s.stable_window) + math.ceil(
        max(s.scale_to_zero_grace_period, s.last_pod_retention)) + 6
    return seconds + seconds % 2
