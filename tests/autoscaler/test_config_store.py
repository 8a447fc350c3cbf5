"""ConfigStore: a valid update replaces the config and tells listeners; an invalid one is
refused with the error and the previous config stays in force."""
from __future__ import annotations

import logging

import pytest

from autoscaler.config import AutoscalerConfig, ConfigError, ConfigStore

Change = tuple[AutoscalerConfig, AutoscalerConfig]


def recorder(store: ConfigStore) -> list[Change]:
    seen: list[Change] = []
    store.subscribe(lambda new, old: seen.append((new, old)))
    return seen


def test_a_store_starts_with_defaults_or_the_given_map() -> None:
    assert ConfigStore().current == AutoscalerConfig()
    assert ConfigStore({"stable-window": "30s"}).current.stable_window == 30.0
    cfg = AutoscalerConfig(max_scale=4)
    assert ConfigStore(cfg).current is cfg


def test_an_invalid_initial_map_is_fatal() -> None:
    with pytest.raises(ConfigError) as info:
        ConfigStore({"stable-window": "1s"})
    assert info.value.key == "stable-window"


def test_a_valid_update_replaces_the_config_and_notifies_listeners() -> None:
    store = ConfigStore()
    seen = recorder(store)
    new = store.update({"max-scale-up-rate": "10"})
    assert store.current is new
    assert new.max_scale_up_rate == 10.0
    assert seen == [(new, AutoscalerConfig())]
    assert store.last_error is None


def test_an_invalid_update_is_rejected_and_the_previous_config_stays() -> None:
    store = ConfigStore({"stable-window": "30s"})
    before = store.current
    seen = recorder(store)
    with pytest.raises(ConfigError) as info:
        store.update({"stable-window": "2h"})
    assert info.value.key == "stable-window"
    assert "[6s, 1h]" in str(info.value)
    assert store.current is before
    assert store.last_error is info.value
    assert seen == []


def test_a_later_valid_update_clears_the_last_error() -> None:
    store = ConfigStore()
    with pytest.raises(ConfigError):
        store.update({"max-scale-down-rate": "1"})
    store.update({"max-scale-down-rate": "3"})
    assert store.last_error is None
    assert store.current.max_scale_down_rate == 3.0


def test_an_update_without_changes_does_not_notify() -> None:
    store = ConfigStore({"min-scale": "1"})
    seen = recorder(store)
    store.update({"min-scale": "1", "_example": "docs"})
    assert seen == []


def test_an_update_is_the_whole_map_so_removed_keys_return_to_defaults() -> None:
    store = ConfigStore({"min-scale": "2"})
    store.update({})
    assert store.current.min_scale == 0


def test_unsubscribed_listeners_are_not_called() -> None:
    store = ConfigStore()
    seen: list[Change] = []
    unsubscribe = store.subscribe(lambda new, old: seen.append((new, old)))
    unsubscribe()
    unsubscribe()  # idempotent
    store.update({"min-scale": "1"})
    assert seen == []


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore()

    def broken(new: AutoscalerConfig, old: AutoscalerConfig) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    seen = recorder(store)
    with caplog.at_level(logging.ERROR, logger="autoscaler.config"):
        store.update({"min-scale": "1"})
    assert len(seen) == 1
    assert store.current.min_scale == 1
    assert "listener" in caplog.text


def test_unknown_keys_are_logged_but_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore()
    with caplog.at_level(logging.WARNING, logger="autoscaler.config"):
        store.update({"tick-interval": "2s"})
    assert "tick-interval" in caplog.text
    assert store.current == AutoscalerConfig()
