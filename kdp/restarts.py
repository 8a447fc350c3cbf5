"""Restart policy for pod containers and crash-loop detection for revisions.

* :class:`RestartBackoff` — per container, kubelet-style: the first restart waits
  ``initial``, each further one ``factor`` times longer up to ``maximum``; a run of at least
  ``reset_after`` seconds starts the sequence again.
* :class:`CrashLoop` — per revision: consecutive *failed starts* (a container exited before its
  pod became ready) reaching ``threshold`` make the revision *failing*, with a reason users
  can read; any pod becoming ready clears it. A command that cannot be executed at all fails
  the revision at once.

Pure: no I/O; callers pass ``now`` (float seconds from the loop's clock).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BackoffPolicy", "CrashLoop", "RestartBackoff", "exit_reason"]

_MAX_OUTPUT = 300


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 20.0
    reset_after: float = 10.0
    """A container that ran at least this long restarts after ``initial`` again."""

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ValueError(f"initial={self.initial!r}; allowed: >= 0 seconds")
        if not self.factor >= 1:
            raise ValueError(f"factor={self.factor!r}; allowed: >= 1")
        if not self.maximum >= self.initial:
            raise ValueError(f"maximum={self.maximum!r}; allowed: >= initial ({self.initial})")
        if not self.reset_after > 0:
            raise ValueError(f"reset_after={self.reset_after!r}; allowed: > 0 seconds")


class RestartBackoff:
    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self.restarts = 0
        self._streak = 0

    def next_delay(self, started_at: float, now: float) -> float:
        """The container started at ``started_at`` exited at ``now``: how long to wait."""
        p = self.policy
        self.restarts += 1
        if now - started_at >= p.reset_after:
            self._streak = 0
        delay = min(p.initial * p.factor ** self._streak, p.maximum)
        self._streak += 1
        return delay


def exit_reason(container: str, how: str, output: list[str] | tuple[str, ...]) -> str:
    """``user-container exited with code 1: <last output lines>``."""
    lines = [ln.strip() for ln in output if ln.strip()][-3:]
    text = " | ".join(lines)
    if len(text) > _MAX_OUTPUT:
        text = "..." + text[-_MAX_OUTPUT:]
    return f"{container} {how}" + (f": {text}" if text else "")


class CrashLoop:
    def __init__(self, threshold: int = 2) -> None:
        if threshold < 1:
            raise ValueError(f"crash-loop threshold={threshold!r}; allowed: >= 1")
        self.threshold = threshold
        self.failed_starts = 0
        self.last_reason = ""
        self.since: float | None = None
        self._fatal = False

    @property
    def failure(self) -> str:
        """Non-empty while the revision is failing: the reason for users."""
        if self._fatal:
            return self.last_reason
        if self.failed_starts >= self.threshold:
            return f"CrashLoopBackOff: {self.last_reason} (failed to start {self.failed_starts} times)"
        return ""

    def start_failed(self, reason: str, now: float) -> bool:
        """A container exited before its pod was ready. True when this changed ``failure``."""
        before = self.failure
        self.failed_starts += 1
        self.last_reason = reason
        if self.since is None:
            self.since = now
        return self.failure != before

    def cannot_start(self, reason: str, now: float) -> bool:
        """The command cannot be executed at all: failing at once."""
        before = self.failure
        self._fatal = True
        self.last_reason = f"cannot start: {reason}"
        if self.since is None:
            self.since = now
        return self.failure != before

    def ready(self) -> bool:
        """A pod became ready. True when this cleared a failure."""
        before = self.failure
        self.failed_starts = 0
        self._fatal = False
        self.since = None
        return before != ""
