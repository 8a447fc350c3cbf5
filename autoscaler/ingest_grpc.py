"""``kdp.v1.StatIngest.Push``: the gRPC stream queue-proxies and activators push stats on.

Each ``StatBatch`` is decoded here, not by gRPC, so a garbage or truncated message is counted
(``malformed_frame``) and skipped while the stream, and every other revision, carry on. The
stream's :class:`PushSummary` counts what was accepted and rejected. ``StatBatch.poke`` is
informational: the poke rule is upstream's (a stat with concurrency != 0 for a revision whose
desired scale is 0), applied to every pushed stat.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from autoscaler.collector import PUSH
from autoscaler.service import AutoscalerService
from proto import kdp_pb2

__all__ = ["SERVICE_NAME", "stat_ingest_handler"]

logger = logging.getLogger(__name__)

SERVICE_NAME = "kdp.v1.StatIngest"


def stat_ingest_handler(service: AutoscalerService) -> grpc.GenericRpcHandler:
    """The StatIngest service with raw-bytes requests, for ``server.add_generic_rpc_handlers``."""

    async def push(requests: AsyncIterator[bytes],
                   context: grpc.aio.ServicerContext) -> kdp_pb2.PushSummary:
        accepted = rejected = 0
        parse = kdp_pb2.StatBatch.FromString
        async for raw in requests:
            try:
                batch = parse(raw)
            except (DecodeError, ValueError):
                service.reject(PUSH, "malformed_frame")
                rejected += 1
                continue
            try:
                res = service.ingest(batch.messages, PUSH)
            except Exception:  # never let one batch end the stream
                logger.exception("ingesting a stat batch from %r failed", batch.sender)
                rejected += len(batch.messages)
                continue
            accepted += res.accepted
            rejected += res.rejected
        return kdp_pb2.PushSummary(accepted=accepted, rejected=rejected)

    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Push": grpc.stream_unary_rpc_method_handler(
            push, request_deserializer=None,
            response_serializer=kdp_pb2.PushSummary.SerializeToString),
    })
