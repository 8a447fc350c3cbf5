"""The queue-proxy process: builds every piece from a ``Config``, runs the listeners and the
per-second stats, and shuts down without losing a request.

Shutdown on SIGTERM, in upstream's order:
  1. drain: probes fail at once; wait until the quiet period passes with no request;
  2. stop accepting connections and close idle keep-alive ones;
  3. wait for every in-flight request and upgraded connection to finish (no deadline for
     requests, as upstream; the pod's grace period bounds it; tunnels get ``tunnel_grace``);
  4. exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

from queueproxy.admin import DrainApp, PrometheusApp, StatApp
from queueproxy.config import Config
from queueproxy.drain import Drainer
from queueproxy.handler import QueueHandler
from queueproxy.http1 import HttpServer, Limits, h2_connection
from queueproxy.metrics import InvocationHistogram, QueueProxyCollector, make_registry
from queueproxy.observability import ObservabilityConfig
from queueproxy.readiness import ReadinessProber, build_readiness_prober
from queueproxy.reporter import StatPusher, StatReporter
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamPool

logger = logging.getLogger(__name__)

__all__ = ["QueueProxy"]


class QueueProxy:
    def __init__(self, config: Config, *, loop: asyncio.AbstractEventLoop | None = None,
                 environ: dict[str, str] | None = None, tunnel_grace: float = 60.0) -> None:
        self.config = config
        # OBSERVABILITY_CONFIG decides request logs and whether :9091 is served (ConfigError if bad).
        obs = ObservabilityConfig.from_env(config.observability_config)
        self.prometheus_address = obs.prometheus_address(os.environ if environ is None else environ)
        request_logger = None
        if obs.request_log_enabled:  # the template engine is imported only when it is needed
            from queueproxy.requestlog import RequestLogger, RevisionInfo
            request_logger = RequestLogger.from_config(obs, RevisionInfo(
                config.revision, config.namespace, config.service, config.configuration, config.pod_name,
                config.pod_ip))
        self.loop = loop or asyncio.get_running_loop()
        self.tunnel_grace = tunnel_grace
        self.terminating = False
        self.stopped = asyncio.Event()
        self.ports: dict[str, int] = {}
        cc = config.container_concurrency
        self.prober: ReadinessProber = build_readiness_prober(
            config.readiness_probe, multi_container=config.multi_container_probes,
            http2_auto_detect=config.http2_auto_detection)
        self.stats = RequestStats(self.loop.time())
        self.drainer = Drainer(config.drain_quiet_period, self.loop)
        self.pool = UpstreamPool(config.user_host, config.user_port, loop=self.loop,
                                 max_idle=cc if cc > 0 else 1000)
        self.histogram = InvocationHistogram()
        self.handler = QueueHandler(
            loop=self.loop, pool=self.pool, stats=self.stats, drainer=self.drainer,
            readiness=self.prober.probe, container_concurrency=cc,
            timeout=config.revision_timeout, response_start_timeout=config.response_start_timeout,
            idle_timeout=config.idle_timeout, histogram=self.histogram, request_logger=request_logger)
        self.pusher: StatPusher | None = None
        sinks = ()
        if config.autoscaler_address:
            self.pusher = StatPusher(config.autoscaler_address, config.namespace, config.revision,
                                     config.pod_name)
            sinks = (self.pusher,)
        self.reporter = StatReporter(self.stats, config.pod_name, loop=self.loop, sinks=sinks)
        # No idle limit on client connections, as upstream's servers: the ingress and the
        # activator pool their connections (Go's transport for 90 s, Envoy for an hour), and a
        # server closing them sooner races their next request, which then fails.
        limits = Limits(max_head_bytes=config.max_head_bytes, header_timeout=config.header_timeout,
                        idle_keepalive=float("inf"))
        self.main = HttpServer(self.handler, loop=self.loop, limits=limits, h2_factory=h2_connection)
        self.admin = HttpServer(DrainApp(self.drainer, lambda: self.terminating), loop=self.loop)
        self.stat_server = HttpServer(StatApp(lambda: self.reporter.snapshot), loop=self.loop)
        self.prometheus: HttpServer | None = None
        if self.prometheus_address is not None:
            collector = QueueProxyCollector(
                self.histogram, self.handler.queue_depth if cc > 0 else None,
                lambda: dict(self.handler.rejected, **{"malformed": self.main.rejected}),
                {"k8s_namespace_name": config.namespace, "k8s_pod_name": config.pod_name,
                 "kn_revision_name": config.revision, "kn_configuration_name": config.configuration,
                 "kn_service_name": config.service, "k8s_container_name": "queue-proxy"})
            self.prometheus = HttpServer(PrometheusApp(make_registry(collector)), loop=self.loop)

    async def start(self) -> None:
        c = self.config
        host = c.bind_host
        self.ports["serving"] = await self.main.listen(host, c.serving_port)
        self.ports["admin"] = await self.admin.listen(host, c.admin_port)
        self.ports["stat"] = await self.stat_server.listen(host, c.stat_port)
        if self.prometheus is not None and self.prometheus_address is not None:
            phost, pport = self.prometheus_address
            self.ports["metrics"] = await self.prometheus.listen(phost or host, pport)
        tls = self._tls_context()
        if tls is not None:
            self.ports["tls"] = await self.main.listen(host, c.tls_port, ssl=tls)
        self.reporter.start()
        if self.pusher is not None:
            self.pusher.start()
        logger.info("queue-proxy serving on %s (user container %s:%d, containerConcurrency %d)",
                    self.ports, c.user_host, c.user_port, c.container_concurrency)

    def _tls_context(self) -> ssl.SSLContext | None:
        cert = os.path.join(self.config.cert_dir, "tls.crt")
        key = os.path.join(self.config.cert_dir, "tls.key")
        if not (os.path.exists(cert) and os.path.exists(key)):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_shutdown)

    def request_shutdown(self) -> None:
        if not self.terminating:
            self.terminating = True
            logger.info("received SIGTERM: draining")
            self.loop.create_task(self.shutdown())

    async def shutdown(self) -> None:
        self.terminating = True
        # 1. Fail probes and wait out the quiet period.
        await self.drainer.drain()
        # 2. Stop accepting; close connections with nothing in flight.
        for srv in self._servers():
            srv.stop_listening()
        self.main.close_idle_connections()
        # 3. Wait for in-flight requests (and, for a while, upgraded connections).
        tunnel_deadline = self.loop.time() + self.tunnel_grace
        while True:
            self.main.close_idle_connections()
            busy = self.main.in_flight()
            if not busy:
                break
            if self.loop.time() >= tunnel_deadline and self._only_tunnels():
                logger.warning("closing %d upgraded connection(s) after the %.0fs grace", busy, self.tunnel_grace)
                break
            await asyncio.sleep(0.05)
        # 4. Stop everything else.
        await self.close()
        logger.info("queue-proxy drained, exiting")
        self.stopped.set()

    def _only_tunnels(self) -> bool:
        """Nothing is left but upgraded connections (HTTP/2 streams are requests, not tunnels)."""
        return all(getattr(c, "tunnel_up", None) is not None
                   or getattr(c, "current", None) is None and not getattr(c, "active_streams", 0)
                   for c in self.main.connections)

    def _servers(self) -> list[HttpServer]:
        return [s for s in (self.main, self.admin, self.stat_server, self.prometheus) if s is not None]

    async def close(self) -> None:
        self.reporter.stop()
        if self.pusher is not None:
            await self.pusher.stop()
        await self.prober.aclose()
        for srv in self._servers():
            await srv.close()
        self.pool.close()
