"""The gRPC services the local runtime serves, on one address.

* ``EndpointsFeed.Watch`` — every revision's ready and not-ready queue-proxy addresses and
  settings, a snapshot first, a ``snapshot_end`` bookmark, then each change (what Kubernetes
  Endpoints are in a cluster; the bookmark tells an activator it has everything, so it can
  call itself ready without ever answering 404 for a revision that exists);
* ``DecisionFeed.Watch`` — the autoscaler's decisions relayed (the runtime subscribes to the
  autoscaler's own feed), so an activator needs only this one address; the last decision of
  every revision survives an autoscaler restart;
* ``RouteFeed.Watch`` — the whole routing table, at once and after each change;
* ``ScaleTarget.Scale`` — the autoscaler's desired pod count for a revision, handed to a
  callable (the supervisor) that answers with the count it will run or raises ``KeyError``.

:class:`Hub` is the fan-out behind every Watch: subscribers get a snapshot (and the bookmark
when the hub has one), then every published message, until the hub closes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import grpc

from proto import kdp_pb2, kdp_pb2_grpc

__all__ = ["FeedServer", "Hub", "ScaleFn"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
ScaleFn = Callable[[str, str, int], int]
"""(namespace, revision, replicas) -> replicas it will run; KeyError for an unknown revision."""
_CLOSED = object()


class Hub(Generic[T]):
    def __init__(self, snapshot: Callable[[], list[T]], bookmark: Callable[[], T] | None = None) -> None:
        self._snapshot = snapshot
        self._bookmark = bookmark
        self._subscribers: set[asyncio.Queue[Any]] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, message: T) -> None:
        for q in self._subscribers:
            q.put_nowait(message)

    async def stream(self, who: str = "") -> AsyncIterator[T]:
        q: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribers.add(q)  # before the snapshot: a change in between is sent twice, never lost
        logger.debug("subscriber %r joined (%d)", who, len(self._subscribers))
        try:
            for message in self._snapshot():
                yield message
            if self._bookmark is not None:
                yield self._bookmark()
            while not self.closed:
                item = await q.get()
                if item is _CLOSED:
                    return
                yield item
        finally:
            self._subscribers.discard(q)

    def close(self) -> None:
        self.closed = True
        for q in self._subscribers:
            q.put_nowait(_CLOSED)


def _watch_servicer(base: type[Any], hub: Hub[Any]) -> Any:
    """A servicer of ``base`` (one of the feeds) whose ``Watch`` streams ``hub``."""

    async def Watch(self: Any, request: kdp_pb2.WatchRequest, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for m in hub.stream(request.subscriber):
            yield m

    return type(base.__name__.removesuffix("Servicer"), (base,), {"Watch": Watch})()


class _Scale(kdp_pb2_grpc.ScaleTargetServicer):
    def __init__(self, scale: ScaleFn) -> None:
        self.scale = scale

    async def Scale(self, request: kdp_pb2.ScaleRequest, context: Any) -> kdp_pb2.ScaleResponse:  # noqa: N802
        if request.replicas < 0:
            return kdp_pb2.ScaleResponse(ok=False, error=f"replicas={request.replicas}; allowed: >= 0")
        try:
            n = self.scale(request.namespace, request.revision, request.replicas)
        except KeyError:
            return kdp_pb2.ScaleResponse(ok=False, error=f"unknown revision {request.namespace}/{request.revision}")
        except Exception as e:  # noqa: BLE001 (answer, don't crash the RPC)
            logger.exception("scaling %s/%s failed", request.namespace, request.revision)
            return kdp_pb2.ScaleResponse(ok=False, error=str(e))
        return kdp_pb2.ScaleResponse(ok=True, replicas=n)


class FeedServer:
    """One grpc.aio server with every feed; ``port`` is known after :meth:`start`."""

    def __init__(self, *, endpoints: Hub[Any], decisions: Hub[Any], routes: Hub[Any], scale: ScaleFn,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.hubs = [endpoints, decisions, routes]
        self.server = grpc.aio.server()
        g = kdp_pb2_grpc
        g.add_EndpointsFeedServicer_to_server(_watch_servicer(g.EndpointsFeedServicer, endpoints), self.server)
        g.add_DecisionFeedServicer_to_server(_watch_servicer(g.DecisionFeedServicer, decisions), self.server)
        g.add_RouteFeedServicer_to_server(_watch_servicer(g.RouteFeedServicer, routes), self.server)
        g.add_ScaleTargetServicer_to_server(_Scale(scale), self.server)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        if not self.port:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        await self.server.start()
        logger.info("runtime feeds and scale target on %s", self.address)

    async def stop(self, grace: float = 1.0) -> None:
        for hub in self.hubs:
            hub.close()
        await self.server.stop(grace)

