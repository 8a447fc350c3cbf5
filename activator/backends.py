"""Backend discovery: where revisions and their pods come from, behind one interface.

A *source* produces :class:`EndpointsUpdate` (a revision's settings and its ready/not-ready
queue-proxy addresses), :class:`DecisionUpdate` (the autoscaler's word on a revision, of which
the activator uses the failure reason) and, for the local ingress, routes. It hands them to a
:class:`BackendSink`, normally :class:`Backends`, which feeds the throttler (through the
:class:`~activator.buffer.RequestBuffer`) and the :class:`~activator.prober.Prober`::

    source --EndpointsUpdate--> Backends --info, activators--> RequestBuffer (throttler)
                                         --ready/not-ready--> Prober --healthy pods--> RequestBuffer
           --DecisionUpdate---> Backends --failure---------> RequestBuffer
           --routes-----------> Backends --> RoutingTable

Two sources now:

* :class:`StaticSource` — a JSON or YAML file, read once (tests, fixed setups);
* :class:`FeedSource` — the gRPC ``EndpointsFeed.Watch`` and ``DecisionFeed.Watch`` streams of
  the local runtime and our autoscaler, each reconnecting forever with upstream's backoff
  (100 ms x 1.3, 20 steps, then from the start).

Kubernetes (Endpoints and Revision informers) is a later source behind the same interface.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import yaml

from activator.buffer import RequestBuffer
from activator.clock import Backoff, Clock, loop_clock, sleep
from activator.prober import Prober
from activator.revisions import PROTOCOLS, RevisionInfo, RevisionKey, RoutingTable
from proto import kdp_pb2, kdp_pb2_grpc

__all__ = [
    "BackendSink",
    "BackendSource",
    "Backends",
    "DecisionUpdate",
    "EndpointsUpdate",
    "FeedSource",
    "StaticBackends",
    "StaticSource",
    "decision_from_proto",
    "endpoints_from_proto",
    "load_static",
    "routes_from_proto",
]

logger = logging.getLogger(__name__)

Routes = Mapping[tuple[str, str], Sequence[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class EndpointsUpdate:
    info: RevisionInfo
    ready: frozenset[str] = frozenset()
    not_ready: frozenset[str] = frozenset()
    deleted: bool = False
    activators: tuple[str, ...] | None = None
    """IPs of the activators on the revision's public endpoints (subsetting); None = unknown."""


@dataclass(frozen=True, slots=True)
class DecisionUpdate:
    key: RevisionKey
    failure: str = ""
    desired_pods: int = 0


class BackendSink(Protocol):
    def on_endpoints(self, update: EndpointsUpdate) -> None: ...

    def on_decision(self, update: DecisionUpdate) -> None: ...

    def on_routes(self, routes: Routes) -> None: ...


class BackendSource(Protocol):
    @property
    def synced(self) -> bool:
        """True once everything the source knew when it started has reached the sink."""

    async def run(self, sink: BackendSink) -> None: ...


class Backends:
    """The sink that connects discovery to the throttler, the prober and the routing table.

    It also wires the prober and the buffer to each other: healthy pods go to
    ``buffer.set_pods`` and a refused connection to ``prober.reprobe``.

    Routes and endpoints come on separate streams, so a route may name a revision before its
    endpoints arrive. Such a route waits: the service keeps its previous splits (if it had
    any) until every revision it names is known, so moving traffic never answers 404.
    """

    def __init__(self, buffer: RequestBuffer, prober: Prober, routes: RoutingTable | None = None) -> None:
        self.buffer = buffer
        self.prober = prober
        self.routes = routes
        prober.on_change = buffer.set_pods
        buffer.on_refused = prober.reprobe
        self._failures: dict[RevisionKey, str] = {}
        self._routes: Routes = {}
        """The last table the source gave (``routes`` may still hold older splits of some services)."""

    def on_endpoints(self, update: EndpointsUpdate) -> None:
        key = update.info.key
        if update.deleted:
            logger.info("revision %s deleted", key)
            self.prober.forget(key)
            self.buffer.delete_revision(key)
            self._failures.pop(key, None)
            return
        known = self.buffer.revision(key) is not None
        self.buffer.upsert_revision(update.info)
        if not known and self._failures.get(key):
            self.buffer.set_decision_failure(key, self._failures[key])
        if update.activators is not None:
            self.buffer.set_activators(key, update.activators)
        self.prober.set_endpoints(key, update.ready, update.not_ready)
        if not known and self._routes:  # a route may have waited for this revision
            self._apply_routes()

    def on_decision(self, update: DecisionUpdate) -> None:
        if update.failure:
            self._failures[update.key] = update.failure
        else:
            self._failures.pop(update.key, None)
        self.buffer.set_decision_failure(update.key, update.failure)

    def on_routes(self, routes: Routes) -> None:
        if self.routes is None:
            logger.warning("routes given but no routing table: ignored")
            return
        previous, self._routes = self._routes, routes
        try:
            self._apply_routes()
        except ValueError:
            self._routes = previous
            raise

    def _apply_routes(self) -> None:
        assert self.routes is not None
        table: dict[tuple[str, str], Sequence[tuple[str, float]]] = {}
        for (namespace, service), splits in self._routes.items():
            missing = [rev for rev, _ in splits if self.buffer.revision(RevisionKey(namespace, rev)) is None]
            previous = self.routes.splits(namespace, service)
            if missing and previous:
                logger.info("route %s/%s waits for revision(s) %s; traffic stays where it was",
                            namespace, service, ", ".join(missing))
                table[(namespace, service)] = [(s.revision, s.percent) for s in previous]
            else:
                table[(namespace, service)] = splits
        self.routes.replace(table)


# ---- the static file -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StaticBackends:
    endpoints: tuple[EndpointsUpdate, ...] = ()
    routes: dict[tuple[str, str], list[tuple[str, float]]] = field(default_factory=dict)


def load_static(text: str, source: str = "backends") -> StaticBackends:
    """Parse a JSON or YAML document (JSON is YAML); errors name the source and the field.

    ::

        revisions:
          - {namespace: default, name: hello-00001, container_concurrency: 0, target: 10,
             timeout_seconds: 300, protocol: http1, ready: ["127.0.0.1:8013"], not_ready: []}
        routes:
          - {namespace: default, service: hello, traffic: [{revision: hello-00001, percent: 100}]}
    """
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not JSON or YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a mapping with 'revisions' and 'routes'")
    endpoints = []
    for i, rev in enumerate(_list(doc, "revisions", source)):
        where = f"{source}: revisions[{i}]"
        if not isinstance(rev, dict):
            raise ValueError(f"{where}: expected a mapping")
        try:
            info = RevisionInfo(
                namespace=str(rev.get("namespace", "")), name=str(rev.get("name", "")),
                container_concurrency=int(rev.get("container_concurrency", 0)),
                timeout=float(rev.get("timeout_seconds", 300)),
                response_start_timeout=float(rev.get("response_start_timeout_seconds", 0)),
                idle_timeout=float(rev.get("idle_timeout_seconds", 0)),
                protocol=str(rev.get("protocol", "http1")), target=float(rev.get("target", 0)),
                failure=str(rev.get("failure", "")), service=str(rev.get("service", "")),
                configuration=str(rev.get("configuration", "")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        activators = rev.get("activators")
        endpoints.append(EndpointsUpdate(
            info, frozenset(_addresses(rev, "ready", where)), frozenset(_addresses(rev, "not_ready", where)),
            activators=tuple(_addresses(rev, "activators", where)) if activators is not None else None))
    routes: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for i, route in enumerate(_list(doc, "routes", source)):
        where = f"{source}: routes[{i}]"
        try:
            key = (str(route["namespace"]), str(route["service"]))
            routes[key] = [(str(t["revision"]), float(t.get("percent", 100))) for t in route["traffic"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{where}: needs namespace, service and traffic [{{revision, percent}}]: {e!r}") from None
    RoutingTable().replace(routes)  # validate now, with the file's name in hand
    return StaticBackends(tuple(endpoints), routes)


def _list(doc: dict[str, Any], key: str, source: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"{source}: '{key}' must be a list")
    return value


def _addresses(rev: dict[str, Any], key: str, where: str) -> list[str]:
    value = rev.get(key) or []
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise ValueError(f"{where}.{key}: expected a list of addresses")
    return value


class StaticSource:
    """Reads ``path`` once and hands everything to the sink."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.synced = False

    def load(self) -> StaticBackends:
        with open(self.path, encoding="utf-8") as f:
            return load_static(f.read(), self.path)

    async def run(self, sink: BackendSink) -> None:
        backends = self.load()
        for update in backends.endpoints:
            sink.on_endpoints(update)
        if backends.routes:
            sink.on_routes(backends.routes)
        self.synced = True
        logger.info("loaded %d revisions and %d routes from %s",
                    len(backends.endpoints), len(backends.routes), self.path)


# ---- the gRPC feeds ------------------------------------------------------------------------

def endpoints_from_proto(m: kdp_pb2.RevisionEndpoints) -> EndpointsUpdate:
    info = RevisionInfo(
        namespace=m.namespace, name=m.revision, container_concurrency=m.container_concurrency,
        timeout=m.timeout_seconds or 300.0, response_start_timeout=m.response_start_timeout_seconds,
        idle_timeout=m.idle_timeout_seconds, protocol=m.protocol or PROTOCOLS[0], target=m.target,
        failure=m.failure, service=m.service, configuration=m.configuration)
    return EndpointsUpdate(info, frozenset(m.ready), frozenset(m.not_ready), deleted=m.deleted)


def routes_from_proto(m: kdp_pb2.RouteTable) -> Routes:
    return {(r.namespace, r.service): [(t.revision, t.percent) for t in r.traffic] for r in m.routes}


def decision_from_proto(m: kdp_pb2.Decision) -> DecisionUpdate:
    return DecisionUpdate(RevisionKey(m.namespace, m.revision), m.failure, m.desired_pods)


class FeedSource:
    """``EndpointsFeed.Watch``, ``DecisionFeed.Watch`` and ``RouteFeed.Watch`` at ``address``
    (``host:port``).

    Each stream starts with a snapshot and then carries changes. A stream that ends or breaks
    is reopened after a backoff; revisions keep their last known state meanwhile. ``synced``
    turns true once the endpoints snapshot has ended (its bookmark) and the first routing table
    has come: from then on an unknown revision really is unknown.
    """

    def __init__(self, address: str, *, subscriber: str, clock: Clock | None = None,
                 decisions: bool = True) -> None:
        self.address = address
        self.subscriber = subscriber
        self.decisions = decisions
        self.received = 0
        self._clock = clock
        self._synced: set[str] = set()
        """The streams whose snapshot has come whole: ``endpoints`` (its bookmark), ``routes``."""

    async def run(self, sink: BackendSink) -> None:
        request = kdp_pb2.WatchRequest(subscriber=self.subscriber)

        def endpoints(m: kdp_pb2.RevisionEndpoints) -> None:
            if m.snapshot_end:
                self._mark_synced("endpoints")
            else:
                sink.on_endpoints(endpoints_from_proto(m))

        def routes(m: kdp_pb2.RouteTable) -> None:
            sink.on_routes(routes_from_proto(m))
            self._mark_synced("routes")

        watches = [self._watch("endpoints", lambda ch: kdp_pb2_grpc.EndpointsFeedStub(ch).Watch(request), endpoints)]
        if self.decisions:
            watches.append(self._watch("decisions", lambda ch: kdp_pb2_grpc.DecisionFeedStub(ch).Watch(request),
                                       lambda m: sink.on_decision(decision_from_proto(m))))
        watches.append(self._watch("routes", lambda ch: kdp_pb2_grpc.RouteFeedStub(ch).Watch(request), routes))
        await asyncio.gather(*watches)

    @property
    def synced(self) -> bool:
        return len(self._synced) == 2

    def _mark_synced(self, stream: str) -> None:
        if stream not in self._synced:
            self._synced.add(stream)
            if self.synced:
                logger.info("feeds at %s synced", self.address)

    async def _watch(self, name: str, open_stream: Callable[[grpc.aio.Channel], Any],
                     handle: Callable[[Any], None]) -> None:
        # A fresh channel per attempt: our backoff, not gRPC's growing reconnect delay, decides
        # how soon a restarted server is found again.
        backoff = Backoff()
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address) as channel:
                    async for message in open_stream(channel):
                        backoff.reset()
                        self.received += 1
                        try:
                            handle(message)
                        except ValueError as e:  # one bad revision must not stop the feed
                            logger.warning("%s feed: skipped a bad message: %s", name, e)
                        except Exception:
                            logger.exception("%s feed: handling a message failed", name)
                logger.info("%s feed at %s ended; reopening", name, self.address)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                logger.debug("%s feed at %s failed: %s", name, self.address, e.code())
            except Exception:
                logger.exception("%s feed at %s failed", name, self.address)
            await sleep(loop_clock(self._clock), backoff.next())
