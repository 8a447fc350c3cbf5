"""The activator's request handler on the queue-proxy's engine: upstream's handler chain
folded into one decision per request, with no task and no future on the common path.

In order (``cmd/activator/main.go``):

1. kubelet health (User-Agent ``kube-probe/`` or a ``K-Kubelet-Probe`` header), on any path:
   200 while the process is not terminating and the autoscaler connection is up, else 500;
2. ``K-Network-Probe: probe`` echoes ``K-Network-Hash`` (400 without it);
3. any other ``K-Network-Probe``: ``activator`` -> 200 ``activator`` (the autoscaler's "is the
   activator in the path?" probe), other values -> 400;
4. the revision from the ``Knative-Serving-*`` headers, ``<rev>.<ns>.svc.<domain>`` or the
   local routing table (404 when unknown); counted for the autoscaler from here on, waiting
   included; the revision's timeouts start (504 ``activator request timeout``);
5. a pod from the throttler, at once or when one frees (503 with a reason and Retry-After when
   the queue is full or the revision cannot start);
6. proxied to the pod's queue-proxy with Host moved to ``K-Original-Host``,
   ``K-Proxy-Request: activator`` set and ``Knative-Serving-*`` removed. A connection refused
   before anything was sent is retried on another pod; nothing that may have reached the app
   is retried. ``Server-Timing: activator-wait;dur=<ms>`` tells how long the request waited.
"""
from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable

from prometheus_client import Gauge

from activator.buffer import Lease, RequestBuffer
from activator.metrics import ActivatorMetrics
from activator.reporter import StatReporter
from activator.revisions import RevisionKey, RevisionResolver
from activator.throttler import (
    PodTracker, QueueFull, RevisionFailed, RevisionNotFound, ThrottlerError, Waiter, WaitTimeout,
)
from queueproxy.http1 import (
    H_HASH, H_HOST, H_KUBELET, H_NS, H_ORIG_HOST, H_PROBE, H_REV, H_UA, Exchange,
)
from queueproxy.upstream import UpstreamPool

logger = logging.getLogger(__name__)

__all__ = ["ActivatorHandler"]

DROP = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-network-hash",
                  b"k-original-host", b"k-proxy-request"})
TIMEOUT_BODY = b"activator request timeout"
REJECT_REASONS: dict[type[ThrottlerError], str] = {
    QueueFull: "queue_full", RevisionFailed: "revision_failed", WaitTimeout: "timeout", RevisionNotFound: "not_found",
}
NO_WAIT = [b"Server-Timing: activator-wait;dur=0\r\n"]


class _Request:
    """Per-request state kept on ``Exchange.context``."""

    __slots__ = ("key", "handle", "lease", "waiter", "enqueued_at", "host", "h1", "queued")

    def __init__(self, key: RevisionKey, handle: object, host: bytes) -> None:
        self.key = key
        self.handle = handle
        self.host = host
        self.lease: Lease | None = None
        self.waiter: Waiter | None = None
        self.enqueued_at = 0.0
        self.h1 = True
        self.queued: Gauge | None = None


class ActivatorHandler:
    def __init__(self, *, loop: asyncio.AbstractEventLoop, buffer: RequestBuffer, resolver: RevisionResolver,
                 reporter: StatReporter, metrics: ActivatorMetrics | None = None,
                 max_idle_per_host: int = 100, healthy: Callable[[], str | None] | None = None) -> None:
        self.loop = loop
        self.buffer = buffer
        self.throttler = buffer.throttler
        self.resolver = resolver
        self.reporter = reporter
        self.metrics = metrics
        self.max_idle_per_host = max_idle_per_host
        self.healthy = healthy or (lambda: None)
        """None when healthy, else the reason kubelet health fails."""
        self.pools: dict[str, UpstreamPool] = {}

    # ---- the request path ------------------------------------------------------------

    def handle(self, ex: Exchange) -> None:
        sp = ex.special
        ua = sp[H_UA]
        if (ua is not None and ua.startswith(b"kube-probe/")) or sp[H_KUBELET] is not None:
            reason = self.healthy()
            if reason is None:
                ex.respond(200, b"")
            else:
                ex.respond(500, reason.encode() + b"\n")
            return
        probe = sp[H_PROBE]
        if probe is not None and probe != b"":
            if probe == b"probe":
                h = sp[H_HASH]
                if h is None:
                    ex.respond(400, b"no K-Network-Hash provided\n")
                else:
                    ex.respond(200, b"", headers=(b"K-Network-Hash: " + h,))
            elif probe == b"activator":
                ex.respond(200, b"activator")
            else:
                value = html.escape(probe.decode("latin-1"))
                ex.respond(400, f'unexpected probe header value: "{value}"\n'.encode())
            return
        host = sp[H_HOST] or b""
        ns, rev = sp[H_NS], sp[H_REV]
        key = self.resolver.resolve(ns.decode("latin-1") if ns else None, rev.decode("latin-1") if rev else None,
                                    host.decode("latin-1"))
        info = self.throttler.revision(key) if key is not None else None
        if key is None or info is None:
            ex.respond(404, b"Error getting active endpoint: revision not found\n")
            return
        req = _Request(key, self.reporter.request_in(key), sp[H_ORIG_HOST] or host)
        ex.context = req
        ex.on_finish = self._finished
        if type(ex) is Exchange:
            ex.timeout_body = TIMEOUT_BODY
            ex.on_connect_error = self._connect_error
            ex.on_response = self._response_started
        else:  # an HTTP/2 stream: the engine has no such hooks there (yet)
            req.h1 = False
        ex.set_timeouts(info.timeout, info.response_start_timeout, info.idle_timeout)
        self._acquire(ex, req)

    def _acquire(self, ex: Exchange, req: _Request) -> None:
        try:
            pod = self.throttler.try_acquire(req.key)
            if pod is not None:
                self._go(ex, req, pod, 0.0)
                return
            now = self.loop.time()
            self._wait(ex, req, now, now)
        except ThrottlerError as e:
            self._rejected(ex, req, e)

    def _wait(self, ex: Exchange, req: _Request, now: float, since: float) -> None:
        """Queue for a pod (raises ThrottlerError when the request may not wait)."""
        req.enqueued_at = since
        req.waiter = self.throttler.enqueue(req.key, now, lambda p: self._granted(ex, req, p),
                                            lambda e: self._rejected(ex, req, e))
        if self.metrics is not None:
            req.queued = self.metrics.revision(req.key).queued
            req.queued.inc()

    @staticmethod
    def _unqueue(req: _Request) -> None:
        req.waiter = None
        if req.queued is not None:
            req.queued.dec()
            req.queued = None

    def _granted(self, ex: Exchange, req: _Request, pod: PodTracker) -> None:
        self._unqueue(req)
        self._go(ex, req, pod, self.loop.time() - req.enqueued_at)

    def _go(self, ex: Exchange, req: _Request, pod: PodTracker, waited: float) -> None:
        now = self.loop.time()
        lease = Lease(self.buffer, req.key, pod, waited, now, self.metrics.revision(req.key) if self.metrics else None)
        if ex.state == 3:  # the client gave up or timed out in the meantime
            lease.release(ok=True)
            return
        req.lease = lease
        if not req.h1:
            pass
        elif waited:
            ex.response_headers = [b"Server-Timing: activator-wait;dur=%.3f\r\n" % (waited * 1000)]
        else:
            ex.response_headers = NO_WAIT
        dest = pod.dest
        ex.prepare(drop=DROP, host=dest.encode(),
                   add=[(b"K-Original-Host", req.host), (b"K-Proxy-Request", b"activator")])
        if ex.state == 0:
            ex.forward(self._pool(dest))
        else:  # a retry after a refused connection: the exchange is already forwarding
            ex.redirect(self._pool(dest))

    def _pool(self, dest: str) -> UpstreamPool:
        pool = self.pools.get(dest)
        if pool is None:
            host, _, port = dest.rpartition(":")
            pool = self.pools[dest] = UpstreamPool(host.strip("[]"), int(port), loop=self.loop,
                                                   max_idle=self.max_idle_per_host)
        return pool

    def _rejected(self, ex: Exchange, req: _Request, e: BaseException) -> None:
        self._unqueue(req)
        if isinstance(e, ThrottlerError) and self.metrics is not None:
            self.metrics.reject(req.key, REJECT_REASONS.get(type(e), "error"))
        if ex.state >= 2:
            return
        if isinstance(e, ThrottlerError):
            headers: tuple[bytes, ...] = ()
            if e.retry_after_header is not None:
                headers = (b"Retry-After: " + e.retry_after_header.encode(),)
            ex.respond(e.status_hint, e.reason.encode() + b"\n", headers=headers)
        else:
            ex.respond(500, b"internal error\n")

    def _connect_error(self, ex: Exchange, error: BaseException) -> bool:
        """Nothing reached the pod: give its slot back, mark it for re-probing and try another."""
        req: _Request = ex.context
        lease = req.lease
        if lease is None or ex.state != 1:
            return False
        req.lease = None
        lease.refused()
        if ex._retried:
            # This dial is the engine's second try after a reused connection died: the request
            # went out on that connection and may have reached the app. The pod leaves the
            # rotation, but the request is not sent anywhere else: 502.
            logger.info("pod %s of %s went away with a request in flight (%s)", lease.dest, req.key, error)
            return False
        logger.info("pod %s of %s refused the connection (%s); retrying on another pod", lease.dest, req.key, error)
        try:
            pod = self.throttler.try_acquire(req.key)
            if pod is not None:
                self._go(ex, req, pod, lease.waited)
                return True
            now = self.loop.time()
            self._wait(ex, req, now, now - lease.waited)
        except ThrottlerError as e:
            self._rejected(ex, req, e)  # nothing was sent: a plain answer, as before forwarding
        return True

    @staticmethod
    def _response_started(ex: Exchange) -> None:
        lease = ex.context.lease
        if lease is not None:
            lease.response_started()

    def _finished(self, ex: Exchange) -> None:
        req: _Request = ex.context
        if req.waiter is not None:  # still waiting: the revision timeout, or the client left
            self.throttler.cancel(req.waiter, self.loop.time())
            self._unqueue(req)
            if ex.status == 504 and self.metrics is not None:
                self.metrics.reject(req.key, "timeout")
        if req.lease is not None:
            req.lease.release(ok=ex.status < 500)
            req.lease = None
        self.reporter.request_out(req.handle)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
