"""Child processes: their own process group, output lines, stop with escalation, no orphans."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest

from kdp import procs
from tests.kdp.fakes import eventually, pid_alive

pytestmark = pytest.mark.functional

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


async def test_a_child_runs_in_its_own_group_and_its_lines_reach_the_sink() -> None:
    lines: list[tuple[str, str, str]] = []
    child = await procs.spawn("t", [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                              env=os.environ, sink=lambda *a: lines.append(a))
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    assert await child.wait() == 0
    await eventually(lambda: len(lines) == 2, what="both lines")
    assert sorted(lines) == [("t", "stderr", "err"), ("t", "stdout", "out")]
    assert child.describe_exit() == "exited with code 0" and list(child.tail) in (["out", "err"], ["err", "out"])
    assert child.pid not in procs.LIVE


async def test_stop_escalates_to_sigkill_after_the_grace_period() -> None:
    child = await procs.spawn("stubborn", [sys.executable, "-c", IGNORE_TERM], env=os.environ)
    await eventually(lambda: "up" in child.tail, what="the child to ignore SIGTERM")
    code = await child.stop(0.3)
    assert code == -signal.SIGKILL and child.describe_exit() == "killed by SIGKILL"


async def test_an_unknown_command_is_an_oserror_before_anything_runs() -> None:
    with pytest.raises(FileNotFoundError):
        await procs.spawn("x", ["kdp-no-such-command-anywhere"], env=os.environ)
    with pytest.raises(FileNotFoundError):
        await procs.spawn("x", ["./missing.sh"], env=os.environ, cwd="/")
    with pytest.raises(FileNotFoundError):
        await procs.spawn("x", [sys.executable], env=os.environ, cwd="/nonexistent-kdp-dir")


@pytest.mark.skipif(procs._SETPRIV is None, reason="needs Linux with util-linux setpriv")
async def test_children_die_with_kdp_even_when_kdp_is_killed_outright() -> None:
    script = textwrap.dedent("""\
        import asyncio, os, sys
        from kdp import procs
        async def main():
            child = await procs.spawn("sleeper", ["sleep", "300"], env=os.environ)
            print(child.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """)
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 15)
        pid = int(line)
        assert pid_alive(pid)
    finally:
        parent.kill()
        await parent.wait()
    await eventually(lambda: not pid_alive(pid), timeout=5.0, what="the child to die with its parent")


async def test_kill_all_ends_every_live_group() -> None:
    child = await procs.spawn("sleeper", ["sleep", "300"], env=os.environ)
    assert procs.LIVE.get(child.pid) == "sleeper"
    assert procs.kill_all() >= 1
    assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL
    assert child.pid not in procs.LIVE
