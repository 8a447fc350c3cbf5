"""The local supervisor: every revision's pods as processes, scaled to the desired count.

What belongs here is the ReplicaSet's job on one machine:

* :meth:`Supervisor.scale` sets a revision's desired pod count; missing pods start at once,
  surplus pods are drained and stopped (:meth:`kdp.pod.Pod.terminate`), starting and
  not-ready pods first, then the most recently ready (Kubernetes' victim order);
* each pod gets free ports on 127.0.0.1 and the environment of :mod:`kdp.podspec`;
* crashes are restarted by the pod (with backoff) and reported here; consecutive failed
  starts make the revision *failing* (:class:`~kdp.restarts.CrashLoop`) with a reason;
* :meth:`Supervisor.shutdown` drains every pod (or kills them after an error).

Every change of a revision's pods calls ``on_change(key)``, synchronously, so the control plane
can publish endpoints and pod counts before anything else happens (in particular before a
scaled-down pod's queue-proxy gets its SIGTERM).
"""
from __future__ import annotations

import asyncio
import logging
import pathlib
import random
import secrets
import socket
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kdp.catalog import Revision, RevisionKey
from kdp.pod import Phase, Pod, ProbeFn
from kdp.podspec import PodPorts, SidecarSettings, queue_proxy_process, user_process
from kdp.procs import LineSink
from kdp.restarts import BackoffPolicy, CrashLoop

__all__ = ["PodCounts", "RevisionPods", "Supervisor", "free_ports"]

logger = logging.getLogger(__name__)

_ALPHABET = string.ascii_lowercase + string.digits
_VICTIM_ORDER = {Phase.STARTING: 0, Phase.NOT_READY: 1, Phase.READY: 2}
USER_GRACE = 10.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: dict[int, float] = {}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free now, taken *below* the kernel's ephemeral range:
    a port from that range can be taken by any outgoing connection before (or while) the
    pod binds it, and a pod keeps its ports across restarts. A port handed out in the last
    minute is not handed out again, so pods starting together do not collide."""
    eph_lo, _ = _ephemeral_range()
    lo, hi = max(1024, eph_lo - 12000), eph_lo
    now = time.monotonic()
    for port, at in list(_handed_out.items()):
        if now - at > 60.0:
            del _handed_out[port]
    ports: list[int] = []
    for _ in range(50 * n):
        if len(ports) == n:
            break
        port = random.randrange(lo, hi)
        if port in _handed_out or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        ports.append(port)
    if len(ports) < n:  # the low range is crowded: fall back to the kernel's choice
        socks = []
        try:
            while len(ports) < n:
                s = socket.socket()
                s.bind((host, 0))
                socks.append(s)
                ports.append(s.getsockname()[1])
        finally:
            for s in socks:
                s.close()
    for port in ports:
        _handed_out[port] = now
    return ports


@dataclass(frozen=True, slots=True)
class PodCounts:
    desired: int
    ready: int
    not_ready: int
    """Every pod that is not ready, starting and terminating ones included (upstream's count)."""
    pending: int
    """Pods that have not been ready yet."""
    terminating: int
    failure: str
    restarts: int


class RevisionPods:
    """The pods of one revision."""

    def __init__(self, revision: Revision, supervisor: Supervisor, crash_threshold: int) -> None:
        self.revision = revision
        self.sup = supervisor
        self.desired = 0
        self.pods: dict[str, Pod] = {}
        self.crash = CrashLoop(crash_threshold)
        self.restarts = 0
        self.last_event = ""
        self._stopping: set[asyncio.Task[None]] = set()
        self.deleted = False

    @property
    def key(self) -> RevisionKey:
        return self.revision.key

    def counts(self) -> PodCounts:
        phases = [p.phase for p in self.pods.values()]
        ready = phases.count(Phase.READY)
        return PodCounts(
            desired=self.desired, ready=ready, not_ready=len(phases) - ready - phases.count(Phase.STOPPED),
            pending=phases.count(Phase.STARTING), terminating=phases.count(Phase.TERMINATING),
            failure=self.crash.failure, restarts=self.restarts)

    def addresses(self) -> tuple[list[str], list[str]]:
        """(ready, not ready) queue-proxy addresses; terminating pods are in neither."""
        ready = sorted(p.address for p in self.pods.values() if p.phase == Phase.READY)
        not_ready = sorted(p.address for p in self.pods.values() if p.phase in (Phase.STARTING, Phase.NOT_READY))
        return ready, not_ready

    def scale(self, desired: int) -> None:
        if self.deleted:
            return
        if desired != self.desired:
            logger.info("revision %s: scale %d -> %d", self.revision.name, self.desired, desired)
        self.desired = max(0, desired)
        active = [p for p in self.pods.values() if p.active]
        for _ in range(self.desired - len(active)):
            self._start_pod()
        surplus = len(active) - self.desired
        if surplus > 0:
            victims = sorted(active, key=lambda p: (_VICTIM_ORDER.get(p.phase, 0), -(p.ready_at or p.created_at)))
            for pod in victims[:surplus]:
                self._stop_pod(pod)
        self.sup.on_change(self.key)

    def _start_pod(self) -> None:
        rev = self.revision
        name = f"{rev.name}-deployment-{''.join(secrets.choice(_ALPHABET) for _ in range(5))}"
        user, serving, tls, admin, stat, metrics = free_ports(6, self.sup.settings.host)
        ports = PodPorts(user=user, serving=serving, tls=tls, admin=admin, stat=stat, metrics=metrics)
        pod = Pod(name, ports=ports, user=user_process(rev, ports.user, self.sup.environ),
                  queue_proxy=queue_proxy_process(rev, name, ports, self.sup.settings, self.sup.environ),
                  listener=self, probe=self.sup.probe, host=self.sup.settings.host, policy=self.sup.policy,
                  sink=self.sup.sink)
        self.pods[name] = pod
        logger.info("revision %s: starting pod %s (queue-proxy %s, app port %d)", rev.name, name, pod.address,
                    ports.user)
        pod.start()

    def _stop_pod(self, pod: Pod, kill: bool = False) -> asyncio.Task[None]:
        grace = self.revision.template.timeout_seconds + self.sup.settings.drain_quiet_period + 5.0
        logger.info("revision %s: stopping pod %s (%s)", self.revision.name, pod.name, pod.phase.value)
        coro = pod.kill() if kill else pod.terminate(grace, USER_GRACE)
        task = asyncio.get_running_loop().create_task(self._stopped(pod, coro))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    async def _stopped(self, pod: Pod, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        finally:
            self.pods.pop(pod.name, None)
            self.sup.on_change(self.key)

    async def stop_all(self, kill: bool = False) -> None:
        self.deleted = True
        self.desired = 0
        tasks = [self._stop_pod(p, kill) for p in self.pods.values() if p.active]
        await asyncio.gather(*tasks, *self._stopping, return_exceptions=True)

    # -- PodListener ------------------------------------------------------------------------

    def pod_changed(self, pod: Pod) -> None:
        if pod.phase == Phase.READY and self.crash.ready():
            logger.info("revision %s: a pod is ready; failure cleared", self.revision.name)
        self.sup.on_change(self.key)

    def pod_start_failed(self, pod: Pod, reason: str) -> None:
        self.restarts += 1
        self.last_event = f"{pod.name}: {reason}"
        if self.crash.start_failed(reason, asyncio.get_running_loop().time()):
            logger.error("revision %s is failing: %s", self.revision.name, self.crash.failure)
        self.sup.on_change(self.key)

    def pod_cannot_start(self, pod: Pod, reason: str) -> None:
        self.last_event = f"{pod.name}: {reason}"
        if self.crash.cannot_start(reason, asyncio.get_running_loop().time()):
            logger.error("revision %s is failing: %s", self.revision.name, self.crash.failure)
        self.sup.on_change(self.key)

    def pod_crashed(self, pod: Pod, reason: str) -> None:
        self.restarts += 1
        self.last_event = f"{pod.name}: {reason}"
        self.sup.on_change(self.key)


class Supervisor:
    def __init__(self, settings: SidecarSettings, *, environ: Mapping[str, str], probe: ProbeFn,
                 on_change: Callable[[RevisionKey], None] = lambda key: None, sink: LineSink | None = None,
                 policy: BackoffPolicy | None = None, crash_threshold: int = 2) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.probe = probe
        self.on_change = on_change
        self.sink = sink
        self.policy = policy or BackoffPolicy()
        self.crash_threshold = crash_threshold
        self.revisions: dict[RevisionKey, RevisionPods] = {}

    def add_revision(self, revision: Revision) -> RevisionPods:
        rp = self.revisions.get(revision.key)
        if rp is None:
            rp = self.revisions[revision.key] = RevisionPods(revision, self, self.crash_threshold)
        return rp

    def scale(self, key: RevisionKey, desired: int) -> int:
        """Raises KeyError for an unknown revision."""
        rp = self.revisions[key]
        rp.scale(desired)
        return rp.desired

    async def remove_revision(self, key: RevisionKey) -> None:
        rp = self.revisions.pop(key, None)
        if rp is not None:
            await rp.stop_all()

    async def shutdown(self, kill: bool = False) -> None:
        """Drain (or, with ``kill``, SIGKILL) every pod of every revision."""
        await asyncio.gather(*(rp.stop_all(kill) for rp in self.revisions.values()), return_exceptions=True)
