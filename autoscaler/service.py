"""The running autoscaler: the multiscaler driven by a clock, wired to its inputs and outputs.

:class:`AutoscalerService` is what the transports talk to (stat ingestion, revision and pod
updates, explanations) and what drives time:

* every second, just after the second ends, the pending stats of the finished second are
  recorded and due timers (scale-to-zero, activation time-out) run;
* every :data:`~autoscaler.multiscaler.TICK_INTERVAL` seconds (even Unix seconds) the tick
  decides for every revision at once;
* a poke or a burst spotted while ingesting decides for that revision on the next turn of
  the event loop (several stats arriving together are decided together).

Each outcome goes to the :class:`~autoscaler.publisher.DecisionHub` (a changed decision) and
the :class:`~autoscaler.publisher.ScaleDispatcher` (replicas to apply).

Time: ``clock()`` returns Unix nanoseconds (``time.time_ns`` by default; tests inject a fake
and call :meth:`step` themselves instead of :meth:`run`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from autoscaler.collector import IngestResult
from autoscaler.config import AutoscalerConfig
from autoscaler.gotime import NS_PER_S
from autoscaler.multiscaler import (TICK_INTERVAL, DecisionRecord, MultiScaler, Outcome,
                                    RevisionInput)
from autoscaler.publisher import DecisionHub, ScaleDispatcher
from autoscaler.scaler import MODE_SERVE, PodCounts
from proto import kdp_pb2, stat_pb2

__all__ = ["AutoscalerService", "decision_proto"]

logger = logging.getLogger(__name__)

#: How long after a second ends its stats are recorded (late pushes still make it).
RECORD_DELAY = 0.05


def decision_proto(d: DecisionRecord) -> kdp_pb2.Decision:
    return kdp_pb2.Decision(
        namespace=d.namespace, revision=d.revision, desired_pods=d.desired_pods,
        excess_burst_capacity=d.excess_burst_capacity,
        mode=kdp_pb2.MODE_SERVE if d.mode == MODE_SERVE else kdp_pb2.MODE_PROXY,
        num_activators=d.num_activators, in_panic=d.in_panic, ready_pods=d.ready_pods,
        stable_concurrency=d.stable_concurrency, panic_concurrency=d.panic_concurrency,
        stable_rps=d.stable_rps, failure=d.failure, unix_nanos=d.unix_nanos)


class AutoscalerService:
    def __init__(self, multiscaler: MultiScaler, hub: DecisionHub,
                 dispatcher: ScaleDispatcher, *, clock: Callable[[], int] = time.time_ns,
                 tick_interval: float = TICK_INTERVAL) -> None:
        self.ms = multiscaler
        self.hub = hub
        self.dispatcher = dispatcher
        self.clock = clock
        self.tick_interval = tick_interval
        self.last_tick_seconds = 0.0
        self.tick_seconds: list[float] = []  # recent tick durations (bounded)
        self.tick_phases: list[dict[str, float]] = []  # recent tick phase timings
        self.pokes = 0
        self.bursts = 0
        self.on_tick: list[Callable[[float], None]] = []
        self._fast: set[int] = set()
        self._fast_scheduled = False
        self._last_step_s: int | None = None

    # -- inputs -------------------------------------------------------------------------------

    def ingest(self, messages: Iterable[stat_pb2.WireStatMessage], source: str) -> IngestResult:
        """Stats from a transport; pokes and bursts are decided on the next loop turn."""
        res = self.ms.collector.ingest(messages, self.clock() / NS_PER_S, source)
        if res.pokes or res.bursts:
            self.pokes += len(res.pokes)
            self.bursts += len(res.bursts)
            self._fast.update(res.pokes)
            self._fast.update(res.bursts)
            if not self._fast_scheduled:
                self._fast_scheduled = True
                asyncio.get_running_loop().call_soon(self._decide_fast)
        return res

    def reject(self, source: str, reason: str, count: int = 1) -> None:
        self.ms.collector.reject(source, reason, count)

    def sync_revision(self, spec: RevisionInput) -> None:
        """Raises :class:`~autoscaler.multiscaler.RevisionRejected` for an invalid revision."""
        known = spec.key in self.ms
        self._emit(self.ms.sync(spec, self.clock() / NS_PER_S))
        if spec.deleted and known:
            self.hub.forget(spec.key)
            self.dispatcher.forget(spec.key)

    def report_pods(self, key: tuple[str, str], pods: PodCounts) -> None:
        """Raises KeyError for a revision never synced."""
        self._emit(self.ms.report_pods(key, pods, self.clock() / NS_PER_S))

    def set_config(self, config: AutoscalerConfig, old: AutoscalerConfig | None = None) -> None:
        """A valid new ``config-autoscaler`` (a ConfigStore listener's signature)."""
        logger.info("config-autoscaler changed; re-resolving %d revisions", len(self.ms))
        self._emit(self.ms.set_config(config, self.clock() / NS_PER_S))

    def explain(self, key: tuple[str, str]) -> dict[str, object]:
        now = self.clock() / NS_PER_S
        out = self.ms.explain(key, now)
        out["scale_target"] = self.dispatcher.status(key)
        return out

    # -- time ---------------------------------------------------------------------------------

    def step(self, now_ns: int) -> list[Outcome]:
        """The once-a-second work at ``now_ns``: record, timers, and the tick when due."""
        now = now_ns / NS_PER_S
        sec = int(now // 1)
        ticking = sec % int(self.tick_interval) == 0 and sec != self._last_step_s
        self._last_step_s = sec
        if ticking:
            out = self.tick(now_ns)
        else:
            self.ms.collector.flush(now)
            out = self.ms.due(now)
            self._emit(out)
        return out

    def tick(self, now_ns: int) -> list[Outcome]:
        started = time.perf_counter()
        out = self.ms.tick(now_ns, timer=time.perf_counter)
        phases = dict(self.ms.last_tick)
        emitted = time.perf_counter()
        self._emit(out)
        spent = time.perf_counter() - started
        phases["publish"] = spent - (emitted - started)
        phases["total"] = spent
        self.last_tick_seconds = spent
        self.tick_seconds.append(spent)
        del self.tick_seconds[:-256]
        self.tick_phases.append(phases)
        del self.tick_phases[:-256]
        for cb in self.on_tick:
            cb(spent)
        return out

    async def run(self) -> None:
        """Step just after every wall-clock second, forever (until cancelled)."""
        while True:
            now_ns = self.clock()
            next_s = now_ns // NS_PER_S + 1
            await asyncio.sleep(max(0.0, (next_s + RECORD_DELAY) - now_ns / NS_PER_S))
            try:
                self.step(self.clock())
            except Exception:
                logger.exception("autoscaler step failed")

    def _decide_fast(self) -> None:
        self._fast_scheduled = False
        rows, self._fast = self._fast, set()
        try:
            self._emit(self.ms.decide(rows, self.clock()))
        except Exception:
            logger.exception("out-of-band decision failed")

    # -- outputs ------------------------------------------------------------------------------

    def _emit(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.decision is not None:
                self.hub.publish(decision_proto(o.decision))
            if o.scale is not None:
                self.dispatcher.set(o.key, o.scale)
