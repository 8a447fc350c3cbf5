"""Structured process logs: one JSON object per line with upstream's key field."""
from __future__ import annotations

import json
import logging

from autoscaler.logs import JsonFormatter


def test_a_log_line_is_one_json_object_with_the_revision_key() -> None:
    record = logging.LogRecord("autoscaler.publisher", logging.WARNING, "/x/publisher.py", 42,
                               "scaling %s to %d failed", ("default/hello", 3), None)
    record.key = "default/hello"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "WARNING" and entry["logger"] == "autoscaler.publisher"
    assert entry["message"] == "scaling default/hello to 3 failed"
    assert entry["knative.dev/key"] == "default/hello" and entry["caller"] == "publisher.py:42"
    assert entry["timestamp"].endswith("Z")


def test_an_exception_is_carried_in_the_entry() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("autoscaler", logging.ERROR, "f.py", 1, "failed", (),
                                   sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["error"] == "ValueError('boom')" and "Traceback" in entry["stacktrace"]
