"""The decider's inputs for one revision: upstream's DeciderSpec, in seconds and snake_case.

This is the one type the config layer (``autoscaler.config``: ConfigMap keys plus
annotations -> spec) and the decider (``autoscaler.decider``) share. Field names are the
conformance corpus's (``shared/conformance/README.md``), durations are float seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeciderSpec"]


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scaling_metric: str = "concurrency"  # "concurrency" | "rps"
    target_value: float = 70.0
    total_value: float = 100.0
    target_burst_capacity: float = 211.0  # -1 = activator always in the path
    activator_capacity: float = 100.0
    activation_scale: int = 0
    panic_threshold: float = 2.0  # a fraction: 2.0 == 200 %
    stable_window: float = 60.0  # seconds
    scale_down_delay: float = 0.0  # seconds
    initial_scale: int = 1
    reachable: bool = True
