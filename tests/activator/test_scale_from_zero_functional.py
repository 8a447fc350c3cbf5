"""The activator process holding requests for revisions without pods: the poke and the reports
to the autoscaler, serving as soon as a pod's queue-proxy answers, failing fast with a reason,
timeouts and the caps on waiting requests."""
from __future__ import annotations

import asyncio

import pytest

from tests.activator.harness import (
    NS,
    ActivatorProcess,
    BackendRequest,
    FakeRuntime,
    FakeStatIngest,
    Pod,
    Reply,
    Response,
    activator,  # noqa: F401 (fixture)
    activator_env,
    eventually,
    fake_pods,
    ingest,  # noqa: F401 (fixture)
    poke_batches,
    revision_stats,
    runtime,  # noqa: F401 (fixture)
    unique_rev,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module")]


async def sample(act: ActivatorProcess, family: str, rev: str, suffix: str = "") -> float:
    """The value of ``family`` (sample ``family + suffix``) for ``ns/rev``, 0 when absent."""
    families = await act.metrics()
    f = families.get(family)
    if f is None:
        return 0.0
    for s in f.samples:
        if s.name == family + suffix and s.labels.get("kn_revision_name") == rev:
            return float(s.value)
    return 0.0


async def waiting(act: ActivatorProcess, rev: str, n: int) -> None:
    async def enough() -> bool:
        return await sample(act, "kn_revision_request_queued", rev) >= n
    await eventually(enough, what=f"{n} requests waiting for {rev}")


def background(act: ActivatorProcess, rev: str, n: int, **kwargs: object) -> list[asyncio.Task[Response]]:
    return [asyncio.ensure_future(act.request(rev, f"/{i}", **kwargs)) for i in range(n)]  # type: ignore[arg-type]


async def test_a_request_to_a_revision_at_zero_pokes_the_autoscaler_and_is_served_when_a_pod_answers(
        activator: ActivatorProcess, runtime: FakeRuntime, ingest: FakeStatIngest) -> None:
    rev = unique_rev()
    runtime.publish(rev, timeout=30)
    first = await enter(activator, rev, "/first", timeout=20)
    # the poke: its own batch, at once, concurrency 1 and count 1 from this activator
    await ingest.wait_for(lambda: any(m.name == rev for b in poke_batches(ingest) for m in b.messages))
    poke = next(b for b in poke_batches(ingest) if any(m.name == rev for m in b.messages))
    assert [(m.namespace, m.name, m.stat.pod_name, m.stat.average_concurrent_requests, m.stat.request_count)
            for m in poke.messages] == [(NS, rev, "activator-test-pod", 1.0, 1.0)]
    assert poke.sender == "activator-test-pod"
    more = background(activator, rev, 2, timeout=20)
    await waiting(activator, rev, 3)
    assert not first.done()
    assert len([b for b in poke_batches(ingest) if any(m.name == rev for m in b.messages)]) == 1

    # The runtime starts a pod and lists it as not ready: the activator's own probe finds it.
    async with Pod(rev) as pod:
        runtime.publish(rev, not_ready=[pod.address], timeout=30)
        results = [await first, *await asyncio.gather(*more)]
        assert [(r.status, r.body) for r in results] == [(200, b"Hello World!\n")] * 3
        waits = [float(r.header("Server-Timing").split("dur=")[1]) for r in results]  # type: ignore[union-attr]
        assert all(w > 0 for w in waits), waits
        assert await sample(activator, "kdp_activator_wait_seconds", rev, "_count") == 3

        # Then 1 s reports; the poke's request is taken out of the first one.
        async def dropped() -> bool:  # the revision went idle: a report with nothing in it
            stats = revision_stats(ingest, rev)
            return len(stats) >= 2 and stats[-1].average_concurrent_requests == 0 and stats[-1].request_count == 0
        await eventually(dropped, timeout=6, what="reports until the revision is idle")
        stats = revision_stats(ingest, rev)
        assert sum(s.request_count for s in stats) == 3 - 1
        assert all(s.pod_name == "activator-test-pod" for s in stats)
        assert all(s.average_proxied_concurrent_requests == 0 and s.proxied_request_count == 0
                   and s.process_uptime == 0 and s.timestamp == 0 for s in stats)
        assert all(0 <= s.average_concurrent_requests < 3 - 1 for s in stats), stats  # 3 at most, less the poke

        # Idle again: the next request pokes again, and is served at once by the known pod.
        r = await activator.request(rev, "/again")
        assert r.status == 200
        await ingest.wait_for(lambda: len([b for b in poke_batches(ingest)
                                           if any(m.name == rev for m in b.messages)]) == 2)
    runtime.publish(rev, deleted=True)


async def enter(act: ActivatorProcess, rev: str, target: str = "/", timeout: float = 30.0) -> asyncio.Task[Response]:
    """A request now waiting in the activator for ``rev``, sent again while the activator
    does not know the revision yet (404s are neither counted nor reported)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while True:
        t = asyncio.ensure_future(act.request(rev, target, timeout=timeout))
        done, _ = await asyncio.wait({t}, timeout=0.2)
        if not done:
            return t
        r = t.result()
        assert r.status == 404, r
        assert loop.time() < deadline, f"{rev} never became known"
        await asyncio.sleep(0.02)


async def test_a_failure_reported_for_the_revision_fails_waiting_requests_at_once_with_the_reason(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    runtime.publish(rev, timeout=60)
    tasks = [await enter(activator, rev), *background(activator, rev, 2, timeout=30)]
    await waiting(activator, rev, 3)
    runtime.decide(rev, failure="ImagePullBackOff: image example.com/app:v2 not found")
    async with asyncio.timeout(5):  # far below the revision's 60 s timeout
        results = await asyncio.gather(*tasks)
    for r in results:
        assert r.status == 503
        assert b"ImagePullBackOff: image example.com/app:v2 not found" in r.body
        assert r.header("Retry-After") == "10"
    # new requests fail at once while the failure stands
    r = await activator.request(rev, "/later", timeout=5)
    assert r.status == 503 and b"ImagePullBackOff" in r.body
    assert await sample(activator, "kdp_activator_rejected_requests_total", rev) == 0  # labelled by reason
    families = await activator.metrics()
    reasons = {s.labels["reason"]: s.value for s in families["kdp_activator_rejected_requests"].samples
               if s.labels.get("kn_revision_name") == rev and s.name.endswith("_total")}
    assert reasons == {"revision_failed": 4.0}

    # cleared: requests wait again (and get the revision timeout, here short)
    runtime.decide(rev)
    runtime.publish(rev, timeout=0.5)

    async def waits_again() -> bool:  # (the two feeds may apply their changes in either order)
        try:
            r = await activator.request(rev, "/after", timeout=2)
        except TimeoutError:
            return False
        return r.status == 504
    await eventually(waits_again, what="requests waiting again")

    # a failure on the endpoints feed works the same
    runtime.publish(rev, timeout=60, failure="CrashLoopBackOff: exit code 1")
    r = await eventually(lambda: _failed(activator, rev), what="endpoints failure applied")
    assert b"CrashLoopBackOff: exit code 1" in r.body
    runtime.publish(rev, deleted=True)


async def _failed(act: ActivatorProcess, rev: str) -> Response | None:
    try:
        r = await act.request(rev, "/", timeout=1)
    except TimeoutError:
        return None
    return r if r.status == 503 else None


async def test_a_request_that_waits_longer_than_the_revision_timeout_gets_504(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    runtime.publish(rev, timeout=0.5)

    async def timed_out() -> Response | None:
        r = await activator.request(rev, "/", timeout=5)
        return r if r.status == 504 else None
    r = await eventually(timed_out, what="a 504")
    assert r.body == b"activator request timeout"
    assert await sample(activator, "kn_revision_request_queued", rev) == 0
    runtime.publish(rev, deleted=True)


async def test_a_revision_deleted_while_requests_wait_answers_them_404(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    runtime.publish(rev, timeout=60)
    tasks = [await enter(activator, rev), *background(activator, rev, 1, timeout=30)]
    await waiting(activator, rev, 2)
    runtime.publish(rev, deleted=True)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*tasks)
    assert [r.status for r in results] == [404, 404]


async def test_waiting_requests_beyond_the_caps_get_503_with_retry_after(
        ingest: FakeStatIngest, runtime: FakeRuntime) -> None:
    a, b = unique_rev(), unique_rev()
    env = activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{runtime.address}",
                        KDP_MAX_WAITING_PER_REVISION="2", KDP_MAX_WAITING="3", KDP_RETRY_AFTER="2s")
    async with ActivatorProcess(env) as act:
        runtime.publish(a, timeout=60)
        runtime.publish(b, timeout=60)
        held = [await enter(act, a), *background(act, a, 1, timeout=30)]
        await waiting(act, a, 2)
        r = await act.request(a, "/third", timeout=5)
        assert r.status == 503
        assert r.header("Retry-After") == "2"
        assert b"queue full" in r.body and b"2 requests waiting" in r.body
        held.append(await enter(act, b))
        await waiting(act, b, 1)
        r = await act.request(b, "/global", timeout=5)
        assert r.status == 503
        assert r.header("Retry-After") == "2"
        assert b"activator queue full: 3 requests waiting" in r.body
        # a pod for a: its two are served, and room is made for others
        async with fake_pods(1) as (pod,):
            runtime.publish(a, ready=[pod.address], timeout=60)
            done = await asyncio.gather(*held[:2])
            assert [x.status for x in done] == [200, 200]
            more = background(act, b, 1, timeout=30)
            await waiting(act, b, 2)
            runtime.publish(b, ready=[pod.address], timeout=60)
            assert [x.status for x in await asyncio.gather(held[2], *more)] == [200, 200]
    runtime.publish(a, deleted=True)
    runtime.publish(b, deleted=True)


async def test_a_client_that_gives_up_frees_its_place_in_the_queue(
        ingest: FakeStatIngest, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    env = activator_env(autoscaler=f"127.0.0.1:{ingest.port}", backends=f"grpc://{runtime.address}",
                        KDP_MAX_WAITING_PER_REVISION="1")
    async with ActivatorProcess(env) as act:
        runtime.publish(rev, timeout=60)
        t = await enter(act, rev)
        await waiting(act, rev, 1)
        t.cancel()  # the client closes its connection
        await asyncio.gather(t, return_exceptions=True)

        async def freed() -> bool:
            return await sample(act, "kn_revision_request_queued", rev) == 0
        await eventually(freed, what="the place freed")
        (t,) = background(act, rev, 1, timeout=30)
        await waiting(act, rev, 1)  # it waits instead of getting 503
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
    runtime.publish(rev, deleted=True)


async def test_a_request_body_sent_while_waiting_reaches_the_pod_whole(
        activator: ActivatorProcess, runtime: FakeRuntime) -> None:
    rev = unique_rev()
    runtime.publish(rev, timeout=30)
    body = bytes(range(256)) * 4096  # 1 MiB: more than the engine holds while it waits
    await enter(activator, rev, "/probe-known", timeout=30)  # the revision is known (that one waits)
    upload = asyncio.ensure_future(activator.request(rev, "/upload", method="POST", body=body, timeout=20))
    await waiting(activator, rev, 2)
    async with fake_pods(1) as (pod,):
        async def echo_length(req: BackendRequest) -> Reply:
            data = await req.read_all()
            return Reply(body=b"%d %d" % (len(data), hash(data) == hash(body)))
        pod.pod_script = echo_length
        runtime.publish(rev, ready=[pod.address], timeout=30)
        r = await upload
        assert (r.status, r.body) == (200, b"%d 1" % len(body))
    runtime.publish(rev, deleted=True)
