"""kdp up's own parts in-process: the status API and the kdp status/apply clients, applying
files (all or nothing, deletions from a watched file), and the autoscaler config file."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kdp import statusapi
from kdp.runtime import Runtime, RuntimeConfig
from kdp.up import Up, UpOptions, load_autoscaler_config, main_apply, main_status
from tests.kdp.fakes import FakeAutoscaler

pytestmark = pytest.mark.functional

APPS = Path(__file__).resolve().parent / "apps"


def doc(name: str, env: str = "a") -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/initial-scale": "0"}},
                                  "spec": {"containers": [{"command": [sys.executable, str(APPS / "app.py")],
                                                           "env": [{"name": "V", "value": env}]}]}}}}


def text(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs)


@pytest_asyncio.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    fa = await FakeAutoscaler().start()
    u = Up(UpOptions(files=(), state_dir=str(tmp_path / ".kdp"), log_file=str(tmp_path / "kdp.log"), view="none"))
    u.config, _ = load_autoscaler_config(_write(tmp_path / "as.yaml", "allow-zero-initial-scale: true\n"))
    u.runtime = Runtime(RuntimeConfig(autoscaler_address=fa.address, autoscaler_config=u.config))
    await u.runtime.start()
    fa.scale_target = u.runtime.feed_address
    u.api = statusapi.StatusServer(u.status, u._api_apply)
    await u.api.start()
    statusapi.write_state(u.o.state_dir, {"pid": 1, "api": u.api.url})
    try:
        yield u
    finally:
        await u.api.stop()
        await u.runtime.shutdown(kill=True)
        await fa.stop()


def _write(path: Path, content: str) -> str:
    path.write_text(content)
    return str(path)


async def test_kdp_apply_and_kdp_status_reach_the_instance_named_in_the_state_dir(
        up: Up, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "svc.yaml", text(doc("hello")))
    args = argparse.Namespace(file=[path], state_dir=up.o.state_dir)
    assert await asyncio.to_thread(main_apply, args) == 0
    assert "default/hello: created revision hello-00001" in capsys.readouterr().out
    assert await asyncio.to_thread(main_apply, args) == 0
    assert "default/hello: unchanged" in capsys.readouterr().out
    status = argparse.Namespace(json=True, state_dir=up.o.state_dir)
    assert await asyncio.to_thread(main_status, status) == 0
    doc_out = json.loads(capsys.readouterr().out)
    [svc] = doc_out["services"]
    assert svc["name"] == "hello" and svc["revisions"][0]["name"] == "hello-00001"
    assert svc["source"] == str(tmp_path / "svc.yaml")
    status.json = False
    assert await asyncio.to_thread(main_status, status) == 0
    assert "default/hello  hello-00001  100%" in capsys.readouterr().out


async def test_a_bad_manifest_is_refused_by_kdp_apply_and_nothing_changes(
        up: Up, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "good.yaml", text(doc("a")))
    bad_doc = doc("b")
    del bad_doc["spec"]["template"]["spec"]["containers"][0]["command"]
    bad = _write(tmp_path / "bad.yaml", text(bad_doc))
    code = await asyncio.to_thread(main_apply, argparse.Namespace(file=[good, bad], state_dir=up.o.state_dir))
    assert code == 1
    assert "command: required" in capsys.readouterr().err
    assert up.runtime is not None and up.runtime.catalog.services() == []  # all or nothing


async def test_a_service_removed_from_a_watched_file_is_deleted(up: Up, tmp_path: Path) -> None:
    path = str(tmp_path / "both.yaml")
    await up.apply_files([(path, text(doc("a"), doc("b")))], watched=True)
    assert up.runtime is not None
    assert sorted(s.name for s in up.runtime.catalog.services()) == ["a", "b"]
    await up.apply_files([(path, text(doc("a", env="changed")))], watched=True)
    assert [s.name for s in up.runtime.catalog.services()] == ["a"]
    assert sorted(up.runtime.catalog.revisions) == [("default", "a-00001"), ("default", "a-00002")]


async def test_kdp_status_without_a_running_instance_says_how_to_start_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_status(argparse.Namespace(json=False, state_dir=str(tmp_path / "none"))) == 1
    assert "no running kdp up found" in capsys.readouterr().err
    statusapi.write_state(str(tmp_path / "stale"), {"pid": 1, "api": "http://127.0.0.1:9"})
    assert main_status(argparse.Namespace(json=False, state_dir=str(tmp_path / "stale"))) == 1
    assert "is not answering" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("stable-window: 6s\nenable-scale-to-zero: false\n", {"stable-window": "6s",
                                                                      "enable-scale-to-zero": "false"}, id="mapping"),
    pytest.param("kind: ConfigMap\ndata:\n  stable-window: 8s\n", {"stable-window": "8s"}, id="ConfigMap"),
])
def test_the_autoscaler_config_file_is_a_mapping_or_a_config_map(tmp_path: Path, content: str,
                                                                  expected: dict[str, str]) -> None:
    config, data = load_autoscaler_config(_write(tmp_path / "c.yaml", content))
    assert data == expected
    assert config.stable_window == float(expected["stable-window"].rstrip("s"))


def test_a_bad_autoscaler_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"c\.yaml: .*stable-window=.*5s"):
        load_autoscaler_config(_write(tmp_path / "c.yaml", "stable-window: 5s\n"))


REPO = Path(__file__).resolve().parents[2]


async def _kdp_up(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kdp", "up", "--view", "none", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_kdp_up_refuses_a_busy_ingress_port_before_starting_anything(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        code, out = await _kdp_up("-f", str(REPO / "examples" / "hello" / "service.yaml"), "--port", str(port),
                                  cwd=tmp_path)
    finally:
        server.close()
    assert code == 1 and f"127.0.0.1:{port} is in use; choose another ingress port with --port" in out
    assert not (tmp_path / ".kdp" / "up.json").exists()


async def test_kdp_up_refuses_an_invalid_manifest_with_every_problem(tmp_path: Path) -> None:
    bad = doc("bad")
    del bad["spec"]["template"]["spec"]["containers"][0]["command"]
    bad["spec"]["template"]["spec"]["containerConcurrency"] = 5000
    path = _write(tmp_path / "bad.yaml", text(bad))
    code, out = await _kdp_up("-f", path, cwd=tmp_path)
    assert code == 1
    assert "containers[0].command: required" in out and "containerConcurrency: 5000 is out of range" in out
