"""autoscaler: the KPA. Stat ingestion, per-second windows for every revision (numpy),
the decider, scale to and from zero, decision publishing, and the offline simulator.

Imports only ``proto`` and third-party libraries; never ``queueproxy``, ``activator`` or ``kdp``.
"""

__all__: list[str] = []
