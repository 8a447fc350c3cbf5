"""Child processes for the local runtime: each in its own process group, output forwarded
line by line, stopped with a grace period, and never left behind.

What belongs here is only process mechanics (no pod or revision logic):

* :func:`spawn` starts a child in a new session (so a Ctrl-C at the terminal reaches kdp
  alone, and signals go to the child's whole group), forwards each stdout/stderr line to a
  callback and keeps the last lines for crash reports. Where util-linux's ``setpriv`` exists,
  the child is exec'd through ``setpriv --pdeathsig KILL`` so it dies even if kdp itself is
  killed outright (no ``preexec_fn``: running Python between fork and exec in a process with
  gRPC threads is not safe);
* :meth:`Child.stop` sends SIGTERM to the group, waits for the leader up to a grace period,
  then SIGKILLs the group; after the leader exits, stragglers in its group are killed too;
* :data:`LIVE` holds every group not yet reaped; :func:`kill_all` is the last resort on exit.

Exception tree: none of its own; ``OSError`` from :func:`spawn` (e.g. command not found) is
for the caller to report.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["LIVE", "Child", "LineSink", "kill_all", "spawn"]

logger = logging.getLogger(__name__)

LineSink = Callable[[str, str, str], None]
"""(child name, stream "stdout"/"stderr", line without the newline)"""

LIVE: dict[int, str] = {}
"""Process group id -> name, for every child started and not yet reaped."""

TAIL_LINES = 20
_MAX_LINE = 64 * 1024


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def resolve_command(argv0: str, cwd: str | None, env: Mapping[str, str]) -> str:
    """The executable ``argv0`` names (relative paths from ``cwd``, bare names on ``PATH``);
    raises FileNotFoundError or PermissionError as exec would."""
    if "/" in argv0:
        path = argv0 if os.path.isabs(argv0) else os.path.join(cwd or os.getcwd(), argv0)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv0)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", argv0)
        return path
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory (not on PATH)", argv0)
    return found


class Child:
    """One running child process (the leader of its own process group)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, sink: LineSink | None) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._sink = sink
        self._pumps = [asyncio.ensure_future(self._pump(s, n)) for s, n in
                       ((proc.stdout, "stdout"), (proc.stderr, "stderr")) if s is not None]
        self._done = asyncio.ensure_future(self._reap())

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self._done.done() else None

    async def _pump(self, stream: asyncio.StreamReader, which: str) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the limit: take what is there
                line = await stream.read(_MAX_LINE)
            except (ConnectionError, OSError):
                return
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(text)
            if self._sink is not None:
                try:
                    self._sink(self.name, which, text)
                except Exception:  # noqa: BLE001 (a broken sink must not stop the pump)
                    logger.exception("log sink failed for %s", self.name)

    async def _reap(self) -> int:
        code = await self.proc.wait()
        # The leader is gone; anything it left in its group goes with it.
        _killpg(self.pid, signal.SIGKILL)
        LIVE.pop(self.pid, None)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), 1.0)
        return code

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int) -> None:
        if not self._done.done():
            _killpg(self.pid, sig)

    async def stop(self, grace: float, sig: int = signal.SIGTERM) -> int:
        """``sig`` to the group, SIGKILL after ``grace`` seconds; returns the exit code."""
        if self._done.done():
            return self._done.result()
        self.send_signal(sig)
        if sig == signal.SIGKILL:
            return await self.wait()
        try:
            return await asyncio.wait_for(self.wait(), grace)
        except asyncio.TimeoutError:
            logger.warning("%s (pid %d) did not exit %.1fs after signal %d: killing it", self.name, self.pid,
                           grace, sig)
            self.send_signal(signal.SIGKILL)
            return await self.wait()

    def describe_exit(self) -> str:
        code = self.returncode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None,
                sink: LineSink | None = None) -> Child:
    """Start ``argv`` in a new process group. Raises OSError when it cannot be started."""
    if cwd is not None and not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, "No such directory", cwd)
    command = [resolve_command(argv[0], cwd, env), *argv[1:]]
    if _SETPRIV is not None:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    proc = await asyncio.create_subprocess_exec(
        *command, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=_MAX_LINE)
    LIVE[proc.pid] = name
    logger.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
    return Child(name, proc, sink)


def kill_all() -> int:
    """SIGKILL every process group still alive; returns how many were signalled."""
    n = 0
    for pgid, name in list(LIVE.items()):
        logger.warning("killing leftover %s (pgid %d)", name, pgid)
        _killpg(pgid, signal.SIGKILL)
        LIVE.pop(pgid, None)
        n += 1
    return n
