"""Probing pods' queue-proxies, so a pod is used the moment it is ready.

Upstream ``pkg/activator/net/revision_backends.go`` (the revision watcher), per revision:

* each pod not yet known healthy, ready or not-ready in the endpoints, gets
  ``GET http://<pod>/healthz`` with ``K-Network-Probe: queue`` and
  ``User-Agent: Knative-Activator-Probe``; healthy means status 200 and body exactly ``queue``;
* a pod that passes is used even while the endpoints still list it not-ready (the "probe
  optimisation"; ``use_not_ready=False`` turns it off, e.g. for exec readiness probes);
* one round probes all such pods concurrently under one shared ``timeout`` (300 ms); rounds
  repeat every ``frequency`` (200 ms) while some listed pod is not healthy, and an endpoints
  change starts a round at once;
* pods that move from ready to not-ready leave the healthy set at once and are probed again;
  pods that vanish are dropped; no endpoints means no healthy pod.

Beyond upstream, for cold starts (``fast_retry`` > 0): a starting pod's queue-proxy is not
listening yet, so its probes fail at once (connection refused), and upstream's next round comes
only ``frequency`` later, a delay the first request pays in full. Here, after a round that
failed, the next one comes ``fast_retry`` later, the delay growing by ``fast_factor`` per
round up to ``frequency`` (reset when the endpoints change). A round cut by the timeout had a
live queue-proxy holding the probe until its app is ready, so the next one starts at once.

``trust_ready=True`` takes endpoints-ready pods as healthy without probing (upstream does this
when mesh-compatibility-mode is not ``auto``). :meth:`Prober.reprobe` is for a pod that refused
a proxied connection. Every change of a revision's healthy set is passed to ``on_change``.

:func:`probe_queue_proxy` is the default check: a raw asyncio HTTP/1.1 client, one short-lived
connection per probe.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from activator.clock import Clock, loop_clock
from activator.metrics import ActivatorMetrics
from activator.revisions import RevisionKey

__all__ = ["CheckFn", "Prober", "probe_queue_proxy", "split_host_port"]

logger = logging.getLogger(__name__)

CheckFn = Callable[[str], Awaitable[bool]]
_MAX_BODY = 64


def split_host_port(dest: str) -> tuple[str, int]:
    host, sep, port = dest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a host:port address: {dest!r}")
    return host.strip("[]"), int(port)


async def probe_queue_proxy(dest: str) -> bool:
    """True when the queue-proxy at ``dest`` answers the activator probe with 200 ``queue``.

    No timeout of its own: the prober cancels a round's probes when the round times out.
    """
    try:
        host, port = split_host_port(dest)
        reader, writer = await asyncio.open_connection(host, port)
    except (OSError, ValueError):
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: %s\r\nK-Network-Probe: queue\r\n"
                     b"User-Agent: Knative-Activator-Probe\r\nConnection: close\r\n\r\n" % dest.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1.") or rest[:3] != b"200":
            return False
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding", b"").endswith(b"chunked"):
            body = await _read_chunked(reader)
        elif b"content-length" in headers:
            n = int(headers[b"content-length"])
            if n > _MAX_BODY:
                return False
            body = await reader.readexactly(n)
        else:
            body = await reader.read(_MAX_BODY + 1)
            while len(body) <= _MAX_BODY and (more := await reader.read(_MAX_BODY + 1 - len(body))):
                body += more
        return body == b"queue"
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > _MAX_BODY:
            return body


class _Watch:
    __slots__ = ("key", "ready", "not_ready", "healthy", "emitted", "use_not_ready", "wake", "task", "retry")

    def __init__(self, key: RevisionKey, use_not_ready: bool) -> None:
        self.retry = 0.0
        """The delay before the next round after a failed one (``fast_retry`` backoff)."""
        self.key = key
        self.ready: frozenset[str] = frozenset()
        self.not_ready: frozenset[str] = frozenset()
        self.healthy: set[str] = set()
        self.emitted: frozenset[str] = frozenset()
        self.use_not_ready = use_not_ready
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def dests(self) -> frozenset[str]:
        return self.ready | self.not_ready


class Prober:
    def __init__(self, on_change: Callable[[RevisionKey, frozenset[str]], object], *,
                 check: CheckFn = probe_queue_proxy, frequency: float = 0.2, timeout: float = 0.3,
                 use_not_ready: bool = True, trust_ready: bool = False, clock: Clock | None = None,
                 metrics: ActivatorMetrics | None = None, fast_retry: float = 0.0, fast_factor: float = 1.05) -> None:
        self.on_change = on_change
        self.check = check
        self.frequency = frequency
        self.timeout = timeout
        self.fast_retry = fast_retry
        self.fast_factor = fast_factor
        self.use_not_ready = use_not_ready
        self.trust_ready = trust_ready
        self.metrics = metrics
        self._clock = clock
        self._watches: dict[RevisionKey, _Watch] = {}

    def healthy(self, key: RevisionKey) -> frozenset[str]:
        w = self._watches.get(key)
        return frozenset(w.healthy) if w is not None else frozenset()

    def set_endpoints(self, key: RevisionKey, ready: Iterable[str], not_ready: Iterable[str] = (),
                      use_not_ready: bool | None = None) -> None:
        """New endpoints for a revision: drop what left at once, then probe immediately."""
        w = self._watches.get(key)
        if w is None:
            w = self._watches[key] = _Watch(key, self.use_not_ready)
            w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"probe {key}")
        if use_not_ready is not None:
            w.use_not_ready = use_not_ready
        ready, not_ready = frozenset(ready), frozenset(not_ready)
        became_not_ready = w.ready & not_ready
        w.ready, w.not_ready = ready, not_ready - ready
        w.healthy &= w.dests
        w.healthy -= became_not_ready
        if self.trust_ready:
            w.healthy |= ready
        w.retry = self.fast_retry
        self._emit(w)
        w.wake.set()

    def reprobe(self, key: RevisionKey, dest: str) -> None:
        w = self._watches.get(key)
        if w is not None and dest in w.healthy:
            w.healthy.discard(dest)
            w.retry = self.fast_retry
            self._emit(w)
            w.wake.set()

    def forget(self, key: RevisionKey) -> None:
        w = self._watches.pop(key, None)
        if w is not None and w.task is not None:
            w.task.cancel()

    async def close(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        self._watches.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _run(self, w: _Watch) -> None:
        clock = loop_clock(self._clock)
        while True:
            await w.wake.wait()
            w.wake.clear()
            started = clock.time()
            try:
                await self._round(w)
            except Exception:
                logger.exception("probing revision %s failed", w.key)
            if not w.dests <= w.healthy and not w.wake.is_set():
                handle = clock.call_at(clock.time() + self._next_delay(w, clock.time() - started), w.wake.set)
                try:
                    await w.wake.wait()
                finally:
                    handle.cancel()

    def _next_delay(self, w: _Watch, elapsed: float) -> float:
        """How long after a round that left some pod unhealthy the next one starts."""
        if self.fast_retry <= 0.0:
            return self.frequency
        if elapsed >= self.timeout:  # a queue-proxy held the probe: it is up, ask again at once
            return 0.0
        delay = min(w.retry or self.fast_retry, self.frequency)
        w.retry = delay * self.fast_factor
        return delay

    async def _round(self, w: _Watch) -> None:
        to_probe = w.dests - w.healthy
        if not to_probe:
            return
        results = await self._probe_all(to_probe)
        for dest, ok in results.items():
            if ok and (dest in w.ready or (w.use_not_ready and dest in w.not_ready)):
                w.healthy.add(dest)
        if self.metrics is not None:
            ok_count = sum(results.values())
            self.metrics.probes.labels("ok").inc(ok_count)
            self.metrics.probes.labels("failed").inc(len(results) - ok_count)
        self._emit(w)

    async def _probe_all(self, dests: Iterable[str]) -> dict[str, bool]:
        """Probe concurrently; whatever has not answered when the shared timeout ends failed."""
        clock = loop_clock(self._clock)
        tasks = {asyncio.ensure_future(self.check(d)): d for d in dests}
        expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = clock.call_at(clock.time() + self.timeout, lambda: expired.done() or expired.set_result(None))
        pending: set[asyncio.Future[bool]] = set(tasks)
        try:
            while pending and not expired.done():
                _, rest = await asyncio.wait(pending | {expired}, return_when=asyncio.FIRST_COMPLETED)
                pending = {t for t in rest if t is not expired}  # type: ignore[misc]
        finally:
            handle.cancel()
            expired.cancel()
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        out = {}
        for t, dest in tasks.items():
            ok = t.done() and not t.cancelled() and t.exception() is None and t.result() is True
            out[dest] = ok
        return out

    def _emit(self, w: _Watch) -> None:
        current = frozenset(w.healthy)
        if current != w.emitted:
            w.emitted = current
            logger.debug("revision %s: %d healthy pods", w.key, len(current))
            self.on_change(w.key, current)
