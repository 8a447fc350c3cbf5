"""queue-proxy: the sidecar in every pod, and the data-plane kernel the activator shares.

The kernel (importable by ``activator``): the concurrency ``Breaker``, time-weighted
``RequestStats``, and the HTTP proxy engine. What only the sidecar does (readiness probing
of the user container, the :9090 Stat, Prometheus metrics, drain) lives in its own modules
and is wired together in ``__main__``. This package never imports ``activator``,
``autoscaler`` or ``kdp``.
"""
from queueproxy.breaker import Breaker, QueueFullError, Ticket
from queueproxy.stats import RequestStats, StatsReport

__all__ = ["Breaker", "QueueFullError", "RequestStats", "StatsReport", "Ticket"]
