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

HTTP/2 streams (gRPC) take the same path, but the engine's streams have no response, dial-error
or extra-header hooks yet: for them a refused connection is a 502, no ``Server-Timing`` is
added, the timeout body is the engine's, and fresh pods learn no response times for pacing.
"""
from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable

from activator.buffer import RequestBuffer
from activator.metrics import ActivatorMetrics
from activator.reporter import StatReporter
from activator.revisions import RevisionKey, RevisionResolver
from activator.throttler import (
    PodTracker, QueueFull, RevisionFailed, RevisionNotFound, RevisionThrottler, ThrottlerError, Waiter, WaitTimeout,
)
from queueproxy.http1 import (
    H_HASH, H_HOST, H_KUBELET, H_NS, H_ORIG_HOST, H_PROBE, H_REV, H_UA, Exchange,
)
from queueproxy.upstream import UpstreamPool

logger = logging.getLogger(__name__)

__all__ = ["ActivatorHandler"]

DROP = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-network-hash",
                  b"k-original-host", b"k-proxy-request"})
PROXY_MARK = (b"K-Proxy-Request", b"activator")
TIMEOUT_BODY = b"activator request timeout"
REJECT_REASONS: dict[type[ThrottlerError], str] = {
    QueueFull: "queue_full", RevisionFailed: "revision_failed", WaitTimeout: "timeout", RevisionNotFound: "not_found",
}
NO_WAIT = [b"Server-Timing: activator-wait;dur=0\r\n"]
MAX_CACHED_KEYS = 4096


class _Request:
    """Per-request state kept on ``Exchange.context``. ``pod`` is set while the request holds
    one of its slots (from grant to finish); ``waiter`` while it waits for one."""

    __slots__ = ("key", "rt", "handle", "host", "pod", "waiter", "enqueued_at", "waited", "granted_at",
                 "started_at")

    def __init__(self, key: RevisionKey, rt: RevisionThrottler, handle: object, host: bytes) -> None:
        self.key = key
        self.rt = rt
        self.handle = handle
        self.host = host
        self.pod: PodTracker | None = None
        self.waiter: Waiter | None = None
        self.enqueued_at = 0.0
        self.waited = 0.0
        self.granted_at = 0.0
        self.started_at = 0.0


class ActivatorHandler:
    """The engine's app for the activator. ``metrics``, when given, should be built with the
    throttler's ``load`` as its load source: the handler itself only observes wait times and
    counts rejections."""

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
        self._targets: dict[str, tuple[UpstreamPool, bytes]] = {}
        self._keys: dict[tuple[bytes, bytes], RevisionKey] = {}
        """Revision keys by their header bytes, for known revisions (bounded)."""

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
            self._probe(ex, probe)
            return
        ns, rev = sp[H_NS], sp[H_REV]
        key: RevisionKey | None
        if ns and rev:
            key = self._keys.get((ns, rev))
            if key is None:
                key = RevisionKey(ns.decode("latin-1"), rev.decode("latin-1"))
                if key in self.throttler:
                    if len(self._keys) >= MAX_CACHED_KEYS:
                        self._keys.clear()
                    self._keys[(ns, rev)] = key
        else:
            key = self.resolver.resolve(None, None, (sp[H_HOST] or b"").decode("latin-1"))
        rt = self.throttler.get(key) if key is not None else None
        if rt is None:
            ex.respond(404, b"Error getting active endpoint: revision not found\n")
            return
        now = ex.started_at
        req = _Request(key, rt, self.reporter.request_in(key, now), sp[H_ORIG_HOST] or sp[H_HOST] or b"")
        ex.context = req
        ex.on_finish = self._finished
        ex.timeout_body = TIMEOUT_BODY
        ex.on_connect_error = self._connect_error
        info = rt.info
        ex.set_timeouts(info.timeout, info.response_start_timeout, info.idle_timeout)
        pod = rt.try_acquire()
        if pod is not None:
            self._go(ex, req, pod, 0.0, now)
            return
        try:
            self._wait(ex, req, now, now)
        except ThrottlerError as e:
            self._rejected(ex, req, e)

    def _probe(self, ex: Exchange, probe: bytes) -> None:
        if probe == b"probe":
            h = ex.special[H_HASH]
            if h is None:
                ex.respond(400, b"no K-Network-Hash provided\n")
            else:
                ex.respond(200, b"", headers=(b"K-Network-Hash: " + h,))
        elif probe == b"activator":
            ex.respond(200, b"activator")
        else:
            value = html.escape(probe.decode("latin-1"))
            ex.respond(400, f'unexpected probe header value: "{value}"\n'.encode())

    def _wait(self, ex: Exchange, req: _Request, now: float, since: float) -> None:
        """Queue for a pod (raises ThrottlerError when the request may not wait)."""
        req.enqueued_at = since
        req.waiter = self.throttler.enqueue(req.key, now, lambda p: self._granted(ex, req, p),
                                            lambda e: self._rejected(ex, req, e))

    def _granted(self, ex: Exchange, req: _Request, pod: PodTracker) -> None:
        req.waiter = None
        now = self.loop.time()
        self._go(ex, req, pod, now - req.enqueued_at, now)

    def _go(self, ex: Exchange, req: _Request, pod: PodTracker, waited: float, now: float) -> None:
        if self.metrics is not None:
            self.metrics.wait_histogram(req.key).observe(waited)
        if ex.state == 3:  # the client gave up or timed out in the meantime
            pod.owner.release(pod, now, True, None)
            return
        req.pod = pod
        req.waited = waited
        req.granted_at = now
        req.started_at = 0.0
        ex.response_headers = [b"Server-Timing: activator-wait;dur=%.3f\r\n" % (waited * 1000)] \
            if waited else NO_WAIT
        if pod.paced:  # its pacing needs the time to the response head
            ex.on_response = self._response_started
        target = self._targets.get(pod.dest)
        if target is None:
            target = self._new_target(pod.dest)
        pool, dest = target
        ex.prepare(drop=DROP, host=dest, add=[(b"K-Original-Host", req.host), PROXY_MARK])
        if ex.state == 0:
            ex.forward(pool)
        else:  # a retry after a refused connection: the exchange is already forwarding
            ex.redirect(pool)

    def _new_target(self, dest: str) -> tuple[UpstreamPool, bytes]:
        pool = self.pools.get(dest)
        if pool is None:
            host, _, port = dest.rpartition(":")
            pool = self.pools[dest] = UpstreamPool(host.strip("[]"), int(port), loop=self.loop,
                                                   max_idle=self.max_idle_per_host)
        target = self._targets[dest] = (pool, dest.encode())
        return target

    def _rejected(self, ex: Exchange, req: _Request, e: BaseException) -> None:
        req.waiter = None
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
        pod = req.pod
        if pod is None or ex.state != 1:
            return False
        req.pod = None
        now = self.loop.time()
        pod.owner.refused(pod, now)
        self.buffer.pod_refused(req.key, pod.dest)
        if ex.maybe_delivered:
            # This dial is the engine's second try after a reused connection died: the request
            # went out on that connection and may have reached the app. The pod leaves the
            # rotation, but the request is not sent anywhere else: 502.
            logger.info("pod %s of %s went away with a request in flight (%s)", pod.dest, req.key, error)
            return False
        logger.info("pod %s of %s refused the connection (%s); retrying on another pod", pod.dest, req.key, error)
        try:
            other = self.throttler.try_acquire(req.key)
            if other is not None:
                self._go(ex, req, other, req.waited, now)
            else:
                self._wait(ex, req, now, now - req.waited)
        except ThrottlerError as e:
            self._rejected(ex, req, e)  # nothing was sent: a plain answer, as before forwarding
        return True

    def _response_started(self, ex: Exchange) -> None:
        req: _Request = ex.context
        if req.pod is not None and not req.started_at:
            req.started_at = self.loop.time()

    def _finished(self, ex: Exchange) -> None:
        req: _Request = ex.context
        now = self.loop.time()
        w = req.waiter
        if w is not None:  # still waiting: the revision timeout, or the client left
            req.waiter = None
            w.owner.cancel(w, now)
            if ex.status == 504 and self.metrics is not None:
                self.metrics.reject(req.key, "timeout")
        pod = req.pod
        if pod is not None:
            req.pod = None
            started = req.started_at
            pod.owner.release(pod, now, ex.status < 500, started - req.granted_at if started else None)
        self.reporter.request_out(req.handle, now)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
