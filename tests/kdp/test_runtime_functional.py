"""The runtime (control plane) against a scripted autoscaler, with real pods on 127.0.0.1:
what it syncs, how it scales, what its feeds say, and how it survives an autoscaler restart."""
from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml

from autoscaler.config import AutoscalerConfig
from kdp.manifest import ServiceSpec, parse_manifests
from kdp.restarts import BackoffPolicy
from kdp.runtime import Runtime, RuntimeConfig
from proto import kdp_pb2, kdp_pb2_grpc
from tests.kdp.fakes import FakeAutoscaler, eventually

pytestmark = pytest.mark.functional

APPS = Path(__file__).resolve().parent / "apps"
CONFIG = AutoscalerConfig(allow_zero_initial_scale=True)


def service(env: str = "a", *, annotations: dict[str, str] | None = None, cc: int = 0,
            app_env: dict[str, str] | None = None, traffic: list[dict[str, Any]] | None = None) -> list[ServiceSpec]:
    container = {"command": [sys.executable, "app.py"],
                 "env": [{"name": "V", "value": env}, *({"name": k, "value": v} for k, v in (app_env or {}).items())]}
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
        "spec": {"template": {"metadata": {"annotations": annotations or {}},
                              "spec": {"containerConcurrency": cc, "containers": [container]}}}}
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return parse_manifests(yaml.safe_dump(doc), base_dir=str(APPS), config=CONFIG)


class Watch:
    """A subscriber of one of the runtime's feeds, collecting every message."""

    def __init__(self, address: str, stub: Any) -> None:
        self.messages: list[Any] = []
        self._channel = grpc.aio.insecure_channel(address)
        self._call = stub(self._channel).Watch(kdp_pb2.WatchRequest(subscriber="test"))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for m in self._call:
                self.messages.append(m)

    async def close(self) -> None:
        self._call.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()

    def last(self, revision: str) -> Any:
        return next((m for m in reversed(self.messages) if getattr(m, "revision", None) == revision), None)


@pytest_asyncio.fixture
async def world() -> AsyncIterator[tuple[Runtime, FakeAutoscaler]]:
    fa = await FakeAutoscaler().start()
    rt = Runtime(RuntimeConfig(autoscaler_address=fa.address, autoscaler_config=CONFIG, drain_quiet_period=0.2,
                               resync_period=1.0, backoff=BackoffPolicy(initial=0.1, maximum=1.0)))
    await rt.start()
    fa.scale_target = rt.feed_address
    try:
        yield rt, fa
    finally:
        await rt.shutdown(kill=True)
        await fa.stop()


def ready_count(rt: Runtime, revision: str) -> int:
    rp = rt.supervisor.revisions.get(("default", revision))
    return rp.counts().ready if rp is not None else -1


async def test_a_new_revision_is_synced_to_the_autoscaler_and_starts_at_its_initial_scale(world: Any) -> None:
    rt, fa = world
    endpoints = Watch(rt.feed_address, kdp_pb2_grpc.EndpointsFeedStub)
    try:
        rt.apply(service(annotations={"autoscaling.knative.dev/window": "6s"}, cc=3))
        spec = await eventually(lambda: fa.last_spec("hello-00001"), what="SyncRevision")
        assert (spec.namespace, spec.service, spec.container_concurrency, spec.reachable, spec.deleted) == \
            ("default", "hello", 3, True, False)
        assert dict(spec.annotations) == {"autoscaling.knative.dev/window": "6s"}
        await eventually(lambda: ready_count(rt, "hello-00001") == 1, what="the initial pod")
        counts = await eventually(lambda: (p := fa.last_pods("hello-00001")) and p.ready == 1 and p, what="ReportPods")
        assert (counts.not_ready, counts.pending, counts.terminating, counts.failure) == (0, 0, 0, "")
        m = await eventually(lambda: (e := endpoints.last("hello-00001")) and e.ready and e, what="ready endpoints")
        assert m.container_concurrency == 3 and m.protocol == "http1" and m.timeout_seconds == 300
        assert m.target == pytest.approx(2.1)  # cc 3 x 70 % utilisation
        assert m.service == "hello" and list(m.ready) == rt.supervisor.revisions[("default", "hello-00001")].addresses()[0]
    finally:
        await endpoints.close()


async def test_the_endpoints_feed_sends_the_snapshot_then_a_bookmark_then_changes(world: Any) -> None:
    rt, _ = world
    zero = {"autoscaling.knative.dev/initial-scale": "0"}
    rt.apply(service("a", annotations=zero))
    endpoints = Watch(rt.feed_address, kdp_pb2_grpc.EndpointsFeedStub)
    try:
        await eventually(lambda: any(m.snapshot_end for m in endpoints.messages), what="the bookmark")
        rt.apply(service("b", annotations=zero))
        await eventually(lambda: endpoints.last("hello-00002"), what="the new revision")
        assert [(m.revision, m.snapshot_end) for m in endpoints.messages] == \
            [("hello-00001", False), ("", True), ("hello-00002", False)]
    finally:
        await endpoints.close()


async def test_the_autoscalers_scale_calls_set_the_pod_count(world: Any) -> None:
    rt, fa = world
    rt.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "0"}))
    assert ready_count(rt, "hello-00001") == 0
    reply = await fa.scale("hello-00001", 2)
    assert (reply.ok, reply.replicas) == (True, 2)
    await eventually(lambda: ready_count(rt, "hello-00001") == 2, what="two ready pods")
    await eventually(lambda: (p := fa.last_pods("hello-00001")) and p.ready == 2, what="two pods reported")
    reply = await fa.scale("hello-00001", 0)
    assert reply.ok
    await eventually(lambda: not rt.supervisor.revisions[("default", "hello-00001")].pods, what="no pods")
    unknown = await fa.scale("nope-00001", 1)
    assert not unknown.ok and "unknown revision default/nope-00001" in unknown.error
    assert rt.scale_calls == 2


async def test_decisions_are_relayed_and_new_subscribers_get_the_last_one_first(world: Any) -> None:
    rt, fa = world
    rt.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "0"}))
    early = Watch(rt.feed_address, kdp_pb2_grpc.DecisionFeedStub)
    try:
        await eventually(lambda: rt.link.connected and fa.watchers, what="the runtime following the decisions")
        fa.decide("hello-00001", desired=3, in_panic=True)
        d = await eventually(lambda: early.last("hello-00001"), what="a relayed decision")
        assert (d.desired_pods, d.in_panic, d.mode) == (3, True, kdp_pb2.MODE_PROXY)
        late = Watch(rt.feed_address, kdp_pb2_grpc.DecisionFeedStub)
        try:
            d = await eventually(lambda: late.last("hello-00001"), what="the snapshot")
            assert d.desired_pods == 3
        finally:
            await late.close()
        rev = rt.status()["services"][0]["revisions"][0]
        assert rev["autoscaler"]["mode"] == "proxy" and rev["autoscaler"]["in_panic"] is True
    finally:
        await early.close()


async def test_a_changed_manifest_moves_traffic_once_the_new_revision_is_ready(world: Any) -> None:
    rt, fa = world
    routes = Watch(rt.feed_address, kdp_pb2_grpc.RouteFeedStub)
    try:
        rt.apply(service("a"))
        await eventually(lambda: ready_count(rt, "hello-00001") == 1, what="the first revision")
        rt.apply(service("b"))
        assert [(t.revision, t.percent) for t in routes.messages[-1].routes[0].traffic] == [("hello-00001", 100)]
        await eventually(lambda: ready_count(rt, "hello-00002") == 1, what="the second revision")
        await eventually(lambda: routes.messages[-1].routes[0].traffic[0].revision == "hello-00002",
                         what="traffic on the new revision")
        table = routes.messages[-1]
        assert [(r.namespace, r.service, [(t.revision, t.percent) for t in r.traffic]) for r in table.routes] == \
            [("default", "hello", [("hello-00002", 100.0)])]
        old = await eventually(lambda: (s := fa.last_spec("hello-00001")) and not s.reachable and s,
                               what="the old revision unreachable")
        assert old.revision == "hello-00001"
        # traffic: percentages across revisions are honoured, tags become routes
        rt.apply(service("b", traffic=[{"revisionName": "hello-00001", "percent": 25, "tag": "old"},
                                       {"latestRevision": True, "percent": 75}]))
        table = await eventually(lambda: len(routes.messages[-1].routes) == 2 and routes.messages[-1],
                                 what="the split")
        assert {r.service: [(t.revision, t.percent) for t in r.traffic] for r in table.routes} == \
            {"hello": [("hello-00001", 25.0), ("hello-00002", 75.0)], "old-hello": [("hello-00001", 100.0)]}
    finally:
        await routes.close()


async def test_a_restarted_autoscaler_gets_every_revision_and_pod_count_again(world: Any) -> None:
    rt, fa = world
    rt.apply(service())
    await eventually(lambda: ready_count(rt, "hello-00001") == 1, what="a ready pod")
    await eventually(lambda: (p := fa.last_pods("hello-00001")) and p.ready == 1, what="pods reported")
    port = fa.port
    await fa.stop()
    await eventually(lambda: not rt.link.connected, what="the link to notice")
    fresh = await FakeAutoscaler(rt.feed_address).start(port)
    try:
        spec = await eventually(lambda: fresh.last_spec("hello-00001"), what="SyncRevision after the restart")
        assert spec.reachable
        pods = await eventually(lambda: fresh.last_pods("hello-00001"), what="ReportPods after the restart")
        assert pods.ready == 1
        assert ready_count(rt, "hello-00001") == 1  # nothing was scaled down meanwhile
    finally:
        await fresh.stop()


async def test_a_failing_revision_reports_its_failure_in_endpoints_pod_counts_and_status(world: Any) -> None:
    rt, fa = world
    endpoints = Watch(rt.feed_address, kdp_pb2_grpc.EndpointsFeedStub)
    try:
        rt.apply(service(app_env={"CRASH_AT_START": "cannot bind: permission denied"}))
        m = await eventually(lambda: (e := endpoints.last("hello-00001")) and e.failure and e, what="a failure")
        assert "CrashLoopBackOff" in m.failure and "cannot bind: permission denied" in m.failure
        pods = await eventually(lambda: (p := fa.last_pods("hello-00001")) and p.failure and p, what="failed pods")
        assert pods.failure == m.failure
        assert rt.status()["services"][0]["revisions"][0]["failure"] == m.failure
    finally:
        await endpoints.close()


async def test_deleting_a_service_stops_its_pods_and_tells_everyone(world: Any) -> None:
    rt, fa = world
    endpoints = Watch(rt.feed_address, kdp_pb2_grpc.EndpointsFeedStub)
    try:
        rt.apply(service())
        await eventually(lambda: ready_count(rt, "hello-00001") == 1, what="a ready pod")
        await rt.delete_service("default", "hello")
        assert rt.supervisor.revisions == {} and rt.catalog.routes == ()
        await eventually(lambda: (e := endpoints.last("hello-00001")) and e.deleted, what="deleted endpoints")
        await eventually(lambda: (s := fa.last_spec("hello-00001")) and s.deleted, what="deleted revision")
    finally:
        await endpoints.close()


async def test_a_revision_with_initial_scale_zero_takes_traffic_at_once(world: Any) -> None:
    rt, fa = world
    zero = {"autoscaling.knative.dev/initial-scale": "0"}
    rt.apply(service("a", annotations=zero))
    rt.apply(service("b", annotations=zero))
    # upstream: ready without a pod, so latestRevision moves on without waiting for one
    assert [(r.name, r.splits) for r in rt.catalog.routes] == [("hello", (("hello-00002", 100),))]
    assert rt.supervisor.revisions[("default", "hello-00002")].pods == {}
