"""``kdp up`` as a process on 127.0.0.1, driven the way a user drives it: manifests on disk,
requests through the ingress by Host, ``kdp status --json`` for what it sees, Ctrl-C to stop.

Every process kdp starts inherits a unique marker variable, so :meth:`KdpUp.processes` finds
them all (autoscaler, activator, queue-proxies, apps, and anything those start) and teardown
can check that none is left and kill any that is.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "kdp" / "apps"
START_TIMEOUT = 60.0
IO_TIMEOUT = 30.0

# Short windows so a scale-up, a panic and a scale to zero each take seconds.
FAST_CONFIG = {
    "stable-window": "6s",
    "scale-to-zero-grace-period": "1s",
    "allow-zero-initial-scale": "true",
    "max-scale-down-rate": "2.0",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(name: str, *, env: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
             cc: int = 0, timeout: int = 60, traffic: list[dict[str, Any]] | None = None,
             command: list[str] | None = None) -> str:
    """A Service running ``tests/kdp/apps/app.py`` (or ``command``)."""
    container = {"command": command or [sys.executable, str(APPS / "app.py")],
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/initial-scale": "0",
                                                           **(annotations or {})}},
                              "spec": {"containerConcurrency": cc, "timeoutSeconds": timeout,
                                       "containers": [container]}}}}
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    elapsed: float = 0.0
    error: str = ""

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


async def http_request(port: int, host: str, target: str = "/", *, timeout: float = IO_TIMEOUT) -> Reply:
    """One GET through 127.0.0.1:port with ``Host: host`` on a fresh connection. A connection
    that fails or is cut gives status 0 with the error."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as e:
        return Reply(0, elapsed=time.monotonic() - t0, error=repr(e))
    elapsed = time.monotonic() - t0
    if not data.startswith(b"HTTP/1.1 "):
        return Reply(0, data, elapsed, "not an HTTP response")
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return Reply(int(head[9:12]), body, elapsed)


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


@dataclass
class Load:
    """``workers`` clients sending requests back to back until stopped."""

    up: KdpUp
    host: str
    target: str
    workers: int
    replies: list[Reply] = field(default_factory=list)
    _stop: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Load:
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
        return self

    async def _worker(self) -> None:
        while not self._stop:
            self.replies.append(await http_request(self.up.port, self.host, self.target))

    async def stop(self) -> list[Reply]:
        self._stop = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.replies


class KdpUp:
    def __init__(self, workdir: Path, manifests: dict[str, str], config: dict[str, str] | None = None,
                 domain: str = "example.com") -> None:
        self.dir = workdir
        self.manifests = manifests
        self.config = FAST_CONFIG if config is None else config
        self.domain = domain
        self.port = free_port()
        self.state_dir = workdir / ".kdp"
        self.log_file = workdir / "kdp.log"
        self.marker = f"E2E_MARKER_{uuid.uuid4().hex}"  # not KDP_*: pods get those stripped
        self.proc: asyncio.subprocess.Process | None = None
        self.output = workdir / "kdp-up.out"

    def host(self, service: str, namespace: str = "default") -> str:
        return f"{service}.{namespace}.{self.domain}"

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    async def start(self) -> KdpUp:
        files = [self.write(name, text) for name, text in self.manifests.items()]
        config = self.write("config-autoscaler.yaml", yaml.safe_dump(self.config))
        argv = [sys.executable, "-m", "kdp", "up", "--port", str(self.port), "--domain", self.domain,
                "--log-file", str(self.log_file), "--state-dir", str(self.state_dir), "--autoscaler-config",
                str(config), "--view", "lines"]
        for f in files:
            argv += ["-f", str(f)]
        env = {**os.environ, self.marker: "1", "PYTHONPATH": str(REPO)}
        out = open(self.output, "wb")  # noqa: SIM115 (the child holds it)
        try:
            self.proc = await asyncio.create_subprocess_exec(*argv, cwd=self.dir, env=env, stdout=out, stderr=out,
                                                             stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        await self.eventually(lambda: (self.state_dir / "up.json").exists(), timeout=START_TIMEOUT,
                              what="kdp up to write its state file")
        return self

    def describe(self) -> str:
        out = self.output.read_text(errors="replace")[-3000:] if self.output.exists() else ""
        log = self.log_file.read_text(errors="replace").splitlines()[-40:] if self.log_file.exists() else []
        return f"--- kdp up output ---\n{out}\n--- last log lines ---\n" + "\n".join(log)

    async def eventually(self, check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition",
                         interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"kdp up exited with {self.proc.returncode} while waiting for {what}\n"
                                     + self.describe())
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.describe()}")
            await asyncio.sleep(interval)

    async def cli(self, *args: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run ``python -m kdp <args> --state-dir <ours>``: (exit code, output)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kdp", *args, "--state-dir", str(self.state_dir), cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode or 0, out.decode(errors="replace")

    async def status(self) -> dict[str, Any]:
        from kdp import statusapi

        return await asyncio.to_thread(statusapi.get_status, str(self.state_dir))

    async def revision(self, name: str) -> dict[str, Any]:
        doc = await self.status()
        for svc in doc["services"]:
            for rev in svc["revisions"]:
                if rev["name"] == name:
                    return rev
        return {}

    async def request(self, service: str, target: str = "/", *, timeout: float = IO_TIMEOUT) -> Reply:
        return await http_request(self.port, self.host(service), target, timeout=timeout)

    def load(self, service: str, target: str = "/", workers: int = 4) -> Load:
        return Load(self, self.host(service), target, workers).start()

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command) of every live process carrying our marker, kdp up itself included."""
        found = []
        needle = f"{self.marker}=".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle not in f.read():
                        continue
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found.append((int(entry), cmd))
        return found

    def pid_of(self, fragment: str) -> int:
        pids = [pid for pid, cmd in self.processes() if fragment in cmd]
        assert len(pids) == 1, f"expected one process matching {fragment!r}, found {pids}"
        return pids[0]

    async def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT to kdp up alone (as the terminal would, it runs in its own group); its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self) -> list[tuple[int, str]]:
        """Stop whatever is still running; returns what had to be killed."""
        leftovers: list[tuple[int, str]] = []
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        deadline = time.monotonic() + 3.0
        while (left := self.processes()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for pid, cmd in self.processes():
            leftovers.append((pid, cmd))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
