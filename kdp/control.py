"""The runtime's link to the autoscaler: revision specs and pod counts in, decisions out.

* ``AutoscalerControl.SyncRevision`` and ``ReportPods`` are sent for every revision that
  changed (coalesced: a burst of pod changes is one report of the latest counts), and for all
  of them again every ``resync_period`` and whenever the decision stream (re)connects, so a
  restarted autoscaler learns the whole picture within moments without anyone asking;
* ``DecisionFeed.Watch`` is followed forever (reconnecting with a short backoff) and every
  decision goes to ``on_decision``.

Failed calls are retried (the revision stays dirty); nothing here raises to the caller.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from proto import kdp_pb2, kdp_pb2_grpc

__all__ = ["AutoscalerLink"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]
_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000))
_CALL_TIMEOUT = 3.0


class AutoscalerLink:
    def __init__(self, address: str, *, spec: Callable[[Key], kdp_pb2.RevisionSpec | None],
                 pods: Callable[[Key], kdp_pb2.PodCounts | None], keys: Callable[[], Iterable[Key]],
                 on_decision: Callable[[kdp_pb2.Decision], None], on_connected: Callable[[bool], None] | None = None,
                 resync_period: float = 5.0, subscriber: str = "kdp-runtime") -> None:
        self.address = address
        self._spec = spec
        self._pods = pods
        self._keys = keys
        self._on_decision = on_decision
        self._on_connected = on_connected or (lambda up: None)
        self.resync_period = resync_period
        self.subscriber = subscriber
        self.connected = False
        self.errors = 0
        self.last_error = ""
        self._dirty_specs: set[Key] = set()
        self._dirty_pods: set[Key] = set()
        self._deleted: dict[Key, kdp_pb2.RevisionSpec] = {}
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the runtime tells us --------------------------------------------------------

    def revision_changed(self, key: Key) -> None:
        self._dirty_specs.add(key)
        self._dirty_pods.add(key)
        self._wake.set()

    def pods_changed(self, key: Key) -> None:
        self._dirty_pods.add(key)
        self._wake.set()

    def revision_deleted(self, key: Key, service: str) -> None:
        self._deleted[key] = kdp_pb2.RevisionSpec(namespace=key[0], revision=key[1], service=service, deleted=True)
        self._dirty_specs.discard(key)
        self._dirty_pods.discard(key)
        self._wake.set()

    def resync(self) -> None:
        for key in self._keys():
            self._dirty_specs.add(key)
            self._dirty_pods.add(key)
        self._wake.set()

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sender(), name="autoscaler-sync"),
                       loop.create_task(self._watch(), name="autoscaler-decisions")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def _sender(self) -> None:
        assert self._channel is not None
        stub = kdp_pb2_grpc.AutoscalerControlStub(self._channel)
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_period
        backoff = 0.1
        while True:
            timeout = max(0.0, next_resync - loop.time())
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if loop.time() >= next_resync:
                self.resync()
                self._wake.clear()
                next_resync = loop.time() + self.resync_period
            try:
                await self._flush(stub)
                backoff = 0.1
            except grpc.aio.AioRpcError as e:
                self.errors += 1
                self.last_error = f"{e.code().name}: {e.details()}"
                logger.debug("autoscaler at %s: %s", self.address, self.last_error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()

    async def _flush(self, stub: kdp_pb2_grpc.AutoscalerControlStub) -> None:
        for key, msg in list(self._deleted.items()):
            await self._call(stub.SyncRevision, msg)
            self._deleted.pop(key, None)
        for key in sorted(self._dirty_specs):
            spec = self._spec(key)
            if spec is not None:
                await self._call(stub.SyncRevision, spec)
            self._dirty_specs.discard(key)
        for key in sorted(self._dirty_pods):
            if key in self._dirty_specs:
                continue  # its spec failed above; counts follow once it is known
            counts = self._pods(key)
            if counts is not None:
                await self._call(stub.ReportPods, counts)
            self._dirty_pods.discard(key)

    async def _call(self, method: Any, request: Any) -> None:
        ack = await method(request, timeout=_CALL_TIMEOUT)
        if not ack.ok:
            logger.warning("autoscaler refused %s %s/%s: %s", type(request).__name__, request.namespace,
                           request.revision, ack.error)

    async def _watch(self) -> None:
        backoff = 0.1
        request = kdp_pb2.WatchRequest(subscriber=self.subscriber)
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS) as channel:
                    await channel.channel_ready()  # the feed may stay silent: connected is enough
                    call = kdp_pb2_grpc.DecisionFeedStub(channel).Watch(request)
                    self._set_connected(True)
                    backoff = 0.1
                    async for decision in call:
                        self._on_decision(decision)
                logger.info("autoscaler decision feed ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                logger.debug("autoscaler decision feed: %s", e.code().name)
            except Exception:
                logger.exception("autoscaler decision feed failed")
            self._set_connected(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _set_connected(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        if up:
            logger.info("connected to the autoscaler at %s; syncing every revision", self.address)
            self.resync()
        else:
            logger.warning("lost the autoscaler at %s", self.address)
        self._on_connected(up)
