"""The autoscaler process: builds every piece, wires them, starts and stops them in order.

Listeners (``0`` = any free port; :attr:`AutoscalerServer.ports` has the bound ones):

=================  =====  ==================================================================
what               port   serves
=================  =====  ==================================================================
gRPC               8081   ``StatIngest.Push``, ``DecisionFeed.Watch``, ``AutoscalerControl``
websocket          8080   upstream's stat websocket (any path) and kubelet probes
metrics            9090   Prometheus ``/metrics``
debug              8008   ``/debug/revisions/<ns>/<rev>``, ``/debug/status``, ``/healthz``
=================  =====  ==================================================================

Background work: the clock loop (record every second, tick every 2 s), the scale dispatcher,
the scraper, and polling the ``--config`` and ``--scrape-targets`` files every second.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from autoscaler.config import DEFAULT_PROGRESS_DEADLINE, AutoscalerConfig, ConfigStore
from autoscaler.configfile import ConfigFile, load_config_data
from autoscaler.control import AutoscalerControlServicer
from autoscaler.debug import DebugApp
from autoscaler.ingest_grpc import stat_ingest_handler
from autoscaler.ingest_ws import StatWebsocket
from autoscaler.metrics import AutoscalerMetrics
from autoscaler.multiscaler import MultiScaler
from autoscaler.publisher import (DecisionFeedServicer, DecisionHub, GrpcScaleTarget,
                                  LoggingScaleTarget, ScaleDispatcher, ScaleTarget)
from autoscaler.scraper import Scraper, ScrapeTargets, TargetsFile
from autoscaler.service import AutoscalerService
from proto import kdp_pb2_grpc

__all__ = ["AutoscalerServer", "ServerOptions", "scale_target_from"]

logger = logging.getLogger(__name__)

_GRPC_OPTIONS = (("grpc.max_receive_message_length", 16 << 20),
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_ping_interval_without_data_ms", 5000))


@dataclass(frozen=True)
class ServerOptions:
    host: str = "0.0.0.0"
    grpc_port: int = 8081
    websocket_port: int = 8080
    metrics_port: int = 9090
    debug_port: int = 8008
    config_path: str = ""
    """YAML/JSON config-autoscaler data map; empty = upstream defaults."""
    scale_target: str = "log"
    """``log`` (dry run) or ``grpc://host:port`` (``ScaleTarget.Scale``)."""
    scrape_targets_path: str = ""
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    poll_interval: float = 1.0
    resync_period: float = 30.0
    clock_loop: bool = True
    """Run the record/tick loop (tests with a fake clock drive ``service.step`` themselves)."""
    config_data: dict[str, str] = field(default_factory=dict)
    """The initial data map when there is no ``config_path``."""
    burst_decisions: bool = True
    """Decide a revision between ticks when its current second bursts (see collector)."""


def scale_target_from(spec: str) -> ScaleTarget:
    if spec in ("", "log"):
        return LoggingScaleTarget()
    address = spec.removeprefix("grpc://")
    if ":" not in address:
        raise ValueError(f"--scale-target={spec!r}: allowed: log or grpc://host:port")
    return GrpcScaleTarget(address)


class AutoscalerServer:
    def __init__(self, options: ServerOptions, *, clock: Callable[[], int] = time.time_ns,
                 registry: CollectorRegistry | None = None,
                 scale_target: ScaleTarget | None = None) -> None:
        """Raises ConfigError / ConfigFileError for a bad initial config (fatal, as upstream)."""
        self.options = options
        data = load_config_data(options.config_path) if options.config_path \
            else dict(options.config_data)
        self.store = ConfigStore(data)
        self.config_file = ConfigFile(options.config_path, self.store) \
            if options.config_path else None
        self.multiscaler = MultiScaler(self.store.current,
                                       progress_deadline=options.progress_deadline,
                                       burst_decisions=options.burst_decisions)
        self.hub = DecisionHub()
        self.target = scale_target or scale_target_from(options.scale_target)
        self.dispatcher = ScaleDispatcher(self.target, resync_period=options.resync_period)
        self.service = AutoscalerService(self.multiscaler, self.hub, self.dispatcher, clock=clock)
        self.store.subscribe(self.service.set_config)
        self.registry = registry or CollectorRegistry()
        self.metrics = AutoscalerMetrics(self.registry, self.service)
        self.targets = ScrapeTargets()
        self.targets_file = TargetsFile(options.scrape_targets_path, self.targets) \
            if options.scrape_targets_path else None
        self.scraper = Scraper(self.service, self.targets, observe=self._observe_scrape)
        self.websocket = StatWebsocket(self.service)
        self.debug = DebugApp(self.service, self._status_extra)
        self.ports: dict[str, int] = {}
        self.stopped = asyncio.Event()
        self._grpc: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def _observe_scrape(self, key: tuple[str, str], result: str, seconds: float | None) -> None:
        self.metrics.scrapes.labels(result).inc()
        if seconds is not None:
            spec = self.multiscaler.spec(key)
            service = spec.service if spec is not None else ""
            self.metrics.scrape_duration.labels(key[0], service, service).observe(seconds)

    def _status_extra(self) -> dict[str, Any]:
        return {
            "config_file": self.options.config_path or None,
            "config_last_error": (self.config_file.last_error if self.config_file else "")
            or None,
            "scrape_targets": len(self.targets.items()),
            "scrape_ok": self.scraper.ok, "scrape_failed": self.scraper.failed,
            "scrape_errors": {f"{k[0]}/{k[1]}": e for k, e in self.scraper.errors.items()},
            "ports": self.ports,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        server.add_generic_rpc_handlers((stat_ingest_handler(self.service),))
        kdp_pb2_grpc.add_DecisionFeedServicer_to_server(DecisionFeedServicer(self.hub), server)
        kdp_pb2_grpc.add_AutoscalerControlServicer_to_server(
            AutoscalerControlServicer(self.service), server)
        self.ports["grpc"] = server.add_insecure_port(f"{o.host}:{o.grpc_port}")
        await server.start()
        self._grpc = server
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
        for name, app, port in (("websocket", self.websocket.app, o.websocket_port),
                                ("metrics", metrics_app, o.metrics_port),
                                ("debug", self.debug.app, o.debug_port)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, o.host, port, reuse_address=True)
            await site.start()
            self._runners.append(runner)
            self.ports[name] = runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        if o.clock_loop:
            self._tasks.append(loop.create_task(self.service.run(), name="autoscaler-clock"))
        self._tasks.append(loop.create_task(self.dispatcher.run(), name="scale-dispatcher"))
        self._tasks.append(loop.create_task(self.scraper.run(), name="scraper"))
        if self.config_file is not None or self.targets_file is not None:
            self._tasks.append(loop.create_task(self._poll_files(), name="file-poller"))
        logger.info("autoscaler listening: grpc %d, websocket %d, metrics %d, debug %d; "
                    "scale target %s", self.ports["grpc"], self.ports["websocket"],
                    self.ports["metrics"], self.ports["debug"], o.scale_target)

    async def _poll_files(self) -> None:
        if self.targets_file is not None:
            self.targets_file.poll()
        while True:
            await asyncio.sleep(self.options.poll_interval)
            if self.config_file is not None:
                result = self.config_file.poll()
                if result is not None:
                    self.metrics.config_reloads.labels(result).inc()
            if self.targets_file is not None:
                self.targets_file.poll()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)

    async def stop(self, grace: float = 1.0) -> None:
        # 1. Stop accepting stats and calls; websocket clients are told to reconnect (1012).
        if self._grpc is not None:
            await self._grpc.stop(grace)
        for runner in self._runners:
            await runner.cleanup()
        # 2. Stop the clock, the dispatcher and the scraper.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # 3. Close what they held.
        with contextlib.suppress(Exception):
            await self.target.close()
        await self.scraper.close()
        self._tasks.clear()
        self._runners.clear()
        logger.info("autoscaler stopped")

    @property
    def config(self) -> AutoscalerConfig:
        return self.store.current
