"""The simulator's autoscaler: the service's own core driving one revision, and the pods it scales.

:class:`SimulatedRevision` runs one revision through :class:`~autoscaler.multiscaler.MultiScaler`
(the autoscaler service's pure core: the collector's windows, the vectorised decider and
:class:`~autoscaler.scaler.Scaler`), called the way :class:`~autoscaler.service.AutoscalerService`
calls it:

* :meth:`SimulatedRevision.push`: stats in (``Collector.ingest``, as from the gRPC push or the
  activator's websocket); a poke or a burst it spots is decided at once (``MultiScaler.decide``);
* :meth:`SimulatedRevision.step`: the once-a-second work (``AutoscalerService.step``): on even
  instants the tick (record the completed seconds, run due timers, decide); otherwise record
  the completed seconds and run due timers;
* pod counts go in with ``MultiScaler.report_pods`` whenever they change, as the local
  runtime's supervisor reports them; every outcome's replicas are applied to the
  :class:`Deployment` at once, and the new counts reported back.

So every rule (recording ``value - proxied value``, holding back the second in progress, the
no-data rule, pokes, bursts, reconcile triggers and timers, bounds, scale to and from zero, the
SKS mode) is the service's; nothing here decides anything. What is the simulator's own:

* :class:`Deployment`: pods asked for by replica count, ready a start-up delay later (rounded
  up to a whole second), removed at once (not-ready ones first, then the newest);
* the request path: the activator is in the path when the scaler's SKS mode is proxy **or no
  pod is ready** (upstream's SKS reconciler forces proxy mode without ready endpoints, and the
  scaler's ``activator_in_path`` reads it the same way; the published mode itself is not
  forced, as in the service).

Instants are whole seconds of simulation time, ``T0_UNIX_S + i`` in Unix time. Pure: no I/O,
no clock.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from autoscaler.collector import PUSH
from autoscaler.decider import Decision
from autoscaler.gotime import NS_PER_S
from autoscaler.multiscaler import TICK_INTERVAL, MultiScaler, Outcome, RevisionInput
from autoscaler.scaler import MODE_PROXY, MODE_SERVE, PodCounts, ScalerResult
from autoscaler.simulate_scenario import Scenario
from proto import stat_pb2

__all__ = [
    "KEY",
    "MODE_PROXY",
    "MODE_SERVE",
    "T0_UNIX_S",
    "Deployment",
    "SimulatedRevision",
    "StatReport",
]

#: Simulation instant 0 as a Unix second (even, so the ticks fall on even instants).
T0_UNIX_S = 1_700_000_000
#: The simulated revision's (namespace, name).
KEY = ("simulate", "revision")
_TICK = int(TICK_INTERVAL)


def unix(instant: int) -> float:
    return float(T0_UNIX_S + instant)


@dataclass(frozen=True, slots=True)
class StatReport:
    """One reporter's upstream ``Stat`` fields about one second (revision totals)."""

    concurrency: float = 0.0
    proxied_concurrency: float = 0.0
    request_count: float = 0.0
    proxied_request_count: float = 0.0


class Deployment:
    """The revision's pods: each is ready ``startup_delay`` after it is asked for."""

    def __init__(self, startup_delay: float) -> None:
        self._delay = startup_delay
        self._ready_at: list[float] = []  # ascending

    def __len__(self) -> int:
        return len(self._ready_at)

    def ready(self, now: float) -> int:
        return sum(1 for t in self._ready_at if t <= now)

    def counts(self, now: float) -> PodCounts:
        """What the runtime reports: ready pods, and the starting ones as pending."""
        ready = self.ready(now)
        return PodCounts(ready=ready, pending=len(self._ready_at) - ready)

    def add_ready(self, count: int, now: float) -> None:
        """Pods that are ready already (a warm start)."""
        self._ready_at = sorted([now] * count + self._ready_at)

    def scale(self, replicas: int, now: float) -> int:
        """Start or remove pods to have ``replicas``; returns the change."""
        change = replicas - len(self._ready_at)
        if change > 0:
            ready_at = float(math.ceil(now + self._delay))
            self._ready_at.extend([ready_at] * change)
        elif change < 0:
            del self._ready_at[change:]  # the latest to be ready go first: starting, then newest
        return change


class SimulatedRevision:
    """One revision under the service's :class:`MultiScaler`, with its :class:`Deployment`.

    Created (synced) at instant ``at``. ``decisions`` collects the decider's explained ticks
    from instant ``record_from`` on; ``scale_changes`` counts applied replica changes from then.
    """

    def __init__(self, scenario: Scenario, deployment: Deployment, at: int,
                 record_from: int = 0) -> None:
        self.scenario = scenario
        self.deployment = deployment
        self.record_from = record_from
        self.ms = MultiScaler(scenario.config, progress_deadline=scenario.progress_deadline,
                              capacity=1)
        spec = RevisionInput(*KEY, annotations=dict(scenario.annotations),
                             container_concurrency=scenario.container_concurrency)
        self.ms.sync(spec, unix(at))
        resolved = self.ms.scaling(KEY)
        if resolved != scenario.scaling:  # one resolution of the knobs, or a bug to see
            raise AssertionError(f"the service resolved {resolved}, the scenario "
                                 f"{scenario.scaling}")
        self.decisions: list[Decision] = []
        self.latest: Decision | None = None
        """The decider's latest explained tick (before ``record_from`` too)."""
        self.scale_changes = 0
        self._reported: PodCounts | None = None

    # -- inputs -------------------------------------------------------------------------------

    def report_pods(self, instant: int) -> None:
        """Report the deployment's pod counts if they changed (always the first time)."""
        for _ in range(8):  # an applied scale changes the counts: report those too
            pods = self.deployment.counts(float(instant))
            if pods == self._reported:
                return
            self._reported = pods
            self._scale(self.ms.report_pods(KEY, pods, unix(instant)), instant)
        raise AssertionError("pod reports and scale outcomes did not settle")

    def push(self, reports: Iterable[tuple[str, int, StatReport]], instant: int) -> list[str]:
        """Stats ``(sender, second, report)`` arriving at ``instant``, each stamped with its
        second; a poke or burst decides now. Returns the kinds of decision made."""
        messages = [stat_pb2.WireStatMessage(
            namespace=KEY[0], name=KEY[1], stat=stat_pb2.Stat(
                pod_name=sender, average_concurrent_requests=r.concurrency,
                average_proxied_concurrent_requests=r.proxied_concurrency,
                request_count=r.request_count, proxied_request_count=r.proxied_request_count,
                timestamp=T0_UNIX_S + second)) for sender, second, r in reports]
        if not messages:
            return []
        res = self.ms.collector.ingest(messages, unix(instant), PUSH)
        if res.accepted != len(messages):
            raise AssertionError(f"the collector refused simulated stats: "
                                 f"{self.ms.collector.rejected}")
        kinds = (["poke"] if res.pokes else []) + (["burst"] if res.bursts else [])
        if kinds:
            before = self.ms.out_of_band
            self._apply(self.ms.decide(res.pokes + res.bursts, self._ns(instant)), instant)
            if self.ms.out_of_band == before:
                return []  # no decider yet: nothing was decided
            self._remember(instant)
        return kinds

    def prefill(self, report: StatReport, seconds: int, until: int) -> None:
        """Windows as after ``seconds`` of ``report`` before instant ``until`` (a warm start):
        the pods' stats of those seconds recorded, nothing decided."""
        for second in range(until - seconds, until):
            self.push([("pods", second, report)], second + 1)
        self.ms.collector.flush(unix(until))

    def forget_restart_panic(self) -> None:
        """A decider created with several ready pods starts in panic (an autoscaler restart);
        a revision running for long is not panicking."""
        row = self._decider_row()
        if row is not None:
            self.ms.decider.set_panic_state(row, None, 0)

    # -- time ---------------------------------------------------------------------------------

    def step(self, instant: int) -> list[str]:
        """The service's once-a-second work at ``instant``; returns ["tick"] on a tick."""
        if instant % _TICK == 0:
            self._apply(self.ms.tick(self._ns(instant)), instant)
            if self._decider_row() is not None:
                self._remember(instant)
                return ["tick"]
            return []
        now = unix(instant)
        self.ms.collector.flush(now)
        self._apply(self.ms.due(now), instant)
        return []

    # -- views --------------------------------------------------------------------------------

    @property
    def last(self) -> ScalerResult | None:
        """The scaler's latest reconcile."""
        (_, _, _, _, last), = self.ms.snapshot_rows()
        return last

    @property
    def mode(self) -> str:
        """The SKS mode the scaler last published."""
        return self.ms.mode_of(KEY)

    def path(self, instant: int) -> str:
        """Where requests go: through the activator in proxy mode or with no pod ready."""
        if self.mode == MODE_PROXY or self.deployment.ready(float(instant)) == 0:
            return MODE_PROXY
        return MODE_SERVE

    def decider_status(self) -> tuple[int, int, bool]:
        """(desired scale, excess burst capacity, in panic); (-1, 0, False) before a decider."""
        row = self._decider_row()
        if row is None:
            return -1, 0, False
        st = self.ms.decider.status(row)
        return st.desired_scale, st.excess_burst_capacity, \
            self.ms.decider.panic_time_ns(row) is not None

    def observed(self) -> tuple[float | None, float | None]:
        """The window averages the latest decision read (None: none yet, or no data)."""
        d = self.latest
        if d is None:
            return None, None
        return d.observed_stable, d.observed_panic

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _ns(instant: int) -> int:
        return (T0_UNIX_S + instant) * NS_PER_S

    def _decider_row(self) -> int | None:
        (_, _, row, _, _), = self.ms.snapshot_rows()
        return row

    def _remember(self, instant: int) -> None:
        row = self._decider_row()
        d = None if row is None else self.ms.decider.explain(row)
        self.latest = d
        if d is not None and instant >= self.record_from:
            self.decisions.append(d)

    def _apply(self, outcomes: list[Outcome], instant: int) -> None:
        """Apply the outcomes' replicas, then report the pods if that changed them."""
        self._scale(outcomes, instant)
        self.report_pods(instant)

    def _scale(self, outcomes: list[Outcome], instant: int) -> None:
        for o in outcomes:
            if o.scale is not None and self.deployment.scale(o.scale, float(instant)) \
                    and instant >= self.record_from:
                self.scale_changes += 1
