"""One local pod: the user process and its queue-proxy sidecar, kept running and probed.

Lifecycle (phases as :class:`Phase`)::

    starting --queue-proxy probe passes--> ready --a container exits / probes fail--> not-ready
       ^                                     |                                          |
       +------ containers restart with backoff (kubelet's restartPolicy: Always) <------+
    any --terminate()--> terminating --both processes gone--> stopped

* Each container restarts on its own after it exits (:class:`~kdp.restarts.RestartBackoff`),
  as kubelet restarts a container in place: the pod keeps its name and its ports.
* Readiness is the queue-proxy's own answer to the activator probe (``GET /healthz`` with
  ``K-Network-Probe: queue`` and ``User-Agent: Knative-Activator-Probe``, 200 ``queue``), so
  the user container's readiness probe runs where upstream runs it, in the queue-proxy.
  While not ready the probe repeats at once (the queue-proxy itself polls the app every 50 ms
  for up to 10 s); while ready it repeats every ``probe_period`` and two failures in a row
  make the pod not-ready. An exited container makes it not-ready at once.
* :meth:`Pod.terminate` is upstream's scale-down: the queue-proxy gets SIGTERM first and
  drains (probes fail, quiet period, in-flight requests finish), and only once it has exited
  does the user process get SIGTERM (the ``preStop: /wait-for-drain`` ordering). Each step is
  bounded by a grace period, then SIGKILL.

Every state change is reported to a :class:`PodListener` synchronously, in order.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

from kdp.podspec import PodPorts, ProcessSpec
from kdp.procs import Child, LineSink, spawn
from kdp.restarts import BackoffPolicy, RestartBackoff, exit_reason

__all__ = ["CONTAINERS", "Phase", "Pod", "PodListener", "ProbeFn"]

logger = logging.getLogger(__name__)

ProbeFn = Callable[[str, float], Awaitable[bool]]
"""(host:port of the queue-proxy, timeout) -> ready?"""

QUEUE_PROXY = "queue-proxy"
CONTAINERS = ("user-container", QUEUE_PROXY)
_QP_PROBE_TIMEOUT = 11.0  # a little more than the queue-proxy's 10 s aggressive probing
_READY_PROBE_TIMEOUT = 2.0
_RETRY = 0.025


class Phase(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    NOT_READY = "not-ready"
    TERMINATING = "terminating"
    STOPPED = "stopped"


class PodListener(Protocol):
    def pod_changed(self, pod: Pod) -> None: ...

    def pod_start_failed(self, pod: Pod, reason: str) -> None: ...

    def pod_cannot_start(self, pod: Pod, reason: str) -> None: ...

    def pod_crashed(self, pod: Pod, reason: str) -> None: ...


class Pod:
    def __init__(self, name: str, *, ports: PodPorts, user: ProcessSpec, queue_proxy: ProcessSpec,
                 listener: PodListener, probe: ProbeFn, host: str = "127.0.0.1",
                 policy: BackoffPolicy | None = None, probe_period: float = 1.0, sink: LineSink | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.ports = ports
        self.address = f"{host}:{ports.serving}"
        self.specs = {CONTAINERS[0]: user, QUEUE_PROXY: queue_proxy}
        self.listener = listener
        self.probe = probe
        self.policy = policy or BackoffPolicy()
        self.probe_period = probe_period
        self.sink = sink
        self.loop = asyncio.get_running_loop()
        self.clock = clock or self.loop.time
        self.phase = Phase.STARTING
        self.created_at = self.clock()
        self.ready_at: float | None = None
        self.restarts = 0
        self.last_exit = ""
        self.children: dict[str, Child | None] = dict.fromkeys(CONTAINERS)
        self._ready_this_start = False
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"Pod({self.name}, {self.phase.value}, {self.address})"

    @property
    def active(self) -> bool:
        return self.phase not in (Phase.TERMINATING, Phase.STOPPED)

    def start(self) -> None:
        self._tasks = [self.loop.create_task(self._container(c), name=f"{self.name}/{c}") for c in CONTAINERS]
        self._tasks.append(self.loop.create_task(self._readiness(), name=f"{self.name}/readiness"))

    def _set(self, phase: Phase) -> None:
        if phase != self.phase:
            logger.debug("pod %s: %s -> %s", self.name, self.phase.value, phase.value)
            self.phase = phase
            self.listener.pod_changed(self)

    # -- containers ----------------------------------------------------------------------

    async def _container(self, which: str) -> None:
        backoff = RestartBackoff(self.policy)
        spec = self.specs[which]
        while self.active:
            started = self.clock()
            try:
                child = await spawn(f"{self.name}/{which}", spec.argv, env=spec.env, cwd=spec.cwd, sink=self.sink)
            except OSError as e:
                reason = f"{which}: {e}"
                logger.warning("pod %s: cannot start %s: %s", self.name, which, e)
                self.last_exit = reason
                self.listener.pod_cannot_start(self, reason)
                await self._sleep(backoff.next_delay(started, self.clock()))
                continue
            if not self.active:  # terminate() began while we were spawning
                await child.stop(1.0)
                return
            self.children[which] = child
            self._kick.set()
            await child.wait()
            if not self.active:
                return
            self.children[which] = None
            self.restarts += 1
            reason = exit_reason(which, child.describe_exit(), list(child.tail))
            self.last_exit = reason
            was_ready = self._ready_this_start
            self._ready_this_start = False
            self.ready_at = None
            if self.phase == Phase.READY:
                self._set(Phase.NOT_READY)
            if was_ready:
                logger.warning("pod %s: %s; restarting", self.name, reason)
                self.listener.pod_crashed(self, reason)
            else:
                logger.warning("pod %s: %s before becoming ready; restarting", self.name, reason)
                self.listener.pod_start_failed(self, reason)
            await self._sleep(backoff.next_delay(started, self.clock()))

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
            async with asyncio.timeout(delay):
                await self._stopped.wait()

    # -- readiness -----------------------------------------------------------------------

    def _running(self) -> bool:
        return all(c is not None and c.returncode is None for c in self.children.values())

    async def _readiness(self) -> None:
        failures = 0
        while self.active:
            if not self._running():
                self._kick.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                    async with asyncio.timeout(0.5):
                        await self._kick.wait()
                continue
            ready = self.phase == Phase.READY
            ok = await self.probe(self.address, _READY_PROBE_TIMEOUT if ready else _QP_PROBE_TIMEOUT)
            if not self.active:
                return
            if ok and self._running():
                failures = 0
                if not ready:
                    self._ready_this_start = True
                    self.ready_at = self.clock()
                    logger.info("pod %s ready %.3fs after it was created", self.name, self.ready_at - self.created_at)
                    self._set(Phase.READY)
                await self._sleep(self.probe_period)
            elif ready:
                failures += 1
                if failures >= 2:
                    logger.warning("pod %s: readiness probe failed twice", self.name)
                    self._set(Phase.NOT_READY)
                    failures = 0
                await self._sleep(min(self.probe_period, 0.25))
            else:
                await self._sleep(_RETRY)

    # -- stopping ------------------------------------------------------------------------

    async def terminate(self, qp_grace: float, user_grace: float, sig: int = signal.SIGTERM) -> None:
        """Drain the queue-proxy, then stop the user process (each bounded, then SIGKILL)."""
        if not self.active:
            await self._done.wait()
            return
        self._set(Phase.TERMINATING)
        self._stopped.set()
        for task in self._tasks:
            if task.get_name().endswith("/readiness"):
                task.cancel()
        try:
            qp = self.children[QUEUE_PROXY]
            if qp is not None:
                await qp.stop(qp_grace, sig)
                logger.info("pod %s: queue-proxy stopped (%s)", self.name, qp.describe_exit())
            user = self.children[CONTAINERS[0]]
            if user is not None:
                await user.stop(user_grace, sig)
        finally:
            # The container loops end by themselves now (no restart while terminating); one
            # caught in the middle of a spawn stops its fresh child before returning.
            done, pending = await asyncio.wait(self._tasks, timeout=5.0) if self._tasks else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for child in self.children.values():
                if child is not None and child.returncode is None:
                    await child.stop(0.0, signal.SIGKILL)
            self._set(Phase.STOPPED)
            self._done.set()

    async def kill(self) -> None:
        """Stop at once (SIGKILL to both groups), for shutdown after an error."""
        await self.terminate(0.0, 0.0, signal.SIGKILL)
