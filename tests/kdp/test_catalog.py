"""Revisions and routes: naming, new revisions on template change, traffic and reachability."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from kdp.catalog import Catalog, CatalogError, Route
from kdp.manifest import ServiceSpec, parse_manifests


def spec(*, name: str = "hello", env: str = "a", traffic: list[dict[str, Any]] | None = None,
         revision_name: str = "", namespace: str = "default") -> ServiceSpec:
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"metadata": {"name": revision_name} if revision_name else {},
                              "spec": {"containers": [{"command": ["app"], "env": [{"name": "V", "value": env}]}]}}},
    }
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return parse_manifests(yaml.safe_dump(doc))[0]


def routes(cat: Catalog) -> dict[str, tuple[tuple[str, int], ...]]:
    return {r.name: r.splits for r in cat.routes}


def test_the_first_apply_creates_revision_00001_with_all_traffic() -> None:
    cat = Catalog()
    result = cat.apply(spec())
    assert result.created is not None and result.created.name == "hello-00001" and result.routes_changed
    assert cat.routes == (Route("default", "hello", "hello", (("hello-00001", 100),)),)
    assert cat.reachable(("default", "hello-00001"))


def test_an_unchanged_template_creates_no_revision() -> None:
    cat = Catalog()
    cat.apply(spec())
    result = cat.apply(spec())
    assert result.created is None and not result.routes_changed
    assert list(cat.revisions) == [("default", "hello-00001")]


def test_a_changed_template_creates_the_next_revision_which_takes_traffic_once_ready() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.mark_ready(("default", "hello-00001"))
    result = cat.apply(spec(env="b"))
    assert result.created is not None and result.created.name == "hello-00002"
    # upstream's latestReadyRevisionName: the new revision gets traffic when it has been ready
    assert routes(cat) == {"hello": (("hello-00001", 100),)}
    assert cat.mark_ready(("default", "hello-00002"))
    assert routes(cat) == {"hello": (("hello-00002", 100),)}
    assert not cat.reachable(("default", "hello-00001"))
    assert not cat.mark_ready(("default", "hello-00002"))  # once is enough


def test_before_any_revision_was_ready_latest_traffic_goes_to_the_latest_created() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.apply(spec(env="b"))
    assert routes(cat) == {"hello": (("hello-00002", 100),)}


def test_reverting_to_an_older_template_creates_a_new_revision() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.apply(spec(env="b"))
    result = cat.apply(spec(env="a"))
    assert result.created is not None and result.created.name == "hello-00003"


def test_traffic_percentages_split_across_revisions_and_tags_get_their_own_routes() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.mark_ready(("default", "hello-00001"))
    cat.apply(spec(env="b", traffic=[{"revisionName": "hello-00001", "percent": 70, "tag": "stable"},
                                     {"latestRevision": True, "percent": 30, "tag": "canary"}]))
    cat.mark_ready(("default", "hello-00002"))
    assert routes(cat) == {"hello": (("hello-00001", 70), ("hello-00002", 30)),
                           "stable-hello": (("hello-00001", 100),), "canary-hello": (("hello-00002", 100),)}
    assert cat.traffic_of(("default", "hello-00001")) == 70
    assert cat.traffic_of(("default", "hello-00002")) == 30


def test_a_zero_percent_tagged_revision_stays_reachable_by_its_tag_only() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.mark_ready(("default", "hello-00001"))
    cat.apply(spec(env="b", traffic=[{"revisionName": "hello-00001", "percent": 0, "tag": "old"},
                                     {"latestRevision": True, "percent": 100}]))
    cat.mark_ready(("default", "hello-00002"))
    assert routes(cat)["hello"] == (("hello-00002", 100),)
    assert cat.traffic_of(("default", "hello-00001")) == 0
    assert cat.reachable(("default", "hello-00001"))


def test_two_targets_on_one_revision_add_up() -> None:
    cat = Catalog()
    cat.apply(spec(traffic=[{"percent": 60}, {"percent": 40, "tag": "x"}]))
    assert routes(cat)["hello"] == (("hello-00001", 100),)


def test_traffic_to_an_unknown_revision_is_refused_and_changes_nothing() -> None:
    cat = Catalog()
    cat.apply(spec())
    with pytest.raises(CatalogError, match="revision 'hello-00009' of service 'hello' does not exist"):
        cat.apply(spec(env="b", traffic=[{"revisionName": "hello-00009", "percent": 100}]))
    assert list(cat.revisions) == [("default", "hello-00001")]


def test_a_named_revision_is_used_and_referable_in_the_same_apply() -> None:
    cat = Catalog()
    cat.apply(spec(revision_name="hello-blue"))
    cat.mark_ready(("default", "hello-blue"))
    result = cat.apply(spec(env="b", revision_name="hello-green",
                            traffic=[{"revisionName": "hello-blue", "percent": 50},
                                     {"revisionName": "hello-green", "percent": 50}]))
    assert result.created is not None and result.created.name == "hello-green"
    assert routes(cat)["hello"] == (("hello-blue", 50), ("hello-green", 50))


def test_reusing_a_revision_name_for_another_template_is_refused() -> None:
    cat = Catalog()
    cat.apply(spec(revision_name="hello-blue"))
    with pytest.raises(CatalogError, match="already exists with a different template"):
        cat.apply(spec(env="b", revision_name="hello-blue"))


def test_generated_names_skip_a_name_taken_by_a_named_revision() -> None:
    cat = Catalog()
    cat.apply(spec(revision_name="hello-00002"))
    assert cat.apply(spec(env="b")).created.name == "hello-00003"  # type: ignore[union-attr]


def test_services_in_other_namespaces_are_separate() -> None:
    cat = Catalog()
    cat.apply(spec(namespace="a"))
    cat.apply(spec(namespace="b"))
    assert sorted(cat.revisions) == [("a", "hello-00001"), ("b", "hello-00001")]
    assert [(r.namespace, r.name) for r in cat.routes] == [("a", "hello"), ("b", "hello")]


def test_deleting_a_service_returns_its_revisions_and_drops_its_routes() -> None:
    cat = Catalog()
    cat.apply(spec(env="a"))
    cat.apply(spec(env="b"))
    cat.apply(spec(name="other"))
    gone = cat.delete_service("default", "hello")
    assert [r.name for r in gone] == ["hello-00001", "hello-00002"]
    assert routes(cat) == {"other": (("other-00001", 100),)}
    assert cat.delete_service("default", "hello") == []
