"""The queue-proxy's request handler: upstream's handler chain folded into one decision.

Upstream runs (outermost first) the drainer with its probe answers, the timeout handler,
the Forwarded shim and the proxy handler (stats, Host restore, breaker). Here the same
steps happen in one ``handle`` call on the engine's ``Exchange``:

1. health checks (User-Agent ``kube-probe/``, ``Knative-Activator-Probe`` or
   ``Knative-Autoscaling-Probe``) are answered here: 503 ``shutting down`` while draining,
   400 unless ``K-Network-Probe: queue``, else the readiness probe decides (200 ``queue``
   or 503). Network probes (``K-Network-Probe: probe``) echo ``K-Network-Hash``;
2. every other request restarts the drain quiet period, counts in the stats on arrival
   (before the breaker, so queued requests count as concurrency), gets the revision
   timeouts, and waits for a breaker slot (503 when the queue of 10 x CC is full); a
   response to a request that waited says how long in ``Server-Timing: queue-proxy-wait``
   (not upstream's: users ask to tell queue time from app time);
3. it goes upstream with ``K-Original-Host`` restored as Host, ``Knative-Serving-*``
   removed, X-Forwarded-For appended and a ``Forwarded`` header built from the
   ``X-Forwarded-*`` ones when none is present.

A request with only a ``K-Kubelet-Probe`` header bypasses stats, breaker and Host
restore, as upstream's does.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from queueproxy.breaker import Breaker, QueueFullError
from queueproxy.drain import Drainer
from queueproxy.http1 import (
    H_FORWARDED, H_HASH, H_KUBELET, H_ORIG_HOST, H_PROBE, H_PROXY, H_UA, H_XFF, H_XFF_FIRST, H_XFH, H_XFP,
    Exchange,
)
from queueproxy.metrics import InvocationHistogram
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamPool

if TYPE_CHECKING:
    from queueproxy.requestlog import RequestLogger

logger = logging.getLogger(__name__)

__all__ = ["QueueHandler", "forwarded_header", "HEALTH_UA_PREFIXES"]

HEALTH_UA_PREFIXES = (b"kube-probe/", b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")
REVISION_HEADERS = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-original-host"})


def forwarded_header(xff: bytes | None, xfp: bytes | None, xfh: bytes | None) -> bytes:
    """Upstream's Forwarded shim: ``for=<first>;host=<xfh>;proto=<xfp>, for=<next>...``;
    nodes with a colon (IPv6) are written as ``"[addr]"``."""
    nodes = [n.strip() for n in xff.split(b",")] if xff else []

    def node(n: bytes) -> bytes:
        return b'"[' + n + b']"' if b":" in n else n

    first: list[bytes] = []
    if nodes:
        first.append(b"for=" + node(nodes[0]))
    if xfh:
        first.append(b"host=" + xfh)
    if xfp:
        first.append(b"proto=" + xfp)
    parts = [b";".join(first)]
    parts.extend(b"for=" + node(n) for n in nodes[1:])
    return b", ".join(parts)


class QueueHandler:
    """The queue-proxy app for the engine (``queueproxy.http1.App``)."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, pool: UpstreamPool, stats: RequestStats,
                 drainer: Drainer, readiness: Callable[[], Awaitable[bool]],
                 container_concurrency: int, timeout: float, response_start_timeout: float = 0.0,
                 idle_timeout: float = 0.0, histogram: InvocationHistogram | None = None,
                 request_logger: RequestLogger | None = None) -> None:
        self.loop = loop
        self.pool = pool
        self.stats = stats
        self.drainer = drainer
        self.readiness = readiness
        cc = container_concurrency
        self.breaker = Breaker(queue_depth=10 * cc, capacity=cc) if cc > 0 else None
        # A granted waiter is forwarded from the loop, not from inside the release that granted
        # it (the releasing request is still finishing); called in C, no frame of its own.
        self._grant_soon = partial(loop.call_soon, self._granted)
        self.timeouts = (timeout, response_start_timeout, idle_timeout)
        self.histogram = histogram or InvocationHistogram()
        self.rejected = {"queue_full": 0}
        self.request_logger = request_logger
        self._probe_tasks: set[asyncio.Task[None]] = set()

    # ---- the hot path ---------------------------------------------------------------

    def handle(self, ex: Exchange) -> None:
        sp = ex.special
        ua = sp[H_UA]
        if ua is not None and ua.startswith(HEALTH_UA_PREFIXES):
            self._log_probe(ex)
            self._health_check(ex)
            return
        probe = sp[H_PROBE]
        if probe == b"probe":
            self._log_probe(ex)
            self._network_probe(ex)
            return
        now = ex.started_at
        self.drainer.last_request = now
        if sp[H_KUBELET] is not None:  # upstream's kubelet-probe bypass: straight through
            ex.set_timeouts(*self.timeouts)
            ex.prepare(drop=REVISION_HEADERS)
            ex.forward(self.pool)
            return
        proxied = sp[H_PROXY] == b"activator"
        self.stats.request_in(now, proxied)
        ex.on_finish = self._finished
        ex.set_timeouts(*self.timeouts)
        add = None
        if sp[H_FORWARDED] is None and (sp[H_XFF] is not None or sp[H_XFP] is not None or sp[H_XFH] is not None):
            add = [(b"Forwarded", forwarded_header(sp[H_XFF_FIRST] or sp[H_XFF], sp[H_XFP], sp[H_XFH]))]
        ex.prepare(drop=REVISION_HEADERS, host=sp[H_ORIG_HOST], add=add)
        # context: (proxied, metered, breaker hold: None = no breaker, True = a slot, or a Ticket)
        breaker = self.breaker
        if breaker is None:
            ex.context = (proxied, probe is None, None)
            ex.forward(self.pool)
        elif breaker.try_acquire():
            ex.context = (proxied, probe is None, True)
            ex.forward(self.pool)
        else:
            try:
                ticket = breaker.enqueue(self._grant_soon, ex)
            except QueueFullError:
                self.rejected["queue_full"] += 1
                ex.context = (proxied, probe is None, None)
                ex.respond(503, QueueFullError.body)
                return
            ex.context = (proxied, probe is None, ticket)

    def _granted(self, ex: Exchange) -> None:
        if ex.state == 0:
            waited = self.loop.time() - ex.started_at
            ex.response_headers = [b"Server-Timing: queue-proxy-wait;dur=%.3f\r\n" % (waited * 1000)]
            ex.forward(self.pool)

    def _finished(self, ex: Exchange) -> None:
        now = self.loop.time()
        proxied, metered, hold = ex.context
        if hold is not None:
            breaker = self.breaker
            assert breaker is not None
            if hold is True:
                breaker.release()
            else:
                breaker.cancel(hold)
        self.stats.request_out(now, proxied)
        if metered:
            self.histogram.observe(ex.status, now - ex.started_at)
        if self.request_logger is not None:
            self._log(ex, now)

    def _log(self, ex: Exchange, now: float) -> None:
        assert self.request_logger is not None
        # Go's RemoteAddr is "ip:port": the peername when the connection kept it.
        remote = getattr(ex.conn, "peer", None) or ex.conn.client_ip.decode()
        from queueproxy.requestlog import RequestView

        view = RequestView(ex.method, ex.target, ex.version.decode(), [(n, v) for n, _, v in ex.headers],
                           remote, ex.content_length if ex.content_length is not None else -1)
        self.request_logger.log(view, ex.status, ex.bytes_out, now - ex.started_at)

    # ---- probes ---------------------------------------------------------------------

    def _log_probe(self, ex: Exchange) -> None:
        rl = self.request_logger
        if rl is not None and rl.log_probes:
            ex.on_finish = lambda e: self._log(e, self.loop.time())

    def _health_check(self, ex: Exchange) -> None:
        if self.drainer.draining:
            ex.respond(503, b"shutting down\n")
            return
        probe = ex.special[H_PROBE]
        if probe != b"queue":
            ex.respond(400, b"unexpected probe header value: " + (probe or b"") + b"\n")
            return
        task = self.loop.create_task(self._run_readiness(ex))
        self._probe_tasks.add(task)
        task.add_done_callback(self._probe_tasks.discard)

    async def _run_readiness(self, ex: Exchange) -> None:
        try:
            ok = await self.readiness()
        except Exception:
            logger.exception("readiness probe failed with an error")
            ok = False
        if ex.state == 0:
            if ok and not self.drainer.draining:
                ex.respond(200, b"queue")
            else:
                ex.respond(503, b"")

    def _network_probe(self, ex: Exchange) -> None:
        if self.drainer.draining:
            ex.respond(503, b"shutting down\n")
            return
        h = ex.special[H_HASH]
        if not h:  # missing or empty, as upstream
            ex.respond(400, b"no K-Network-Hash provided\n")
            return
        ex.respond(200, b"", headers=(b"K-Network-Hash: " + h,))

    def queue_depth(self) -> int:
        return self.breaker.in_flight if self.breaker is not None else 0

