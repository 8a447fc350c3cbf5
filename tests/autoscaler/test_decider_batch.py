"""The vectorised decider decides exactly as the scalar reference, row by row.

Checked on every tick of the conformance corpus and on random fleets of revisions ticked
together (with pokes for subsets, errors, spec updates, and revisions coming and going);
``explain(row)`` must rebuild the scalar decider's :class:`Decision` field for field.
"""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from autoscaler import gotime
from autoscaler.batch_decider import BatchDecider
from autoscaler.decider import Decider, Decision
from autoscaler.replay import spec_from_json
from autoscaler.spec import DeciderSpec
from tests.autoscaler.conformance import corpus

NS = gotime.NS_PER_S


def check_row(batch: BatchDecider, row: int, res: object, i: int, ref: Decider,
              dec: Decision) -> None:
    got = batch.explain(row)
    assert got == dec
    r = dec.result
    assert int(res.desired_pod_count[i]) == r.desired_pod_count
    assert int(res.excess_burst_capacity[i]) == r.excess_burst_capacity
    assert bool(res.scale_valid[i]) is r.scale_valid
    assert int(res.num_activators[i]) == dec.num_activators
    assert bool(res.in_panic[i]) is ref.in_panic
    assert int(res.desired_scale[i]) == ref.status.desired_scale
    assert int(res.status_excess_burst_capacity[i]) == ref.status.excess_burst_capacity
    assert bool(res.informed[i]) is dec.informed
    assert batch.status(row) == ref.status
    assert batch.panic_time_ns(row) == ref.panic_time_ns
    assert batch.max_panic_pods(row) == ref.max_panic_pods


@pytest.mark.parametrize("scenario", corpus.load(corpus.DECIDER), ids=lambda s: s["name"])
def test_scalar_and_batch_agree_on_every_corpus_tick(scenario: dict) -> None:
    t0 = scenario["t0_unix_s"] * NS + scenario["t0_nanos"]
    spec = spec_from_json(scenario["spec"])
    ready0 = None if scenario["initial_pod_error"] else scenario["initial_ready_pods"]
    ref = Decider(spec, t0, ready0)
    batch = BatchDecider()
    row = batch.add(spec, t0, ready0)
    if scenario["state_override"]:
        o = scenario["state_override"]
        pt = None if o["panic_time_s"] is None else t0 + gotime.duration_ns(o["panic_time_s"])
        ref.set_panic_state(pt, o["max_panic_pods"])
        batch.set_panic_state(row, pt, o["max_panic_pods"])
    initial = scenario["initial"]
    assert ref.in_panic is initial["in_panic"] is bool(batch.in_panic(np.array([row]))[0])
    assert ref.max_panic_pods == initial["max_panic_pods"] == batch.max_panic_pods(row)
    assert batch.explain(row) is None
    for tick, want in zip(scenario["ticks"], corpus.expected_ticks(scenario)):
        if "update_spec" in tick:
            ref.update(spec_from_json(tick["update_spec"]))
            batch.update(row, spec_from_json(tick["update_spec"]))
        now = t0 + gotime.duration_ns(tick["t"])
        pod_ok = tick.get("pod_error") != "error"
        metrics_ok = "metric_error" not in tick
        dec = ref.scale(now, ready_pods=tick["ready_pods"] if pod_ok else None,
                        stable=tick["stable"] if metrics_ok else None,
                        panic=tick["panic"] if metrics_ok else None)
        res = batch.scale(now, [row], [tick["ready_pods"]], [tick["stable"]], [tick["panic"]],
                          pod_ok=[pod_ok], metrics_ok=[metrics_ok])
        check_row(batch, row, res, 0, ref, dec)
        assert dec.result.desired_pod_count == want["desired_pod_count"]
        assert ref.status.desired_scale == want["status"]["desired_scale"]


def random_spec(rng: random.Random) -> DeciderSpec:
    total = float(rng.randint(1, 200))
    return DeciderSpec(
        max_scale_up_rate=rng.choice([1000.0, 1.1, 1.5, 2.0, 10.0]),
        max_scale_down_rate=rng.choice([2.0, 1.1, 1.5, 4.0, 100.0]),
        scaling_metric=rng.choice(["concurrency", "rps"]),
        target_value=max(0.01, total * rng.choice([0.7, 0.7, rng.uniform(0.5, 1.0)])),
        total_value=total,
        target_burst_capacity=rng.choice([-1.0, 0.0, 10.0, 211.0, 1000.0]),
        activator_capacity=rng.choice([100.0, float(rng.randint(25, 500))]),
        activation_scale=rng.randint(0, 5),
        panic_threshold=rng.choice([2.0, rng.randint(110, 1000) / 100.0]),
        stable_window=float(rng.choice([6, 60, 60, rng.randint(6, 300)])),
        scale_down_delay=float(rng.choice([0, 0, 2, 5, 15, rng.randint(1, 120)])),
        initial_scale=rng.choice([0, 1, 2, 3, 10]),
        reachable=rng.random() < 0.85)


@pytest.mark.parametrize("seed", range(8))
def test_a_fleet_decided_together_matches_scalar_deciders(seed: int) -> None:
    rng = random.Random(f"fleet:{seed}")
    t = rng.choice([1_700_000_000, 1_787_315_304]) * NS + rng.randrange(NS)
    batch = BatchDecider(row_capacity=2)
    fleet: dict[int, tuple[Decider, float]] = {}  # row -> (reference, load scale)

    def add() -> None:
        spec, ready = random_spec(rng), rng.choice([None, 0, 1, 2, 5, 30])
        row = batch.add(spec, t, ready)
        assert row not in fleet
        fleet[row] = (Decider(spec, t, ready), spec.target_value * rng.uniform(0.2, 20))

    for _ in range(rng.randint(20, 60)):
        add()
    for step in range(150):
        t += rng.choice([2000, 2000, 2000, 1000, 1950, 2300, 30_000]) * 1_000_000
        rows = sorted(fleet)
        if step % 5 == 4:  # a poke for a few revisions only
            rows = rng.sample(rows, k=min(3, len(rows)))
        n = len(rows)
        wave = 1 + np.sin(step / 7.0)
        ready = [rng.choice([0, 1, 2, 3, 5, 8, 20]) for _ in rows]
        stable = [round(fleet[r][1] * wave * rng.uniform(0.5, 1.5), 3) for r in rows]
        panic = [s * rng.choice([0.0, 0.5, 1.0, 1.0, 3.0, 10.0]) for s in stable]
        pod_ok = [rng.random() > 0.03 for _ in rows]
        metrics_ok = [rng.random() > 0.08 for _ in rows]
        for r in rows:
            if rng.random() < 0.02:
                old = fleet[r][0].spec
                new = replace(random_spec(rng), scale_down_delay=old.scale_down_delay)
                fleet[r][0].update(new)
                batch.update(r, new)
        res = batch.scale(t, rows, ready, stable, panic, pod_ok=pod_ok, metrics_ok=metrics_ok)
        for i, r in enumerate(rows):
            dec = fleet[r][0].scale(t, ready_pods=ready[i] if pod_ok[i] else None,
                                    stable=stable[i] if metrics_ok[i] else None,
                                    panic=panic[i] if metrics_ok[i] else None)
            check_row(batch, r, res, i, fleet[r][0], dec)
        assert len(res.rows) == n
        if rng.random() < 0.1:  # revisions come and go
            gone = rng.choice(sorted(fleet))
            batch.remove(gone)
            del fleet[gone]
            add()
    assert len(batch) == len(fleet)


def test_explain_names_why_a_tick_was_invalid() -> None:
    batch = BatchDecider()
    row = batch.add(DeciderSpec(), 0, 1)
    batch.scale(2 * NS, [row], [3], [0.0], [0.0], pod_ok=[False])
    assert batch.explain(row).invalid_reason == "pod_count_error"
    assert batch.explain(row).ready_pods is None
    batch.scale(4 * NS, [row], [3], [0.0], [0.0], metrics_ok=[False])
    assert batch.explain(row).invalid_reason == "metrics_unavailable"
    assert batch.status(row).desired_scale == -1


def test_removed_rows_are_refused_and_their_delay_windows_freed() -> None:
    batch = BatchDecider()
    row = batch.add(DeciderSpec(scale_down_delay=30.0), 0, 0)
    batch.remove(row)
    assert len(batch) == 0
    with pytest.raises(KeyError):
        batch.scale(2 * NS, [row], [1], [1.0], [1.0])
