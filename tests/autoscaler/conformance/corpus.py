"""Load the conformance corpus and compare answers exactly (bit-exact floats, sign of zero).

``decider.jsonl`` and ``windows.jsonl`` are copies of ``shared/conformance/`` (see its
README for the format and provenance); CI runs on a clean checkout, so they live here.
"""
from __future__ import annotations

import json
import math
import pathlib
from functools import cache
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
DECIDER = HERE / "decider.jsonl"
WINDOWS = HERE / "windows.jsonl"

TICK_KEYS = ("desired_pod_count", "excess_burst_capacity", "scale_valid", "num_activators",
             "in_panic")


@cache
def load(path: pathlib.Path) -> tuple[dict[str, Any], ...]:
    with path.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def expected_ticks(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """A decider scenario's expected replay ticks (the debugging-only fields left out)."""
    out = []
    for tick in scenario["ticks"]:
        e = tick["expect"]
        out.append({**{k: e[k] for k in TICK_KEYS}, "status": e["status"]})
    return out


def expected_answers(scenario: dict[str, Any]) -> list[Any]:
    """A window scenario's expected replay answers: every op's ``expect``, in order."""
    return [op["expect"] for op in scenario["ops"] if "expect" in op]


def same(a: Any, b: Any) -> bool:
    """Exact equality of JSON values: same types, floats bit-equal including the sign of 0."""
    if isinstance(a, float) or isinstance(b, float):
        return (type(a) is type(b) and a == b
                and math.copysign(1.0, a) == math.copysign(1.0, b))
    if isinstance(b, dict):
        return (isinstance(a, dict) and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in b))
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b
