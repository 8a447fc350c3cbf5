"""The autoscaler over real gRPC on 127.0.0.1: push -> decision on the feed and at the scale
target, poke from zero, bad input, restart in panic, explain, metrics. The clock is faked."""
from __future__ import annotations

import json

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto import kdp_pb2, kdp_pb2_grpc
from tests.autoscaler.test_server_harness import (A, T0, Pusher, eventually, running, stat)

pytestmark = pytest.mark.functional


async def test_pushed_stats_become_a_decision_on_the_feed_and_at_the_scale_target() -> None:
    async with running() as h:
        assert (await h.sync(cc=10)).ok
        push = Pusher(h.channel)
        for s in range(4):
            await push.send(stat(s, 21.0, pod="a"), stat(s, 14.0, pod="b"))
        await eventually(lambda: h.server.multiscaler.collector.accepted["push"] == 8)
        h.step(4.05)
        await h.settle()
        await eventually(lambda: h.decisions and h.decisions[-1].desired_pods == 5)
        d = h.decisions[-1]
        assert (d.namespace, d.revision, d.stable_concurrency) == ("default", "hello-00001", 35.0)
        assert d.mode == kdp_pb2.MODE_PROXY and d.num_activators >= 2
        assert d.unix_nanos == h.clock.ns
        assert h.target.calls[-1] == ("default", "hello-00001", 5)
        summary = await push.close()
        assert (summary.accepted, summary.rejected) == (8, 0)


async def test_a_late_subscriber_gets_the_current_decisions_first() -> None:
    async with running(watch=False) as h:
        await h.sync(cc=10)
        push = Pusher(h.channel)
        await push.send(stat(0, 7.0))
        await eventually(lambda: h.server.multiscaler.collector.accepted["push"] == 1)
        h.step(2.05)
        feed = kdp_pb2_grpc.DecisionFeedStub(h.channel).Watch(
            kdp_pb2.WatchRequest(subscriber="late"))
        first = await feed.read()
        assert (first.revision, first.desired_pods) == ("hello-00001", 1)
        feed.cancel()
        await push.close()


async def test_a_poke_scales_a_revision_at_zero_without_waiting_for_a_tick() -> None:
    async with running() as h:
        await h.sync(annotations={A + "window": "6s", A + "target-burst-capacity": "-1"})
        for t in range(0, 32):  # active a window, then 30 s of the activator in the path
            h.step(t + 0.05)
        await h.settle()
        assert h.target.replicas()[-1] == 0
        await h.pods(0)
        steps = h.server.multiscaler.ticks
        push = Pusher(h.channel, sender="activator-1")
        # The activator's immediate stat for the first request: concurrency 1, no timestamp.
        h.clock.set(T0 + 40.3)
        await push.send(stat(None, 1.0, pod="activator-1"), poke=True)
        await eventually(lambda: h.server.service.pokes == 1)
        await eventually(lambda: h.decisions and h.decisions[-1].desired_pods == 1)
        await h.settle()
        assert h.target.replicas()[-1] == 1
        assert h.server.multiscaler.ticks == steps  # no tick ran
        await push.close()


async def test_garbage_on_the_push_stream_is_counted_and_the_stream_goes_on() -> None:
    async with running(watch=False) as h:
        await h.sync()
        call = h.channel.stream_unary(
            "/kdp.v1.StatIngest/Push", request_serializer=None,
            response_deserializer=kdp_pb2.PushSummary.FromString)()
        await call.write(b"\xff\xff\xff\xff garbage")
        good = kdp_pb2.StatBatch(sender="x", messages=[stat(0, 3.0)]).SerializeToString()
        await call.write(good[:-3])  # truncated
        await call.write(kdp_pb2.StatBatch(sender="x", messages=[
            stat(0, 3.0), stat(0, -1.0), stat(0, 1.0, revision="unknown"),
            stat(100, 1.0)]).SerializeToString())
        await call.done_writing()
        summary = await call
        assert (summary.accepted, summary.rejected) == (1, 5)
        rejected = h.server.multiscaler.collector.rejected
        assert rejected == {("push", "malformed_frame"): 2, ("push", "invalid_value"): 1,
                            ("push", "unknown_revision"): 1, ("push", "future"): 1}


async def test_invalid_annotations_are_refused_naming_the_key_and_the_range() -> None:
    async with running(watch=False) as h:
        ack = await h.sync(annotations={A + "max-scale": "-3"})
        assert not ack.ok
        assert A + "max-scale" in ack.error and "-3" in ack.error and "allowed" in ack.error
        ack = await h.pods(1, revision="never-synced")
        assert not ack.ok and "SyncRevision first" in ack.error


async def test_a_restarted_autoscaler_starts_in_panic_and_does_not_scale_down() -> None:
    async with running() as h:
        await h.sync(cc=10, ready=6)  # the runtime re-syncs a revision running 6 pods
        push = Pusher(h.channel)
        for s in range(0, 60):
            await push.send(stat(s, 7.0))  # one pod's worth of load
            if s % 2 == 0:
                await eventually(
                    lambda s=s: h.server.multiscaler.collector.accepted["push"] == s + 1)
                h.step(s + 0.05)
        await h.settle()
        # -1 (no decision yet) when the pods are first reported, then 6 and only 6.
        assert [d.desired_pods for d in h.decisions] == [-1, 6]
        assert all(d.in_panic for d in h.decisions)
        assert set(h.target.replicas()) == {6}
        await push.close()


async def test_a_refused_scale_is_retried_and_visible_until_applied() -> None:
    async with running(watch=False) as h:
        h.target.fail = 1
        await h.sync(annotations={A + "min-scale": "3"})
        h.step(0.05)
        await h.settle()
        assert h.server.dispatcher.failing == 1
        explained = json.loads((await h.control.Explain(kdp_pb2.ExplainRequest(
            namespace="default", revision="hello-00001"))).json)
        assert explained["scale_target"]["last_error"] == "no capacity"
        h.server.dispatcher._state[("default", "hello-00001")].next_try = 0.0
        await h.settle()
        assert h.target.replicas() == [3, 3] and h.server.dispatcher.failing == 0


async def test_explain_and_the_debug_endpoint_show_the_last_decision() -> None:
    async with running(watch=False) as h:
        await h.sync(cc=10)
        push = Pusher(h.channel)
        await push.send(stat(0, 70.0), stat(1, 70.0))
        await eventually(lambda: h.server.multiscaler.collector.accepted["push"] == 2)
        h.step(2.05)
        reply = await h.control.Explain(kdp_pb2.ExplainRequest(namespace="default",
                                                               revision="hello-00001"))
        data = json.loads(reply.json)
        tick = data["decider"]["last_tick"]
        assert tick["observed_stable"] == 70.0 and tick["raw_stable_pods"] == 10.0
        assert data["windows"]["concurrency_stable"]["buckets"][:2] == [[T0 + 1, 70.0],
                                                                        [T0, 70.0]]
        assert data["scaling"]["target_value"] == 7.0
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{h.server.ports['debug']}"
            async with http.get(f"{base}/debug/revisions/default/hello-00001") as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["published"]["desired_pods"] == 10
            async with http.get(f"{base}/debug/revisions/default/nope") as resp:
                assert resp.status == 404
            async with http.get(f"{base}/debug/status") as resp:
                assert (await resp.json())["revisions"] == 1
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await h.control.Explain(kdp_pb2.ExplainRequest(namespace="default", revision="nope"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        await push.close()


async def test_prometheus_metrics_carry_upstreams_names() -> None:
    async with running(watch=False) as h:
        await h.sync(cc=10)
        push = Pusher(h.channel)
        await push.send(stat(0, 7.0), stat(0, -5.0))
        await eventually(lambda: h.server.multiscaler.collector.accepted["push"] == 1)
        h.step(2.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{h.server.ports['metrics']}/metrics") as r:
                text = await r.text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        rev = (("k8s_namespace_name", "default"), ("kn_configuration_name", "hello"),
               ("kn_revision_name", "hello-00001"), ("kn_service_name", "hello"))
        assert samples[("kn_revision_pods_desired", rev)] == 1
        assert samples[("kn_revision_concurrency_stable", rev)] == 7
        assert samples[("kn_revision_concurrency_target", rev)] == 7
        assert samples[("kn_revision_panic_mode", rev)] == 0
        assert samples[("kn_revision_pods_count", rev)] == 1
        assert samples[("kn_revision_pods_requested", rev)] == 1
        assert samples[("kdp_autoscaler_stats_rejected_total",
                        (("reason", "invalid_value"), ("source", "push")))] == 1
        assert samples[("kdp_autoscaler_ticks_total", ())] == 1
        assert "kn_revision_capacity_excess{" in text and "kdp_autoscaler_tick_seconds_bucket" in text
        await push.close()
