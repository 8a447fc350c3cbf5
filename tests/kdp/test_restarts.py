"""Restart backoff and crash-loop detection, as timelines with explicit ``now``."""
from __future__ import annotations

import pytest

from kdp.restarts import BackoffPolicy, CrashLoop, RestartBackoff, exit_reason


def test_restarts_back_off_exponentially_up_to_the_maximum() -> None:
    b = RestartBackoff(BackoffPolicy(initial=0.5, factor=2.0, maximum=3.0, reset_after=10.0))
    now = 100.0
    delays = []
    for _ in range(5):
        delays.append(b.next_delay(started_at=now, now=now + 0.1))  # each run lasts 0.1 s
        now += 1.0
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.restarts == 5


def test_a_long_enough_run_resets_the_backoff() -> None:
    b = RestartBackoff(BackoffPolicy(initial=0.5, factor=2.0, maximum=30.0, reset_after=10.0))
    assert b.next_delay(0.0, 1.0) == 0.5
    assert b.next_delay(2.0, 3.0) == 1.0
    assert b.next_delay(4.0, 14.0) == 0.5  # ran 10 s
    assert b.next_delay(15.0, 15.5) == 1.0


@pytest.mark.parametrize(("kwargs", "fragment"), [
    pytest.param({"initial": -1.0}, "initial=-1.0", id="negative initial"),
    pytest.param({"factor": 0.5}, "factor=0.5", id="shrinking factor"),
    pytest.param({"initial": 2.0, "maximum": 1.0}, "maximum=1.0", id="maximum below initial"),
    pytest.param({"reset_after": 0.0}, "reset_after=0.0", id="zero reset"),
])
def test_bad_backoff_policies_are_refused_naming_the_field(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        BackoffPolicy(**kwargs)


def test_consecutive_failed_starts_make_the_revision_fail_with_the_reason() -> None:
    c = CrashLoop(threshold=2)
    assert not c.start_failed("user-container exited with code 1: boom", now=1.0)
    assert c.failure == ""
    assert c.start_failed("user-container exited with code 1: boom", now=1.7)
    assert c.failure == "CrashLoopBackOff: user-container exited with code 1: boom (failed to start 2 times)"
    assert c.since == 1.0


def test_a_ready_pod_clears_the_failure() -> None:
    c = CrashLoop(threshold=1)
    c.start_failed("x", now=0.0)
    assert c.failure
    assert c.ready()
    assert c.failure == "" and c.since is None
    assert not c.ready()


def test_a_command_that_cannot_run_fails_at_once() -> None:
    c = CrashLoop(threshold=5)
    assert c.cannot_start("user-container: [Errno 2] No such file or directory: 'nope'", now=3.0)
    assert c.failure == "cannot start: user-container: [Errno 2] No such file or directory: 'nope'"


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold=0"):
        CrashLoop(threshold=0)


def test_exit_reasons_quote_the_last_lines_of_output_bounded() -> None:
    assert exit_reason("user-container", "exited with code 3", ["", "a", "b", "c", "d", "  "]) == \
        "user-container exited with code 3: b | c | d"
    assert exit_reason("queue-proxy", "killed by SIGKILL", []) == "queue-proxy killed by SIGKILL"
    long = exit_reason("x", "exited with code 1", ["y" * 1000])
    assert long.startswith("x exited with code 1: ...") and len(long) < 340
