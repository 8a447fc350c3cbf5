"""Structured process logs: one JSON object per line (as upstream's zap logs), or plain text.

``{"severity": "INFO", "timestamp": "2026-...Z", "logger": "autoscaler.service",
"caller": "service.py:97", "message": "...", "knative.dev/key": "ns/rev"}`` -- a log call may pass
``extra={"key": "ns/rev"}`` (any ``extra`` field is copied; ``key`` becomes upstream's
``knative.dev/key``). Exceptions go to ``error``/``stacktrace``.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys

__all__ = ["JsonFormatter", "configure"]

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        out: dict[str, object] = {
            "severity": record.levelname,
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "logger": record.name,
            "caller": f"{record.filename}:{record.lineno}",
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out["knative.dev/key" if k == "key" else k] = v
        if record.exc_info:
            out["error"] = repr(record.exc_info[1])
            out["stacktrace"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Set up the root logger once, in ``__main__``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
