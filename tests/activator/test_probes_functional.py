"""The activator process answers probes and finds the revision of a request: kubelet health,
the ingress KProbe, the autoscaler's ``K-Network-Probe: activator``, revision lookup by headers,
by ``<rev>.<ns>.svc.<domain>`` and by the local route table."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.activator.harness import (
    NS,
    ActivatorProcess,
    FakeRuntime,
    FakeStatIngest,
    activator,  # noqa: F401 (fixture)
    activator_env,
    eventually,
    fake_pods,
    fetch,
    ingest,  # noqa: F401 (fixture)
    runtime,  # noqa: F401 (fixture)
    unique_rev,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


# ---- probes ---------------------------------------------------------------------------------------


async def test_kubelet_health_passes_on_any_path_once_the_autoscaler_connection_is_up(
        activator: ActivatorProcess) -> None:
    for path in ("/", "/healthz", "/anything?x=1"):
        r = await fetch(activator.port, "GET", path, [("User-Agent", "kube-probe/1.31")])
        assert (r.status, r.body) == (200, b""), path
    r = await fetch(activator.port, "GET", "/", [("K-Kubelet-Probe", "1")])
    assert r.status == 200


async def test_the_network_probe_echoes_the_hash_and_needs_one(activator: ActivatorProcess) -> None:
    r = await fetch(activator.port, "GET", "/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "abc123")])
    assert r.status == 200
    assert r.header("K-Network-Hash") == "abc123"
    r = await fetch(activator.port, "GET", "/", [("K-Network-Probe", "probe")])
    assert r.status == 400


async def test_the_autoscalers_probe_is_answered_activator_on_both_ports(activator: ActivatorProcess) -> None:
    for port in (activator.port, activator.h2c_port):
        r = await fetch(port, "GET", "/", [("K-Network-Probe", "activator"),
                                            ("User-Agent", "Knative-Autoscaling-Probe")])
        assert (r.status, r.body) == (200, b"activator")


async def test_an_unexpected_probe_value_is_a_bad_request(activator: ActivatorProcess) -> None:
    r = await fetch(activator.port, "GET", "/", [("K-Network-Probe", "queue<x>")])
    assert r.status == 400
    assert r.body == b'unexpected probe header value: "queue&lt;x&gt;"\n'


# ---- revision lookup ------------------------------------------------------------------------------


async def test_an_unknown_revision_is_not_found(activator: ActivatorProcess) -> None:
    r = await activator.request("no-such-revision")
    assert r.status == 404
    r = await fetch(activator.port, "GET", "/", host="nothing.example.com")
    assert r.status == 404
    r = await fetch(activator.port, "GET", "/", host="missing.ns.svc.cluster.local")
    assert r.status == 404


async def test_requests_find_their_revision_by_headers_or_by_the_cluster_local_host(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    a, b = unique_rev(), unique_rev()
    async with fake_pods(2) as (pa, pb):
        runtime.publish(a, ready=[pa.address])
        runtime.publish(b, ready=[pb.address])
        r = await eventually(lambda: _ok(activator.request(a, "/by-headers")), what="revision a served")
        assert r.status == 200
        r = await fetch(activator.port, "GET", "/by-host", host=f"{b}.{NS}.svc.cluster.local")
        assert r.status == 200
        r = await fetch(activator.port, "GET", "/by-host-port", host=f"{b}.{NS}.svc.cluster.local:80")
        assert r.status == 200
        # the headers win over the host
        r = await fetch(activator.port, "GET", "/both", [("Knative-Serving-Namespace", NS),
                                                          ("Knative-Serving-Revision", a)],
                        host=f"{b}.{NS}.svc.cluster.local")
        assert r.status == 200
        assert [q.target for q in pa.served] == ["/by-headers", "/both"]
        assert [q.target for q in pb.served] == ["/by-host", "/by-host-port"]
        # another cluster domain is not ours
        r = await fetch(activator.port, "GET", "/", host=f"{b}.{NS}.svc.example.org")
        assert r.status == 404
        runtime.publish(a, deleted=True)
        runtime.publish(b, deleted=True)


async def _ok(request):  # type: ignore[no-untyped-def]
    r = await request
    return r if r.status == 200 else None


async def test_the_local_route_table_splits_traffic_by_percent(ingest: FakeStatIngest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with fake_pods(3) as (p1, p2, p3):
        doc = {
            "revisions": [
                {"namespace": "default", "name": "hello-00001", "ready": [p1.address]},
                {"namespace": "default", "name": "hello-00002", "ready": [p2.address]},
                {"namespace": "default", "name": "solo-00001", "ready": [p3.address]},
            ],
            "routes": [
                {"namespace": "default", "service": "hello",
                 "traffic": [{"revision": "hello-00001", "percent": 25}, {"revision": "hello-00002", "percent": 75}]},
                {"namespace": "default", "service": "solo",
                 "traffic": [{"revision": "solo-00001", "percent": 100}, {"revision": "hello-00001", "percent": 0}]},
            ],
        }
        path = tmp_path / "backends.json"
        path.write_text(json.dumps(doc))
        async with ActivatorProcess(activator_env(autoscaler=f"127.0.0.1:{ingest.port}",
                                                  backends=str(path))) as act:
            await eventually(lambda: _ok(fetch(act.port, "GET", "/", host="solo.default.localhost")),
                             what="the static pods probed")
            hits: Counter[str] = Counter()
            for _ in range(200):
                r = await fetch(act.port, "GET", "/", host="hello.default.localhost:8080")
                assert r.status == 200
            hits.update({"hello-00001": len(p1.served), "hello-00002": len(p2.served)})
            for _ in range(20):
                r = await fetch(act.port, "GET", "/", host="SOLO.default.localhost")
                assert r.status == 200
            assert hits["hello-00001"] + hits["hello-00002"] == 200
            # 25% of 200: a binomial with sd ~6; 20..80 is far beyond any plausible draw
            assert 20 <= hits["hello-00001"] <= 80, hits
            assert len(p3.served) == 21  # 0 percent never routes to hello-00001
            assert len(p1.served) == hits["hello-00001"]
            r = await fetch(act.port, "GET", "/", host="hello.other.localhost")
            assert r.status == 404


async def test_the_route_table_from_the_runtime_feed_routes_by_host(activator: ActivatorProcess,
                                                                      runtime: FakeRuntime) -> None:
    a, b = unique_rev("hello"), unique_rev("hello")
    async with fake_pods(2) as (pa, pb):
        runtime.publish(a, ready=[pa.address])
        runtime.publish(b, ready=[pb.address])
        runtime.set_routes({(NS, "hello"): [(a, 100)]})
        await eventually(lambda: _ok(fetch(activator.port, "GET", "/", host=f"hello.{NS}.localhost")),
                         what="route served")
        assert pa.served and not pb.served
        # a new table replaces the old one as a whole
        runtime.set_routes({(NS, "hi"): [(b, 100)]})
        await eventually(lambda: _ok(fetch(activator.port, "GET", "/", host=f"hi.{NS}.localhost")),
                         what="new route served")
        r = await fetch(activator.port, "GET", "/", host=f"hello.{NS}.localhost")
        assert r.status == 404
        runtime.set_routes({})
        runtime.publish(a, deleted=True)
        runtime.publish(b, deleted=True)
