"""The values the multiscaler takes and gives: a revision as the runtime describes it, the
decision it publishes, and one reconcile's outcome. Pure data, no behaviour beyond comparison.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["DecisionRecord", "Key", "Outcome", "RevisionInput", "RevisionRejected"]

Key = tuple[str, str]


class RevisionRejected(ValueError):
    """A revision this autoscaler will not scale (invalid annotations, another class)."""


@dataclass(frozen=True)
class RevisionInput:
    """What the runtime says about a revision (``kdp.v1.RevisionSpec``)."""

    namespace: str
    revision: str
    service: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int = 0
    reachable: bool = True
    deleted: bool = False

    @property
    def key(self) -> Key:
        return self.namespace, self.revision


class DecisionRecord(NamedTuple):
    """A published decision (``kdp.v1.Decision``)."""

    namespace: str
    revision: str
    desired_pods: int
    excess_burst_capacity: int
    mode: str
    num_activators: int
    in_panic: bool
    ready_pods: int
    stable_concurrency: float
    panic_concurrency: float
    stable_rps: float
    failure: str
    unix_nanos: int

    def same_as(self, other: DecisionRecord | None) -> bool:
        """Equal in everything a subscriber acts on (EBC by sign, as upstream informs), and
        the observed stable concurrency and rps have not moved (``observed_moved``)."""
        return other is not None and self[2] == other[2] and self[4:8] == other[4:8] \
            and self[11] == other[11] and (self[3] < 0) == (other[3] < 0) \
            and not observed_moved(self[8], other[8]) and not observed_moved(self[10], other[10])


def observed_moved(new: float, old: float) -> bool:
    """An observed value worth republishing (status views read it): more than 10 %, and
    more than 0.5, away from the one last published."""
    return abs(new - old) > max(0.5, 0.1 * abs(old))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One reconcile: publish ``decision`` (if not None), apply ``scale`` (if not None)."""

    key: Key
    decision: DecisionRecord | None
    scale: int | None
