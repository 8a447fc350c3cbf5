"""``--config FILE``: the ``config-autoscaler`` data map from a YAML or JSON file, reloaded on change.

The file holds either the data map itself (``stable-window: 60s``) or a whole ConfigMap (its
``data`` is used). Values are strings as in a ConfigMap; YAML scalars are turned into the text
they were written as would be (``true`` -> ``"true"``, ``1000`` -> ``"1000"``), so a number
written without quotes works. :class:`ConfigFile` polls the file's modification time and size;
a changed file is parsed and handed to a :class:`~autoscaler.config.ConfigStore`: an invalid one
is logged naming the key, the value and the allowed range, and the config in force stays
(upstream: an invalid ConfigMap update is ignored). At start an invalid file is fatal.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import yaml

from autoscaler.config import ConfigError, ConfigStore

__all__ = ["ConfigFile", "ConfigFileError", "load_config_data", "to_config_data"]

logger = logging.getLogger(__name__)


class ConfigFileError(ValueError):
    """The file cannot be read or is not a config-autoscaler data map."""


def _text(key: str, value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if value is None:
        return ""
    raise ConfigFileError(f"{path}: {key}: {value!r} is not a scalar; allowed: a string, "
                          "number or boolean")


def to_config_data(data: Any, path: str = "config") -> dict[str, str]:
    """A parsed YAML/JSON document -> the ConfigMap data map (strings)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of config-autoscaler keys")
    if "data" in data and ("kind" in data or "apiVersion" in data):
        data = data["data"] or {}
        if not isinstance(data, dict):
            raise ConfigFileError(f"{path}: data: expected a mapping")
    return {str(k): _text(str(k), v, path) for k, v in data.items()}


def load_config_data(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigFileError(f"{path}: {e.strerror or e}") from None
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigFileError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}:"
                              f" {e}") from None
    return to_config_data(doc, path)


class ConfigFile:
    """Feeds a file's changes into a :class:`ConfigStore`."""

    def __init__(self, path: str, store: ConfigStore) -> None:
        self.path = path
        self.store = store
        self.last_error = ""
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def poll(self) -> str | None:
        """Check the file: ``applied``, ``rejected``, ``unchanged`` (same config), or None
        (the file did not change)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            data = load_config_data(self.path)
            before = self.store.current
            self.store.update(data)
        except (ConfigFileError, ConfigError) as e:
            self.last_error = str(e)
            logger.error("config-autoscaler update rejected, the previous config stays: %s", e)
            return "rejected"
        self.last_error = ""
        if self.store.current == before:
            return "unchanged"
        logger.info("config-autoscaler reloaded from %s", self.path)
        return "applied"
