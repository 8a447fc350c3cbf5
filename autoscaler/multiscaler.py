"""Every revision's autoscaling, decided together: the service's core, with ``now`` passed in.

:class:`MultiScaler` plays the parts of upstream's MultiScaler (one decider per revision, a
tick every 2 s and an out-of-band tick on a poke) and of the KPA reconciler (bounds, scale to
and from zero, mode), for all revisions at once:

* revisions come from :meth:`sync` (upstream: the PA; annotations validated as the webhook
  does, so an invalid one is refused naming the key and the allowed range) and their pods from
  :meth:`report_pods` (upstream: the pod lister). The decider is created when the pod count is
  first known, so a restarted autoscaler starts in panic holding the ready pods (upstream
  reads the informer cache at creation); without a report it is created ``pods_grace``
  seconds after the sync, as if the revision had no pods;
* :meth:`tick` records the completed seconds' stats, reads every window at once, runs the
  vectorised decider for every revision (upstream's exact ``Scale``), then reconciles (runs
  :class:`~autoscaler.scaler.Scaler`) only the revisions whose decider status changed
  (upstream's "informed"), whose panic state changed, or whose timer is due;
* :meth:`decide` does the same for a few revisions now: the poke (scale from zero) and the
  burst fast path (see :mod:`autoscaler.collector`), on the partial current second.

Each reconcile yields an :class:`Outcome`: a :class:`DecisionRecord` to publish when the
decision changed, and the replicas to apply when the scaler says so (the value types live in
:mod:`autoscaler.revision_io`). Times: ``now`` float Unix seconds, ``now_ns`` int Unix
nanoseconds. Pure: no I/O, no clock.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np

from autoscaler import annotations as ann
from autoscaler.batch_decider import BatchDecider
from autoscaler.collector import Collector
from autoscaler.config import (DEFAULT_PROGRESS_DEADLINE, AutoscalerConfig, RevisionScaling,
                               resolve_revision)
from autoscaler.decider import initial_status, num_activators
from autoscaler.gotime import NS_PER_S
from autoscaler.revision_io import DecisionRecord, Outcome, RevisionInput, RevisionRejected
from autoscaler.scaler import MODE_PROXY, PodCounts, Scaler, ScalerResult
from autoscaler.spec import DeciderSpec

__all__ = ["DecisionRecord", "MultiScaler", "Outcome", "RevisionInput", "RevisionRejected",
           "TICK_INTERVAL"]

logger = logging.getLogger(__name__)

TICK_INTERVAL = 2.0
Key = tuple[str, str]
_NO_PODS = PodCounts()


@dataclass(eq=False)
class _Revision:
    spec: RevisionInput
    rs: RevisionScaling
    dspec: DeciderSpec
    col_row: int
    synced_at: float
    scaler: Scaler
    dec_row: int | None = None
    pods: PodCounts | None = None
    published: DecisionRecord | None = None
    last_result: ScalerResult | None = None
    requeue_at: float | None = None


class _Columns:
    """Per decider row numpy columns the tick reads, grown on demand."""

    _SPEC = {"col": (np.int64, -1), "rps": (bool, False), "scrape": (bool, True),
             "ready": (np.int64, 0), "target": (np.float64, 1.0), "threshold": (np.float64, 2.0),
             "panic_n": (np.float64, 6.0), "in_panic": (bool, False), "sc": (np.float64, 0.0),
             "pc": (np.float64, 0.0), "sr": (np.float64, 0.0), "pr": (np.float64, 0.0),
             "psc": (np.float64, 0.0), "psr": (np.float64, 0.0)}

    def __init__(self, capacity: int) -> None:
        self.a = {k: np.full(capacity, fill, dtype=dt) for k, (dt, fill) in self._SPEC.items()}

    def ensure(self, row: int) -> None:
        cap = len(self.a["col"])
        if row < cap:
            return
        new_cap = max(2 * cap, row + 1)
        for k, (dt, fill) in self._SPEC.items():
            grown = np.full(new_cap, fill, dtype=dt)
            grown[:cap] = self.a[k]
            self.a[k] = grown

    def reset(self, row: int) -> None:
        for k, (_, fill) in self._SPEC.items():
            self.a[k][row] = fill


class MultiScaler:
    """All revisions: windows, deciders, scalers; decisions out as :class:`Outcome`\\ s."""

    def __init__(self, config: AutoscalerConfig | None = None, *,
                 progress_deadline: float = DEFAULT_PROGRESS_DEADLINE, pods_grace: float = 2.0,
                 capacity: int = 1024, collector: Collector | None = None,
                 burst_decisions: bool = True) -> None:
        self.config = config or AutoscalerConfig()
        self.burst_decisions = burst_decisions
        self.progress_deadline = progress_deadline
        self.pods_grace = pods_grace
        self.collector = collector or Collector(capacity=capacity)
        self.decider = BatchDecider(row_capacity=capacity)
        self._revs: dict[Key, _Revision] = {}
        self._by_dec: dict[int, _Revision] = {}
        self._dec_of_col = np.full(capacity, -1, dtype=np.int64)
        self._cols = _Columns(capacity)
        self._live: np.ndarray | None = np.empty(0, dtype=np.int64)
        self._waiting: set[Key] = set()  # synced, no decider yet
        self._timers: list[tuple[float, int, Key]] = []
        self._timer_seq = 0
        self.ticks = 0
        self.out_of_band = 0
        self.last_tick: dict[str, float] = {}
        self._decided_at = 0.0
        self._reconciled = 0

    # -- revisions ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._revs)

    def __contains__(self, key: object) -> bool:
        return key in self._revs

    def keys(self) -> list[Key]:
        return list(self._revs)

    def spec(self, key: Key) -> RevisionInput | None:
        rev = self._revs.get(key)
        return None if rev is None else rev.spec

    def scaling(self, key: Key) -> RevisionScaling | None:
        """The revision's resolved knobs (None if unknown)."""
        rev = self._revs.get(key)
        return None if rev is None else rev.rs

    def published(self) -> list[DecisionRecord]:
        return [r.published for r in self._revs.values() if r.published is not None]

    def resolve(self, spec: RevisionInput) -> RevisionScaling:
        """Validate a revision's annotations against the config and resolve its knobs."""
        errors = ann.validate_annotations(spec.annotations, self.config)
        if errors:
            raise RevisionRejected("invalid annotations: " + "; ".join(str(e) for e in errors))
        rs = resolve_revision(self.config, spec.annotations, spec.container_concurrency,
                              spec.reachable, self.progress_deadline)
        if not rs.is_kpa:
            raise RevisionRejected(f"{ann.CLASS[0]}={rs.autoscaler_class!r}: not scaled by this "
                                   f"autoscaler; allowed: {ann.KPA}")
        return rs

    def sync(self, spec: RevisionInput, now: float) -> list[Outcome]:
        """Create, update or (``deleted``) remove a revision; raises RevisionRejected."""
        key = spec.key
        rev = self._revs.get(key)
        if spec.deleted:
            if rev is not None:
                self._remove(rev)
            return []
        if rev is not None and rev.spec == spec:
            return []
        rs = self.resolve(spec)
        if rev is None:
            col = self.collector.add(key, rs.stable_window, rs.panic_window,
                                     weighted=rs.aggregation_algorithm == ann.WEIGHTED_EXPONENTIAL,
                                     use_rps=rs.scaling_metric == ann.RPS)
            if col >= len(self._dec_of_col):
                grown = np.full(max(2 * len(self._dec_of_col), col + 1), -1, dtype=np.int64)
                grown[:len(self._dec_of_col)] = self._dec_of_col
                self._dec_of_col = grown
            self._dec_of_col[col] = -1
            self._revs[key] = _Revision(spec=spec, rs=rs, dspec=rs.decider_spec(), col_row=col,
                                        synced_at=now, scaler=Scaler(now))
            self._waiting.add(key)
            logger.info("revision %s/%s: collecting (%s, target %g, windows %gs/%gs)",
                        key[0], key[1], rs.scaling_metric, rs.target_value, rs.stable_window,
                        rs.panic_window, extra={"key": f"{key[0]}/{key[1]}"})
            return []
        return self._apply_scaling(rev, spec, rs, now)

    def _apply_scaling(self, rev: _Revision, spec: RevisionInput, rs: RevisionScaling,
                       now: float) -> list[Outcome]:
        old = rev.rs
        rev.spec = spec
        if rs == old:
            return []
        rev.rs, rev.dspec = rs, rs.decider_spec()
        if (rs.stable_window, rs.panic_window, rs.scaling_metric) != (
                old.stable_window, old.panic_window, old.scaling_metric):
            self.collector.update(spec.key, rs.stable_window, rs.panic_window, now,
                                  use_rps=rs.scaling_metric == ann.RPS)
        if rev.dec_row is None:
            return []
        self.decider.update(rev.dec_row, rev.dspec)  # the delay window stays as created
        self._fill_columns(rev)
        out = self._reconcile(rev, now, int(now * NS_PER_S))
        return [out] if out is not None else []

    def set_config(self, config: AutoscalerConfig, now: float) -> list[Outcome]:
        """A new ``config-autoscaler``: re-resolve every revision (upstream: global resync)."""
        self.config = config
        out: list[Outcome] = []
        for rev in list(self._revs.values()):
            rs = resolve_revision(config, rev.spec.annotations, rev.spec.container_concurrency,
                                  rev.spec.reachable, self.progress_deadline)
            out += self._apply_scaling(rev, rev.spec, rs, now)
        return out

    def report_pods(self, key: Key, pods: PodCounts, now: float) -> list[Outcome]:
        """The revision's pod counts changed; raises KeyError for an unknown revision."""
        rev = self._revs[key]
        if rev.pods == pods and rev.dec_row is not None:
            return []
        rev.pods = pods
        if rev.dec_row is None:
            if pods.ready > 0 and pods.pending == 0 and pods.not_ready == 0:
                rev.scaler.adopt(now)  # running before we knew it: an autoscaler restart
            self._create_decider(rev, now, pods.ready)
        else:
            self._cols.a["ready"][rev.dec_row] = pods.ready
        out = self._reconcile(rev, now, int(now * NS_PER_S))
        return [out] if out is not None else []

    def _create_decider(self, rev: _Revision, now: float, ready: int | None) -> None:
        row = self.decider.add(rev.dspec, int(now * NS_PER_S), ready)
        rev.dec_row = row
        self._by_dec[row] = rev
        self._cols.ensure(row)
        self._cols.reset(row)
        self._fill_columns(rev)
        self._cols.a["ready"][row] = ready or 0
        self._cols.a["in_panic"][row] = bool(self.decider.in_panic(np.array([row]))[0])
        self._dec_of_col[rev.col_row] = row
        self._waiting.discard(rev.spec.key)
        self._live = None

    def _fill_columns(self, rev: _Revision) -> None:
        a, r, rs = self._cols.a, rev.dec_row, rev.rs
        a["col"][r] = rev.col_row
        a["rps"][r] = rs.scaling_metric == ann.RPS
        a["scrape"][r] = not rs.activator_always_in_path  # upstream: a scrape target exists
        a["target"][r] = rs.target_value
        a["threshold"][r] = rs.panic_threshold
        a["panic_n"][r] = rs.panic_window

    def _remove(self, rev: _Revision) -> None:
        key = rev.spec.key
        logger.info("revision %s/%s: removed", *key, extra={"key": f"{key[0]}/{key[1]}"})
        if rev.dec_row is not None:
            self.decider.remove(rev.dec_row)
            del self._by_dec[rev.dec_row]
            self._cols.reset(rev.dec_row)
        self._dec_of_col[rev.col_row] = -1
        self.collector.remove(key)
        self._waiting.discard(key)
        del self._revs[key]
        self._live = None

    def _live_rows(self) -> np.ndarray:
        if self._live is None:
            self._live = np.array(sorted(self._by_dec), dtype=np.int64)
        return self._live

    # -- deciding -----------------------------------------------------------------------------

    def tick(self, now_ns: int, timer: Callable[[], float] | None = None) -> list[Outcome]:
        """The 2 s tick: every revision decided at once, then the changed ones reconciled.

        ``timer`` (e.g. ``time.perf_counter``, injected by the caller) measures the phases
        into :attr:`last_tick`: ``record``, ``decide`` (windows and decider for every revision)
        and ``reconcile`` (the scaler for the revisions that changed) seconds."""
        now = now_ns / NS_PER_S
        self.ticks += 1
        t0 = timer() if timer else 0.0
        self.collector.flush(now)
        for key in [k for k in self._waiting if now - self._revs[k].synced_at >= self.pods_grace]:
            self._create_decider(self._revs[key], now, None)
        out = self.due(now)  # timers that came since the last step
        t1 = timer() if timer else 0.0
        out += self._decide(self._live_rows(), now_ns, timer)
        if timer:
            t2 = timer()
            decided = self._decided_at - t1
            self.last_tick = {"record": t1 - t0, "decide": decided,
                              "reconcile": t2 - t1 - decided, "total": t2 - t0,
                              "revisions": float(len(self._by_dec)),
                              "reconciled": float(self._reconciled)}
        return out

    def decide(self, col_rows: Iterable[int], now_ns: int) -> list[Outcome]:
        """Decide now for the revisions of these collector rows (pokes and bursts)."""
        cols = np.unique(np.fromiter(col_rows, dtype=np.int64))
        cols = cols[cols < len(self._dec_of_col)]
        self.collector.flush_rows(cols.tolist())
        rows = self._dec_of_col[cols]
        rows = rows[rows >= 0]
        if not len(rows):
            return []
        self.out_of_band += 1
        return self._decide(np.sort(rows), now_ns, out_of_band=True)

    def _decide(self, rows: np.ndarray, now_ns: int, timer: Callable[[], float] | None = None,
                out_of_band: bool = False) -> list[Outcome]:
        self._reconciled = 0
        if not len(rows):
            self._decided_at = timer() if timer else 0.0
            return []
        now = now_ns / NS_PER_S
        a = self._cols.a
        col = a["col"][rows]
        wv = self.collector.values(now, col)
        rps = a["rps"][rows]
        stable = np.where(rps, wv.stable_rps, wv.stable_concurrency)
        panic = np.where(rps, wv.panic_rps, wv.panic_concurrency)
        metrics_ok = ~(wv.stable_empty & a["scrape"][rows])
        ready = a["ready"][rows]
        res = self.decider.scale(now_ns, rows, ready, stable, panic, metrics_ok=metrics_ok)
        valid = res.scale_valid
        a["sc"][rows] = np.where(valid, wv.stable_concurrency, a["sc"][rows])
        a["pc"][rows] = np.where(valid, wv.panic_concurrency, a["pc"][rows])
        a["sr"][rows] = np.where(valid, wv.stable_rps, a["sr"][rows])
        a["pr"][rows] = np.where(valid, wv.panic_rps, a["pr"][rows])
        panic_changed = res.in_panic != a["in_panic"][rows]
        a["in_panic"][rows] = res.in_panic

        # Hints for the collector: who pokes, and at what current-second total a revision
        # bursts (its panic value would cross the panic threshold, or lift a panic's count).
        target = a["target"][rows]
        r = np.maximum(1.0, ready.astype(np.float64))
        need = np.where(res.in_panic, target * np.maximum(res.desired_scale, 1),
                        target * (np.ceil(a["threshold"][rows] * r) - 1.0))
        n = a["panic_n"][rows]
        level = np.maximum(panic + n * (need - panic), 0.5 * target)
        # After an out-of-band decision the next burst check waits for the next tick: at most
        # one extra decision per revision per tick, whatever its stats do.
        level = np.where(valid & self.burst_decisions & (not out_of_band), level, np.inf)
        if out_of_band:
            self.collector.set_hints(col, res.desired_scale == 0, level, panic)
        else:
            self.collector.set_hints(col, res.desired_scale == 0, level, panic, now)

        # Observed values that moved since they were last published are republished too
        # (revision_io.observed_moved, vectorised), so status views do not go stale.
        psc, psr = a["psc"][rows], a["psr"][rows]
        moved = valid & ((np.abs(a["sc"][rows] - psc) > np.maximum(0.5, 0.1 * np.abs(psc)))
                         | (np.abs(a["sr"][rows] - psr) > np.maximum(0.5, 0.1 * np.abs(psr))))
        todo = np.flatnonzero(res.informed | panic_changed | moved)
        self._reconciled = len(todo)
        self._decided_at = timer() if timer else 0.0
        out: list[Outcome] = []
        if len(todo):
            by_dec = self._by_dec
            reconcile = self._reconcile
            for decided in zip(rows[todo].tolist(), res.desired_scale[todo].tolist(),
                               res.status_excess_burst_capacity[todo].tolist(),
                               res.num_activators[todo].tolist(),
                               res.in_panic[todo].tolist(), a["sc"][rows[todo]].tolist(),
                               a["pc"][rows[todo]].tolist(), a["sr"][rows[todo]].tolist()):
                o = reconcile(by_dec[decided[0]], now, now_ns, decided[1:])
                if o is not None:
                    out.append(o)
        return out

    def due(self, now: float) -> list[Outcome]:
        """Reconcile the revisions whose timer (upstream: re-enqueue after) has come."""
        out: list[Outcome] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, key = heapq.heappop(timers)
            rev = self._revs.get(key)
            if rev is None or rev.requeue_at != at or rev.dec_row is None:
                continue
            rev.requeue_at = None
            o = self._reconcile(rev, now, int(now * NS_PER_S))
            if o is not None:
                out.append(o)
        return out

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def _reconcile(self, rev: _Revision, now: float, now_ns: int,
                   decided: tuple[int, int, int, bool, float, float, float] | None = None
                   ) -> Outcome | None:
        """One PA reconcile. ``decided`` = (desired, EBC, activators, in panic, stable and
        panic concurrency, stable rps) from this tick; read from the arrays otherwise."""
        row = rev.dec_row
        assert row is not None
        pods = rev.pods or _NO_PODS
        if decided is None:
            st = self.decider.status(row)
            a = self._cols.a
            decided = (st.desired_scale, st.excess_burst_capacity,
                       num_activators(pods.ready, rev.dspec), bool(a["in_panic"][row]),
                       float(a["sc"][row]), float(a["pc"][row]), float(a["sr"][row]))
        desired, ebc, n_act, in_panic, sc, pc, sr = decided
        res = rev.scaler.reconcile(now, rev.rs, desired, ebc, pods, n_act)
        rev.last_result = res
        at = res.requeue_at
        if at is not None and (rev.requeue_at is None or at < rev.requeue_at
                               or rev.requeue_at <= now):
            rev.requeue_at = at
            self._timer_seq += 1
            heapq.heappush(self._timers, (at, self._timer_seq, rev.spec.key))
        spec = rev.spec
        record = DecisionRecord(spec.namespace, spec.revision, res.desired_scale, ebc, res.mode,
                                n_act, in_panic, pods.ready, sc, pc, sr, res.failure, now_ns)
        publish = not record.same_as(rev.published)
        if publish:
            rev.published = record
            a = self._cols.a
            a["psc"][row], a["psr"][row] = sc, sr
        scale = res.want if res.apply else None
        if not publish and scale is None:
            return None
        return Outcome(spec.key, record if publish else None, scale)

    # -- explaining ---------------------------------------------------------------------------

    def explain(self, key: Key, now: float) -> dict[str, object]:
        """Everything behind a revision's last decision, as JSON-ready data."""
        rev = self._revs[key]
        out: dict[str, object] = {
            "namespace": key[0], "revision": key[1],
            "spec": {**asdict(replace(rev.spec, annotations={})),
                     "annotations": dict(rev.spec.annotations)},
            "scaling": asdict(rev.rs),
            "pods": None if rev.pods is None else asdict(rev.pods),
            "windows": self.collector.describe(key, now),
            "scaler": rev.scaler.describe(now),
            "last_reconcile": None if rev.last_result is None else rev.last_result._asdict(),
            "published": None if rev.published is None else rev.published._asdict(),
            "requeue_at_unix": rev.requeue_at,
        }
        row = rev.dec_row
        if row is None:
            out["decider"] = {"created": False, "waiting_for_pods_since_unix": rev.synced_at,
                              "status": asdict(initial_status(rev.dspec))}
            return out
        d = self.decider.explain(row)
        out["decider"] = {
            "created": True,
            "status": asdict(self.decider.status(row)),
            "in_panic": self.decider.panic_time_ns(row) is not None,
            "panic_time_unix_nanos": self.decider.panic_time_ns(row),
            "max_panic_pods": self.decider.max_panic_pods(row),
            "last_tick": None if d is None else _decision_json(d),
        }
        return out

    def mode_of(self, key: Key) -> str:
        rev = self._revs[key]
        return rev.last_result.mode if rev.last_result is not None else MODE_PROXY

    def snapshot_rows(self) -> list[tuple[Key, RevisionInput, int | None, PodCounts | None,
                                          ScalerResult | None]]:
        """(key, spec, decider row, pods, last reconcile) for every revision (for metrics)."""
        return [(k, r.spec, r.dec_row, r.pods, r.last_result) for k, r in self._revs.items()]

    def columns(self) -> dict[str, np.ndarray]:
        return self._cols.a


def _decision_json(d: object) -> dict[str, object]:
    out = asdict(d)  # type: ignore[call-overload]
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
    return out
