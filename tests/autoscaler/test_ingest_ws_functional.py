"""Upstream's stat websocket on the autoscaler: what an upstream activator sends is ingested."""
from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from autoscaler.server import AutoscalerServer, ServerOptions
from proto import stat_pb2
from tests.autoscaler.test_server_harness import FakeClock, T0, eventually, running, stat

pytestmark = pytest.mark.functional


def frame(*messages: stat_pb2.WireStatMessage) -> bytes:
    return stat_pb2.WireStatMessages(messages=messages).SerializeToString()


async def test_binary_frames_are_ingested_and_bad_frames_counted_without_closing() -> None:
    async with running(watch=False) as h:
        await h.sync()
        col = h.server.multiscaler.collector
        url = f"ws://127.0.0.1:{h.server.ports['websocket']}/any/path"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            no_stat = stat_pb2.WireStatMessage(namespace="default", name="hello-00001")
            await ws.send_bytes(frame(stat(None, 2.0, pod="activator-1"), no_stat))
            await ws.send_bytes(b"\x0a\xff\xff\xff\xff\x0f")  # a length running past the end
            await ws.send_str("not a stat")
            await ws.send_bytes(frame(stat(0, 3.0, pod="activator-2"),
                                      stat(0, 1.0, revision="unknown")))
            await eventually(lambda: col.accepted["websocket"] == 2)
            assert not ws.closed
        assert col.rejected == {("websocket", "no_stat"): 1,
                                ("websocket", "malformed_frame"): 1,
                                ("websocket", "not_binary"): 1,
                                ("websocket", "unknown_revision"): 1}
        h.step(2.05)
        assert h.server.multiscaler.explain(("default", "hello-00001"), T0)[
            "decider"]["last_tick"]["observed_stable"] == 5.0  # type: ignore[index]


async def test_kubelet_probes_get_200_and_plain_requests_400() -> None:
    async with running(watch=False) as h:
        base = f"http://127.0.0.1:{h.server.ports['websocket']}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz", headers={"User-Agent": "kube-probe/1.30"}) as r:
                assert r.status == 200
            async with http.get(f"{base}/", headers={"K-Kubelet-Probe": "queue"}) as r:
                assert r.status == 200
            async with http.get(f"{base}/") as r:
                assert r.status == 400
                assert "not using the websocket protocol" in await r.text()


async def test_clients_are_told_to_reconnect_when_the_autoscaler_stops() -> None:
    opts = ServerOptions(host="127.0.0.1", grpc_port=0, websocket_port=0, metrics_port=0,
                         debug_port=0, clock_loop=False)
    server = AutoscalerServer(opts, clock=FakeClock(), registry=CollectorRegistry())
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{server.ports['websocket']}/")
            await server.stop(0)
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1012
            await ws.close()
    finally:
        await server.stop(0)
