from __future__ import annotations

import pytest

from activator.revisions import RevisionInfo, RevisionKey, RevisionResolver, RoutingTable, revision_from_host


@pytest.mark.parametrize(("host", "expected"), [
    pytest.param("hello-00001.default.svc.cluster.local", ("default", "hello-00001"), id="plain"),
    pytest.param("hello-00001.default.svc.cluster.local:8012", ("default", "hello-00001"), id="with-port"),
    pytest.param("hello.default.svc.example.org", None, id="other-domain"),
    pytest.param("hello.default.cluster.local", None, id="no-svc"),
    pytest.param("hello.default.svc", None, id="too-few-parts"),
    pytest.param("hello.default.svc.cluster.local.", None, id="trailing-dot-is-not-the-domain"),
    pytest.param("Hello.default.svc.Cluster.local", None, id="domain-compared-exactly"),
    pytest.param(".default.svc.cluster.local", None, id="empty-name"),
])
def test_host_fallback_follows_upstreams_split(host: str, expected: tuple[str, str] | None) -> None:
    got = revision_from_host(host, "cluster.local")
    assert got == (RevisionKey(*expected) if expected else None)


def test_headers_win_over_the_host() -> None:
    r = RevisionResolver("cluster.local")
    assert r.resolve("ns", "rev", "other.x.svc.cluster.local") == RevisionKey("ns", "rev")


def test_one_empty_header_falls_back_to_the_host() -> None:
    r = RevisionResolver("cluster.local")
    assert r.resolve("ns", "", "rev.ns2.svc.cluster.local") == RevisionKey("ns2", "rev")
    assert r.resolve(None, "rev", "nothing.example") is None


def test_revision_key_prints_as_namespace_slash_name() -> None:
    assert str(RevisionKey("ns", "rev")) == "ns/rev"


def test_routing_table_maps_service_host_to_its_only_revision() -> None:
    table = RoutingTable("localhost")
    table.set_route("default", "hello", [("hello-00001", 100)])
    assert table.lookup("hello.default.localhost:8080") == RevisionKey("default", "hello-00001")
    assert table.lookup("HELLO.Default.LOCALHOST") == RevisionKey("default", "hello-00001")
    assert table.lookup("bye.default.localhost") is None
    assert table.lookup("hello.default.example.com") is None
    assert table.lookup("x.hello.default.localhost") is None


def test_routing_table_splits_traffic_by_percent() -> None:
    points = iter([0.0, 0.19, 0.2, 0.5, 0.99])
    table = RoutingTable("example.com", rng=lambda: next(points))
    table.set_route("ns", "svc", [("v1", 20), ("v2", 80)])
    picks = [table.lookup("svc.ns.example.com").name for _ in range(5)]
    assert picks == ["v1", "v1", "v2", "v2", "v2"]


def test_routing_table_never_picks_a_zero_percent_revision() -> None:
    table = RoutingTable("d", rng=lambda: 0.999999)
    table.set_route("ns", "svc", [("v1", 100), ("v2", 0)])
    assert table.lookup("svc.ns.d").name == "v1"


def test_routing_table_rejects_bad_routes_naming_the_route() -> None:
    table = RoutingTable()
    with pytest.raises(ValueError, match="ns/svc"):
        table.set_route("ns", "svc", [])
    with pytest.raises(ValueError, match="ns/svc.*percent"):
        table.set_route("ns", "svc", [("v1", -1)])
    with pytest.raises(ValueError, match="sum to 0"):
        table.set_route("ns", "svc", [("v1", 0)])


def test_replacing_the_table_is_all_or_nothing() -> None:
    table = RoutingTable("d")
    table.set_route("ns", "a", [("a1", 100)])
    with pytest.raises(ValueError):
        table.replace({("ns", "b"): [("b1", 100)], ("ns", "c"): []})
    assert table.lookup("a.ns.d") == RevisionKey("ns", "a1")
    table.replace({("ns", "b"): [("b1", 100)]})
    assert table.lookup("a.ns.d") is None and table.lookup("b.ns.d") == RevisionKey("ns", "b1")
    assert len(table) == 1


def test_resolver_uses_the_routing_table_last() -> None:
    table = RoutingTable("localhost")
    table.set_route("default", "hello", [("hello-1", 100)])
    r = RevisionResolver("cluster.local", table)
    assert r.resolve(None, None, "hello.default.localhost") == RevisionKey("default", "hello-1")
    assert r.resolve(None, None, "rev.ns.svc.cluster.local") == RevisionKey("ns", "rev")
    assert r.resolve(None, None, "nope.localhost") is None


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"container_concurrency": -1}, "container_concurrency", id="negative-cc"),
    pytest.param({"protocol": "h3"}, "protocol", id="unknown-protocol"),
    pytest.param({"timeout": -1.0}, "timeout", id="negative-timeout"),
    pytest.param({"target": float("nan")}, "target", id="nan-target"),
    pytest.param({"name": ""}, "name", id="no-name"),
])
def test_revision_info_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"namespace": "ns", "name": "rev"}
    with pytest.raises(ValueError, match=message):
        RevisionInfo(**(base | kwargs))  # type: ignore[arg-type]


def test_revision_info_has_upstreams_defaults_and_a_key() -> None:
    info = RevisionInfo("ns", "rev")
    assert (info.container_concurrency, info.timeout, info.response_start_timeout, info.idle_timeout) == (0, 300.0, 0.0, 0.0)
    assert info.protocol == "http1" and info.key == RevisionKey("ns", "rev")
