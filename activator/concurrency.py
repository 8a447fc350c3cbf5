"""Per-revision request accounting for the activator's reports to the autoscaler.

Upstream ``pkg/activator/handler/concurrency_reporter.go``, as a pure core (callers pass
``now``; the ticker and the network live in :mod:`activator.reporter`):

* every request that passed revision lookup is counted from arrival to the end of its
  response, *including* the time it waits for a pod (time-weighted, the kernel's
  :class:`~queueproxy.stats.RequestStats`);
* the first request for a revision that has no entry returns ``poke=True``: the caller sends
  one stat at once with concurrency 1 and count 1 (the scale-from-zero trigger);
* :meth:`ConcurrencyTracker.report` cuts every revision's window: concurrency
  ``max(avg - adj, 0)`` and count ``count - adj``, where ``adj`` is 1 in the first report after
  the poke (already counted) and 0 afterwards;
* a revision whose window averaged zero and that has no request in flight is dropped after
  that report (its report is still sent), so its next request pokes again.

Pure: no I/O, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from activator.revisions import RevisionKey
from queueproxy.stats import RequestStats

__all__ = ["ConcurrencyTracker", "RevisionStat"]


@dataclass(frozen=True, slots=True)
class RevisionStat:
    key: RevisionKey
    concurrency: float
    request_count: float


class _Entry:
    __slots__ = ("key", "stats", "first_adj", "refs")

    def __init__(self, key: RevisionKey, now: float) -> None:
        self.key = key
        self.stats = RequestStats(now)
        self.first_adj = 1.0
        self.refs = 0


class ConcurrencyTracker:
    def __init__(self) -> None:
        self._entries: dict[RevisionKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def request_in(self, key: RevisionKey, now: float) -> tuple[_Entry, bool]:
        """Count an arrival. Returns the handle for :meth:`request_out` and whether to poke."""
        entry = self._entries.get(key)
        poke = entry is None
        if entry is None:
            entry = self._entries[key] = _Entry(key, now)
        entry.refs += 1
        entry.stats.request_in(now)
        return entry, poke

    @staticmethod
    def request_out(entry: _Entry, now: float) -> None:
        entry.stats.request_out(now)
        entry.refs -= 1

    @staticmethod
    def poke(key: RevisionKey) -> RevisionStat:
        return RevisionStat(key, 1.0, 1.0)

    def report(self, now: float) -> list[RevisionStat]:
        out: list[RevisionStat] = []
        idle: list[RevisionKey] = []
        for key, entry in self._entries.items():
            r = entry.stats.report(now)
            adj, entry.first_adj = entry.first_adj, 0.0
            if r.average_concurrency == 0.0 and entry.refs == 0:
                idle.append(key)
            out.append(RevisionStat(key, max(r.average_concurrency - adj, 0.0), r.request_count - adj))
        for key in idle:
            del self._entries[key]
        return out
