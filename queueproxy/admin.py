"""The queue-proxy's side listeners, served by the same engine with tiny apps:

- :8022 ``/wait-for-drain`` (the user container's preStop hook): drains, then 200; if no
  SIGTERM follows within ``reset_after`` seconds the drain is reset (only the user container
  is restarting), as upstream does. Other paths 404.
- :9090 ``/metrics``: the latest protobuf ``Stat``, always ``application/protobuf``.
- :9091 ``/metrics``: Prometheus text.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from queueproxy.drain import Drainer
from queueproxy.http1 import Exchange

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

__all__ = ["DrainApp", "StatApp", "PrometheusApp"]


def _path(ex: Exchange) -> bytes:
    return ex.target.split(b"?", 1)[0]


class DrainApp:
    def __init__(self, drainer: Drainer, terminating: Callable[[], bool], *, reset_after: float = 1.0) -> None:
        self.drainer = drainer
        self.terminating = terminating
        self.reset_after = reset_after
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, ex: Exchange) -> None:
        if _path(ex) != b"/wait-for-drain":
            ex.respond(404, b"404 page not found\n")
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._wait(ex))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        loop.call_later(self.reset_after, self._maybe_reset)

    def _maybe_reset(self) -> None:
        if not self.terminating():
            logger.info("no SIGTERM after /wait-for-drain: resetting the drainer")
            self.drainer.reset()

    async def _wait(self, ex: Exchange) -> None:
        await self.drainer.drain()
        if ex.state == 0:
            ex.respond(200, b"")


class StatApp:
    def __init__(self, snapshot: Callable[[], bytes]) -> None:
        self.snapshot = snapshot

    def handle(self, ex: Exchange) -> None:
        if _path(ex) != b"/metrics":
            ex.respond(404, b"404 page not found\n")
            return
        ex.respond(200, self.snapshot(), content_type=b"application/protobuf")


class PrometheusApp:
    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.registry = registry
        self.content_type = CONTENT_TYPE_LATEST.encode()
        self.render = generate_latest

    def handle(self, ex: Exchange) -> None:
        if _path(ex) != b"/metrics":
            ex.respond(404, b"404 page not found\n")
            return
        ex.respond(200, self.render(self.registry), content_type=self.content_type)
