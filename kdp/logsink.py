"""JSON-lines log file for ``kdp up``: kdp's own log records and every child's output.

One line per record: ``{"ts": <unix seconds>, "level": ..., "logger": ..., "msg": ...}``.
A child's line that is itself a JSON object (the queue-proxy and activator log zap-style JSON)
is kept whole, with ``"source"`` (``pod/container`` or the service name) and ``"stream"``
added; any other line becomes ``{"ts", "level": "info"|"error", "source", "stream", "msg"}``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "LogFile"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class LogFile:
    """An append-only JSON-lines file shared by a logging handler and the children's sink."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._f: TextIO = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in close())

    def write(self, doc: dict[str, Any]) -> None:
        line = json.dumps(doc, ensure_ascii=False)
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def child_line(self, source: str, stream: str, line: str) -> None:
        """A :data:`kdp.procs.LineSink`."""
        doc: dict[str, Any] | None = None
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                doc = parsed
        if doc is None:
            doc = {"ts": round(time.time(), 6), "level": "error" if stream == "stderr" else "info", "msg": line}
        doc["source"] = source
        doc["stream"] = stream
        self.write(doc)

    def handler(self, level: int = logging.INFO) -> logging.Handler:
        log_file = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    with log_file._lock:
                        if not log_file._f.closed:
                            log_file._f.write(self.format(record) + "\n")
                except Exception:  # noqa: BLE001
                    self.handleError(record)

        h = _Handler(level)
        h.setFormatter(JsonFormatter())
        return h

    def close(self) -> None:
        with self._lock:
            self._f.close()
