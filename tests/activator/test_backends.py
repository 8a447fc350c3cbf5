"""Discovery: the static file, the wiring into prober and throttler, and the gRPC feeds
against a real grpc.aio server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from activator.backends import (
    Backends,
    DecisionUpdate,
    EndpointsUpdate,
    FeedSource,
    StaticSource,
    decision_from_proto,
    endpoints_from_proto,
    load_static,
)
from activator.buffer import RequestBuffer
from activator.clock import ManualClock
from activator.prober import Prober
from activator.revisions import RevisionInfo, RevisionKey, RoutingTable
from activator.throttler import PacingParams, RevisionFailed, RevisionNotFound, Throttler, ThrottlerParams
from proto import kdp_pb2, kdp_pb2_grpc

KEY = RevisionKey("default", "hello-00001")

STATIC_YAML = """
revisions:
  - namespace: default
    name: hello-00001
    container_concurrency: 2
    timeout_seconds: 60
    response_start_timeout_seconds: 5
    protocol: h2c
    target: 10
    ready: ["127.0.0.1:9001"]
    not_ready: ["127.0.0.1:9002"]
    activators: ["10.0.0.1"]
    service: hello
routes:
  - namespace: default
    service: hello
    traffic: [{revision: hello-00001, percent: 100}]
"""


def test_a_static_yaml_file_describes_revisions_and_routes() -> None:
    static = load_static(STATIC_YAML, "test.yaml")
    (update,) = static.endpoints
    assert update.info == RevisionInfo("default", "hello-00001", container_concurrency=2, timeout=60.0,
                                       response_start_timeout=5.0, protocol="h2c", target=10.0, service="hello")
    assert update.ready == {"127.0.0.1:9001"} and update.not_ready == {"127.0.0.1:9002"}
    assert update.activators == ("10.0.0.1",)
    assert static.routes == {("default", "hello"): [("hello-00001", 100.0)]}


def test_a_static_json_file_works_too_with_defaults() -> None:
    static = load_static(json.dumps({"revisions": [{"namespace": "ns", "name": "r"}]}))
    (update,) = static.endpoints
    assert update.info == RevisionInfo("ns", "r") and update.ready == frozenset() and update.activators is None


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("revisions: [{namespace: ns, name: r, container_concurrency: -1}]",
                 r"f\.yaml: revisions\[0\]: container_concurrency", id="bad-cc"),
    pytest.param("revisions: [{namespace: ns, name: r, protocol: h3}]", r"revisions\[0\]: protocol", id="bad-protocol"),
    pytest.param("revisions: [{namespace: ns, name: r, ready: [1]}]", r"revisions\[0\]\.ready", id="bad-address"),
    pytest.param("routes: [{namespace: ns, service: s}]", r"routes\[0\]: needs", id="route-without-traffic"),
    pytest.param("routes: [{namespace: ns, service: s, traffic: [{revision: r, percent: -5}]}]", "percent",
                 id="negative-percent"),
    pytest.param("revisions: {a: 1}", "'revisions' must be a list", id="not-a-list"),
    pytest.param("[1, 2]", "expected a mapping", id="not-a-mapping"),
    pytest.param("revisions: [", "not JSON or YAML", id="broken-yaml"),
])
def test_a_bad_static_file_is_rejected_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_static(text, "f.yaml")


def test_endpoints_messages_convert_with_upstream_defaults() -> None:
    update = endpoints_from_proto(kdp_pb2.RevisionEndpoints(
        namespace="ns", revision="r", ready=["a:1"], not_ready=["b:1"], container_concurrency=3, target=7))
    assert update.info == RevisionInfo("ns", "r", container_concurrency=3, target=7.0)
    assert update.ready == {"a:1"} and update.not_ready == {"b:1"} and not update.deleted
    gone = endpoints_from_proto(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r", deleted=True))
    assert gone.deleted
    decision = decision_from_proto(kdp_pb2.Decision(namespace="ns", revision="r", failure="boom", desired_pods=2))
    assert decision == DecisionUpdate(RevisionKey("ns", "r"), "boom", 2)


class Stack:
    """Buffer + prober (scripted check) + Backends, on a manual clock."""

    def __init__(self, healthy: set[str]) -> None:
        self.clock = ManualClock(0.0)
        self.healthy = healthy

        async def check(dest: str) -> bool:
            return dest in self.healthy

        self.buffer = RequestBuffer(Throttler(ThrottlerParams(self_ip="10.0.0.2", pacing=PacingParams(warmup=0)),
                                              random.Random(0)), clock=self.clock)
        self.prober = Prober(lambda k, h: None, check=check, clock=self.clock)
        self.routes = RoutingTable("localhost")
        self.backends = Backends(self.buffer, self.prober, self.routes)

    async def close(self) -> None:
        await self.prober.close()


@contextlib.asynccontextmanager
async def stack(healthy: set[str]) -> AsyncIterator[Stack]:
    s = Stack(healthy)
    try:
        yield s
    finally:
        await s.close()


async def test_a_static_file_feeds_the_throttler_through_the_prober(tmp_path: Path) -> None:
    path = tmp_path / "backends.yaml"
    path.write_text(STATIC_YAML)
    async with stack({"127.0.0.1:9002"}) as s:
        await StaticSource(path).run(s.backends)
        await s.clock.run_ready()
        info = s.buffer.revision(KEY)
        assert info is not None and info.container_concurrency == 2
        lease = await s.buffer.acquire(KEY)
        assert lease.dest == "127.0.0.1:9002"  # the not-ready pod answered; the ready one did not
        assert s.routes.lookup("hello.default.localhost") == KEY


async def test_a_refused_connection_sends_the_pod_back_to_the_prober() -> None:
    async with stack({"a:1", "b:1"}) as s:
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r", container_concurrency=1),
                                                frozenset({"a:1", "b:1"})))
        await s.clock.run_ready()
        key = RevisionKey("ns", "r")
        lease = await s.buffer.acquire(key)
        s.healthy.discard(lease.dest)
        lease.refused()
        assert s.prober.healthy(key) == {"a:1", "b:1"} - {lease.dest}
        await s.clock.advance(0.2)
        assert lease.dest not in s.prober.healthy(key)
        s.healthy.add(lease.dest)
        await s.clock.advance(0.2)
        assert s.prober.healthy(key) == {"a:1", "b:1"}
        assert len(s.buffer.throttler.get(key).pods) == 2


async def test_activator_ips_drive_subsetting() -> None:
    async with stack({f"p:{i}" for i in range(4)}) as s:
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r", container_concurrency=5),
                                                frozenset(f"p:{i}" for i in range(4)),
                                                activators=("10.0.0.1", "10.0.0.2")))
        await s.clock.run_ready()
        rt = s.buffer.throttler.get(RevisionKey("ns", "r"))
        assert [p.dest for p in rt.pods] == ["p:2", "p:3"] and rt.breaker.capacity == 10


async def test_a_decision_failure_fails_waiters_and_survives_arriving_first() -> None:
    async with stack(set()) as s:
        s.backends.on_decision(DecisionUpdate(KEY, "image pull failed"))  # before the revision is known
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("default", "hello-00001")))
        with pytest.raises(RevisionFailed, match="image pull failed"):
            await s.buffer.acquire(KEY)
        s.backends.on_decision(DecisionUpdate(KEY, ""))
        waiter = asyncio.ensure_future(s.buffer.acquire(KEY))
        await s.clock.run_ready()
        s.backends.on_decision(DecisionUpdate(KEY, "activation timed out"))
        with pytest.raises(RevisionFailed, match="activation timed out"):
            await waiter


async def test_a_deleted_revision_is_forgotten_everywhere() -> None:
    async with stack({"a:1"}) as s:
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r"), frozenset({"a:1"})))
        await s.clock.run_ready()
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r"), deleted=True))
        with pytest.raises(RevisionNotFound):
            await s.buffer.acquire(RevisionKey("ns", "r"))
        assert s.prober.healthy(RevisionKey("ns", "r")) == frozenset()


async def test_a_route_naming_an_unknown_revision_keeps_the_old_splits_until_it_arrives() -> None:
    async with stack({"a:1", "b:1"}) as s:
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r1"), frozenset({"a:1"})))
        s.backends.on_routes({("ns", "svc"): [("r1", 100.0)]})
        assert s.routes.lookup("svc.ns.localhost") == RevisionKey("ns", "r1")
        # the route moves to r2 before r2's endpoints arrive (separate streams): traffic stays
        s.backends.on_routes({("ns", "svc"): [("r1", 50.0), ("r2", 50.0)], ("ns", "new"): [("r3", 100.0)]})
        assert [(x.revision, x.percent) for x in s.routes.splits("ns", "svc")] == [("r1", 100.0)]
        # a route with nothing to fall back on is taken as it is (its revision is just unknown)
        assert s.routes.lookup("new.ns.localhost") == RevisionKey("ns", "r3")
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r2"), frozenset({"b:1"})))
        assert [(x.revision, x.percent) for x in s.routes.splits("ns", "svc")] == [("r1", 50.0), ("r2", 50.0)]
        # a bad table is refused as a whole and the good one stays
        with pytest.raises(ValueError, match="ns/svc"):
            s.backends.on_routes({("ns", "svc"): [("r1", -1.0)]})
        s.backends.on_endpoints(EndpointsUpdate(RevisionInfo("ns", "r4")))
        assert [(x.revision, x.percent) for x in s.routes.splits("ns", "svc")] == [("r1", 50.0), ("r2", 50.0)]


# ---- the gRPC feeds against a real server --------------------------------------------------

class Feeds:
    """Serves whatever is put on the queues; ``None`` ends the stream."""

    def __init__(self) -> None:
        self.endpoints: asyncio.Queue[kdp_pb2.RevisionEndpoints | None] = asyncio.Queue()
        self.decisions: asyncio.Queue[kdp_pb2.Decision | None] = asyncio.Queue()
        self.routes: asyncio.Queue[kdp_pb2.RouteTable | None] = asyncio.Queue()
        self.subscribers: list[str] = []


class EndpointsServicer(kdp_pb2_grpc.EndpointsFeedServicer):
    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds

    async def Watch(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.feeds.subscribers.append(request.subscriber)
        while (item := await self.feeds.endpoints.get()) is not None:
            yield item


class DecisionServicer(kdp_pb2_grpc.DecisionFeedServicer):
    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds

    async def Watch(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.feeds.subscribers.append(request.subscriber)
        while (item := await self.feeds.decisions.get()) is not None:
            yield item


class RouteServicer(kdp_pb2_grpc.RouteFeedServicer):
    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds

    async def Watch(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        while (item := await self.feeds.routes.get()) is not None:
            yield item


@contextlib.asynccontextmanager
async def feed_server(feeds: Feeds, port: int = 0) -> AsyncIterator[int]:
    server = grpc.aio.server()
    kdp_pb2_grpc.add_EndpointsFeedServicer_to_server(EndpointsServicer(feeds), server)
    kdp_pb2_grpc.add_DecisionFeedServicer_to_server(DecisionServicer(feeds), server)
    kdp_pb2_grpc.add_RouteFeedServicer_to_server(RouteServicer(feeds), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(0)


class RecordingSink:
    def __init__(self) -> None:
        self.events: asyncio.Queue[object] = asyncio.Queue()

    def on_endpoints(self, update: EndpointsUpdate) -> None:
        self.events.put_nowait(update)

    def on_decision(self, update: DecisionUpdate) -> None:
        self.events.put_nowait(update)

    def on_routes(self, routes: object) -> None:
        self.events.put_nowait(routes)


@pytest.mark.functional
async def test_the_feeds_deliver_endpoints_and_decisions_and_reopen_after_an_end() -> None:
    feeds, sink, clock = Feeds(), RecordingSink(), ManualClock(0.0)
    async with feed_server(feeds) as port:
        source = FeedSource(f"127.0.0.1:{port}", subscriber="activator-0", clock=clock)
        task = asyncio.ensure_future(source.run(sink))
        try:
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r", ready=["a:1"]))
            got = await asyncio.wait_for(sink.events.get(), 5)
            assert isinstance(got, EndpointsUpdate) and got.ready == {"a:1"}
            await feeds.decisions.put(kdp_pb2.Decision(namespace="ns", revision="r", failure="crash"))
            got = await asyncio.wait_for(sink.events.get(), 5)
            assert got == DecisionUpdate(RevisionKey("ns", "r"), "crash", 0)
            assert sorted(feeds.subscribers) == ["activator-0", "activator-0"]
            # a bad message is skipped, the stream goes on
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="bad", protocol="h3"))
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r2"))
            got = await asyncio.wait_for(sink.events.get(), 5)
            assert got.info.name == "r2"
            # the server ends the endpoints stream: it is reopened after a backoff delay
            await feeds.endpoints.put(None)
            async with asyncio.timeout(5):
                while feeds.subscribers.count("activator-0") < 3:
                    if clock.pending:
                        await clock.advance(max(0.0, clock.pending[0] - clock.now))
                    await asyncio.sleep(0.01)
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r3"))
            got = await asyncio.wait_for(sink.events.get(), 5)
            assert got.info.name == "r3"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.functional
async def test_the_feeds_wait_for_a_server_that_is_not_up_yet() -> None:
    feeds, sink, clock = Feeds(), RecordingSink(), ManualClock(0.0)
    async with feed_server(feeds) as port:
        pass
    source = FeedSource(f"127.0.0.1:{port}", subscriber="a", clock=clock, decisions=False)
    task = asyncio.ensure_future(source.run(sink))
    try:
        for _ in range(3):  # a few failed attempts, each followed by a backoff delay
            async with asyncio.timeout(5):
                while not clock.pending:
                    await asyncio.sleep(0.01)
            await clock.advance(clock.pending[0] - clock.now)
        async with feed_server(feeds, port):
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r"))
            async with asyncio.timeout(5):
                while sink.events.empty():
                    if clock.pending:
                        await clock.advance(max(0.0, clock.pending[0] - clock.now))
                    await asyncio.sleep(0.01)
            got = sink.events.get_nowait()
            assert got.info.name == "r"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.functional
async def test_the_source_is_synced_after_the_endpoints_bookmark_and_the_first_route_table() -> None:
    feeds, sink = Feeds(), RecordingSink()
    async with feed_server(feeds) as port:
        source = FeedSource(f"127.0.0.1:{port}", subscriber="a", decisions=False)
        task = asyncio.ensure_future(source.run(sink))
        try:
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r"))
            assert (await asyncio.wait_for(sink.events.get(), 5)).info.name == "r"
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(snapshot_end=True))
            await feeds.endpoints.put(kdp_pb2.RevisionEndpoints(namespace="ns", revision="r2"))
            assert (await asyncio.wait_for(sink.events.get(), 5)).info.name == "r2"  # the bookmark is no revision
            assert not source.synced  # no routing table yet
            await feeds.routes.put(kdp_pb2.RouteTable())
            assert await asyncio.wait_for(sink.events.get(), 5) == {}
            assert source.synced
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_static_source_is_synced_once_loaded(tmp_path: Path) -> None:
    path = tmp_path / "backends.yaml"
    path.write_text(STATIC_YAML)
    source = StaticSource(path)
    assert not source.synced
    await source.run(RecordingSink())
    assert source.synced
