"""Shared helpers for the ``kdp up`` benchmarks (``bench_kdp_*``): run ``kdp up`` as a
subprocess on loopback, read its status and its JSON log, and drive wrk.

* :func:`hello_manifest` — the hello example's Service with changed annotations, written so it
  runs from any directory (the app's path made absolute);
* :class:`KdpUp` — ``python -m kdp up`` with ``--port`` (a free one), ``--view none``,
  ``--state-dir``, ``--log-file`` and ``--autoscaler-config`` in a temporary directory,
  optionally pinned to a CPU (every pod inherits the pinning); :meth:`KdpUp.stop` sends SIGINT,
  waits, and kills the process group if it does not exit;
* :func:`revision`, :func:`wait_until`, :func:`percentile` and :func:`run_wrk` (with a Host
  header, pinned like ``bench/proxy.py``).

The child runs with the interpreter's directory first on ``PATH`` (as in an activated venv),
so the manifest's ``python3`` is the venv's interpreter, not a version-manager shim that would
add its own start-up time to every pod.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from bench.common import free_port, percentile, pin, wrk  # noqa: F401 (percentile: for the kdp benches)
from kdp.statusapi import StateError, get_status

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
HELLO = ROOT / "examples" / "hello"
HOST = "hello.default.example.com"


def hello_manifest(annotations: Mapping[str, str] | None = None, container_concurrency: int | None = None) -> str:
    """The hello example's manifest with ``annotations`` merged into the revision template's."""
    doc = yaml.safe_load((HELLO / "service.yaml").read_text())
    template = doc["spec"]["template"]
    meta = template.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), **(annotations or {})}
    container = template["spec"]["containers"][0]
    container["command"] = [c if c != "app.py" else str(HELLO / "app.py") for c in container["command"]]
    if container_concurrency is not None:
        template["spec"]["containerConcurrency"] = container_concurrency
    return yaml.safe_dump(doc, sort_keys=False)


def manifest_annotations(text: str) -> dict[str, str]:
    doc = yaml.safe_load(text)
    return dict(doc["spec"]["template"].get("metadata", {}).get("annotations") or {})


class KdpUp:
    """``kdp up`` with one manifest, as a subprocess in its own session."""

    def __init__(self, manifest: str, autoscaler_config: Mapping[str, str] | None = None, *,
                 cpu: int | None = None, name: str = "kdp") -> None:
        self.name = name
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.port = free_port()
        self.state_dir = self.tmp / "state"
        self.log_file = self.tmp / "kdp.log"
        self.manifest = self.tmp / "service.yaml"
        self.manifest.write_text(manifest)
        self.config_file = self.tmp / "config-autoscaler.yaml"
        self.config_file.write_text(yaml.safe_dump(dict(autoscaler_config or {})))
        self.argv = [*(pin(cpu) if cpu is not None else []), sys.executable, "-m", "kdp", "up",
                     "-f", str(self.manifest), "--port", str(self.port), "--view", "none",
                     "--state-dir", str(self.state_dir), "--log-file", str(self.log_file),
                     "--autoscaler-config", str(self.config_file), "--no-watch"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.leftovers: list[int] = []
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def command(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        out = open(self.tmp / "up.out", "wb")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=str(self.tmp))
        out.close()
        deadline = time.monotonic() + timeout
        while not (self.state_dir / "up.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kdp up did not start:\n{(self.tmp / 'up.out').read_text()[-2000:]}")
            time.sleep(0.1)

    def __enter__(self) -> KdpUp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGINT (kdp's Ctrl-C), wait; SIGKILL the process group if it does not exit.
        Afterwards :attr:`leftovers` lists any pod pid seen in a status that still runs; the
        log is copied to ``bench/out/<name>.log`` and the temporary directory removed."""
        if self.proc is None or self.exit_code is not None:
            return self.exit_code
        pids = self._pod_pids()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.exit_code = self.proc.wait()
        time.sleep(0.2)
        self.leftovers = [p for p in pids if _alive(p)]
        OUT.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            shutil.copyfile(self.log_file, OUT / f"{self.name}.log")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.exit_code

    def _pod_pids(self) -> list[int]:
        try:
            doc = self.status()
        except StateError:
            return []
        return [pid for svc in doc.get("services", []) for rev in svc.get("revisions", [])
                for pod in rev.get("pods", []) for pid in pod.get("pids", {}).values()]

    def status(self) -> dict[str, Any]:
        return get_status(str(self.state_dir))

    def log(self, *, new_only: bool = False) -> list[dict[str, Any]]:
        """Records of kdp's JSON log (only those written since the last ``new_only`` call)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_offset if new_only else 0)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if new_only:
            self._log_offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def service_pid(self, service: str) -> int | None:
        """The pid of kdp's ``activator`` or ``autoscaler`` process, from the log."""
        for rec in self.log():
            m = re.match(rf"{service} running \(pid (\d+)\)", str(rec.get("msg", "")))
            if m:
                return int(m.group(1))
        return None


def record_time(rec: Mapping[str, Any]) -> float:
    """Unix seconds of a log record: kdp's numeric ``ts``, the activator's local-time ``ts``
    string (``2026-11-22 06:35:30,239``), or the queue-proxy's zap-style UTC ``timestamp``."""
    stamp = rec.get("ts", rec.get("timestamp"))
    if isinstance(stamp, (int, float)):
        return float(stamp)
    if isinstance(stamp, str):
        try:
            return datetime.datetime.fromisoformat(stamp.replace(",", ".")).timestamp()
        except ValueError:
            pass
    return 0.0


def record_text(rec: Mapping[str, Any]) -> str:
    return str(rec.get("msg", rec.get("message", "")))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def revision(status: Mapping[str, Any]) -> dict[str, Any]:
    """The first revision of the first service (the hello revision)."""
    for svc in status.get("services", []):
        for rev in svc.get("revisions", []):
            return dict(rev)
    return {}


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``pred`` until true; returns the seconds waited; raises TimeoutError naming ``what``."""
    t0 = time.monotonic()
    while True:
        try:
            if pred():
                return time.monotonic() - t0
        except StateError:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s")
        time.sleep(interval)


def run_wrk(url: str, concurrency: int, duration: float, host: str | None = None,
            cpu: int | None = 0) -> dict[str, float]:
    """One wrk run (1 thread, pinned to ``cpu``), with ``Host`` set for the ingress."""
    return wrk(url, concurrency, duration, headers={"Host": host} if host else None, cpu=cpu)
