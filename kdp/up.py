"""``kdp up``, ``kdp status`` and ``kdp apply``: the local serverless runtime on one machine.

``kdp up -f FILE...`` starts, in this order:

1. the runtime in-process (:class:`~kdp.runtime.Runtime`: catalog, supervisor, feeds and
   scale target on a free port of 127.0.0.1);
2. ``python -m autoscaler`` (gRPC on a free port), scaling through the runtime;
3. ``python -m activator`` as the ingress on ``127.0.0.1:--port``, routing
   ``Host: <service>.<namespace>.<--domain>`` with the runtime's feeds;
4. a status API for ``kdp status``/``kdp apply`` (address in ``<state dir>/up.json``);

then applies the manifests, shows the status live (a refreshing table on a terminal, a line per
change otherwise), re-applies a file when it changes, and writes JSON logs of everything (its
own and every child's output) to ``--log-file``.

Ctrl-C (or SIGTERM) shuts down without cutting a request: the activator stops accepting and
finishes what it holds, then every pod drains (queue-proxy first), then the autoscaler stops.
A second Ctrl-C kills everything at once. No process is left behind either way.

The command-line hooks for :mod:`kdp.cli` are :func:`add_parsers` (``up``, ``status``,
``apply``), each subcommand with ``func`` set to a function of the parsed args returning the
exit code.
"""
from __future__ import annotations

import os

# Before grpc loads: kdp forks many children while grpc threads run; grpc's fork handlers are
# not needed (children never use the parent's channels) and would print a line per fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoscaler.config import AutoscalerConfig, ConfigError
from kdp import procs, statusapi, view
from kdp.catalog import CatalogError
from kdp.logsink import LogFile
from kdp.manifest import ManifestError, ServiceSpec, parse_manifests
from kdp.runtime import Runtime, RuntimeConfig
from kdp.services import ServiceProcess, activator_env, autoscaler_command
from kdp.supervisor import free_ports

__all__ = ["Up", "UpOptions", "add_parsers", "load_autoscaler_config", "main_apply", "main_status", "main_up"]

logger = logging.getLogger(__name__)

REFRESH = 1.0


@dataclass(frozen=True, slots=True)
class UpOptions:
    files: tuple[str, ...]
    port: int = 8080
    domain: str = "example.com"
    log_file: str = "kdp.log"
    state_dir: str = ".kdp"
    autoscaler_config: str = ""
    """A YAML file of ``config-autoscaler`` keys (a plain mapping, or a ConfigMap with ``data``)."""
    host: str = "127.0.0.1"
    view: str = "auto"
    """``table`` (refreshing), ``lines`` (one line per change), ``none``, or ``auto``."""
    watch: bool = True
    drain_quiet_period: float = 1.0
    python: str = sys.executable
    extra_env: tuple[tuple[str, str], ...] = field(default=())


def load_autoscaler_config(path: str) -> tuple[AutoscalerConfig, dict[str, str]]:
    """Parse a config-autoscaler file; raises ValueError naming the file and the key."""
    if not path:
        return AutoscalerConfig(), {}
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: {e}") from None
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        doc = doc.get("data") or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of config-autoscaler keys (or a ConfigMap)")
    data = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in doc.items()}
    try:
        return AutoscalerConfig.from_configmap(data), data
    except ConfigError as e:
        raise ValueError(f"{path}: {e}") from None


def read_manifests(paths: list[str], config: AutoscalerConfig) -> list[tuple[str, list[ServiceSpec]]]:
    out = []
    for path in paths:
        full = os.path.abspath(path)
        try:
            with open(full, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ManifestError([f"{path}: {e.strerror or e}"]) from None
        out.append((full, parse_manifests(text, source=path, base_dir=os.path.dirname(full), config=config)))
    return out


class _Messages(logging.Handler):
    """Keeps the last warnings for the live view."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: collections.deque[str] = collections.deque(maxlen=5)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(time.strftime("%H:%M:%S ", time.localtime(record.created)) + record.getMessage())


class Up:
    def __init__(self, options: UpOptions) -> None:
        self.o = options
        self.stop_requested = asyncio.Event()
        self.hurry = False
        self.runtime: Runtime | None = None
        self.autoscaler: ServiceProcess | None = None
        self.activator: ServiceProcess | None = None
        self.api: statusapi.StatusServer | None = None
        self.messages = _Messages()
        self.started_at = time.time()
        self.config = AutoscalerConfig()
        self._mtimes: dict[str, tuple[float, int]] = {}
        self._file_services: dict[str, set[tuple[str, str]]] = {}
        self.log_file: LogFile | None = None
        self.autoscaler_debug = ""
        self._handlers: list[logging.Handler] = []

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        doc = self.runtime.status() if self.runtime is not None else {"services": []}
        doc.update({
            "ingress": f"http://{self.o.host}:{self.o.port}", "domain": self.o.domain, "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1), "log_file": os.path.abspath(self.o.log_file),
            "processes": {p.name: p.state + (f" ({p.restarts} restarts)" if p.restarts else "")
                          for p in (self.autoscaler, self.activator) if p is not None},
            "messages": list(self.messages.lines),
            "autoscaler_debug": self.autoscaler_debug,
        })
        return doc

    # -- applying ---------------------------------------------------------------------------

    async def apply_files(self, files: list[tuple[str, str]], *, watched: bool = False) -> dict[str, Any]:
        """Parse every file first (all or nothing), then apply. Raises ManifestError/CatalogError."""
        assert self.runtime is not None
        parsed = []
        for path, text in files:
            full = os.path.abspath(path)
            parsed.append((full, parse_manifests(text, source=path, base_dir=os.path.dirname(full),
                                                 config=self.config)))
        applied = []
        for full, specs in parsed:
            results = self.runtime.apply(specs, source=full)
            applied += [{"service": f"{r.service[0]}/{r.service[1]}", "created": r.created.name if r.created else None,
                         "routes_changed": r.routes_changed, "notes": list(r.notes)} for r in results]
            if watched:
                keys = {s.key for s in specs}
                for gone in self._file_services.get(full, set()) - keys:
                    await self.runtime.delete_service(*gone)
                self._file_services[full] = keys
        for a in applied:
            logger.info("applied %s%s", a["service"], f": created {a['created']}" if a["created"] else " (unchanged)")
        return {"applied": applied}

    async def _watch_files(self) -> None:
        changed = []
        for path in self.o.files:
            full = os.path.abspath(path)
            try:
                st = os.stat(full)
            except OSError:
                continue
            sig = (st.st_mtime, st.st_size)
            if self._mtimes.get(full) != sig:
                if full in self._mtimes:
                    changed.append(full)
                self._mtimes[full] = sig
        for full in changed:
            try:
                with open(full, encoding="utf-8") as f:
                    text = f.read()
                await self.apply_files([(full, text)], watched=True)
            except (OSError, ManifestError, CatalogError) as e:
                logger.error("re-applying %s failed (the previous version keeps running): %s", full, e)

    async def _api_apply(self, files: list[tuple[str, str]]) -> dict[str, Any]:
        return await self.apply_files(files)

    # -- running ----------------------------------------------------------------------------

    def _setup_logging(self) -> None:
        self.log_file = LogFile(self.o.log_file)
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        self._handlers = [self.log_file.handler(), self.messages]
        if self._view_mode() != "table":
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(logging.WARNING)
            console.setFormatter(logging.Formatter("kdp: %(levelname)s %(message)s"))
            self._handlers.append(console)
        for h in self._handlers:
            root.addHandler(h)
        # grpc's and aiohttp's chatter stays in the file
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    def _view_mode(self) -> str:
        if self.o.view != "auto":
            return self.o.view
        return "table" if sys.stdout.isatty() else "lines"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._setup_logging()
        try:
            self.config, config_data = load_autoscaler_config(self.o.autoscaler_config)
            manifests = read_manifests(list(self.o.files), self.config)
        except (ValueError, ManifestError) as e:
            print(f"kdp up: {e}", file=sys.stderr)
            return 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._start(config_data, manifests)
            await self._loop()
            return 0
        except (RuntimeError, OSError, CatalogError) as e:
            logger.error("kdp up failed: %s", e)
            print(f"kdp up: {e}", file=sys.stderr)
            self.hurry = True
            return 1
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.stop_requested.is_set():
            self.hurry = True
            logger.warning("second interrupt: killing everything")
            procs.kill_all()  # every wait in the graceful shutdown ends at once
        self.stop_requested.set()

    async def _start(self, config_data: dict[str, str], manifests: list[tuple[str, list[ServiceSpec]]]) -> None:
        o = self.o
        if not await _port_free(o.host, o.port):
            raise RuntimeError(f"{o.host}:{o.port} is in use; choose another ingress port with --port")
        os.makedirs(o.state_dir, exist_ok=True)
        config_file = ""
        if config_data:
            config_file = os.path.abspath(os.path.join(o.state_dir, "config-autoscaler.yaml"))
            with open(config_file, "w", encoding="utf-8") as f:
                yaml.safe_dump(config_data, f)
        as_port, metrics_port, debug_port = free_ports(3, o.host)
        self.autoscaler_debug = f"http://{o.host}:{debug_port}"
        as_address = f"{o.host}:{as_port}"
        env = {**os.environ, **dict(o.extra_env)}
        self.runtime = Runtime(RuntimeConfig(
            autoscaler_address=as_address, autoscaler_config=self.config, python=o.python, host=o.host,
            drain_quiet_period=o.drain_quiet_period,
            cert_dir=os.path.abspath(os.path.join(o.state_dir, "no-certs"))), environ=env,
            sink=self.log_file.child_line if self.log_file else None)
        await self.runtime.start()
        sink = self.log_file.child_line if self.log_file else None
        self.autoscaler = ServiceProcess(
            "autoscaler", autoscaler_command(o.python, host=o.host, port=as_port,
                                             scale_target=self.runtime.feed_address, config_file=config_file,
                                             debug_port=debug_port),
            env, host=o.host, port=as_port, sink=sink)
        await self.autoscaler.start()
        # The manifests go in before the ingress starts, and the ingress counts as up only once
        # its feeds have synced (its kubelet health): the first request never meets a 404.
        for full, specs in manifests:
            self.runtime.apply(specs, source=full)
            self._file_services[full] = {s.key for s in specs}
            st = os.stat(full)
            self._mtimes[full] = (st.st_mtime, st.st_size)
        self.activator = ServiceProcess(
            "activator", [o.python, "-m", "activator"],
            activator_env(env, host=o.host, port=o.port, metrics_port=metrics_port, feeds=self.runtime.feed_address,
                          autoscaler=as_address, domain=o.domain),
            host=o.host, port=o.port, sink=sink, health=True)
        await self.activator.start()
        self.api = statusapi.StatusServer(self.status, self._api_apply, host=o.host)
        await self.api.start()
        statusapi.write_state(o.state_dir, {"pid": os.getpid(), "api": self.api.url,
                                            "ingress": f"http://{o.host}:{o.port}", "domain": o.domain,
                                            "log_file": os.path.abspath(o.log_file)})
        logger.info("kdp up: ingress http://%s:%d (domain %s), status API %s, autoscaler %s, feeds %s",
                    o.host, o.port, o.domain, self.api.url, as_address, self.runtime.feed_address)

    async def _loop(self) -> None:
        mode = self._view_mode()
        last = ""
        while not self.stop_requested.is_set():
            if self.o.watch:
                await self._watch_files()
            doc = self.status()
            if mode == "table":
                cols = shutil.get_terminal_size((120, 40)).columns
                sys.stdout.write("\x1b[H\x1b[2J" + view.render(doc, width=cols) + "\n(Ctrl-C to stop)\n")
                sys.stdout.flush()
            elif mode == "lines":
                line = view.summary_line(doc)
                if line != last:
                    print(time.strftime("%H:%M:%S ") + line, flush=True)
                    last = line
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(REFRESH):
                    await self.stop_requested.wait()

    async def _shutdown(self) -> None:
        if self._view_mode() != "none":
            print("kdp up: shutting down" + (" (killing)" if self.hurry else
                                             ": finishing requests, draining pods"), file=sys.stderr, flush=True)
        try:
            await self._graceful(kill=self.hurry)
        finally:
            n = procs.kill_all()
            if n:
                logger.warning("killed %d leftover process group(s)", n)
            statusapi.remove_state(self.o.state_dir, os.getpid())
            logger.info("kdp up: stopped")
            for h in self._handlers:
                logging.getLogger().removeHandler(h)
            if self.log_file is not None:
                self.log_file.close()

    async def _graceful(self, kill: bool) -> None:
        sig = signal.SIGKILL if kill else signal.SIGTERM
        # 1. The ingress stops accepting and finishes what it holds (pods still serve).
        if self.activator is not None:
            longest = max((r.template.timeout_seconds for r in self.runtime.catalog.revisions.values()),
                          default=300) if self.runtime is not None else 300
            await self.activator.stop(0.0 if kill else longest + 30.0, sig)
        # 2. Every pod drains: queue-proxy first, then the user process.
        if self.runtime is not None:
            await self.runtime.supervisor.shutdown(kill=kill)
        # 3. The autoscaler (after the link to it, so its going is no news) and our servers.
        if self.runtime is not None:
            await self.runtime.link.close()
        if self.autoscaler is not None:
            await self.autoscaler.stop(0.0 if kill else 5.0, sig)
        if self.api is not None:
            await self.api.stop()
        if self.runtime is not None:
            await self.runtime.feeds.stop(0.2)


async def _port_free(host: str, port: int) -> bool:
    try:
        _, w = await asyncio.open_connection(host, port)
    except OSError:
        return True
    w.close()
    return False


# ---- command line -------------------------------------------------------------------------

def _run(coro: Any) -> int:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def main_up(args: argparse.Namespace) -> int:
    options = UpOptions(files=tuple(args.file), port=args.port, domain=args.domain, log_file=args.log_file,
                        state_dir=args.state_dir, autoscaler_config=args.autoscaler_config or "", view=args.view,
                        watch=not args.no_watch)

    async def go() -> int:
        return await Up(options).run()

    return _run(go())


def main_status(args: argparse.Namespace) -> int:
    try:
        doc = statusapi.get_status(args.state_dir)
    except statusapi.StateError as e:
        print(f"kdp status: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(view.render(doc, width=shutil.get_terminal_size((120, 40)).columns))
    return 0


def main_apply(args: argparse.Namespace) -> int:
    files = []
    for path in args.file:
        try:
            with open(path, encoding="utf-8") as f:
                files.append((os.path.abspath(path), f.read()))
        except OSError as e:
            print(f"kdp apply: {path}: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        result = statusapi.post_apply(args.state_dir, files)
    except statusapi.StateError as e:
        print(f"kdp apply: {e}", file=sys.stderr)
        return 1
    for a in result.get("applied", []):
        what = (f"created revision {a['created']}" if a["created"] else
                "traffic updated" if a.get("routes_changed") else "unchanged")
        print(f"{a['service']}: {what}")
        for note in a.get("notes", []):
            print(f"  note: {note}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``up``, ``status`` and ``apply`` on an argparse subparsers object."""
    p = sub.add_parser("up", help="run services from Knative Service manifests on this machine",
                       description="Start the autoscaler, the activator (the ingress) and a local supervisor, "
                                   "and run the services in FILE(s), scaling them from zero and back.")
    p.add_argument("-f", "--file", action="append", required=True, metavar="FILE",
                   help="a Knative Service manifest (YAML, one or more documents); repeatable")
    p.add_argument("--port", type=int, default=8080, help="ingress port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--domain", default="example.com",
                   help="route Host: <service>.<namespace>.DOMAIN (default: %(default)s)")
    p.add_argument("--log-file", default="kdp.log", help="JSON logs of everything (default: %(default)s)")
    p.add_argument("--state-dir", default=".kdp", help="where kdp status/apply find this instance (default: %(default)s)")
    p.add_argument("--autoscaler-config", metavar="FILE",
                   help="config-autoscaler keys (YAML mapping or ConfigMap), e.g. stable-window: 6s")
    p.add_argument("--view", choices=["auto", "table", "lines", "none"], default="auto",
                   help="live status: a refreshing table, a line per change, or nothing (default: table on a terminal)")
    p.add_argument("--no-watch", action="store_true", help="do not re-apply FILEs when they change")
    p.set_defaults(func=main_up)

    s = sub.add_parser("status", help="show the services of the running kdp up")
    s.add_argument("--json", action="store_true", help="print the status document as JSON")
    s.add_argument("--state-dir", default=".kdp", help="the running instance's state dir (default: %(default)s)")
    s.set_defaults(func=main_status)

    a = sub.add_parser("apply", help="apply manifests to the running kdp up (new revision on template change)")
    a.add_argument("-f", "--file", action="append", required=True, metavar="FILE")
    a.add_argument("--state-dir", default=".kdp", help="the running instance's state dir (default: %(default)s)")
    a.set_defaults(func=main_apply)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdp.up {up,status,apply} ...``: the same commands as ``kdp``."""
    parser = argparse.ArgumentParser(prog="python -m kdp.up")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
