"""The debug endpoint: why a revision has the pods it has.

* ``GET /debug/revisions/<namespace>/<revision>`` — JSON explaining the revision's last
  decision: its spec and resolved knobs (``scaling``), pod counts, the four windows (average,
  buckets, first/last write), the decider's last tick with every intermediate value (ready
  pods, observed stable/panic values, rate clamps, raw and clamped pod counts, activation
  scale, panic transition, scale-down delay), its status and panic state, the scaler's PA-like
  state (active/activating/inactive and since when, mode, timers), the last published
  decision and the scale target's state (applied, retries, last error). 404 if unknown.
* ``GET /debug/revisions`` — every revision with its published decision.
* ``GET /debug/status`` — ticks, tick time, pending stats, counters, the config in force.
* ``GET /healthz`` — 200 ``ok``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from autoscaler.service import AutoscalerService

__all__ = ["DebugApp"]

logger = logging.getLogger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class DebugApp:
    def __init__(self, service: AutoscalerService,
                 status_extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.service = service
        self.status_extra = status_extra
        self.app = web.Application()
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/debug/status", self.status)
        self.app.router.add_get("/debug/revisions", self.revisions)
        self.app.router.add_get("/debug/revisions/{namespace}/{revision}", self.revision)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def status(self, request: web.Request) -> web.Response:
        svc = self.service
        ms = svc.ms
        data: dict[str, Any] = {
            "revisions": len(ms), "ticks": ms.ticks, "out_of_band_decisions": ms.out_of_band,
            "last_tick_seconds": svc.last_tick_seconds,
            "max_recent_tick_seconds": max(svc.tick_seconds, default=0.0),
            "recent_ticks": svc.tick_phases[-128:],
            "stats_pending": ms.collector.pending, "stats_recorded": ms.collector.recorded,
            "stats_accepted": ms.collector.accepted,
            "stats_rejected": {f"{s}/{r}": n for (s, r), n in ms.collector.rejected.items()},
            "pokes": svc.pokes, "bursts": svc.bursts,
            "decisions_published": svc.hub.published,
            "decision_subscribers": sorted(s.name for s in svc.hub.subscriptions),
            "scale_requests_ok": svc.dispatcher.applied_ok,
            "scale_requests_failed": svc.dispatcher.applied_failed,
            "scale_failing": svc.dispatcher.failing,
            "config": dataclasses.asdict(ms.config),
        }
        if self.status_extra is not None:
            data.update(self.status_extra())
        return _json(data)

    async def revisions(self, request: web.Request) -> web.Response:
        out = []
        for key in sorted(self.service.ms.keys()):
            d = self.service.hub.latest.get(key)
            out.append({"namespace": key[0], "revision": key[1],
                        "desired_pods": None if d is None else d.desired_pods,
                        "mode": None if d is None else ("serve" if d.mode == 1 else "proxy"),
                        "in_panic": None if d is None else d.in_panic,
                        "ready_pods": None if d is None else d.ready_pods,
                        "failure": None if d is None else d.failure})
        return _json(out)

    async def revision(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["revision"])
        try:
            data = self.service.explain(key)
        except KeyError:
            return _json({"error": f"unknown revision {key[0]}/{key[1]}"}, status=404)
        return _json(data)
