"""``kdp.v1.AutoscalerControl``: how the runtime tells the autoscaler about revisions and pods.

* ``SyncRevision(RevisionSpec)`` creates, updates or (``deleted``) removes a revision. Its
  annotations are validated against the ``config-autoscaler`` in force as upstream's webhook
  does: an invalid one is refused with ``Ack{ok=false}`` whose error names every bad key, its
  value and the allowed range, and the revision's previous settings (if any) stay. Sending the
  same spec again is cheap (the runtime resyncs every few seconds).
* ``ReportPods(PodCounts)`` gives the revision's pod counts (ready, not ready, pending,
  terminating) and, if pods cannot start, a failure reason for users; a revision must be
  synced first.
* ``Explain`` returns the JSON the debug endpoint serves for the revision.
"""
from __future__ import annotations

import json
import logging

import grpc

from autoscaler.multiscaler import RevisionInput, RevisionRejected
from autoscaler.scaler import PodCounts
from autoscaler.service import AutoscalerService
from proto import kdp_pb2, kdp_pb2_grpc

__all__ = ["AutoscalerControlServicer", "pods_from_proto", "revision_from_proto"]

logger = logging.getLogger(__name__)


def revision_from_proto(m: kdp_pb2.RevisionSpec) -> RevisionInput:
    return RevisionInput(namespace=m.namespace, revision=m.revision, service=m.service,
                         annotations=dict(m.annotations),
                         container_concurrency=m.container_concurrency,
                         reachable=m.reachable, deleted=m.deleted)


def pods_from_proto(m: kdp_pb2.PodCounts) -> PodCounts:
    return PodCounts(ready=max(0, m.ready), not_ready=max(0, m.not_ready),
                     pending=max(0, m.pending), terminating=max(0, m.terminating),
                     failure=m.failure)


class AutoscalerControlServicer(kdp_pb2_grpc.AutoscalerControlServicer):
    def __init__(self, service: AutoscalerService) -> None:
        self.service = service

    async def SyncRevision(self, request: kdp_pb2.RevisionSpec,  # noqa: N802 (gRPC's name)
                           context: grpc.aio.ServicerContext) -> kdp_pb2.Ack:
        if not request.namespace or not request.revision:
            return kdp_pb2.Ack(ok=False, error="namespace and revision are required")
        try:
            self.service.sync_revision(revision_from_proto(request))
        except RevisionRejected as e:
            logger.warning("revision %s/%s refused: %s", request.namespace, request.revision, e)
            return kdp_pb2.Ack(ok=False, error=str(e))
        except Exception as e:
            logger.exception("SyncRevision %s/%s failed", request.namespace, request.revision)
            return kdp_pb2.Ack(ok=False, error=f"internal error: {e}")
        return kdp_pb2.Ack(ok=True)

    async def ReportPods(self, request: kdp_pb2.PodCounts,  # noqa: N802
                         context: grpc.aio.ServicerContext) -> kdp_pb2.Ack:
        key = (request.namespace, request.revision)
        try:
            self.service.report_pods(key, pods_from_proto(request))
        except KeyError:
            return kdp_pb2.Ack(ok=False, error=f"unknown revision {key[0]}/{key[1]}: "
                                                "send SyncRevision first")
        except Exception as e:
            logger.exception("ReportPods %s/%s failed", *key)
            return kdp_pb2.Ack(ok=False, error=f"internal error: {e}")
        return kdp_pb2.Ack(ok=True)

    async def Explain(self, request: kdp_pb2.ExplainRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> kdp_pb2.Explanation:
        key = (request.namespace, request.revision)
        try:
            data = self.service.explain(key)
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown revision {key[0]}/{key[1]}")
        return kdp_pb2.Explanation(json=json.dumps(data, default=str))
