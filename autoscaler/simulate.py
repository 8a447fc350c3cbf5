"""The offline simulator: replay a traffic trace through the autoscaler's own windows, decider
and a model of its scaler, and say what would have happened, second by second.

Each second ``i`` of the trace (the instant ``i`` starts it; second ``i`` runs to ``i + 1``):

1. **Stats** about second ``i - 1`` are recorded into the stable and panic bucket rings of the
   scaling metric (concurrency or rps; linear or weighted-exponential as the revision says)
   at the instant ``i``, as the autoscaler records them: the pods' stat (what queue-proxies report,
   minus what came through the activator), recorded only if some pod was ready, and the
   activator's stat (its in-flight and arrivals, the first report after its immediate message
   lowered by 1) while it tracks the revision. A non-zero activator stat while the decider's
   desired scale is 0 pokes the decider.
2. **Decider** (:class:`autoscaler.decider.Decider`): a tick every 2 s (instants 2, 4, ...)
   and on a poke, with the ready pod count and the window averages (no data -> an invalid
   tick, unless the target burst capacity is -1).
3. **Scaler** (:mod:`autoscaler.simulate_scaler`): bounds, scale to and from zero, SKS mode;
   pods are started (ready after the start-up delay) or removed.
4. **Activator**: the first request of a revision it does not track yet sends the immediate
   stat ``{concurrency 1, requests 1}`` and pokes the decider when its desired scale is 0.
5. **Load** (a fluid model): the second's arrivals join a FIFO backlog; ready pods work on at
   most ``pods x capacity`` requests at once (capacity = containerConcurrency, or the pod
   model's capacity when that is 0, else unlimited), so at most ``pods x capacity / latency``
   requests start per second; the rest wait. Waiting is bounded as upstream bounds it:
   10 x containerConcurrency per ready pod at the queue-proxies in serve mode, 10,000 per
   activator in proxy mode; beyond that requests are rejected (503). Concurrency (what pods
   and activator report) = requests being worked on + requests waiting.

Simplifications, all in the open: stats are exact revision totals (as the gRPC push gives
them; upstream's scrape samples at most 16 pods); the activators are modelled as one; the
path of in-flight requests follows the mode of the second; pods stop at once when removed;
waiting requests never time out (upstream fails them after the revision's timeout); the scaler
reconciles every second (upstream: on events and timers).

Instants are whole seconds of simulation time, mapped to Unix time ``T0_UNIX_S + i`` for the
windows and the decider. Pure: no I/O, no clock; :mod:`autoscaler.simulate_report` turns the
result into a summary.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from autoscaler.annotations import RPS, WEIGHTED_EXPONENTIAL
from autoscaler.decider import Decider, Decision, num_activators
from autoscaler.gotime import NS_PER_S
from autoscaler.simulate_scaler import PROXY, SERVE, Deployment, Reconciled, ReconcilerModel
from autoscaler.simulate_scenario import Scenario
from autoscaler.simulate_trace import Trace
from autoscaler.windows import TimedBuckets, WeightedBuckets

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
    "simulate",
]

#: Simulation instant 0 as a Unix second (even, so 2 s ticks fall on the delay window's slots).
T0_UNIX_S = 1_700_000_000
TICK_INTERVAL = 2
#: Requests one activator holds per revision (upstream throttler ``breakerQueueDepth``).
ACTIVATOR_QUEUE_DEPTH = 10_000
#: A queue-proxy queues up to this many x containerConcurrency requests.
QUEUE_PROXY_QUEUE_FACTOR = 10
_EPS = 1e-9


@dataclass(frozen=True)
class Start:
    """The revision at the start of the trace.

    ``zero``: scaled to zero long ago (inactive, behind the activator); ``new``: just created
    (initial-scale pods starting, as a fresh deployment); ``warm``: running for a long time at
    the first second's load with ``pods`` ready pods (None: as many as that load needs).
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
    stable: float | None  # window averages of the scaling metric (None: no data)
    panic: float | None
    desired: int  # the decider's desired scale (-1: no decision yet)
    want: int  # the scaler's answer
    replicas: int  # pods asked for
    pods: int  # pods that exist (starting + ready)
    ready: int
    in_panic: bool
    mode: str  # serve | proxy (activator in the path)
    state: str  # activating | active | inactive
    decision: str  # "", "tick", "poke", "tick+poke", "start"
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


def ns(instant: int) -> int:
    return (T0_UNIX_S + instant) * NS_PER_S


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
class _Stat:
    """The fields of upstream's ``Stat`` the windows read (revision totals)."""

    concurrency: float = 0.0
    proxied_concurrency: float = 0.0
    request_count: float = 0.0
    proxied_request_count: float = 0.0


@dataclass(frozen=True, slots=True)
class _Stats:
    """What the pods (None: none ready, nothing to scrape) and the activator report about
    one second."""

    pods: _Stat | None
    activator: _Stat


class _Run:
    def __init__(self, trace: Trace, scenario: Scenario, start: Start) -> None:
        self.trace = trace
        self.sc = scenario
        self.start = start
        s = scenario.scaling
        self.spec = s.decider_spec()
        ring = WeightedBuckets if s.aggregation_algorithm == WEIGHTED_EXPONENTIAL else TimedBuckets
        # Only the scaling metric's rings: the other metric's never reach the decider.
        self.observed = (ring(s.stable_window), ring(s.panic_window))
        self.by_rps = s.scaling_metric == RPS
        self.capacity = scenario.pod_capacity()
        self.deploy = Deployment(scenario.pod.startup_delay)
        self.queue: deque[_Chunk] = deque()
        self.backlog = 0.0
        self.tracked = False  # the activator tracks the revision
        self.first_adj = 0.0
        self.pending: _Stats | None = None
        self.decisions: list[Decision] = []
        self.timeline: list[Second] = []
        self.episodes: list[_Episode] = []
        self.episode: _Episode | None = None
        self.panics: list[list[int | None]] = []  # [start, end, peak]
        self.queued = 0.0
        self.wait_total = 0.0
        self.max_wait = 0
        self.scale_changes = 0
        self.decider, self.reconciler = self._begin()

    # --- start -------------------------------------------------------------------------

    def _begin(self) -> tuple[Decider, ReconcilerModel]:
        s, kind = self.sc.scaling, self.start.kind
        if kind == "new":
            rec = ReconcilerModel.new_revision(s, 0.0)
            self.deploy.scale(rec.replicas, 0.0)
            return Decider(self.spec, ns(0), 0), rec
        if kind == "zero":
            decider = Decider(self.spec, ns(0), 0)
            decider.scale(ns(0), ready_pods=0, stable=0.0, panic=0.0)  # settled at 0
            return decider, ReconcilerModel.idle_at_zero(s)
        conc0, rps0 = self.trace.concurrency(0), self.trace.rps[0]
        pods = self.start.pods
        if pods is None:
            load = rps0 if s.scaling_metric == RPS else conc0
            pods = max(1, s.apply_bounds(math.ceil(load / s.target_value), True))
        steady = _Stat(concurrency=conc0, request_count=rps0)
        for k in range(1 - math.ceil(s.stable_window), 1):  # a full window of steady load
            self._record(k, steady)
        self.deploy.add_ready(pods, 0.0)
        decider = Decider(self.spec, ns(0), pods)
        decider.set_panic_state(None, 0)  # running for long: no restart panic
        stable, panic = self._observe(0)
        decider.scale(ns(0), ready_pods=pods, stable=stable, panic=panic)
        decider.set_panic_state(None, 0)
        self.tracked = rps0 > 0
        return decider, ReconcilerModel.running(s, pods)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SimulationResult:
        for i in range(self.trace.seconds):
            kinds = ["start"] if i == 0 and self.start.kind != "new" else []
            poke = self._record_second(i) if i else False
            stable, panic = self._observe(i)
            if i % TICK_INTERVAL == 0 and i:
                kinds.append("tick")
            if poke:
                kinds.append("poke")
            if i and kinds:
                self._decide(i)
            rec = self._reconcile(i)
            if rec.mode == PROXY and self.trace.rps[i] > 0 and not self.tracked:
                self.tracked, self.first_adj = True, 1.0  # the activator's immediate stat
                self._record(i, _Stat(concurrency=1.0, request_count=1.0))
                if self.decider.status.desired_scale == 0:
                    if "poke" not in kinds:
                        kinds.append("poke")
                    self._decide(i)
                    rec = self._reconcile(i)
            self._serve(i, rec, "+".join(kinds), stable, panic)
        return self._result()

    def _record(self, instant: int, stat: _Stat) -> None:
        """As the collector records a Stat: what did not come through the activator."""
        t = ns(instant)
        if self.by_rps:
            value = stat.request_count - stat.proxied_request_count
        else:
            value = stat.concurrency - stat.proxied_concurrency
        for ring in self.observed:
            ring.record(t, value)

    def _record_second(self, i: int) -> bool:
        """Record the stats of second ``i - 1`` at instant ``i``; True = poke the decider."""
        st = self.pending
        if st is None:
            return False
        if st.pods is not None:  # a scrape finds no pod to ask when none is ready
            self._record(i, st.pods)
        if not self.tracked:
            return False
        act = st.activator
        reported = _Stat(concurrency=max(0.0, act.concurrency - self.first_adj),
                         request_count=act.request_count - self.first_adj)
        self._record(i, reported)
        self.first_adj = 0.0
        if act.concurrency == 0:
            self.tracked = False  # an idle period: the activator forgets the revision
        return reported.concurrency != 0 and self.decider.status.desired_scale == 0

    def _observe(self, i: int) -> tuple[float | None, float | None]:
        stable, panic = self.observed
        t = ns(i)
        if stable.is_empty(t) and not self.sc.scaling.activator_always_in_path:
            return None, None  # no data, and a scrape target exists: an invalid tick
        return stable.window_average(t), panic.window_average(t)

    def _decide(self, i: int) -> None:
        stable, panic = self._observe(i)
        d = self.decider.scale(ns(i), ready_pods=self.deploy.ready(i), stable=stable,
                               panic=panic)
        self.decisions.append(d)
        if d.panic_transition == "enter":
            self.panics.append([i, None, d.result.desired_pod_count])
        elif d.panic_transition == "exit" and self.panics:
            self.panics[-1][1] = i
        if d.in_panic and self.panics and d.result.scale_valid:
            peak = self.panics[-1][2] or 0
            self.panics[-1][2] = max(peak, d.result.desired_pod_count)

    def _reconcile(self, i: int) -> Reconciled:
        status = self.decider.status
        rec = self.reconciler.reconcile(float(i), status.desired_scale,
                                        status.excess_burst_capacity, self.deploy.ready(i))
        if self.deploy.scale(rec.replicas, float(i)):
            self.scale_changes += 1
        return rec

    # --- the load ----------------------------------------------------------------------

    def _queue_limit(self, mode: str, ready: int) -> float:
        cc = self.sc.container_concurrency
        if mode == PROXY and (cc > 0 or ready == 0):
            return float(ACTIVATOR_QUEUE_DEPTH * num_activators(ready, self.spec))
        if mode == SERVE and cc > 0:
            return float(QUEUE_PROXY_QUEUE_FACTOR * cc * ready)
        return math.inf

    def _serve(self, i: int, rec: Reconciled, decision: str, stable: float | None,
               panic: float | None) -> None:
        arrivals, latency = self.trace.rps[i], self.trace.latency[i]
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
        room = max(0.0, self._queue_limit(rec.mode, ready) - self.backlog)
        admitted = min(rest, room)
        rejected = rest - admitted
        if admitted > _EPS:
            self.queue.append(_Chunk(i, admitted, self.episode))
            self.backlog += admitted
            self.queued += admitted
        working = started * latency
        waiting = (before + self.backlog) / 2.0
        conc = working + waiting
        if rec.mode == PROXY:  # everything came through the activator, which counts it
            pods = _Stat(working, working, started, started)
            self.pending = _Stats(pods if ready else None, _Stat(conc, 0.0, arrivals, 0.0))
        else:  # straight to the queue-proxies, where the waiting requests queue
            self.pending = _Stats(_Stat(conc, 0.0, arrivals, 0.0) if ready else None, _Stat())
        d = self.decider
        self.timeline.append(Second(
            t=i, rps=arrivals, latency_ms=latency * 1000.0,
            offered_concurrency=arrivals * latency, served_rps=started, rejected=rejected,
            concurrency=conc, waiting=waiting, stable=stable, panic=panic,
            desired=d.status.desired_scale, want=rec.want, replicas=rec.replicas,
            pods=len(self.deploy), ready=ready, in_panic=d.in_panic, mode=rec.mode,
            state=rec.state, decision=decision,
            excess_burst_capacity=d.status.excess_burst_capacity))

    def _waited(self, chunk: _Chunk, amount: float, wait: int) -> None:
        self.wait_total += amount * wait
        self.max_wait = max(self.max_wait, wait)
        if chunk.episode is not None:
            chunk.episode.wait += amount * wait
            chunk.episode.max_wait = max(chunk.episode.max_wait, wait)

    def _result(self) -> SimulationResult:
        return SimulationResult(
            scenario=self.sc, trace=self.trace, start=self.start,
            timeline=tuple(self.timeline), decisions=tuple(self.decisions),
            cold_starts=tuple(e.result() for e in self.episodes),
            panic_periods=tuple(PanicPeriod(int(p[0] or 0), p[1], int(p[2] or 0))
                                for p in self.panics),
            queued_requests=self.queued, queue_wait_request_seconds=self.wait_total,
            max_queue_wait_s=self.max_wait, unserved_at_end=max(0.0, self.backlog),
            scale_changes=self.scale_changes)
