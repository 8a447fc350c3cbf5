"""Which of a revision's pods this activator sends to, when several activators share them.

Upstream (``pkg/activator/net/throttler.go``: ``inferIndex``, ``pickIndices``, ``assignSlice``),
used only for revisions with containerConcurrency > 0:

* this activator's index is its position in the string-sorted list of activator IPs found on
  the revision's public endpoints, or -1 when its own IP is not (yet) among them;
* pods are sorted by their ``ip:port`` string;
* with N activators and P pods: if N > P, this activator gets pod ``index mod P``; otherwise the
  contiguous slice ``[index*(P//N), (index+1)*(P//N))`` plus, when ``index < P mod N``, the pod
  at position ``index`` among the last ``P mod N`` pods;
* index -1, a single activator, or at most one pod: all pods.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = ["assign_slice", "infer_index"]

T = TypeVar("T")


def infer_index(activator_ips: Iterable[str], self_ip: str) -> tuple[int, int]:
    """``(index, count)`` of this activator among the given IPs; index -1 when absent."""
    ips = sorted(set(activator_ips))
    i = bisect.bisect_left(ips, self_ip)
    if i == len(ips) or ips[i] != self_ip:
        return -1, len(ips)
    return i, len(ips)


def assign_slice(pods: Sequence[T], index: int, num_activators: int) -> list[T]:
    """This activator's share of ``pods`` (which must already be sorted by address)."""
    n = len(pods)
    if index < 0 or n <= 1 or num_activators <= 1:
        return list(pods)
    if num_activators > n:
        return [pods[index % n]]
    size = n // num_activators
    mine = list(pods[index * size:(index + 1) * size])
    remnants = n % num_activators
    if remnants and index < remnants:
        mine.append(pods[n - remnants + index])
    return mine
