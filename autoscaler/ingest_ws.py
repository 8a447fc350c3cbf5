"""Upstream's stat websocket (``pkg/autoscaler/statserver``), so upstream activators report here.

Any path on the port. A kubelet probe (``User-Agent: kube-probe/...`` or a ``K-Kubelet-Probe``
header) gets 200; any other request must be a websocket upgrade (else 400, as gorilla's
upgrader answers). Each binary frame is a ``WireStatMessages``: entries without a stat are
skipped (upstream), a frame that does not decode is counted and dropped, a text frame is
counted and ignored; the connection stays open through all of it. On shutdown every client
gets close code 1012 ("service restart") so it reconnects at once, as upstream sends.
"""
from __future__ import annotations

import logging
import weakref

from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf.message import DecodeError

from autoscaler.collector import WEBSOCKET
from autoscaler.service import AutoscalerService
from proto import stat_pb2

__all__ = ["StatWebsocket"]

logger = logging.getLogger(__name__)

KUBE_PROBE_UA_PREFIX = "kube-probe/"
KUBELET_PROBE_HEADER = "K-Kubelet-Probe"
_NOT_WEBSOCKET = ("websocket: the client is not using the websocket protocol: 'upgrade' token "
                  "not found in 'Connection' header\n")


class StatWebsocket:
    """The aiohttp application of the stat websocket server."""

    def __init__(self, service: AutoscalerService, *, max_frame: int = 4 << 20) -> None:
        self.service = service
        self.max_frame = max_frame
        self.frames = 0
        self.clients: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_shutdown.append(self._close_all)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("User-Agent", "").startswith(KUBE_PROBE_UA_PREFIX) \
                or request.headers.get(KUBELET_PROBE_HEADER):
            return web.Response(status=200)
        ws = web.WebSocketResponse(max_msg_size=self.max_frame, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text=_NOT_WEBSOCKET)
        await ws.prepare(request)
        self.clients.add(ws)
        peer = request.remote
        logger.info("stats websocket from %s open", peer)
        parse = stat_pb2.WireStatMessages.FromString
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self.frames += 1
                    try:
                        batch = parse(msg.data)
                    except (DecodeError, ValueError):
                        self.service.reject(WEBSOCKET, "malformed_frame")
                        continue
                    try:
                        self.service.ingest(batch.messages, WEBSOCKET)
                    except Exception:
                        logger.exception("ingesting a websocket frame from %s failed", peer)
                elif msg.type == WSMsgType.TEXT:
                    self.service.reject(WEBSOCKET, "not_binary")
                elif msg.type == WSMsgType.ERROR:
                    logger.info("stats websocket from %s failed: %s", peer, ws.exception())
                    break
        finally:
            logger.info("stats websocket from %s closed", peer)
        return ws

    async def _close_all(self, app: web.Application) -> None:
        for ws in list(self.clients):
            await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"Restarting")
