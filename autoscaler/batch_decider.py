"""Vectorised KPA decider: one call decides for every revision at once.

:class:`BatchDecider` keeps each revision's spec, panic state, scale-down delay window and
MultiScaler status as a row of numpy columns, and :meth:`BatchDecider.scale` runs upstream's
``Scale(now)`` for many rows in one pass of array operations. Every answer equals the scalar
reference :class:`autoscaler.decider.Decider` (tested on the conformance corpus and on random
inputs); :meth:`BatchDecider.explain` rebuilds the same :class:`~autoscaler.decider.Decision`.

``now_ns`` is an ``int`` of Unix nanoseconds, one instant per call (the 2 s tick for all
revisions, or a poke for one). Pure: no I/O, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoscaler import gotime
from autoscaler.arena import Arena
from autoscaler.batch_max import BatchMaxWindows
from autoscaler.decider import (DELAY_GRANULARITY, INVALID_METRICS, INVALID_POD_COUNT,
                                INVALID_RESULT, DeciderStatus, Decision, ScaleResult,
                                initial_status)
from autoscaler.gotime import GO_ZERO_UNIX_S as ZERO_S
from autoscaler.gotime import NS_PER_S, np_go_int32
from autoscaler.spec import DeciderSpec

__all__ = ["BatchDecider", "BatchScaleResult"]

_F, _I, _B, _I8 = np.float64, np.int64, bool, np.int8
_TRANSITIONS = (None, "enter", "extend", "exit")
_REASONS = (None, INVALID_POD_COUNT, INVALID_METRICS)
# Stable windows are at most an hour; clamping the seconds difference keeps ns math in int64.
_MAX_SECONDS_DIFF = 1 << 33

_SPEC_FIELDS = {
    "up_rate": (_F, 0.0), "down_rate": (_F, 0.0), "target": (_F, 0.0), "total": (_F, 0.0),
    "tbc": (_F, 0.0), "act_cap": (_F, 0.0), "activation": (_I, 0), "threshold": (_F, 0.0),
    "sw_ns": (_I, 0), "reachable": (_B, False),
}
_STATE_FIELDS = {
    "p_sec": (_I, ZERO_S), "p_nsec": (_I, 0), "max_pp": (_I, 0), "delay_row": (_I, -1),
    "st_ds": (_I, -1), "st_ebc": (_I, 0),
}
_LAST_FIELDS = {  # the last tick of each row, for explain()
    "x_has": (_B, False), "x_sec": (_I, 0), "x_nsec": (_I, 0), "x_reason": (_I8, 0),
    "x_ready": (_I, 0), "x_stable": (_F, 0.0), "x_panic": (_F, 0.0), "x_rp": (_F, 0.0),
    "x_up": (_F, 0.0), "x_down": (_F, 0.0), "x_dspc": (_F, 0.0), "x_dppc": (_F, 0.0),
    "x_ds": (_I, 0), "x_dp": (_I, 0), "x_over": (_B, False), "x_trans": (_I8, 0),
    "x_undelayed": (_I, 0), "x_desired": (_I, 0), "x_ebc": (_I, 0), "x_nact": (_I, 0),
    "x_informed": (_B, False),
}


@dataclass(frozen=True, slots=True)
class BatchScaleResult:
    """One :meth:`BatchDecider.scale` call; every array is aligned with ``rows``."""

    rows: np.ndarray
    desired_pod_count: np.ndarray  # 0 where invalid
    excess_burst_capacity: np.ndarray  # 0 where invalid
    scale_valid: np.ndarray
    num_activators: np.ndarray
    in_panic: np.ndarray  # after the tick
    desired_scale: np.ndarray  # status after the tick (-1: no decision yet)
    status_excess_burst_capacity: np.ndarray
    informed: np.ndarray  # the status changed: re-reconcile the revision


class BatchDecider:
    """Deciders for many revisions, one row each."""

    def __init__(self, *, row_capacity: int = 16) -> None:
        self._arena = Arena({**_SPEC_FIELDS, **_STATE_FIELDS, **_LAST_FIELDS}, {},
                            row_capacity=row_capacity)
        self._delay = BatchMaxWindows(DELAY_GRANULARITY, row_capacity=row_capacity)
        self._specs: dict[int, DeciderSpec] = {}

    def __len__(self) -> int:
        return len(self._arena)

    # -- rows ---------------------------------------------------------------------------------

    def add(self, spec: DeciderSpec, now_ns: int, ready_pods: int | None) -> int:
        """A decider created at ``now_ns`` (see :class:`~autoscaler.decider.Decider`); its row id."""
        r = self._arena.add(0)
        R = self._arena.row
        self._set_spec(r, spec)
        ready = ready_pods or 0
        if ready > 1:
            R["p_sec"][r], R["p_nsec"][r] = divmod(now_ns, NS_PER_S)
        R["max_pp"][r] = ready
        if gotime.duration_ns(spec.scale_down_delay) > 0:
            R["delay_row"][r] = self._delay.add(spec.scale_down_delay)
        st = initial_status(spec)
        R["st_ds"][r], R["st_ebc"][r] = st.desired_scale, st.excess_burst_capacity
        return r

    def remove(self, row: int) -> None:
        d = int(self._arena.row["delay_row"][row])
        self._arena.remove(row)
        self._specs.pop(row, None)
        if d >= 0:
            self._delay.remove(d)

    def update(self, row: int, spec: DeciderSpec) -> None:
        """Swap a row's spec; panic state, delay window and status carry over."""
        self._arena.check_rows(np.array([row]))
        self._set_spec(row, spec)

    def _set_spec(self, r: int, spec: DeciderSpec) -> None:
        R = self._arena.row
        R["up_rate"][r] = spec.max_scale_up_rate
        R["down_rate"][r] = spec.max_scale_down_rate
        R["target"][r] = spec.target_value
        R["total"][r] = spec.total_value
        R["tbc"][r] = spec.target_burst_capacity
        R["act_cap"][r] = spec.activator_capacity
        R["activation"][r] = spec.activation_scale
        R["threshold"][r] = spec.panic_threshold
        R["sw_ns"][r] = gotime.duration_ns(spec.stable_window)
        R["reachable"][r] = spec.reachable
        self._specs[r] = spec

    def set_panic_state(self, row: int, panic_time_ns: int | None, max_panic_pods: int) -> None:
        """Overwrite a row's panic state (``None`` = not panicking), e.g. to restore it."""
        self._arena.check_rows(np.array([row]))
        R = self._arena.row
        sec, nsec = (ZERO_S, 0) if panic_time_ns is None else divmod(panic_time_ns, NS_PER_S)
        R["p_sec"][row], R["p_nsec"][row], R["max_pp"][row] = sec, nsec, max_panic_pods

    # -- per-row views ------------------------------------------------------------------------

    def spec(self, row: int) -> DeciderSpec:
        return self._specs[row]

    def status(self, row: int) -> DeciderStatus:
        R = self._arena.row
        return DeciderStatus(int(R["st_ds"][row]), int(R["st_ebc"][row]))

    def in_panic(self, rows: np.ndarray) -> np.ndarray:
        R = self._arena.row
        return ~((R["p_sec"][rows] == ZERO_S) & (R["p_nsec"][rows] == 0))

    def panic_time_ns(self, row: int) -> int | None:
        R = self._arena.row
        if not self.in_panic(np.array([row]))[0]:
            return None
        return int(R["p_sec"][row]) * NS_PER_S + int(R["p_nsec"][row])

    def max_panic_pods(self, row: int) -> int:
        return int(self._arena.row["max_pp"][row])

    # -- the tick -----------------------------------------------------------------------------

    def scale(self, now_ns: int, rows: np.ndarray, ready_pods: np.ndarray,
              stable: np.ndarray, panic: np.ndarray, *, pod_ok: np.ndarray | None = None,
              metrics_ok: np.ndarray | None = None) -> BatchScaleResult:
        """Decide at ``now_ns`` for ``rows`` (distinct row ids).

        Per row: ``ready_pods`` (a not-found pod list counts as 0), the revision-wide
        ``stable``/``panic`` window averages, ``pod_ok`` False when the pod count failed and
        ``metrics_ok`` False when the metrics are unavailable. A row with either flag False
        gets an invalid result and keeps all its state.
        """
        A = self._arena
        R = A.row
        rows = np.asarray(rows, dtype=_I).ravel()
        A.check_rows(rows)
        n = len(rows)
        ready = np.broadcast_to(np.asarray(ready_pods, dtype=_I), (n,))
        stable = np.broadcast_to(np.asarray(stable, dtype=_F), (n,))
        panic = np.broadcast_to(np.asarray(panic, dtype=_F), (n,))
        pod_ok = np.ones(n, _B) if pod_ok is None else np.broadcast_to(np.asarray(pod_ok, _B), (n,))
        valid = pod_ok.copy()
        if metrics_ok is not None:
            valid &= np.broadcast_to(np.asarray(metrics_ok, _B), (n,))
        now_sec, now_nsec = divmod(now_ns, NS_PER_S)
        ready = np.where(pod_ok, ready, 0)
        readyf = ready.astype(_F)

        up_rate, down_rate, target = R["up_rate"][rows], R["down_rate"][rows], R["target"][rows]
        total, tbc = R["total"][rows], R["tbc"][rows]
        activation, reachable = R["activation"][rows], R["reachable"][rows]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            rp = np.maximum(1.0, readyf)
            max_up = np.ceil(up_rate * rp)
            max_down = np.where(reachable, np.floor(rp / down_rate), 0.0)
            dspc = np.ceil(stable / target)
            dppc = np.ceil(panic / target)
            ds = np_go_int32(np.minimum(np.maximum(dspc, max_down), max_up))
            dp = np_go_int32(np.minimum(np.maximum(dppc, max_down), max_up))
            lift = activation > 1
            ds = np.where(lift & (dspc > 0) & (activation > ds), activation, ds)
            dp = np.where(lift & (dppc > 0) & (activation > dp), activation, dp)
            over = dppc / rp >= R["threshold"][rows]
            ebc_f = np.where(tbc == 0, 0.0, np.where(
                tbc > 0, np.floor(readyf * total - tbc - panic), -1.0))
            capacity = readyf * total
            capacity = np.where(tbc > 0, capacity + tbc, capacity)
            n_act = np.where(tbc == 0, 2, np_go_int32(
                np.maximum(2.0, np.ceil(capacity / R["act_cap"][rows]))))
        ebc = np_go_int32(ebc_f)

        # Panic state machine: enter or extend while over the threshold; exit once the
        # stable window has passed since the last tick that was over it.
        p_sec, p_nsec = R["p_sec"][rows], R["p_nsec"][rows]
        was_panicking = ~((p_sec == ZERO_S) & (p_nsec == 0))
        trans = np.zeros(n, dtype=_I8)
        trans[valid & over] = np.where(was_panicking[valid & over], 2, 1)
        cand = np.flatnonzero(valid & was_panicking & ~over)
        if len(cand):
            dsec = np.clip(now_sec - p_sec[cand], -_MAX_SECONDS_DIFF, _MAX_SECONDS_DIFF)
            elapsed = dsec * NS_PER_S + (now_nsec - p_nsec[cand])
            trans[cand[elapsed > R["sw_ns"][rows[cand]]]] = 3
        set_now = (trans == 1) | (trans == 2)
        p_sec = np.where(set_now, now_sec, np.where(trans == 3, ZERO_S, p_sec))
        p_nsec = np.where(set_now, now_nsec, np.where(trans == 3, 0, p_nsec))
        in_panic = ~((p_sec == ZERO_S) & (p_nsec == 0))
        max_pp = np.where(trans == 3, 0, R["max_pp"][rows])

        ratchet = valid & in_panic
        both = np.maximum(ds, dp)
        max_pp = np.where(ratchet & (both > max_pp), both, max_pp)
        desired = np.where(ratchet, max_pp, ds)
        undelayed = desired.copy()
        delay_rows = R["delay_row"][rows]
        held = np.flatnonzero(valid & reachable & (delay_rows >= 0))
        if len(held):
            self._delay.record(delay_rows[held], now_sec, desired[held])
            desired[held] = self._delay.current(delay_rows[held])

        old_ds, old_ebc = R["st_ds"][rows], R["st_ebc"][rows]
        informed = valid & ((old_ds != desired) | ((old_ebc < 0) != (ebc < 0)))
        st_ds = np.where(valid, desired, old_ds)
        st_ebc = np.where(valid, ebc, old_ebc)

        v = np.flatnonzero(valid)
        rv = rows[v]
        R["p_sec"][rv], R["p_nsec"][rv], R["max_pp"][rv] = p_sec[v], p_nsec[v], max_pp[v]
        R["st_ds"][rows], R["st_ebc"][rows] = st_ds, st_ebc
        self._remember(rows, now_sec, now_nsec, valid, pod_ok, ready, stable, panic, rp,
                       max_up, max_down, dspc, dppc, ds, dp, over, trans, undelayed, desired,
                       ebc, n_act, informed)
        in_panic_after = np.where(valid, in_panic, was_panicking)
        return BatchScaleResult(
            rows=rows, desired_pod_count=np.where(valid, desired, 0),
            excess_burst_capacity=np.where(valid, ebc, 0), scale_valid=valid,
            num_activators=n_act, in_panic=in_panic_after, desired_scale=st_ds,
            status_excess_burst_capacity=st_ebc, informed=informed)

    def _remember(self, rows: np.ndarray, now_sec: int, now_nsec: int, valid: np.ndarray,
                  pod_ok: np.ndarray, ready: np.ndarray, stable: np.ndarray,
                  panic: np.ndarray, rp: np.ndarray, max_up: np.ndarray,
                  max_down: np.ndarray, dspc: np.ndarray, dppc: np.ndarray, ds: np.ndarray,
                  dp: np.ndarray, over: np.ndarray, trans: np.ndarray, undelayed: np.ndarray,
                  desired: np.ndarray, ebc: np.ndarray, n_act: np.ndarray,
                  informed: np.ndarray) -> None:
        R = self._arena.row
        R["x_has"][rows] = True
        R["x_sec"][rows], R["x_nsec"][rows] = now_sec, now_nsec
        R["x_reason"][rows] = np.where(valid, 0, np.where(pod_ok, 2, 1))
        for name, arr in (("x_ready", ready), ("x_stable", stable), ("x_panic", panic),
                          ("x_rp", rp), ("x_up", max_up), ("x_down", max_down),
                          ("x_dspc", dspc), ("x_dppc", dppc), ("x_ds", ds), ("x_dp", dp),
                          ("x_over", over), ("x_trans", trans), ("x_undelayed", undelayed),
                          ("x_desired", desired), ("x_ebc", ebc), ("x_nact", n_act),
                          ("x_informed", informed)):
            R[name][rows] = arr

    def explain(self, row: int) -> Decision | None:
        """The last tick of ``row`` as a :class:`Decision` (``None`` before its first tick)."""
        self._arena.check_rows(np.array([row]))
        R = self._arena.row
        if not R["x_has"][row]:
            return None

        def f(name: str) -> float:
            return float(R[name][row])

        def i(name: str) -> int:
            return int(R[name][row])

        now_ns = i("x_sec") * NS_PER_S + i("x_nsec")
        reason = _REASONS[i("x_reason")]
        status = self.status(row)
        in_panic = self.panic_time_ns(row) is not None
        common = dict(now_ns=now_ns, status=status, num_activators=i("x_nact"),
                      in_panic=in_panic, max_panic_pods=self.max_panic_pods(row))
        if reason is not None:
            return Decision(result=INVALID_RESULT, informed=False,
                            ready_pods=None if reason == INVALID_POD_COUNT else i("x_ready"),
                            observed_stable=None, observed_panic=None, invalid_reason=reason,
                            **common)
        return Decision(
            result=ScaleResult(i("x_desired"), i("x_ebc"), True),
            informed=bool(R["x_informed"][row]), ready_pods=i("x_ready"),
            observed_stable=f("x_stable"), observed_panic=f("x_panic"), effective_ready=f("x_rp"),
            max_scale_up=f("x_up"), max_scale_down=f("x_down"), raw_stable_pods=f("x_dspc"),
            raw_panic_pods=f("x_dppc"), stable_pods=i("x_ds"), panic_pods=i("x_dp"),
            over_panic_threshold=bool(R["x_over"][row]),
            panic_transition=_TRANSITIONS[i("x_trans")],
            undelayed_pod_count=i("x_undelayed"),
            delayed=i("x_desired") != i("x_undelayed"), **common)
