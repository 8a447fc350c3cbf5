"""How ``kdp status`` and ``kdp apply`` reach a running ``kdp up``: a small HTTP API on
127.0.0.1 whose address is written to ``<state dir>/up.json``.

* ``GET /status`` — the status document (services, revisions, pods, decisions) as JSON;
* ``POST /apply`` — ``{"files": [{"path": ..., "text": ...}]}``: parse and apply the manifests
  (each runs in its file's directory); 200 ``{"applied": [...]}`` or 400 ``{"error": ...}``.

The client side (:func:`read_state`, :func:`get_status`, :func:`post_apply`) is blocking
urllib, for the command line.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["StateError", "StatusServer", "get_status", "post_apply", "read_state", "remove_state", "write_state"]

logger = logging.getLogger(__name__)

STATE_FILE = "up.json"
StatusFn = Callable[[], dict[str, Any]]
ApplyFn = Callable[[list[tuple[str, str]]], Awaitable[dict[str, Any]]]


class StateError(RuntimeError):
    """No running ``kdp up`` could be found or reached."""


class StatusServer:
    def __init__(self, status: StatusFn, apply: ApplyFn, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._status = status
        self._apply = apply
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/status", self._get_status)
        app.router.add_post("/apply", self._post_apply)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _post_apply(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            files = [(str(f["path"]), str(f["text"])) for f in body["files"]]
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad request: {e!r}"}, status=400)
        try:
            result = await self._apply(files)
        except ValueError as e:  # ManifestError, CatalogError
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(result)


# ---- state file and client ----------------------------------------------------------------

def write_state(state_dir: str, doc: dict[str, Any]) -> str:
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
    return path


def remove_state(state_dir: str, pid: int) -> None:
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            if json.load(f).get("pid") != pid:
                return  # another instance's
        os.unlink(path)
    except (OSError, ValueError):
        pass


def read_state(state_dir: str) -> dict[str, Any]:
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise StateError(f"no running kdp up found ({path} does not exist); start one with kdp up -f FILE") from None
    except (OSError, ValueError) as e:
        raise StateError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict) or "api" not in doc:
        raise StateError(f"{path} does not describe a kdp up instance")
    return doc


def _request(url: str, data: bytes | None = None, timeout: float = 10.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            doc = json.loads(e.read())
        except ValueError:
            doc = {"error": f"HTTP {e.code}"}
        raise StateError(doc.get("error", f"HTTP {e.code}")) from None
    except (urllib.error.URLError, OSError) as e:
        raise StateError(f"kdp up at {url} is not answering ({e}); is it still running?") from None


def get_status(state_dir: str) -> dict[str, Any]:
    return _request(read_state(state_dir)["api"] + "/status")


def post_apply(state_dir: str, files: list[tuple[str, str]]) -> dict[str, Any]:
    body = json.dumps({"files": [{"path": p, "text": t} for p, t in files]}).encode()
    return _request(read_state(state_dir)["api"] + "/apply", data=body, timeout=30.0)
