"""Scraping fake queue-proxy :9090 endpoints as upstream's autoscaler does."""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from autoscaler.sampling import ScrapePod
from autoscaler.scraper import MAX_BODY, ScrapeError, Scraper, ScrapeTargets, parse_targets
from proto import stat_pb2
from tests.autoscaler.test_server_harness import A, T0, eventually, running

pytestmark = pytest.mark.functional

KEY = ("default", "hello-00001")


class FakePods:
    """Queue-proxy stat endpoints on 127.0.0.1, one port per pod, with scripted answers."""

    def __init__(self) -> None:
        self.bodies: dict[int, tuple[int, str, bytes]] = {}
        self.accepts: list[str] = []
        self.runners: list[web.AppRunner] = []

    async def add(self, name: str, c: float, r: float = 0.0, status: int = 200,
                  content_type: str = "application/protobuf", body: bytes | None = None) -> str:
        app = web.Application()
        runner = web.AppRunner(app, access_log=None)
        port_box: list[int] = []

        async def handle(request: web.Request) -> web.Response:
            self.accepts.append(request.headers.get("Accept", ""))
            st, ct, b = self.bodies[port_box[0]]
            return web.Response(status=st, body=b, headers={"Content-Type": ct})

        app.router.add_get("/metrics", handle)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        port_box.append(port)
        self.runners.append(runner)
        if body is None:
            body = stat_pb2.Stat(pod_name=name, average_concurrent_requests=c,
                                 request_count=r).SerializeToString()
        self.bodies[port] = (status, content_type, body)
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        for r in self.runners:
            await r.cleanup()


@contextlib.asynccontextmanager
async def pods() -> AsyncIterator[FakePods]:
    p = FakePods()
    try:
        yield p
    finally:
        await p.close()


async def test_every_pod_of_a_small_revision_is_scraped_and_summed() -> None:
    async with running(watch=False) as h, pods() as fake:
        await h.sync()
        addrs = [await fake.add(f"pod-{i}", c=float(i + 1), r=2.0) for i in range(3)]
        h.server.targets.set(KEY, [ScrapePod(a) for a in addrs])
        assert h.server.scraper.round() == 1
        col = h.server.multiscaler.collector
        await eventually(lambda: col.accepted["scrape"] == 1)
        assert set(fake.accepts) == {"application/protobuf"}
        h.step(2.05)
        tick = h.server.multiscaler.explain(KEY, T0)["decider"]["last_tick"]  # type: ignore[index]
        assert (tick["observed_stable"], tick["observed_panic"]) == (6.0, 6.0)
        # A scraped pod that also pushes is counted once.
        res = col.ingest([stat_pb2.WireStatMessage(namespace=KEY[0], name=KEY[1], stat=stat_pb2.Stat(
            pod_name="pod-1", average_concurrent_requests=2.0, timestamp=T0 + 2))], T0 + 2.5, "push")
        assert res.rejected == 1 and col.rejected[("push", "duplicate")] == 1


async def test_a_sample_of_a_larger_revision_is_extrapolated_to_all_pods() -> None:
    async with running(watch=False) as h, pods() as fake:
        await h.sync()
        addrs = [await fake.add(f"pod-{i}", c=3.0) for i in range(10)]
        scraper = Scraper(h.server.service, ScrapeTargets(), rng=random.Random(3))
        try:
            est = await scraper.scrape_revision([ScrapePod(a) for a in addrs], 60.0, T0)
        finally:
            await scraper.close()
        assert est is not None and est.pod_name == "service-scraper"
        assert est.average_concurrent_requests == pytest.approx(30.0)
        assert len(fake.accepts) == 7  # n = 7 of N = 10


async def test_failing_pods_are_skipped_while_spare_pods_remain() -> None:
    async with running(watch=False) as h, pods() as fake:
        await h.sync()
        good = [await fake.add(f"pod-{i}", c=2.0) for i in range(4)]
        bad = await fake.add("bad", c=0.0, status=503)
        # 5 pods -> sample of 4: one worker meets the bad pod and moves on to a spare.
        scraper = Scraper(h.server.service, ScrapeTargets(), rng=random.Random(0))
        try:
            est = await scraper.scrape_revision([ScrapePod(a) for a in [bad, *good]], 60.0, T0)
            assert est is not None and est.average_concurrent_requests == pytest.approx(10.0)
            # With two bad pods of 5 some worker runs out of pods: the scrape fails.
            worse = await fake.add("worse", c=0.0, content_type="text/plain")
            with pytest.raises(ScrapeError, match="pods exhausted"):
                await scraper.scrape_revision([ScrapePod(a) for a in [bad, worse, *good[:3]]],
                                              60.0, T0)
        finally:
            await scraper.close()


async def test_a_pod_answer_is_checked_and_read_to_at_most_336_bytes() -> None:
    async with running(watch=False) as h, pods() as fake:
        base = stat_pb2.Stat(pod_name="", average_concurrent_requests=4.0)
        pad = MAX_BODY - len(base.SerializeToString()) - 3
        exact = stat_pb2.Stat(pod_name="p" * pad, average_concurrent_requests=4.0)
        body = exact.SerializeToString()
        assert len(body) == MAX_BODY
        long_body = await fake.add("", 0.0, body=body + b"\xff" * 100)
        wrong_type = await fake.add("x", 1.0, content_type="application/protobuf; charset=x")
        garbage = await fake.add("", 0.0, body=b"\xff\xff\xff")
        scraper = Scraper(h.server.service, ScrapeTargets())
        try:
            assert (await scraper.scrape_pod(long_body)).average_concurrent_requests == 4.0
            with pytest.raises(ScrapeError, match="unsupported metric type"):
                await scraper.scrape_pod(wrong_type)
            with pytest.raises(ScrapeError, match="unmarshalling failed"):
                await scraper.scrape_pod(garbage)
            with pytest.raises(ScrapeError):
                await scraper.scrape_pod("127.0.0.1:1")  # nothing listens
        finally:
            await scraper.close()


async def test_revisions_with_the_activator_always_in_the_path_are_not_scraped() -> None:
    async with running(watch=False) as h, pods() as fake:
        await h.sync(annotations={A + "target-burst-capacity": "-1"})
        h.server.targets.set(KEY, [ScrapePod(await fake.add("pod-0", 1.0))])
        assert h.server.scraper.round() == 0
        await asyncio.sleep(0)
        assert fake.accepts == []


def test_scrape_targets_parse_from_a_mapping_and_name_a_bad_entry() -> None:
    parsed = parse_targets({"default/hello": ["10.0.0.5", {"address": "10.0.0.6:9090",
                                                          "started": 1787000000}]})
    assert parsed == {("default", "hello"): [ScrapePod("10.0.0.5"),
                                             ScrapePod("10.0.0.6:9090", 1787000000.0)]}
    with pytest.raises(ValueError, match="'hello'.*namespace/revision"):
        parse_targets({"hello": []})
    with pytest.raises(ValueError, match="default/hello"):
        parse_targets({"default/hello": [42]})
