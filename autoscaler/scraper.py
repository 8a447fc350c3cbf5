"""Scraping ``http://<pod>:9090/metrics`` as upstream's autoscaler does, for upstream queue-proxies.

Once a second per revision (``scrapeTickInterval``), for revisions that have scrape targets and a
target burst capacity other than -1 (upstream builds no scraper then): sample the ready pods
(:mod:`autoscaler.sampling`), GET each with ``Accept: application/protobuf`` (3 s timeout, at
most 336 bytes of body read, 2xx and ``Content-Type`` exactly ``application/protobuf`` required),
and record ``sum / n * N`` as one stat of pod ``service-scraper`` at the instant the scrape
finished. ``n`` workers take pods in order; a worker stops at its first success and moves on
after a failure; if any worker runs out of pods the whole scrape fails and nothing is recorded
("pods exhausted"). A scrape still running when the next second comes delays that revision's
next one, as upstream's ticker does. Service (mesh) scraping is not implemented.

Scrape targets are given per revision by whoever knows the pods (the runtime): in process
through :class:`ScrapeTargets`, or from a YAML/JSON file (:class:`TargetsFile`, reloaded when it
changes)::

    default/hello-00001:
      - 10.0.0.5                      # port 9090
      - {address: "10.0.0.6:9090", started: 1787000000.0}

Pods a scrape reaches are remembered for a while, and their own pushed stats are dropped as
duplicates (the scrape already stands for every pod), so a queue-proxy that both pushes and is
scraped is counted once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import yaml
from google.protobuf.message import DecodeError

from autoscaler.collector import SCRAPE
from autoscaler.gotime import NS_PER_S
from autoscaler.sampling import (ScrapePod, extrapolate, sample_size, scrape_order,
                                 split_by_age, stat_url)
from autoscaler.service import AutoscalerService
from proto import stat_pb2

__all__ = ["ScrapeError", "ScrapeTargets", "Scraper", "TargetsFile", "parse_targets"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]
PROTOBUF = "application/protobuf"
MAX_BODY = 6 * 10 + 256 + 20  # upstream: six 8-byte fields, a hostname, and some slack
TIMEOUT = 3.0
_REMEMBER_PODS = 10.0


class ScrapeError(Exception):
    """A pod or a revision could not be scraped."""


class ScrapeTargets:
    """The pods to scrape, per revision (the in-process API the runtime fills)."""

    def __init__(self) -> None:
        self._pods: dict[Key, tuple[ScrapePod, ...]] = {}

    def set(self, key: Key, pods: list[ScrapePod] | tuple[ScrapePod, ...]) -> None:
        if pods:
            self._pods[key] = tuple(pods)
        else:
            self._pods.pop(key, None)

    def remove(self, key: Key) -> None:
        self._pods.pop(key, None)

    def replace_all(self, targets: Mapping[Key, list[ScrapePod]]) -> None:
        self._pods = {k: tuple(v) for k, v in targets.items() if v}

    def get(self, key: Key) -> tuple[ScrapePod, ...]:
        return self._pods.get(key, ())

    def items(self) -> list[tuple[Key, tuple[ScrapePod, ...]]]:
        return list(self._pods.items())


def parse_targets(data: Any, source: str = "scrape targets") -> dict[Key, list[ScrapePod]]:
    """``{"ns/revision": [address | {address, started}]}`` -> targets; ValueError names the entry."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of 'namespace/revision' to pod lists")
    out: dict[Key, list[ScrapePod]] = {}
    for name, pods in data.items():
        ns, sep, rev = str(name).partition("/")
        if not sep or not ns or not rev:
            raise ValueError(f"{source}: {name!r}: the key must be 'namespace/revision'")
        if not isinstance(pods, list):
            raise ValueError(f"{source}: {name}: expected a list of pods")
        parsed = []
        for p in pods:
            if isinstance(p, str):
                parsed.append(ScrapePod(p))
            elif isinstance(p, dict) and isinstance(p.get("address"), str):
                started = p.get("started")
                if started is not None and not isinstance(started, (int, float)):
                    raise ValueError(f"{source}: {name}: started={started!r} is not Unix seconds")
                parsed.append(ScrapePod(p["address"], None if started is None else float(started)))
            else:
                raise ValueError(f"{source}: {name}: {p!r} is not an address or "
                                 "{address, started}")
        out[(ns, rev)] = parsed
    return out


class TargetsFile:
    """Loads scrape targets from a YAML/JSON file into :class:`ScrapeTargets` when it changes."""

    def __init__(self, path: str, targets: ScrapeTargets) -> None:
        self.path = path
        self.targets = targets
        self._seen: tuple[int, int] | None = None
        self.last_error = ""

    def poll(self) -> bool:
        """Reload if the file changed; True when new targets were applied."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            self.last_error = str(e)
            return False
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            data = json.loads(text) if self.path.endswith(".json") else yaml.safe_load(text)
            parsed = parse_targets(data, self.path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            self.last_error = str(e)
            logger.error("scrape targets %s not loaded, keeping the previous ones: %s",
                         self.path, e)
            return False
        self.last_error = ""
        self.targets.replace_all(parsed)
        logger.info("scrape targets: %d revisions from %s", len(parsed), self.path)
        return True


class Scraper:
    """Scrapes every revision with targets once a second and records the estimates."""

    def __init__(self, service: AutoscalerService, targets: ScrapeTargets, *,
                 session: aiohttp.ClientSession | None = None, timeout: float = TIMEOUT,
                 interval: float = 1.0, rng: random.Random | None = None,
                 concurrency: int = 512,
                 observe: Callable[[Key, str, float | None], None] | None = None) -> None:
        self.service = service
        self.targets = targets
        self.timeout = timeout
        self.interval = interval
        self.rng = rng or random.Random()
        self.observe = observe
        self.ok = 0
        self.failed = 0
        self.errors: dict[Key, str] = {}
        self._session = session
        self._own_session = session is None
        self._limit = asyncio.Semaphore(concurrency)
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._pods_seen: dict[Key, dict[str, float]] = {}

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=4, keepalive_timeout=30))
        return self._session

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- one pod ------------------------------------------------------------------------------

    async def scrape_pod(self, address: str) -> stat_pb2.Stat:
        session = await self._get_session()
        url = stat_url(address)
        try:
            async with self._limit:
                async with session.get(url, headers={"Accept": PROTOBUF},
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    if not 200 <= resp.status < 300:
                        raise ScrapeError(f"GET request for URL {url!r} returned HTTP status "
                                          f"{resp.status}")
                    if resp.headers.get("Content-Type") != PROTOBUF:
                        raise ScrapeError("unsupported metric type")
                    body = b""
                    while len(body) < MAX_BODY:
                        chunk = await resp.content.read(MAX_BODY - len(body))
                        if not chunk:
                            break
                        body += chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ScrapeError(f"{url}: {type(e).__name__}: {e}") from None
        try:
            return stat_pb2.Stat.FromString(body)
        except (DecodeError, ValueError) as e:
            raise ScrapeError(f"{url}: unmarshalling failed: {e}") from None

    # -- one revision -------------------------------------------------------------------------

    async def scrape_revision(self, pods: tuple[ScrapePod, ...] | list[ScrapePod],
                              window: float, now: float,
                              names: list[str] | None = None) -> stat_pb2.Stat | None:
        """The revision's estimated total, or None with no pods; raises ScrapeError.
        ``names`` collects the pod names of the stats that were summed."""
        old, young = split_by_age(pods, window, now)
        population = len(old) + len(young)
        if population == 0:
            return None
        n = sample_size(population)
        order = scrape_order(old, young, n, self.rng)
        results: list[stat_pb2.Stat] = []
        index = iter(range(len(order)))

        async def worker() -> None:
            for i in index:
                try:
                    results.append(await self.scrape_pod(order[i]))
                    return
                except ScrapeError as e:
                    logger.info("failed scraping pod %s: %s", order[i], e)
            raise ScrapeError("pods exhausted")

        tasks = [asyncio.ensure_future(worker()) for _ in range(n)]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if any(t.exception() is not None for t in done):
            raise ScrapeError("pods exhausted")
        if names is not None:
            names.extend(s.pod_name for s in results)
        return extrapolate(results, float(n), float(population))

    async def _scrape(self, key: Key, pods: tuple[ScrapePod, ...], window: float) -> None:
        started = time.perf_counter()
        now = self.service.clock() / NS_PER_S
        names: list[str] = []
        try:
            stat = await self.scrape_revision(pods, window, now, names)
        except ScrapeError as e:
            self.failed += 1
            self.errors[key] = str(e)
            logger.warning("failed to scrape metrics of %s/%s: %s", key[0], key[1], e)
            if self.observe is not None:
                self.observe(key, "error", time.perf_counter() - started)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed += 1
            logger.exception("scraping %s/%s failed", *key)
            return
        self.errors.pop(key, None)
        if stat is None:
            if self.observe is not None:
                self.observe(key, "empty", None)
            return
        self.ok += 1
        if self.observe is not None:
            self.observe(key, "ok", time.perf_counter() - started)
        now = self.service.clock() / NS_PER_S
        self.remember_pods(key, names, now)
        stat.timestamp = int(now // 1)
        self.service.ingest([stat_pb2.WireStatMessage(namespace=key[0], name=key[1], stat=stat)],
                            SCRAPE)

    def remember_pods(self, key: Key, names: list[str], now: float) -> None:
        seen = self._pods_seen.setdefault(key, {})
        for name in names:
            seen[name] = now
        for name in [n for n, t in seen.items() if now - t > _REMEMBER_PODS]:
            del seen[name]
        self.service.ms.collector.set_scraped_pods(key, seen)

    # -- every second -------------------------------------------------------------------------

    def round(self) -> int:
        """Start a scrape for every eligible revision not still being scraped."""
        started = 0
        for key, pods in self.targets.items():
            rs = self.service.ms.scaling(key)
            if rs is None or rs.activator_always_in_path:
                continue
            if key in self._running:
                continue
            task = asyncio.ensure_future(self._scrape(key, pods, rs.stable_window))
            self._running[key] = task
            task.add_done_callback(lambda _t, k=key: self._running.pop(k, None))
            started += 1
        return started

    async def run(self) -> None:
        try:
            while True:
                self.round()
                await asyncio.sleep(self.interval)
        finally:
            await self.close()
