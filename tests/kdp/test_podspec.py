"""What a pod's two processes are started with."""
from __future__ import annotations

import json
import os
import sys

import yaml

from kdp.catalog import Catalog
from kdp.manifest import parse_manifests
from kdp.podspec import PodPorts, SidecarSettings, queue_proxy_process, user_process
from queueproxy.config import Config

PORTS = PodPorts(user=5000, serving=5001, tls=5002, admin=5003, stat=5004, metrics=5005)
ENVIRON = {"PATH": "/bin", "HOME": "/home/u", "SERVING_REVISION": "leak", "KDP_X": "leak", "PORT": "1",
           "K_SERVICE": "leak"}


def revision(**container: object) -> object:
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello", "namespace": "ns"},
           "spec": {"template": {
               "metadata": {"annotations": {"autoscaling.knative.dev/window": "6s"}},
               "spec": {"containerConcurrency": 4, "timeoutSeconds": 30, "idleTimeoutSeconds": 9,
                        "containers": [{"command": ["python3"], "args": ["app.py"],
                                        "env": [{"name": "TARGET", "value": "kdp"}], **container}]}}}}
    cat = Catalog()
    return cat.apply(parse_manifests(yaml.safe_dump(doc), base_dir="/srv/hello")[0]).created


def test_the_user_process_gets_port_and_knatives_variables_in_the_manifests_directory() -> None:
    p = user_process(revision(), 5000, ENVIRON)  # type: ignore[arg-type]
    assert p.argv == ("python3", "app.py") and p.cwd == "/srv/hello"
    assert p.env["PORT"] == "5000" and p.env["TARGET"] == "kdp"
    assert (p.env["K_SERVICE"], p.env["K_CONFIGURATION"], p.env["K_REVISION"]) == ("hello", "hello", "hello-00001")
    # kdp's Python comes first on PATH, as in an activated virtual environment
    assert p.env["PATH"] == os.path.dirname(sys.executable) + os.pathsep + "/bin"
    assert "SERVING_REVISION" not in p.env and "KDP_X" not in p.env


def test_working_dir_is_relative_to_the_manifest() -> None:
    assert user_process(revision(workingDir="sub/dir"), 1, {}).cwd == "/srv/hello/sub/dir"  # type: ignore[arg-type]


def test_the_queue_proxy_env_is_upstreams_and_its_config_parses() -> None:
    settings = SidecarSettings(python="/py", autoscaler_address="127.0.0.1:7000", drain_quiet_period=1.0)
    p = queue_proxy_process(revision(), "hello-00001-deployment-abcde", PORTS, settings, ENVIRON)  # type: ignore[arg-type]
    assert p.argv == ("/py", "-m", "queueproxy")
    config = Config.from_env(p.env)
    assert (config.namespace, config.service, config.configuration, config.revision, config.pod_name) == \
        ("ns", "hello", "hello", "hello-00001", "hello-00001-deployment-abcde")
    assert (config.serving_port, config.user_port, config.admin_port, config.stat_port) == (5001, 5000, 5003, 5004)
    assert (config.container_concurrency, config.revision_timeout, config.idle_timeout) == (4, 30.0, 9.0)
    assert config.bind_host == "127.0.0.1" and config.autoscaler_address == "127.0.0.1:7000"
    assert config.drain_quiet_period == 1.0
    assert json.loads(config.readiness_probe) == {"tcpSocket": {"host": "127.0.0.1", "port": 5000},
                                                  "successThreshold": 1}
    assert "PORT" not in p.env and "K_SERVICE" not in p.env  # kdp's own environment does not leak in
