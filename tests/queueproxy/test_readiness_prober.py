"""The readiness prober's policy, on a fake timeline: aggressive 50 ms / 10 s polling, thresholds,
normal mode, shared runs. Checks are scripted fakes; the real ones are tested against real servers
in test_readiness_checks_functional.py."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from queueproxy.probe_checks import CheckFailed
from queueproxy.readiness import (
    Action,
    HTTPGetAction,
    ProbeSpec,
    ReadinessProber,
    TCPSocketAction,
)

T = TypeVar("T")

APP = TCPSocketAction(port=8080)
SIDECAR = HTTPGetAction(port=8090, path="/ready")


class FakeTime:
    """Virtual time: ``sleep`` parks the caller; ``run`` lets every task settle, then jumps the
    clock to the earliest sleeper. Nothing waits on the wall clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), next(self._seq), fut))
        await fut

    async def _settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def run(self, *coros: Coroutine[Any, Any, T]) -> list[T]:
        """Run the coroutines concurrently to completion in virtual time."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            await self._settle()
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            assert self._sleepers, "a task is blocked on something other than the fake clock"
            wake, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            fut.set_result(None)


class ScriptedCheck:
    """A fake check. Each action answers from its script: a list of booleans (the last one
    repeats), or a function of the current time. Each try may cost virtual time."""

    def __init__(
        self,
        time: FakeTime,
        scripts: dict[Action, list[bool] | Callable[[float], bool]],
        *,
        cost: float = 0.0,
    ) -> None:
        self.time = time
        self.scripts = scripts
        self.cost = cost
        self.tries: list[tuple[float, Action, float]] = []  # (start time, action, timeout)
        self._next = {action: 0 for action in scripts}

    def times(self, action: Action = APP) -> list[float]:
        return [round(t, 6) for t, a, _ in self.tries if a == action]

    async def __call__(self, action: Action, timeout: float) -> None:
        self.tries.append((self.time.now, action, timeout))
        script = self.scripts[action]
        if callable(script):
            ok = script(self.time.now)
        else:
            i = self._next[action]
            self._next[action] = i + 1
            ok = script[min(i, len(script) - 1)]
        if self.cost:
            await self.time.sleep(self.cost)
        if not ok:
            raise CheckFailed(f"{type(action).__name__} said no")


def make_prober(
    time: FakeTime, check: Callable[[Action, float], Awaitable[None]], *specs: ProbeSpec
) -> ReadinessProber:
    return ReadinessProber(specs, clock=time.clock, sleep=time.sleep, check=check)


def aggressive(action: Action = APP, threshold: int = 1) -> ProbeSpec:
    return ProbeSpec(action=action, success_threshold=threshold)


def ticks(n: int, start: float = 0.0, step: float = 0.05) -> list[float]:
    return [round(start + i * step, 6) for i in range(n)]


# --- no probes ----------------------------------------------------------------------------------


async def test_without_probes_the_container_is_always_ready() -> None:
    prober = ReadinessProber(())
    assert prober.last_ok and prober.ever_ready
    assert await prober.probe() is True


# --- aggressive mode ----------------------------------------------------------------------------


async def test_aggressive_mode_tries_at_once_then_every_50ms_until_the_nth_try_passes() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, False, False, False, True]})
    prober = make_prober(time, check, aggressive())
    assert not prober.last_ok and not prober.ever_ready

    assert await time.run(prober.probe()) == [True]

    assert check.times() == ticks(5)  # 0, 50, 100, 150, 200 ms
    assert {timeout for _, _, timeout in check.tries} == {0.1}
    assert time.now == pytest.approx(0.2)
    assert prober.last_ok and prober.ever_ready and prober.last_errors == ()


async def test_aggressive_mode_gives_up_after_10s_with_200_tries() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False]})
    prober = make_prober(time, check, aggressive())

    assert await time.run(prober.probe()) == [False]

    assert time.now == pytest.approx(10.0)
    assert len(check.tries) == 200 and check.times()[-1] == pytest.approx(9.95)
    assert not prober.last_ok and not prober.ever_ready
    (error,) = prober.last_errors
    assert error.startswith("failed 200 times in 10s: ") and "said no" in error


async def test_a_try_slower_than_the_interval_is_followed_at_once() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, False, True]}, cost=0.08)
    prober = make_prober(time, check, aggressive())

    assert await time.run(prober.probe()) == [True]

    assert check.times() == [0.0, 0.08, 0.16]


async def test_a_container_ready_after_3_seconds_is_seen_within_one_interval() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: lambda now: now >= 3.0 - 1e-9})
    prober = make_prober(time, check, aggressive())

    assert await time.run(prober.probe()) == [True]

    assert time.now == pytest.approx(3.0)
    assert len(check.tries) == 61


async def test_success_threshold_needs_consecutive_passes_and_a_failure_resets_the_streak() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [True, True, False, True, True, True]})
    prober = make_prober(time, check, aggressive(threshold=3))

    assert await time.run(prober.probe()) == [True]

    assert check.times() == ticks(6)


async def test_the_streak_survives_across_runs() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [True]})
    prober = make_prober(time, check, aggressive(threshold=3))

    assert await time.run(prober.probe()) == [True]
    assert len(check.tries) == 3
    assert await time.run(prober.probe()) == [True]
    assert len(check.tries) == 4  # the streak (now 4) already meets the threshold: one try


async def test_a_streak_cut_short_by_the_deadline_carries_into_the_next_run() -> None:
    time = FakeTime()
    # 199 failures, then passes: only the try at 9.95 s passes before the deadline.
    check = ScriptedCheck(time, {APP: [False] * 199 + [True]})
    prober = make_prober(time, check, aggressive(threshold=2))

    assert await time.run(prober.probe()) == [False]
    assert time.now == pytest.approx(10.0)
    assert "fewer than 2 passes in a row" in prober.last_errors[0]

    assert await time.run(prober.probe()) == [True]
    assert len(check.tries) == 201  # one more pass completes the streak


async def test_a_failed_run_resets_the_streak_for_the_next_run() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [True, True, True] + [False] * 200 + [True]})
    prober = make_prober(time, check, aggressive(threshold=3))

    assert await time.run(prober.probe()) == [True]
    assert await time.run(prober.probe()) == [False]
    start = time.now
    assert await time.run(prober.probe()) == [True]
    assert check.times()[-3:] == ticks(3, start=start)  # three fresh passes needed
    assert prober.ever_ready and prober.last_ok


async def test_a_zero_success_threshold_passes_on_the_first_success() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, True]})
    prober = make_prober(time, check, aggressive(threshold=0))

    assert await time.run(prober.probe()) == [True]
    assert check.times() == ticks(2)


# --- normal mode --------------------------------------------------------------------------------


async def test_normal_mode_makes_one_try_with_timeout_seconds() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, True]})
    spec = ProbeSpec(action=APP, period_seconds=10, timeout_seconds=3, success_threshold=5)
    prober = make_prober(time, check, spec)

    assert await time.run(prober.probe()) == [False]
    assert check.tries == [(0.0, APP, 3.0)] and time.now == 0.0
    assert await time.run(prober.probe()) == [True]  # successThreshold is the kubelet's business here
    assert len(check.tries) == 2


# --- several probes -----------------------------------------------------------------------------


async def test_all_probes_run_concurrently_and_all_must_pass() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, False, True], SIDECAR: [False, True]})
    prober = make_prober(time, check, aggressive(APP), aggressive(SIDECAR))

    assert await time.run(prober.probe()) == [True]

    assert check.times(APP) == ticks(3) and check.times(SIDECAR) == ticks(2)
    assert time.now == pytest.approx(0.1)


async def test_one_failing_probe_fails_the_run_but_every_probe_finishes() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [True], SIDECAR: [False]})
    normal = ProbeSpec(action=SIDECAR, period_seconds=5, timeout_seconds=1)
    prober = make_prober(time, check, aggressive(APP), normal)

    assert await time.run(prober.probe()) == [False]

    assert check.times(APP) == [0.0] and check.times(SIDECAR) == [0.0]
    assert prober.last_errors == ("HTTPGetAction said no",)


# --- sharing, errors, lifecycle -----------------------------------------------------------------


async def test_concurrent_callers_share_one_run_and_its_result() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, False, True]})
    prober = make_prober(time, check, aggressive())

    async def late_caller() -> bool:
        await time.sleep(0.06)  # joins while the first run is polling
        return await prober.probe()

    assert await time.run(prober.probe(), prober.probe(), late_caller()) == [True, True, True]
    assert check.times() == ticks(3)

    assert await time.run(prober.probe()) == [True]  # a new call after the run ends starts a new run
    assert len(check.tries) == 4


async def test_a_cancelled_caller_does_not_cancel_the_shared_run() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False, True]})
    prober = make_prober(time, check, aggressive())
    impatient = asyncio.ensure_future(prober.probe())
    await asyncio.sleep(0)

    async def cancel_then_probe() -> bool:
        impatient.cancel()
        return await prober.probe()

    assert await time.run(cancel_then_probe()) == [True]
    assert impatient.cancelled()
    assert check.times() == ticks(2) and prober.last_ok


async def test_an_unexpected_error_in_a_check_is_a_failed_try() -> None:
    time = FakeTime()

    async def broken(action: Action, timeout: float) -> None:
        raise RuntimeError("boom")

    prober = make_prober(time, broken, ProbeSpec(action=APP, period_seconds=1))
    assert await time.run(prober.probe()) == [False]
    assert prober.last_errors == ("RuntimeError: boom",)


async def test_last_ok_follows_the_latest_run_and_ever_ready_stays() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [True, False, True]})
    prober = make_prober(time, check, ProbeSpec(action=APP, period_seconds=1))

    assert await time.run(prober.probe()) == [True]
    assert prober.last_ok and prober.ever_ready
    assert await time.run(prober.probe()) == [False]
    assert not prober.last_ok and prober.ever_ready
    assert await time.run(prober.probe()) == [True]
    assert prober.last_ok


async def test_aclose_cancels_a_run_under_way() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, {APP: [False]})
    prober = make_prober(time, check, aggressive())
    caller = asyncio.ensure_future(prober.probe())
    for _ in range(10):
        await asyncio.sleep(0)  # the run makes its first try and parks in the fake sleep

    await prober.aclose()

    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not prober.last_ok and len(check.tries) == 1
