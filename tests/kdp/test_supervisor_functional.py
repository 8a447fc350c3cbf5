"""The supervisor with real processes on 127.0.0.1: pods start, serve, crash and restart, fail
with a reason, drain before they stop, and leave nothing behind."""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kdp.catalog import Catalog, Revision
from kdp.manifest import parse_manifests
from kdp.pod import QUEUE_PROXY, Phase
from kdp.podspec import SidecarSettings
from kdp.restarts import BackoffPolicy
from kdp.runtime import queue_proxy_ready
from kdp.supervisor import RevisionPods, Supervisor
from tests.kdp.fakes import eventually, pid_alive

pytestmark = pytest.mark.functional

APPS = Path(__file__).resolve().parent / "apps"
FAST = BackoffPolicy(initial=0.1, factor=2.0, maximum=1.0, reset_after=10.0)


def make_revision(env: dict[str, str] | None = None, command: list[str] | None = None, timeout: int = 30) -> Revision:
    container: dict[str, Any] = {"command": command or [sys.executable, "app.py"],
                                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "t"},
           "spec": {"template": {"spec": {"timeoutSeconds": timeout, "containers": [container]}}}}
    result = Catalog().apply(parse_manifests(yaml.safe_dump(doc), base_dir=str(APPS))[0])
    assert result.created is not None
    return result.created


async def http_get(address: str, target: str = "/", timeout: float = 15.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a fresh connection; (0, b"") when the connection fails or is cut."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, asyncio.IncompleteReadError):
        return 0, b""
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


class Changes:
    """Records every on_change with what the endpoints would say at that moment."""

    def __init__(self) -> None:
        self.sup: Supervisor | None = None
        self.log: list[tuple[list[str], dict[str, int | None]]] = []

    def __call__(self, key: tuple[str, str]) -> None:
        assert self.sup is not None
        rp = self.sup.revisions.get(key)
        if rp is None:
            return
        ready, _ = rp.addresses()
        qp_codes = {p.address: (c.returncode if (c := p.children[QUEUE_PROXY]) is not None else None)
                    for p in rp.pods.values()}
        self.log.append((ready, qp_codes))


@pytest_asyncio.fixture
async def sup() -> AsyncIterator[Supervisor]:
    changes = Changes()
    s = Supervisor(SidecarSettings(python=sys.executable, drain_quiet_period=0.3), environ=os.environ,
                   probe=queue_proxy_ready, on_change=changes, policy=FAST, crash_threshold=2)
    changes.sup = s
    s.changes = changes  # type: ignore[attr-defined]
    yield s
    await s.shutdown(kill=True)


def ready_pods(rp: RevisionPods, n: int) -> Any:
    return lambda: rp.counts().ready == n and len(rp.pods) == n


async def test_pods_start_ready_and_each_serves_through_its_queue_proxy(sup: Supervisor) -> None:
    rev = make_revision()
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 2)
    await eventually(ready_pods(rp, 2), what="two ready pods")
    ready, not_ready = rp.addresses()
    assert len(set(ready)) == 2 and not_ready == []
    for address in ready:
        assert await http_get(address) == (200, b"ok t-00001\n")
    c = rp.counts()
    assert (c.desired, c.ready, c.not_ready, c.pending, c.terminating, c.failure) == (2, 2, 0, 0, 0, "")


async def test_a_crashed_app_is_restarted_in_place_and_the_crash_is_reported(sup: Supervisor) -> None:
    rev = make_revision()
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    await eventually(ready_pods(rp, 1), what="a ready pod")
    pod = next(iter(rp.pods.values()))
    user_pid = pod.children["user-container"].pid  # type: ignore[union-attr]
    status, _ = await http_get(pod.address, "/crash")
    assert status == 502  # only the request the app died in fails
    await eventually(lambda: rp.restarts == 1, what="the crash to be counted")
    await eventually(ready_pods(rp, 1), what="the pod to be ready again")
    assert list(rp.pods.values()) == [pod]  # same pod, same address: the container restarted in place
    assert pod.children["user-container"].pid != user_pid  # type: ignore[union-attr]
    assert "user-container exited with code 1" in rp.last_event
    assert rp.counts().failure == ""
    assert await http_get(pod.address) == (200, b"ok t-00001\n")
    assert not pid_alive(user_pid)


async def test_an_app_failing_at_start_makes_the_revision_fail_with_its_output(sup: Supervisor) -> None:
    rev = make_revision(env={"CRASH_AT_START": "boom: DATABASE_URL is not set"})
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    failure = await eventually(lambda: rp.counts().failure, what="a failure reason")
    assert failure.startswith("CrashLoopBackOff: user-container exited with code 3: boom: DATABASE_URL is not set")
    c = rp.counts()
    assert c.ready == 0 and c.desired == 1 and len(rp.pods) == 1  # it keeps trying, with backoff


async def test_a_command_that_cannot_run_fails_the_revision_at_once(sup: Supervisor) -> None:
    rev = make_revision(command=["/nonexistent/kdp-test-binary"])
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    failure = await eventually(lambda: rp.counts().failure, what="a failure reason")
    assert failure.startswith("cannot start: user-container:") and "kdp-test-binary" in failure


async def test_scale_down_takes_the_pod_out_of_endpoints_then_drains_before_stopping_the_app(sup: Supervisor) -> None:
    rev = make_revision()
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    await eventually(ready_pods(rp, 1), what="a ready pod")
    pod = next(iter(rp.pods.values()))
    in_flight = asyncio.ensure_future(http_get(pod.address, "/?sleep=1.5"))
    await asyncio.sleep(0.3)  # let it reach the app
    sup.scale(rev.key, 0)
    assert await in_flight == (200, b"ok t-00001\n")  # finished, not cut
    await eventually(lambda: not rp.pods, what="the pod to be gone")
    log = sup.changes.log  # type: ignore[attr-defined]
    # the first change without the pod in the endpoints came while its queue-proxy still ran
    first_out = next(i for i, (ready, _) in enumerate(log) if i > 0 and pod.address not in ready and
                     pod.address in log[i - 1][0])
    assert log[first_out][1][pod.address] is None
    assert pod.phase == Phase.STOPPED
    assert all(c is not None and c.returncode is not None for c in pod.children.values())


async def test_stopping_leaves_no_process_behind_not_even_the_apps_children(sup: Supervisor) -> None:
    rev = make_revision(env={"GRANDCHILD": "1"})
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    await eventually(ready_pods(rp, 1), what="a ready pod")
    pod = next(iter(rp.pods.values()))
    user = pod.children["user-container"]
    assert user is not None
    line = await eventually(lambda: next((ln for ln in user.tail if ln.startswith("grandchild ")), None),
                            what="the app to report its child")
    grandchild = int(line.split()[1])
    pids = [grandchild] + [c.pid for c in pod.children.values() if c is not None]
    assert all(pid_alive(p) for p in pids)
    await sup.shutdown()
    await eventually(lambda: not any(pid_alive(p) for p in pids), timeout=5.0, what="every process to be gone")


async def test_scale_down_stops_starting_pods_before_ready_ones(sup: Supervisor) -> None:
    rev = make_revision()
    rp = sup.add_revision(rev)
    sup.scale(rev.key, 1)
    await eventually(ready_pods(rp, 1), what="a ready pod")
    ready_pod = next(iter(rp.pods.values()))
    sup.scale(rev.key, 2)
    sup.scale(rev.key, 1)  # the new pod is still starting: it is the one to go
    await eventually(lambda: len(rp.pods) == 1, what="back to one pod")
    assert list(rp.pods.values()) == [ready_pod] and ready_pod.phase == Phase.READY
