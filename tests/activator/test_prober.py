"""The prober's rounds on a manual clock with a scripted check, and the real HTTP check
against servers on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry

from activator.clock import ManualClock
from activator.metrics import ActivatorMetrics
from activator.prober import Prober, probe_queue_proxy, split_host_port
from activator.revisions import RevisionKey

KEY = RevisionKey("ns", "rev")


class Pods:
    """A scripted check: each pod answers ``ok``, ``fail`` or ``hang``; calls are logged."""

    def __init__(self, **states: str) -> None:
        self.states = dict(states)
        self.calls: list[str] = []

    async def check(self, dest: str) -> bool:
        self.calls.append(dest)
        state = self.states.get(dest, "fail")
        if state == "hang":
            await asyncio.Event().wait()
        return state == "ok"


class Rig:
    def __init__(self, pods: Pods, **kwargs: object) -> None:
        self.clock = ManualClock(0.0)
        self.changes: list[frozenset[str]] = []
        self.registry = CollectorRegistry()
        self.prober = Prober(lambda k, h: self.changes.append(h), check=pods.check, clock=self.clock,
                             metrics=ActivatorMetrics(self.registry), **kwargs)  # type: ignore[arg-type]

    @property
    def last(self) -> frozenset[str]:
        return self.changes[-1] if self.changes else frozenset()


@contextlib.asynccontextmanager
async def rig(pods: Pods, **kwargs: object) -> AsyncIterator[Rig]:
    r = Rig(pods, **kwargs)
    try:
        yield r
    finally:
        await r.prober.close()


async def test_new_endpoints_are_probed_at_once() -> None:
    pods = Pods(a="ok", b="ok")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, ["a", "b"])
        await r.clock.run_ready()
        assert r.last == {"a", "b"} and r.clock.now == 0.0
        assert r.clock.pending == []  # all healthy: no timer
        assert r.registry.get_sample_value("kdp_activator_probes_total", {"result": "ok"}) == 2


async def test_a_not_ready_pod_that_answers_is_used_before_it_is_listed_ready() -> None:
    pods = Pods(a="ok")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, [], ["a"])
        await r.clock.run_ready()
        assert r.last == {"a"}


async def test_without_probe_optimisation_only_listed_ready_pods_count() -> None:
    pods = Pods(a="ok")
    async with rig(pods, use_not_ready=False) as r:
        r.prober.set_endpoints(KEY, [], ["a"])
        await r.clock.run_ready()
        assert r.changes == []
        r.prober.set_endpoints(KEY, ["a"], [])
        await r.clock.run_ready()
        assert r.last == {"a"}


async def test_unhealthy_pods_are_probed_every_period_until_they_pass() -> None:
    pods = Pods(a="fail")
    async with rig(pods, frequency=0.2) as r:
        r.prober.set_endpoints(KEY, [], ["a"])
        await r.clock.run_ready()
        await r.clock.advance(0.65)
        assert len(pods.calls) == 4  # at 0, 0.2, 0.4, 0.6
        pods.states["a"] = "ok"
        await r.clock.advance(0.2)
        assert r.last == {"a"} and len(pods.calls) == 5
        await r.clock.advance(5.0)
        assert len(pods.calls) == 5  # healthy: probing stops


async def test_one_round_shares_one_timeout() -> None:
    pods = Pods(a="ok", slow="hang")
    async with rig(pods, frequency=0.2, timeout=0.3) as r:
        r.prober.set_endpoints(KEY, ["a", "slow"])
        await r.clock.advance(0.299)
        assert r.changes == []  # the round is still waiting for the slow pod
        await r.clock.advance(0.001)
        assert r.last == {"a"}
        assert r.registry.get_sample_value("kdp_activator_probes_total", {"result": "failed"}) == 1


async def test_a_pod_that_becomes_not_ready_leaves_at_once_and_is_probed_again() -> None:
    pods = Pods(a="ok", b="ok")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, ["a", "b"])
        await r.clock.run_ready()
        pods.states["b"] = "fail"
        calls = len(pods.calls)
        r.prober.set_endpoints(KEY, ["a"], ["b"])
        assert r.last == {"a"}  # synchronously, before any probe
        await r.clock.run_ready()
        assert pods.calls[calls:] == ["b"]
        pods.states["b"] = "ok"
        await r.clock.advance(0.2)
        assert r.last == {"a", "b"}


async def test_vanished_pods_are_dropped_and_empty_endpoints_mean_no_pod() -> None:
    pods = Pods(a="ok", b="ok")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, ["a", "b"])
        await r.clock.run_ready()
        r.prober.set_endpoints(KEY, ["b"])
        assert r.last == {"b"}
        r.prober.set_endpoints(KEY, [])
        assert r.last == frozenset() and r.prober.healthy(KEY) == frozenset()


async def test_a_pod_that_vanishes_mid_round_is_not_admitted() -> None:
    gate = asyncio.Event()

    async def slow_ok(dest: str) -> bool:
        await gate.wait()
        return True

    r = Rig(Pods())
    r.prober.check = slow_ok
    try:
        r.prober.set_endpoints(KEY, ["a"])
        await r.clock.run_ready()
        r.prober.set_endpoints(KEY, [])
        gate.set()
        await r.clock.run_ready()
        assert r.last == frozenset() and r.prober.healthy(KEY) == frozenset()
    finally:
        await r.prober.close()


async def test_reprobe_takes_a_pod_out_until_it_answers_again() -> None:
    pods = Pods(a="ok")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, ["a"])
        await r.clock.run_ready()
        pods.states["a"] = "fail"
        r.prober.reprobe(KEY, "a")
        assert r.last == frozenset()
        await r.clock.run_ready()
        assert r.last == frozenset()
        pods.states["a"] = "ok"
        await r.clock.advance(0.2)
        assert r.last == {"a"}


async def test_trusting_ready_pods_skips_their_probe() -> None:
    pods = Pods()
    async with rig(pods, trust_ready=True) as r:
        r.prober.set_endpoints(KEY, ["a"], ["b"])
        assert r.last == {"a"}
        await r.clock.run_ready()
        assert pods.calls == ["b"]


async def test_forgetting_a_revision_stops_its_probing() -> None:
    pods = Pods(a="fail")
    async with rig(pods) as r:
        r.prober.set_endpoints(KEY, ["a"])
        await r.clock.run_ready()
        r.prober.forget(KEY)
        await r.clock.advance(1.0)
        assert pods.calls == ["a"]


def test_addresses_split_into_host_and_port() -> None:
    assert split_host_port("10.0.0.1:8012") == ("10.0.0.1", 8012)
    assert split_host_port("[::1]:8013") == ("::1", 8013)
    with pytest.raises(ValueError):
        split_host_port("10.0.0.1")


# ---- the real check, against servers on 127.0.0.1 ----------------------------------------

Responder = Callable[[bytes], Awaitable[bytes | None]]


@contextlib.asynccontextmanager
async def queue_proxy(respond: Responder) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw TCP server: reads one request head, answers with what ``respond`` returns."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            answer = await respond(head)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", heads
    finally:
        server.close()
        await server.wait_closed()


def fixed(answer: bytes) -> Responder:
    async def respond(head: bytes) -> bytes:
        return answer
    return respond


@pytest.mark.functional
async def test_the_check_sends_the_activator_probe_and_wants_exactly_queue() -> None:
    async with queue_proxy(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nqueue")) as (dest, heads):
        assert await probe_queue_proxy(dest)
    head = heads[0].decode()
    assert head.startswith("GET /healthz HTTP/1.1\r\n")
    assert "\r\nK-Network-Probe: queue\r\n" in head and "\r\nUser-Agent: Knative-Activator-Probe\r\n" in head
    assert f"\r\nHost: {dest}\r\n" in head


@pytest.mark.functional
@pytest.mark.parametrize(("answer", "ok"), [
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nque\r\n2\r\nue\r\n0\r\n\r\n", True,
                 id="chunked-queue"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nqueue", True, id="read-to-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nqueue\n", False, id="trailing-newline"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nactivator", False, id="wrong-body"),
    pytest.param(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nqueue", False, id="not-200"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nque", False, id="cut-short"),
    pytest.param(b"garbage\r\n\r\n", False, id="not-http"),
])
async def test_the_check_passes_only_on_200_with_body_queue(answer: bytes, ok: bool) -> None:
    async with queue_proxy(fixed(answer)) as (dest, _):
        assert await probe_queue_proxy(dest) is ok


@pytest.mark.functional
async def test_the_check_fails_when_nothing_listens() -> None:
    async with queue_proxy(fixed(b"")) as (dest, _):
        pass
    assert await probe_queue_proxy(dest) is False


@pytest.mark.functional
async def test_a_queue_proxy_becoming_ready_is_admitted_on_the_next_round() -> None:
    ready = False

    async def respond(head: bytes) -> bytes:
        if ready:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nqueue"
        return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"

    async with queue_proxy(respond) as (dest, heads):
        clock = ManualClock(0.0)
        admitted = asyncio.Event()
        prober = Prober(lambda k, h: admitted.set() if h else None, clock=clock)
        try:
            prober.set_endpoints(KEY, [], [dest])
            async with asyncio.timeout(5):
                while not heads:
                    await asyncio.sleep(0.01)
            assert not admitted.is_set()
            ready = True
            async with asyncio.timeout(5):
                while not admitted.is_set():  # next rounds: 0.2 s apart on the manual clock
                    await clock.advance(0.2)
                    await asyncio.sleep(0.01)
            assert prober.healthy(KEY) == {dest}
        finally:
            await prober.close()


@pytest.mark.functional
async def test_a_hanging_queue_proxy_is_cut_off_by_the_round_timeout() -> None:
    hang = asyncio.Event()

    async def respond(head: bytes) -> None:
        await hang.wait()

    async with queue_proxy(respond) as (dest, heads):
        clock = ManualClock(0.0)
        prober = Prober(lambda k, h: None, clock=clock, timeout=0.3)
        try:
            result = asyncio.ensure_future(prober._probe_all([dest]))
            async with asyncio.timeout(5):
                while not heads:
                    await asyncio.sleep(0.01)
            await clock.advance(0.3)
            assert await result == {dest: False}
        finally:
            hang.set()
            await prober.close()


async def test_with_fast_retry_a_refusing_pod_is_probed_again_soon_then_less_often() -> None:
    pods = Pods(a="fail")
    async with rig(pods, frequency=0.2, fast_retry=0.01, fast_factor=2.0) as r:
        r.prober.set_endpoints(KEY, [], ["a"])
        await r.clock.run_ready()
        await r.clock.advance(0.155)
        assert len(pods.calls) == 5  # at 0, 0.01, 0.03, 0.07, 0.15: the delay doubles...
        await r.clock.advance(0.6)
        assert len(pods.calls) == 8  # ...up to the frequency: 0.35, 0.55, 0.75
        r.prober.set_endpoints(KEY, [], ["a", "b"])  # an endpoints change starts over
        await r.clock.run_ready()
        calls = len(pods.calls)
        await r.clock.advance(0.011)
        assert len(pods.calls) == calls + 2  # both pods, 10 ms later
        pods.states["a"] = pods.states["b"] = "ok"
        await r.clock.advance(0.02)
        assert r.last == {"a", "b"}


async def test_with_fast_retry_a_round_held_until_the_timeout_is_followed_at_once() -> None:
    pods = Pods(a="hang")
    async with rig(pods, frequency=0.2, timeout=0.3, fast_retry=0.01) as r:
        r.prober.set_endpoints(KEY, [], ["a"])
        await r.clock.run_ready()
        await r.clock.advance(0.3)
        assert len(pods.calls) == 2  # the held round ended at 0.3 and the next began then
        pods.states["a"] = "ok"
        await r.clock.advance(0.3)
        assert r.last == {"a"}
