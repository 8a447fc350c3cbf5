"""The service glue with a fake clock and no sockets: when it records and ticks, how pokes are
decided on the next loop turn, and where outcomes go."""
from __future__ import annotations

import asyncio

from autoscaler.collector import PUSH
from autoscaler.config import AutoscalerConfig, ConfigStore
from autoscaler.multiscaler import MultiScaler, RevisionInput
from autoscaler.publisher import DecisionHub, ScaleDispatcher
from autoscaler.scaler import PodCounts
from autoscaler.service import AutoscalerService
from proto import stat_pb2

T0 = 1_787_000_000
NS = 1_000_000_000
KEY = ("default", "hello-00001")
A = "autoscaling.knative.dev/"


class Target:
    def __init__(self) -> None:
        self.calls: list[int] = []

    async def scale(self, namespace: str, revision: str, replicas: int) -> int:
        self.calls.append(replicas)
        return replicas

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.ns = T0 * NS

    def __call__(self) -> int:
        return self.ns

    def at(self, t: float) -> int:
        self.ns = int((T0 + t) * NS)
        return self.ns


def build(annotations: dict[str, str] | None = None) -> tuple[AutoscalerService, Clock, Target]:
    clock, target = Clock(), Target()
    svc = AutoscalerService(MultiScaler(capacity=4), DecisionHub(),
                            ScaleDispatcher(target, clock=lambda: clock() / NS), clock=clock)
    svc.sync_revision(RevisionInput(*KEY, annotations=annotations or {}, container_concurrency=10))
    svc.report_pods(KEY, PodCounts(ready=1))
    return svc, clock, target


def stat(t: int, c: float) -> stat_pb2.WireStatMessage:
    return stat_pb2.WireStatMessage(namespace=KEY[0], name=KEY[1], stat=stat_pb2.Stat(
        pod_name="p", average_concurrent_requests=c, timestamp=t))


async def test_the_tick_runs_on_even_seconds_once_and_records_every_second() -> None:
    svc, clock, _ = build()
    svc.ingest([stat(T0, 7.0)], PUSH)
    svc.step(clock.at(0.05))
    assert svc.ms.ticks == 1
    svc.step(clock.at(0.5))  # the same second again: no second tick
    svc.step(clock.at(1.05))
    assert svc.ms.ticks == 1 and svc.ms.collector.pending == 0
    svc.step(clock.at(2.05))
    assert svc.ms.ticks == 2
    assert svc.tick_phases[-1]["total"] >= svc.tick_phases[-1]["decide"] >= 0


async def test_pokes_are_decided_together_on_the_next_loop_turn() -> None:
    svc, clock, target = build({A + "target-burst-capacity": "-1", A + "window": "6s"})
    for t in range(0, 32):
        svc.step(clock.at(t + 0.05))
    await svc.dispatcher.step()
    await svc.dispatcher.settle()
    assert target.calls[-1] == 0
    svc.report_pods(KEY, PodCounts(ready=0))
    clock.at(40.2)
    svc.ingest([stat(0, 1.0)], PUSH)
    svc.ingest([stat(0, 2.0)], PUSH)
    assert svc.ms.out_of_band == 0  # nothing decided inside the transport's call
    await asyncio.sleep(0)
    assert svc.ms.out_of_band == 1 and svc.pokes == 1
    assert svc.hub.latest[KEY].desired_pods == 1
    await svc.dispatcher.step()
    await svc.dispatcher.settle()
    assert target.calls[-1] == 1


async def test_a_deleted_revision_leaves_the_feed_and_the_dispatcher() -> None:
    svc, clock, _ = build({A + "min-scale": "2"})
    svc.step(clock.at(0.05))
    assert KEY in svc.hub.latest and svc.dispatcher.status(KEY) is not None
    svc.sync_revision(RevisionInput(*KEY, deleted=True))
    assert KEY not in svc.hub.latest and svc.dispatcher.status(KEY) is None


async def test_a_valid_config_change_reaches_every_revision() -> None:
    svc, clock, target = build()
    svc.ingest([stat(T0, 7.0)], PUSH)
    svc.step(clock.at(2.05))
    store = ConfigStore()
    store.subscribe(svc.set_config)
    store.update({"min-scale": "3"})
    assert svc.ms.config == AutoscalerConfig.from_configmap({"min-scale": "3"})
    await svc.dispatcher.step()
    await svc.dispatcher.settle()
    assert target.calls == [3]  # 1 was replaced before it went out
