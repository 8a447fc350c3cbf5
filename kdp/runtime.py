"""The local control plane: what Kubernetes and Knative's controllers are in a cluster.

It ties the pieces together, and owns no mechanism of its own:

* :class:`~kdp.catalog.Catalog` — services, revisions and routes from applied manifests;
* :class:`~kdp.supervisor.Supervisor` — the pods, scaled by the autoscaler through the
  ``ScaleTarget`` service (a new revision starts at its initial scale, as upstream's
  Deployment does, and the autoscaler takes it from there);
* :class:`~kdp.feeds.FeedServer` — endpoints, routes and relayed decisions for the activator,
  and the scale target for the autoscaler, on one gRPC address;
* :class:`~kdp.control.AutoscalerLink` — revision specs (annotations, containerConcurrency,
  reachable = has traffic) and pod counts to the autoscaler, decisions back.

Data flow on a change of pods: supervisor -> :meth:`Runtime._pods_changed` -> endpoints feed
(synchronously, before a draining pod gets its SIGTERM), pod counts to the autoscaler, and
when a revision's first pod is ready, the routes (``latestRevision`` traffic moves to it).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler import annotations as ann
from autoscaler.config import AutoscalerConfig, resolve_revision
from kdp.catalog import ApplyResult, Catalog, Revision, RevisionKey
from kdp.control import AutoscalerLink
from kdp.feeds import FeedServer, Hub
from kdp.manifest import ServiceSpec
from kdp.pod import ProbeFn
from kdp.podspec import SidecarSettings
from kdp.procs import LineSink
from kdp.restarts import BackoffPolicy
from kdp.supervisor import Supervisor
from proto import kdp_pb2

__all__ = ["Runtime", "RuntimeConfig", "queue_proxy_ready"]

logger = logging.getLogger(__name__)

_MODES = {kdp_pb2.MODE_SERVE: "serve", kdp_pb2.MODE_PROXY: "proxy"}


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    autoscaler_address: str
    """host:port of the autoscaler's gRPC services (StatIngest, DecisionFeed, AutoscalerControl)."""
    autoscaler_config: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    """The same config-autoscaler the autoscaler runs with (initial scale, targets, validation)."""
    python: str = sys.executable
    host: str = "127.0.0.1"
    feed_port: int = 0
    drain_quiet_period: float = 1.0
    crash_threshold: int = 2
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    resync_period: float = 5.0
    cert_dir: str = "/nonexistent/kdp-certs"
    sidecar_log_level: str = "info"


async def queue_proxy_ready(address: str, timeout: float) -> bool:
    """The activator's probe of a queue-proxy (200 ``queue``), bounded by ``timeout``."""
    from activator.prober import probe_queue_proxy

    try:
        return await asyncio.wait_for(probe_queue_proxy(address), timeout)
    except (asyncio.TimeoutError, OSError):
        return False


class Runtime:
    def __init__(self, config: RuntimeConfig, *, environ: Mapping[str, str] | None = None,
                 sink: LineSink | None = None, probe: ProbeFn | None = None) -> None:
        self.config = config
        self.catalog = Catalog()
        self.decisions: dict[RevisionKey, kdp_pb2.Decision] = {}
        self._published: dict[RevisionKey, tuple[Any, ...]] = {}
        self.sources: dict[tuple[str, str], str] = {}
        """(namespace, service) -> the file it came from."""
        settings = SidecarSettings(python=config.python, autoscaler_address=config.autoscaler_address,
                                   drain_quiet_period=config.drain_quiet_period, logging_level=config.sidecar_log_level,
                                   cert_dir=config.cert_dir, host=config.host)
        self.supervisor = Supervisor(settings, environ=os.environ if environ is None else environ,
                                     probe=probe or queue_proxy_ready, on_change=self._pods_changed, sink=sink,
                                     policy=config.backoff, crash_threshold=config.crash_threshold)
        self.endpoints_hub: Hub[kdp_pb2.RevisionEndpoints] = Hub(
            self._endpoints_snapshot, bookmark=lambda: kdp_pb2.RevisionEndpoints(snapshot_end=True))
        self.decisions_hub: Hub[kdp_pb2.Decision] = Hub(lambda: list(self.decisions.values()))
        self.routes_hub: Hub[kdp_pb2.RouteTable] = Hub(lambda: [self._route_table()])
        self.feeds = FeedServer(endpoints=self.endpoints_hub, decisions=self.decisions_hub, routes=self.routes_hub,
                                scale=self._scale, host=config.host, port=config.feed_port)
        self.link = AutoscalerLink(config.autoscaler_address, spec=self._revision_spec, pods=self._pod_counts,
                                   keys=lambda: list(self.catalog.keys()), on_decision=self._decision,
                                   resync_period=config.resync_period)
        self.scale_calls = 0

    @property
    def feed_address(self) -> str:
        return self.feeds.address

    async def start(self) -> None:
        await self.feeds.start()
        self.link.start()

    async def shutdown(self, kill: bool = False) -> None:
        """Drain every pod (SIGKILL them with ``kill``), then stop the link and the feeds."""
        await self.supervisor.shutdown(kill=kill)
        await self.link.close()
        await self.feeds.stop(0.5)

    # -- applying manifests ---------------------------------------------------------------

    def apply(self, specs: list[ServiceSpec], source: str = "") -> list[ApplyResult]:
        """Apply each service (raises CatalogError at the first that cannot be applied)."""
        results = []
        for spec in specs:
            result = self.catalog.apply(spec)
            self.sources[spec.key] = source
            results.append(result)
            for note in result.notes:
                logger.info("%s/%s: %s", spec.namespace, spec.name, note)
            if result.created is not None:
                self._revision_created(result.created)
            if result.routes_changed:
                self._routes_changed()
        return results

    def _revision_created(self, rev: Revision) -> None:
        self.supervisor.add_revision(rev)
        scaling = resolve_revision(self.config.autoscaler_config, rev.template.annotation_map,
                                   rev.template.container_concurrency)
        self.link.revision_changed(rev.key)
        self._publish_endpoints(rev.key)
        initial = scaling.initial_scale
        logger.info("revision %s/%s: initial scale %d", rev.namespace, rev.name, initial)
        self.supervisor.scale(rev.key, initial)
        if initial == 0 and self.catalog.mark_ready(rev.key):
            # upstream: with initial scale 0 a revision is ready without a pod (it starts from
            # zero on its first request), so latestRevision traffic moves to it at once
            self._routes_changed()

    async def delete_service(self, namespace: str, service: str) -> None:
        gone = self.catalog.delete_service(namespace, service)
        self.sources.pop((namespace, service), None)
        self._routes_changed()
        for rev in gone:
            await self.supervisor.remove_revision(rev.key)
            self.decisions.pop(rev.key, None)
            self._published.pop(rev.key, None)
            self.endpoints_hub.publish(kdp_pb2.RevisionEndpoints(namespace=rev.namespace, revision=rev.name,
                                                                 deleted=True))
            self.link.revision_deleted(rev.key, rev.service)
        logger.info("service %s/%s deleted with %d revision(s)", namespace, service, len(gone))

    def _routes_changed(self) -> None:
        self.routes_hub.publish(self._route_table())
        for key in self.catalog.keys():  # reachability may have changed
            self.link.revision_changed(key)
        for route in self.catalog.routes:
            logger.info("route %s.%s: %s", route.name, route.namespace,
                        ", ".join(f"{r} {p}%" for r, p in route.splits))

    # -- scale target and pods ------------------------------------------------------------

    def _scale(self, namespace: str, revision: str, replicas: int) -> int:
        key = (namespace, revision)
        if key not in self.catalog.revisions:
            raise KeyError(key)
        self.scale_calls += 1
        return self.supervisor.scale(key, replicas)

    def _pods_changed(self, key: RevisionKey) -> None:
        if key not in self.catalog.revisions:
            return
        self._publish_endpoints(key)
        self.link.pods_changed(key)
        rp = self.supervisor.revisions.get(key)
        if rp is not None and rp.counts().ready > 0 and self.catalog.mark_ready(key):
            self._routes_changed()

    def _publish_endpoints(self, key: RevisionKey) -> None:
        msg = self._endpoints(key)
        if msg is None:
            return
        sig = (tuple(msg.ready), tuple(msg.not_ready), msg.failure)
        if self._published.get(key) != sig:
            self._published[key] = sig
            self.endpoints_hub.publish(msg)

    # -- messages -------------------------------------------------------------------------

    def _endpoints(self, key: RevisionKey) -> kdp_pb2.RevisionEndpoints | None:
        rev = self.catalog.revisions.get(key)
        rp = self.supervisor.revisions.get(key)
        if rev is None or rp is None:
            return None
        t = rev.template
        ready, not_ready = rp.addresses()
        scaling = resolve_revision(self.config.autoscaler_config, t.annotation_map, t.container_concurrency)
        return kdp_pb2.RevisionEndpoints(
            namespace=rev.namespace, revision=rev.name, ready=ready, not_ready=not_ready,
            container_concurrency=t.container_concurrency, timeout_seconds=t.timeout_seconds,
            response_start_timeout_seconds=t.response_start_timeout_seconds,
            idle_timeout_seconds=t.idle_timeout_seconds, protocol=t.container.protocol,
            target=scaling.target_value if scaling.scaling_metric == ann.CONCURRENCY else 0.0,
            failure=rp.crash.failure, service=rev.service, configuration=rev.service)

    def _endpoints_snapshot(self) -> list[kdp_pb2.RevisionEndpoints]:
        return [m for m in (self._endpoints(k) for k in self.catalog.keys()) if m is not None]

    def _revision_spec(self, key: RevisionKey) -> kdp_pb2.RevisionSpec | None:
        rev = self.catalog.revisions.get(key)
        if rev is None:
            return None
        return kdp_pb2.RevisionSpec(namespace=rev.namespace, revision=rev.name, service=rev.service,
                                    annotations=rev.template.annotation_map,
                                    container_concurrency=rev.template.container_concurrency,
                                    reachable=self.catalog.reachable(key))

    def _pod_counts(self, key: RevisionKey) -> kdp_pb2.PodCounts | None:
        rp = self.supervisor.revisions.get(key)
        if rp is None:
            return None
        c = rp.counts()
        return kdp_pb2.PodCounts(namespace=key[0], revision=key[1], ready=c.ready, not_ready=c.not_ready,
                                 pending=c.pending, terminating=c.terminating, failure=c.failure)

    def _route_table(self) -> kdp_pb2.RouteTable:
        return kdp_pb2.RouteTable(routes=[
            kdp_pb2.Route(namespace=r.namespace, service=r.name,
                          traffic=[kdp_pb2.TrafficTarget(revision=rev, percent=p) for rev, p in r.splits])
            for r in self.catalog.routes])

    def _decision(self, d: kdp_pb2.Decision) -> None:
        key = (d.namespace, d.revision)
        self.decisions[key] = d
        self.decisions_hub.publish(d)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        services = []
        for spec in self.catalog.services():
            latest_ready = self.catalog.latest_ready(spec.namespace, spec.name)
            latest = self.catalog.latest_created(spec.namespace, spec.name)
            revisions = []
            for rev in reversed(self.catalog.service_revisions(spec.namespace, spec.name)):
                rp = self.supervisor.revisions.get(rev.key)
                counts = rp.counts() if rp is not None else None
                d = self.decisions.get(rev.key)
                revisions.append({
                    "name": rev.name,
                    "traffic": self.catalog.traffic_of(rev.key),
                    "reachable": self.catalog.reachable(rev.key),
                    "ready": counts.ready if counts else 0,
                    "desired": counts.desired if counts else 0,
                    "pending": counts.pending if counts else 0,
                    "terminating": counts.terminating if counts else 0,
                    "restarts": counts.restarts if counts else 0,
                    "failure": (counts.failure if counts else "") or (d.failure if d is not None else ""),
                    "last_event": rp.last_event if rp is not None else "",
                    "pods": [] if rp is None else [{
                        "name": p.name, "address": p.address, "phase": p.phase.value, "restarts": p.restarts,
                        "pids": {c: child.pid for c, child in p.children.items() if child is not None},
                    } for p in rp.pods.values()],
                    "autoscaler": None if d is None else {
                        "desired": d.desired_pods, "mode": _MODES.get(d.mode, ""), "in_panic": d.in_panic,
                        "stable_concurrency": round(d.stable_concurrency, 3),
                        "panic_concurrency": round(d.panic_concurrency, 3),
                        "rps": round(d.stable_rps, 3), "excess_burst_capacity": d.excess_burst_capacity,
                    },
                })
            services.append({
                "namespace": spec.namespace, "name": spec.name, "source": self.sources.get(spec.key, ""),
                "latest_created": latest.name if latest else "", "latest_ready": latest_ready.name if latest_ready else "",
                "routes": [{"host": r.name, "traffic": [{"revision": rev, "percent": p} for rev, p in r.splits]}
                           for r in self.catalog.routes if r.namespace == spec.namespace and r.service == spec.name],
                "revisions": revisions,
            })
        return {"services": services,
                "autoscaler": {"address": self.config.autoscaler_address, "connected": self.link.connected},
                "feeds": self.feed_address}
