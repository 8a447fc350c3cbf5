"""``python -m autoscaler`` as a process: serves by default, answers, stops on SIGTERM."""
from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys

import aiohttp
import pytest

from autoscaler.__main__ import build_parser, with_default_command

pytestmark = pytest.mark.functional
ROOT = pathlib.Path(__file__).resolve().parents[2]


async def test_the_service_is_the_default_and_stops_cleanly_on_sigterm(
        tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("stable-window: 30s\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "--config", str(cfg), "--bind", "127.0.0.1",
        "--grpc-port", "0", "--websocket-port", "0", "--metrics-port", "0", "--debug-port", "0",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        ports: dict[str, int] = {}
        async with asyncio.timeout(20):
            while not ports:
                line = await proc.stderr.readline()
                assert line, "the autoscaler exited before listening"
                entry = json.loads(line)
                assert {"severity", "timestamp", "logger", "message"} <= set(entry)
                if entry["message"].startswith("autoscaler listening"):
                    words = entry["message"].replace(",", "").replace(";", "").split()
                    ports = {"debug": int(words[words.index("debug") + 1])}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{ports['debug']}/debug/status") as r:
                status = await r.json()
        assert status["config"]["stable_window"] == 30.0
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_invalid_config_file_is_fatal_at_start(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("max-scale-up-rate: '0.5'\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "--config", str(cfg), cwd=ROOT,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"max-scale-up-rate" in err and b"Traceback" not in err


def test_flags_are_checked() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--grpc-port", "70000"])
    args = parser.parse_args(["serve", "--progress-deadline", "2m"])
    assert args.progress_deadline == 120.0


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param([], ["serve"], id="nothing"),
    pytest.param(["--config", "c.yaml"], ["serve", "--config", "c.yaml"], id="serve-flags"),
    pytest.param(["--log-level", "DEBUG"], ["--log-level", "DEBUG", "serve"], id="global-only"),
    pytest.param(["--log-level=INFO", "--grpc-port", "1"],
                 ["--log-level=INFO", "serve", "--grpc-port", "1"], id="global-then-serve"),
    pytest.param(["replay", "f.jsonl"], ["replay", "f.jsonl"], id="replay"),
    pytest.param(["--help"], ["--help"], id="help"),
])
def test_without_a_subcommand_the_autoscaler_serves(argv: list[str], expected: list[str]) -> None:
    assert with_default_command(argv) == expected
