"""The activator process: builds every piece from an ``ActivatorConfig`` and runs it.

Shutdown on SIGTERM, as upstream: kubelet health fails at once (so the endpoint is taken
out of rotation) while network and activator probes keep answering; after
``drain_timeout`` (upstream's 45 s) the listeners stop, in-flight and waiting requests are
finished, and the process exits 0.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client.registry import CollectorRegistry

from activator.backends import Backends, FeedSource, StaticSource
from activator.buffer import RequestBuffer
from activator.config import ActivatorConfig
from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.prober import Prober
from activator.reporter import GrpcStatSink, StatReporter, StatSink, WebsocketStatSink
from activator.revisions import RevisionResolver, RoutingTable
from activator.throttler import Throttler
from queueproxy.admin import PrometheusApp
from queueproxy.http1 import HttpServer, Limits, h2_connection

logger = logging.getLogger(__name__)

__all__ = ["Activator"]


class Activator:
    def __init__(self, config: ActivatorConfig, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = c = config
        self.loop = loop or asyncio.get_running_loop()
        self.terminating = False
        self.stopped = asyncio.Event()
        self.ports: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        throttler = Throttler(c.throttler_params())
        self.metrics = ActivatorMetrics(self.registry, load=throttler.load)
        self.buffer = RequestBuffer(throttler, metrics=self.metrics)
        self.prober = Prober(self.buffer.set_pods, frequency=c.probe_frequency, timeout=c.probe_timeout,
                             trust_ready=c.trust_ready, metrics=self.metrics, fast_retry=c.probe_fast_retry)
        self.routes = RoutingTable(c.route_domain)
        self.backends = Backends(self.buffer, self.prober, self.routes)
        sink: StatSink
        if c.autoscaler_protocol == "grpc":
            sink = GrpcStatSink(c.autoscaler_address, pod_name=c.pod_name, metrics=self.metrics)
        else:
            sink = WebsocketStatSink(c.autoscaler_address, pod_name=c.pod_name, metrics=self.metrics)
        self.reporter = StatReporter(sink, metrics=self.metrics, describe=self.buffer.revision)
        self.source = StaticSource(c.backends_target) if c.backends_kind == "file" else \
            FeedSource(c.backends_target, subscriber=c.pod_name)
        self.handler = ActivatorHandler(loop=self.loop, buffer=self.buffer, resolver=RevisionResolver(
            c.cluster_domain, self.routes), reporter=self.reporter, metrics=self.metrics,
            max_idle_per_host=c.max_idle_proxy_conns_per_host, healthy=self._health)
        # Idle client connections stay open, as upstream's: pooling clients (ingresses, Go's
        # transport) reuse them, and closing them races their next request.
        self.server = HttpServer(self.handler, loop=self.loop, h2_factory=h2_connection,
                                 limits=Limits(idle_keepalive=float("inf")))
        self.metrics_server = HttpServer(PrometheusApp(self.registry), loop=self.loop)
        self._source_task: asyncio.Task[None] | None = None

    def _health(self) -> str | None:
        if self.terminating:
            return "received SIGTERM from kubelet"
        if not self.reporter.connected:
            return "connection to the autoscaler is not established"
        if not self.source.synced:
            return "revisions and routes are not synced yet"
        return None

    async def start(self) -> None:
        c = self.config
        self.ports["http"] = await self.server.listen(c.bind_host, c.http_port)
        if c.h2c_port and c.h2c_port != c.http_port:
            self.ports["h2c"] = await self.server.listen(c.bind_host, c.h2c_port)
        if c.metrics_port:
            self.ports["metrics"] = await self.metrics_server.listen(c.bind_host, c.metrics_port)
        self.reporter.start()
        self._source_task = self.loop.create_task(self.source.run(self.backends))
        logger.info("activator serving on %s; backends from %s %s; autoscaler %s via %s", self.ports,
                    c.backends_kind, c.backends_target, c.autoscaler_address, c.autoscaler_protocol)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_shutdown)

    def request_shutdown(self) -> None:
        if not self.terminating:
            self.terminating = True
            logger.info("received SIGTERM: failing kubelet health, draining for %.0fs", self.config.drain_timeout)
            self.loop.create_task(self.shutdown())

    async def shutdown(self) -> None:
        self.terminating = True
        # 1. Kubelet health fails; keep serving while the endpoint is removed everywhere.
        await asyncio.sleep(self.config.drain_timeout)
        # 2. Stop accepting and close idle connections.
        self.server.stop_listening()
        self.metrics_server.stop_listening()
        # 3. Finish in-flight and waiting requests.
        while True:
            self.server.close_idle_connections()
            if not self.server.in_flight():
                break
            await asyncio.sleep(0.05)
        await self.close()
        self.stopped.set()

    async def close(self) -> None:
        if self._source_task is not None:
            self._source_task.cancel()
            try:
                await self._source_task
            except (asyncio.CancelledError, Exception):
                pass
        await self.reporter.close()
        await self.prober.close()
        self.buffer.close()
        self.handler.close()
        await self.server.close()
        await self.metrics_server.close()
