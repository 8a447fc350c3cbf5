"""Upstream's scrape sampling (``pkg/autoscaler/metrics/stats_scraper.go``, ``sample_size.go``).

To estimate a revision's total from its pods' ``:9090`` Stats without asking every pod, upstream
scrapes a sample of ``n`` of the ``N`` ready pods and scales the sum by ``N / n``:

* ``n = N`` for ``N <= 3``, else ``ceil(N * X / (N + X - 1))`` with ``X = 1.96**2 * 100 / 5**2``
  (at most 16);
* pods at least a stable window old ("old") are preferred: if there are fewer old pods than
  ``n`` the young ones are shuffled and tried after the old ones, otherwise the old ones are
  shuffled; young pods always come last, as fallbacks;
* the result is ``sum / n * N`` per field, named ``service-scraper``.

Pure: no I/O, no clock (``now`` float Unix seconds; the shuffle takes a ``random.Random``).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from proto import stat_pb2

__all__ = ["SCRAPER_POD_NAME", "ScrapePod", "extrapolate", "sample_size", "scrape_order",
           "split_by_age", "stat_url"]

SCRAPER_POD_NAME = "service-scraper"
STAT_PORT = 9090
_X = 1.96 * 1.96 * 100.0 / (5.0 * 5.0)


@dataclass(frozen=True, slots=True)
class ScrapePod:
    """A ready pod to scrape: ``host`` (port 9090) or ``host:port``; when it started."""

    address: str
    started: float | None = None
    """Unix seconds; None counts as old (a long-running pod)."""


def sample_size(population: int) -> int:
    """How many of ``population`` pods to scrape (upstream's populationMeanSampleSize)."""
    n = float(population)
    if n <= 3:
        return max(population, 0)
    return int(math.ceil(n * _X / (n + _X - 1)))


def split_by_age(pods: Sequence[ScrapePod], window: float,
                 now: float) -> tuple[list[str], list[str]]:
    """(old, young) addresses: old pods started at least ``window`` seconds before ``now``."""
    old, young = [], []
    for p in pods:
        if p.started is None or now - p.started >= window:
            old.append(p.address)
        else:
            young.append(p.address)
    return old, young


def scrape_order(old: list[str], young: list[str], n: int, rng: random.Random) -> list[str]:
    """The order in which the ``n`` scrape workers take pods."""
    old, young = list(old), list(young)
    if len(old) < n:
        rng.shuffle(young)
    else:
        rng.shuffle(old)
    return old + young


def extrapolate(stats: Sequence[stat_pb2.Stat], sample: float, total: float) -> stat_pb2.Stat:
    """Sum the sampled stats field by field and scale to the population: ``sum / n * N``."""
    c = pc = r = pr = 0.0
    for s in stats:
        c += s.average_concurrent_requests
        pc += s.average_proxied_concurrent_requests
        r += s.request_count
        pr += s.proxied_request_count
    return stat_pb2.Stat(pod_name=SCRAPER_POD_NAME,
                         average_concurrent_requests=c / sample * total,
                         average_proxied_concurrent_requests=pc / sample * total,
                         request_count=r / sample * total,
                         proxied_request_count=pr / sample * total)


def stat_url(address: str) -> str:
    """``http://<address>/metrics``, port 9090 unless the address has one."""
    if address.startswith("["):
        host_port = address if "]:" in address else f"{address}:{STAT_PORT}"
    elif address.count(":") == 1:
        host_port = address
    elif ":" in address:  # a bare IPv6 address
        host_port = f"[{address}]:{STAT_PORT}"
    else:
        host_port = f"{address}:{STAT_PORT}"
    return f"http://{host_port}/metrics"
