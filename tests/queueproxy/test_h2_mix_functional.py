"""The HTTP/2 engine under a seeded random mix of concurrent streams, on 127.0.0.1: two raw HTTP/2
clients through the queue-proxy's app (containerConcurrency 0 or 3) to a scripted h2c user
container. Each stream is one of: a request body of random size echoed back as its length, a body
streamed back as it arrives, a large response, a response with trailers, the user container
resetting before answering (502), and the client cancelling a stream whose response has started.
Checked: every stream ends as its kind says, with its bytes intact; afterwards no request is still
counted, no breaker slot is held and no stream is left on either side of the proxy."""
from __future__ import annotations

import asyncio
import json
import random

import pytest

from tests.queueproxy.test_h2_harness import H2Client, running_h2_backend, running_proxy, until

pytestmark = pytest.mark.functional

CANCEL = 0x8
STREAMS = 30  # with containerConcurrency 3, 3 slots and a queue of 30: all are admitted
KINDS = ["echo", "echo", "mirror", "big", "trailers", "rst-before", "cancel"]


async def one_stream(client: H2Client, rng: random.Random, i: int) -> str:
    kind = rng.choice(KINDS)
    if kind == "echo":
        body = rng.randbytes(rng.choice([0, 1, 1000, 70_000, 200_000]))
        sid = client.request(b"POST", b"/echo?i=%d" % i, body=None, end=False)
        await client.send_all(sid, body)
        r = await client.wait(sid)
        assert r.status == 200 and r.ended and json.loads(bytes(r.body))["length"] == len(body), (i, kind)
    elif kind == "mirror":
        body = rng.randbytes(rng.choice([1, 5000, 100_000]))
        sid = client.request(b"POST", b"/mirror?i=%d" % i, body=None, end=False)
        await client.send_all(sid, body)
        r = await client.wait(sid)
        assert r.status == 200 and r.ended and bytes(r.body) == body, (i, kind, len(r.body), len(body))
    elif kind == "big":
        n = rng.choice([1, 100_000, 1_000_000])
        r = await client.get(b"/big?n=%d" % n)
        assert r.status == 200 and r.ended and len(r.body) == n, (i, kind)
    elif kind == "trailers":
        r = await client.get(b"/trailers?i=%d" % i, [(b"te", b"trailers")])
        assert (r.status, bytes(r.body), r.trailers.get(b"grpc-status")) == (200, b"partial", b"7"), (i, kind)
    elif kind == "rst-before":
        r = await client.get(b"/rst-before?i=%d" % i)
        assert r.status == 502 and b"upstream reset the stream" in r.body, (i, kind)
    else:  # the client gives up on a response that has started
        sid = client.request(b"GET", b"/big?n=5000000")
        await client.wait(sid, lambda r: len(r.body) > 0)
        client.reset(sid, CANCEL)
    return kind


@pytest.mark.parametrize("seed,cc", [(1, 0), (2, 3), (3, 0), (4, 3)])
async def test_a_random_mix_of_concurrent_streams_each_ends_as_it_should_and_leaves_nothing(
        seed: int, cc: int) -> None:
    rng = random.Random(seed)
    async with running_h2_backend() as backend, running_proxy(backend.port, cc=cc) as proxy:
        clients = [await H2Client.connect(proxy.port) for _ in range(2)]
        try:
            async with asyncio.timeout(60):
                kinds = await asyncio.gather(*(one_stream(rng.choice(clients), random.Random(rng.random()), i)
                                               for i in range(STREAMS)))
            assert len(set(kinds)) >= 4, kinds  # the mix really was mixed
            await until(lambda: proxy.stats.concurrency == 0, "every request to be counted out")
            await until(lambda: not proxy.streams(), "every client-side stream to be gone")
            breaker = proxy.handler.breaker
            assert breaker is None or (breaker.active, breaker.waiting) == (0, 0)
            # the connections are still good for another request
            for c in clients:
                r = await c.get(b"/echo", body=b"after")
                assert r.status == 200 and json.loads(bytes(r.body))["length"] == 5
        finally:
            for c in clients:
                await c.close()
