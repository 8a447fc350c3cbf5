"""The examples' manifests are valid and point at programs that exist next to them."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.config import AutoscalerConfig
from kdp.up import read_manifests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANIFESTS = sorted(EXAMPLES.glob("*/service.yaml"))


def test_there_is_a_hello_and_a_slow_example() -> None:
    assert {p.parent.name for p in MANIFESTS} >= {"hello", "slow"}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.parent.name for p in MANIFESTS])
def test_each_example_manifest_parses_without_notes_and_its_program_exists(path: Path) -> None:
    [(full, specs)] = read_manifests([str(path)], AutoscalerConfig())
    for spec in specs:
        assert spec.notes == ()
        assert spec.base_dir == str(path.parent)
        program = spec.template.container.args[:1] or spec.template.container.command[1:2]
        assert (path.parent / program[0]).is_file()


def test_the_slow_example_takes_one_request_at_a_time() -> None:
    [(_, [spec])] = read_manifests([str(EXAMPLES / "slow" / "service.yaml")], AutoscalerConfig())
    assert spec.template.container_concurrency == 1
