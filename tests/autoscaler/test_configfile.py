"""``--config FILE``: parsing, reload on change, an invalid update keeps the config in force."""
from __future__ import annotations

import os
import pathlib

import pytest

from autoscaler.config import ConfigStore
from autoscaler.configfile import ConfigFile, ConfigFileError, load_config_data, to_config_data
from autoscaler.multiscaler import MultiScaler, RevisionInput
from autoscaler.scraper import ScrapeTargets, TargetsFile


def write(path: pathlib.Path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_yaml_scalars_become_configmap_strings() -> None:
    assert to_config_data({"enable-scale-to-zero": False, "max-scale-up-rate": 100,
                           "container-concurrency-target-percentage": 70.5,
                           "stable-window": "60s", "_example": None}) == {
        "enable-scale-to-zero": "false", "max-scale-up-rate": "100",
        "container-concurrency-target-percentage": "70.5", "stable-window": "60s",
        "_example": ""}


def test_a_whole_configmap_is_read_through_its_data(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "config-autoscaler.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler}\n"
                 "data:\n  stable-window: 30s\n")
    assert load_config_data(str(f)) == {"stable-window": "30s"}


def test_a_nested_value_is_refused_naming_the_key(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"min-scale": {"x": 1}}')
    with pytest.raises(ConfigFileError, match="min-scale"):
        load_config_data(str(f))


def test_an_invalid_update_is_rejected_and_the_previous_config_stays(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "config.yaml"
    write(f, "stable-window: 30s\n", 0)
    store = ConfigStore(load_config_data(str(f)))
    ms = MultiScaler(store.current)
    store.subscribe(lambda new, old: ms.set_config(new, 0.0))
    ms.sync(RevisionInput("default", "r"), 0.0)
    watcher = ConfigFile(str(f), store)
    assert watcher.poll() is None  # unchanged file
    write(f, "stable-window: 5s\n", 1)
    assert watcher.poll() == "rejected"
    assert "stable-window" in watcher.last_error and "[6s, 1h]" in watcher.last_error
    assert "stable-window" in caplog.text
    assert store.current.stable_window == 30.0
    write(f, "stable-window: [\n", 2)  # not YAML at all
    assert watcher.poll() == "rejected" and store.current.stable_window == 30.0
    write(f, "stable-window: 90s\n", 3)
    assert watcher.poll() == "applied" and watcher.last_error == ""
    assert store.current.stable_window == 90.0
    assert ms.scaling(("default", "r")).stable_window == 90.0  # type: ignore[union-attr]
    write(f, "stable-window: 90s\n# same\n", 4)
    assert watcher.poll() == "unchanged"


def test_scrape_targets_reload_and_a_bad_file_keeps_the_old_ones(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "targets.yaml"
    write(f, "default/hello: [10.0.0.5]\n", 0)
    targets = ScrapeTargets()
    watcher = TargetsFile(str(f), targets)
    assert watcher.poll() is True
    assert [k for k, _ in targets.items()] == [("default", "hello")]
    write(f, "hello: [10.0.0.5]\n", 1)
    assert watcher.poll() is False and "namespace/revision" in watcher.last_error
    assert [k for k, _ in targets.items()] == [("default", "hello")]
    write(f, "{}\n", 2)
    assert watcher.poll() is True and targets.items() == []
