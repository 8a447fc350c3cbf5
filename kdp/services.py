"""The autoscaler and the activator as supervised processes of ``kdp up``.

:class:`ServiceProcess` starts ``python -m <service>`` in its own process group, waits until it
listens (and, for the activator, until its kubelet health passes: it has synced every revision
and route and reached the autoscaler), and restarts it with backoff whenever it exits (a
restarted autoscaler finds the runtime resyncing every revision to it; a restarted activator
re-subscribes to the feeds).
:func:`autoscaler_command` and :func:`activator_env` say how each is configured locally.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence

from kdp.procs import Child, LineSink, spawn
from kdp.restarts import BackoffPolicy, RestartBackoff, exit_reason

__all__ = ["ServiceProcess", "activator_env", "autoscaler_command", "kubelet_healthy", "wait_listening"]

logger = logging.getLogger(__name__)


async def wait_listening(host: str, port: int, timeout: float, alive: Child | None = None) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if alive is not None and alive.returncode is not None:
            return False
        try:
            _, w = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True
    return False


async def kubelet_healthy(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``GET /`` with kubelet's User-Agent answers 200 (the activator's health)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        w.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/kdp\r\n"
                "Connection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(r.readline(), timeout)
        return line.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()


def autoscaler_command(python: str, *, host: str, port: int, scale_target: str, config_file: str | None,
                       debug_port: int = 0) -> list[str]:
    """``python -m autoscaler serve`` on ``host``: gRPC (StatIngest, DecisionFeed,
    AutoscalerControl) on ``port``, scaling through the runtime's ScaleTarget at
    ``scale_target``; its websocket and metrics listeners on any free port (nothing local
    uses them), its debug endpoint on ``debug_port``."""
    argv = [python, "-m", "autoscaler", "--log-level", "INFO", "serve", "--bind", host, "--grpc-port", str(port),
            "--websocket-port", "0", "--metrics-port", "0", "--debug-port", str(debug_port),
            "--scale-target", f"grpc://{scale_target}", "--log-format", "json"]
    if config_file:
        argv += ["--config", config_file]
    return argv


def activator_env(base: Mapping[str, str], *, host: str, port: int, metrics_port: int, feeds: str,
                  autoscaler: str, domain: str, drain_timeout: float = 1.0) -> dict[str, str]:
    """The activator as the local ingress: routes ``Host: <service>.<namespace>.<domain>``."""
    return {
        **base,
        "POD_NAME": "activator-local", "POD_IP": host, "SYSTEM_NAMESPACE": "knative-serving",
        "CLUSTER_DOMAIN": "cluster.local",
        "KDP_BACKENDS": f"grpc://{feeds}", "KDP_AUTOSCALER_PROTOCOL": "grpc", "KDP_AUTOSCALER_ADDRESS": autoscaler,
        "KDP_BIND_HOST": host, "KDP_HTTP_PORT": str(port), "KDP_H2C_PORT": str(port),
        "METRICS_PROMETHEUS_PORT": str(metrics_port), "KDP_ROUTE_DOMAIN": domain,
        # the runtime lists a pod as ready only after the queue-proxy answered this same probe
        "KDP_TRUST_READY": "true",
        # no load balancer to take the ingress out of rotation: a short drain, then finish in-flight
        "KDP_DRAIN_TIMEOUT": f"{drain_timeout:g}s",
    }


class ServiceProcess:
    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], *, host: str, port: int,
                 cwd: str | None = None, sink: LineSink | None = None, policy: BackoffPolicy | None = None,
                 start_timeout: float = 20.0, health: bool = False) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.host = host
        self.port = port
        self.cwd = cwd
        self.sink = sink
        self.policy = policy or BackoffPolicy(initial=0.2, maximum=5.0)
        self.start_timeout = start_timeout
        self.health = health
        """Running only once :func:`kubelet_healthy` (else: once it listens)."""
        self.child: Child | None = None
        self.state = "stopped"
        self.restarts = 0
        self.last_exit = ""
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._stop_event = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.returncode is None else None

    async def start(self) -> None:
        """Start and wait until it is up; raises RuntimeError (with its last output) if it cannot."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        waiter = asyncio.ensure_future(self._up.wait())
        await asyncio.wait([waiter, self._task], timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._up.is_set():
            waiter.cancel()
            tail = " | ".join(list(self.child.tail)[-5:]) if self.child else ""
            await self.stop(1.0)
            what = "become healthy" if self.health else "start listening"
            raise RuntimeError(f"{self.name} did not {what} on {self.host}:{self.port}"
                               f" within {self.start_timeout:.0f}s: {self.last_exit or tail}")

    async def _run(self) -> None:
        backoff = RestartBackoff(self.policy)
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            self.state = "starting"
            try:
                self.child = await spawn(self.name, self.argv, env=self.env, cwd=self.cwd, sink=self.sink)
            except OSError as e:
                self.last_exit = f"cannot start: {e}"
                self.state = "failed"
                logger.error("%s: %s", self.name, self.last_exit)
                return
            if self._stopping:  # stop() came while we were spawning
                await self.child.stop(2.0)
                break
            if await self._wait_up():
                self.state = "running"
                self._up.set()
                logger.info("%s running (pid %d) on %s:%d", self.name, self.child.pid, self.host, self.port)
            await self.child.wait()
            if self._stopping:
                break
            self.restarts += 1
            self.last_exit = exit_reason(self.name, self.child.describe_exit(), list(self.child.tail))
            delay = backoff.next_delay(started, asyncio.get_running_loop().time())
            self.state = "restarting"
            logger.error("%s; restarting in %.1fs", self.last_exit, delay)
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(delay):
                    await self._stop_event.wait()
        self.state = "stopped"

    async def _wait_up(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        assert self.child is not None
        if not await wait_listening(self.host, self.port, self.start_timeout, self.child):
            return False
        while self.health and not await kubelet_healthy(self.host, self.port):
            if self.child.returncode is not None or loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self, grace: float, sig: int = signal.SIGTERM) -> None:
        self._stopping = True
        self._stop_event.set()
        if self.child is not None:
            await self.child.stop(grace, sig)
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=5.0)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            if self.child is not None and self.child.returncode is None:
                await self.child.stop(0.0, signal.SIGKILL)
        self.state = "stopped"
