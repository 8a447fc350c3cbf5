"""The featureless reference of the proxy benchmark: raw asyncio protocols on uvloop, httptools
parsing both directions (message boundaries only), bytes relayed as they come, one upstream
connection per client connection. No header rewriting, stats, breaker, timeouts or probes: the
floor a Python proxy on this engine stands on, measured in the same run as the queue-proxy so the
machine's speed that hour is visible (``python -m bench.proxy --bare``).

Reads the queue-proxy's env: listens on ``QUEUE_SERVING_PORT``, forwards to ``USER_PORT``
(``KDP_BIND_HOST``/``KDP_USER_HOST``, default 127.0.0.1). A benchmark tool, not a product: a client
that sends garbage is disconnected.
"""
from __future__ import annotations

import asyncio
import os

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.close()
            return
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_addr = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.up: Upstream | None = None
        self.held: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        try:
            _, up = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), *self.upstream_addr)
        except OSError:
            self.close()
            return
        self.up = up
        if self.transport is None:  # the client left while we dialled
            self.close()
            return
        if self.held and up.transport is not None:
            up.transport.write(b"".join(self.held))
        self.held.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        up = self.up
        if up is None or up.transport is None:
            self.held.append(data)
        else:
            up.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.close()


async def serve() -> None:
    env = os.environ
    host = env.get("KDP_BIND_HOST", "127.0.0.1")
    upstream = (env.get("KDP_USER_HOST", "127.0.0.1"), int(env["USER_PORT"]))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream), host, int(env["QUEUE_SERVING_PORT"]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve())
