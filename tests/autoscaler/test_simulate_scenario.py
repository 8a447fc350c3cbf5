"""Simulator settings: config documents, variants and validation (autoscaler.simulate_scenario)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoscaler.simulate_scenario import (PodModel, ScenarioError, ScenarioSpec, apply_variant,
                                          resolve, spec_from_documents)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "traces"
GROUP = "autoscaling.knative.dev"


def test_defaults_resolve_to_upstreams_numbers() -> None:
    sc = resolve(ScenarioSpec())
    s = sc.scaling
    assert (s.target_value, s.total_value, s.stable_window, s.panic_window) == (70, 100, 60, 6)
    assert sc.container_concurrency == 0 and sc.pod == PodModel()
    assert sc.pod_capacity() is None
    assert any("requests wait only while no pod is ready" in w for w in sc.warnings)


def test_the_own_form_sets_config_annotations_cc_and_pods() -> None:
    doc = {"name": "x", "config": {"stable-window": "30s", "panic-window-percentage": 20,
                                   "enable-scale-to-zero": False},
           "annotations": {f"{GROUP}/target": 50}, "containerConcurrency": 20,
           "pod": {"startupDelay": "1m30s", "capacity": 4}, "progressDeadline": 120}
    sc = resolve(spec_from_documents([doc], "x.yaml"))
    assert sc.name == "x"
    s = sc.scaling
    assert (s.stable_window, s.panic_window, s.enable_scale_to_zero) == (30, 6, False)
    assert (s.total_value, s.target_value) == (20, 14)  # min(target 50, CC 20) x 0.7
    assert sc.pod == PodModel(startup_delay=90.0, capacity=4.0)
    assert sc.pod_capacity() == 20.0  # containerConcurrency wins over the pod capacity
    assert s.activation_timeout == 150.0


def test_kubernetes_manifests_give_the_configmap_and_the_revision_template() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "knative-service.yaml").read_text()))
    sc = resolve(spec_from_documents(docs, "knative-service.yaml", name="fallback"))
    assert sc.name == "hello"
    assert sc.scaling.target_burst_capacity == 0
    assert (sc.scaling.stable_window, sc.scaling.min_scale, sc.scaling.max_scale) == (30, 1, 20)
    assert sc.container_concurrency == 10


def test_a_revision_and_config_deployment_are_read_too() -> None:
    docs = [{"kind": "Revision", "metadata": {"name": "r-1", "annotations": {
                f"{GROUP}/window": "10s"}}, "spec": {"containerConcurrency": 5}},
            {"kind": "ConfigMap", "metadata": {"name": "config-deployment"},
             "data": {"progress-deadline": "60s"}}]
    sc = resolve(spec_from_documents(docs, "r.yaml"))
    assert (sc.name, sc.scaling.stable_window, sc.container_concurrency) == ("r-1", 10, 5)
    assert sc.scaling.activation_timeout == 90.0


@pytest.mark.parametrize("name", ["cc10.yaml", "cc10-short-window.yaml"])
def test_the_example_configs_resolve(name: str) -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / name).read_text()))
    sc = resolve(spec_from_documents(docs, name))
    assert sc.container_concurrency == 10


def test_variants_layer_keys_on_the_base() -> None:
    base = ScenarioSpec(name="base", config={"stable-window": "60s"}, container_concurrency=10)
    v = apply_variant(base, "fast:stable-window=20s,target=5,containerConcurrency=8,"
                            "startup-delay=2s,pod-capacity=3,autoscaling.knative.dev/min-scale=1")
    assert v.name == "fast"
    assert v.config == {"stable-window": "20s"}
    assert v.annotations == {f"{GROUP}/target": "5", f"{GROUP}/min-scale": "1"}
    assert (v.container_concurrency, v.startup_delay, v.pod_capacity) == (8, 2.0, 3.0)
    assert base.config == {"stable-window": "60s"}  # untouched
    assert apply_variant(base, "window=30s").name == "window=30s"


def test_bad_variants_are_rejected() -> None:
    with pytest.raises(ScenarioError, match="is not key=value"):
        apply_variant(ScenarioSpec(), "window")
    with pytest.raises(ScenarioError, match="no key=value settings"):
        apply_variant(ScenarioSpec(), "name:")
    with pytest.raises(ScenarioError, match="empty name"):
        apply_variant(ScenarioSpec(), ":window=1s")
    with pytest.raises(ScenarioError, match="not an integer"):
        apply_variant(ScenarioSpec(), "containerConcurrency=ten")


def test_config_errors_name_the_scenario_key_value_and_range() -> None:
    with pytest.raises(ScenarioError) as info:
        resolve(ScenarioSpec(name="s", config={"stable-window": "2s"}))
    assert str(info.value).startswith("s: config-autoscaler: stable-window='2s': out of range")
    assert "allowed: a duration in [6s, 1h]" in str(info.value)


def test_annotation_errors_list_every_problem() -> None:
    spec = ScenarioSpec(name="s", annotations={f"{GROUP}/window": "2s",
                                               f"{GROUP}/target": "0"})
    pattern = "invalid annotations: .*target=.0.: out of range.*window=.2s.: out of range"
    with pytest.raises(ScenarioError, match=pattern):
        resolve(spec)


def test_containerconcurrency_and_the_pod_model_are_range_checked() -> None:
    with pytest.raises(ScenarioError, match=r"containerConcurrency=1001: .*\[0, 1000\]"):
        resolve(ScenarioSpec(container_concurrency=1001))
    with pytest.raises(ScenarioError, match="startup delay"):
        resolve(ScenarioSpec(startup_delay=-1.0))
    with pytest.raises(ScenarioError, match="pod capacity"):
        resolve(ScenarioSpec(pod_capacity=0.0))


def test_only_the_kpa_can_be_simulated() -> None:
    spec = ScenarioSpec(annotations={f"{GROUP}/class": "hpa.autoscaling.knative.dev"})
    with pytest.raises(ScenarioError, match="runs the KPA only"):
        resolve(spec)


def test_unknown_keys_are_warnings() -> None:
    sc = resolve(ScenarioSpec(config={"stable-windw": "10s"},
                              annotations={"example.com/x": "1"}, container_concurrency=1))
    assert sc.warnings == ("config-autoscaler key 'stable-windw' is not one upstream reads; "
                           "ignored", "annotation 'example.com/x' is not an autoscaling "
                           "annotation the KPA reads; ignored")


def test_document_errors_name_the_file_and_key() -> None:
    with pytest.raises(ScenarioError, match=r"f.yaml: unknown key 'confg'"):
        spec_from_documents([{"confg": {}}], "f.yaml")
    with pytest.raises(ScenarioError, match=r"f.yaml: config.stable-window: \[1\] is not"):
        spec_from_documents([{"config": {"stable-window": [1]}}], "f.yaml")
    with pytest.raises(ScenarioError, match="pod: unknown key 'delay'"):
        spec_from_documents([{"pod": {"delay": 1}}], "f.yaml")
    with pytest.raises(ScenarioError, match=r"pod.startupDelay: 'soon' is not"):
        spec_from_documents([{"pod": {"startupDelay": "soon"}}], "f.yaml")
    with pytest.raises(ScenarioError, match="kind 'Deployment'"):
        spec_from_documents([{"kind": "Deployment"}], "f.yaml")
    with pytest.raises(ScenarioError, match="ConfigMap 'config-network'"):
        spec_from_documents([{"kind": "ConfigMap", "metadata": {"name": "config-network"}}],
                            "f.yaml")
    with pytest.raises(ScenarioError, match=r"\(document 2\): expected a mapping"):
        spec_from_documents([{}, ["x"]], "f.yaml")
    with pytest.raises(ScenarioError, match="no settings found"):
        spec_from_documents([None], "f.yaml")
