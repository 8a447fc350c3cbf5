"""Process logs as zap writes them: one JSON object per line, fields named by the config.

Upstream builds its logger from ``SERVING_LOGGING_CONFIG`` (the ``zap-logger-config`` JSON
of ``config-logging``) on top of zapdriver's production defaults, lets
``SERVING_LOGGING_LEVEL`` override the level, names it ``queueproxy`` and adds
``knative.dev/key: <namespace>/<revision>`` and ``knative.dev/pod`` to every line. We read
the same JSON the way Go decodes it into ``zap.Config`` (keys match case-insensitively; a
missing key keeps zapdriver's default), honour ``level``, ``disableCaller``,
``outputPaths``, ``initialFields`` and the ``encoderConfig`` keys and encoders, and
tolerate the rest (``development``, ``sampling``, ``encoding``, ``errorOutputPaths``).

zapdriver's defaults give lines like::

    {"severity":"INFO","timestamp":"2026-08-01T12:00:00.123456Z","logger":"queueproxy",
     "caller":"queueproxy/drain.py:42","message":"draining","knative.dev/key":"ns/rev"}

Unlike upstream, which falls back to its default config, a malformed config or level is a
``ConfigError`` naming ``SERVING_LOGGING_CONFIG`` or ``SERVING_LOGGING_LEVEL``.

``parse_logging_config`` and ``ZapJSONFormatter`` are pure; ``configure_logging`` installs a
handler on the root logger (replacing one it installed before) and returns it.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from queueproxy.config import ConfigError

__all__ = ["LoggingSettings", "ZapJSONFormatter", "configure_logging", "parse_logging_config",
           "parse_zap_level"]

CONFIG_KEY = "SERVING_LOGGING_CONFIG"
LEVEL_KEY = "SERVING_LOGGING_LEVEL"

# zap level name -> Python level, and Python level -> zap level index (debug=0 ... fatal=6).
_ZAP_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
               "warning": logging.WARNING, "error": logging.ERROR, "dpanic": logging.CRITICAL,
               "panic": logging.CRITICAL, "fatal": logging.CRITICAL}
_LOWER = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")
_CAPITAL = ("DEBUG", "INFO", "WARN", "ERROR", "DPANIC", "PANIC", "FATAL")
_STACKDRIVER = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
_LEVEL_NAMES = {"zapdriver": _STACKDRIVER, "capital": _CAPITAL, "capitalColor": _CAPITAL,
                "lowercase": _LOWER}
_TIME_ENCODERS = {"rfc3339nano": "rfc3339nano", "RFC3339Nano": "rfc3339nano",
                  "rfc3339": "rfc3339", "RFC3339": "rfc3339", "iso8601": "iso8601",
                  "ISO8601": "iso8601", "millis": "millis", "nanos": "nanos"}
# The attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                                    "asctime"}


def parse_zap_level(text: str, key: str) -> int:
    """zap's level text (``debug`` .. ``fatal``, any case, ``""`` = info) as a Python level."""
    level = _ZAP_LEVELS.get(text) or _ZAP_LEVELS.get(text.lower())
    if text == "":
        level = logging.INFO
    if level is None:
        raise ConfigError(f"{key}={text!r} is not a log level; allowed: debug, info, warn, "
                          "error, dpanic, panic, fatal")
    return level


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """What we use of a ``zap.Config``, with zapdriver's production defaults."""

    level: int = logging.INFO
    message_key: str = "message"
    level_key: str = "severity"
    time_key: str = "timestamp"
    name_key: str = "logger"
    caller_key: str = "caller"
    function_key: str = ""
    stacktrace_key: str = "stacktrace"
    line_ending: str = "\n"
    level_encoder: str = "zapdriver"
    """``zapdriver`` (DEBUG, INFO, WARNING, ...), ``capital`` (WARN) or ``lowercase``."""
    time_encoder: str = "rfc3339nano"
    """``rfc3339nano``, ``rfc3339``, ``iso8601``, ``millis``, ``nanos`` or ``epoch``."""
    full_caller: bool = False
    disable_caller: bool = False
    output_paths: tuple[str, ...] = ("stderr",)
    initial_fields: tuple[tuple[str, Any], ...] = field(default=())


class _Obj(list):  # type: ignore[type-arg]
    """A decoded JSON object, kept as its (key, value) pairs (an array stays a list)."""


def _pairs_find(pairs: list[tuple[str, Any]], name: str) -> Any:
    """Go's struct-field matching on a decoded object: case-insensitive, last one wins."""
    found: Any = None
    folded = name.casefold()
    for k, v in pairs:
        if k.casefold() == folded:
            found = (v,)
    return found


def _want(val: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    if not isinstance(val, kind) or (isinstance(val, bool) and kind is not bool):
        raise ConfigError(f"{CONFIG_KEY} {path}={val!r} is not {what}")
    return val


def parse_logging_config(config_json: str, level: str = "") -> LoggingSettings:
    """``SERVING_LOGGING_CONFIG`` (``""`` = defaults) and the ``SERVING_LOGGING_LEVEL``
    override (``""`` = the config's level)."""
    s: dict[str, Any] = {}
    if config_json.strip():
        try:
            doc = json.loads(config_json, object_pairs_hook=_Obj)
        except ValueError as exc:
            raise ConfigError(f"{CONFIG_KEY} is not valid JSON: {exc}") from None
        if not isinstance(doc, _Obj):
            raise ConfigError(f"{CONFIG_KEY} must be a JSON object, got {json.dumps(doc)[:60]}")
        s = _settings_from(doc)
    if level != "":
        s["level"] = parse_zap_level(level, LEVEL_KEY)
    return LoggingSettings(**s)


def _settings_from(doc: list[tuple[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {}

    def get(pairs: list[tuple[str, Any]], name: str) -> Any:
        hit = _pairs_find(pairs, name)
        return None if hit is None else hit[0]

    lvl = get(doc, "level")
    if lvl is not None:
        s["level"] = parse_zap_level(_want(lvl, str, "level", "a level name"), f"{CONFIG_KEY} level")
    if (v := get(doc, "disableCaller")) is not None:
        s["disable_caller"] = _want(v, bool, "disableCaller", "true or false")
    if (v := get(doc, "outputPaths")) is not None:
        paths = _want(v, list, "outputPaths", "a list of paths")
        s["output_paths"] = tuple(_want(p, str, "outputPaths", "a list of paths") for p in paths)
    if (v := get(doc, "initialFields")) is not None:
        s["initial_fields"] = tuple(_want(v, _Obj, "initialFields", "an object"))
    enc = get(doc, "encoderConfig")
    if enc is None:
        return s
    enc = _want(enc, _Obj, "encoderConfig", "an object")
    for name, attr in (("messageKey", "message_key"), ("levelKey", "level_key"),
                       ("timeKey", "time_key"), ("nameKey", "name_key"),
                       ("callerKey", "caller_key"), ("functionKey", "function_key"),
                       ("stacktraceKey", "stacktrace_key")):
        if (v := get(enc, name)) is not None:
            s[attr] = _want(v, str, f"encoderConfig.{name}", "a string")
    if (v := get(enc, "lineEnding")) is not None:
        s["line_ending"] = _want(v, str, "encoderConfig.lineEnding", "a string") or "\n"
    if (v := get(enc, "levelEncoder")) is not None:
        v = _want(v, str, "encoderConfig.levelEncoder", "a string")
        s["level_encoder"] = v if v in ("capital", "capitalColor") else "lowercase"
    if (v := get(enc, "timeEncoder")) is not None:
        # zap also accepts {"layout": "<Go layout>"}; we have no Go layouts and keep RFC 3339.
        s["time_encoder"] = _TIME_ENCODERS.get(v, "epoch") if isinstance(v, str) else "rfc3339nano"
    if (v := get(enc, "callerEncoder")) is not None:
        s["full_caller"] = v == "full"
    return s


def _zap_index(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 6  # fatal
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 2
    if levelno >= logging.INFO:
        return 1
    return 0


def _format_time(t: float, encoder: str) -> Any:
    whole = int(t)
    if encoder == "epoch":
        return t
    if encoder == "millis":
        return whole * 1000 + (t - whole) * 1000.0
    if encoder == "nanos":
        return whole * 1_000_000_000 + round((t - whole) * 1e9)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    micros = min(int(round((t - whole) * 1e6)), 999999)
    if encoder == "rfc3339":
        return stamp + "Z"
    if encoder == "iso8601":
        return f"{stamp}.{micros // 1000:03d}Z"
    frac = f"{micros:06d}".rstrip("0")  # Go's RFC3339Nano drops trailing zeros
    return f"{stamp}.{frac}Z" if frac else stamp + "Z"


class ZapJSONFormatter(logging.Formatter):
    """Formats a record as a zap JSON line (without the line ending, which the handler adds).

    Field order follows zap: level, time, logger, caller, function, message, the fixed
    fields (``knative.dev/key``...), fields passed with ``extra=``, then stacktrace.
    The logger name is ``component``, or ``component.<python logger>`` for other loggers
    (``queueproxy.drain`` stays as it is).
    """

    def __init__(self, settings: LoggingSettings, component: str = "queueproxy",
                 fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.component = component
        self.fields = dict(settings.initial_fields)
        self.fields.update(fields or {})
        self._level_names = _LEVEL_NAMES[settings.level_encoder]

    def logger_name(self, name: str) -> str:
        c = self.component
        if name in ("root", c) or name.startswith(c + "."):
            return c if name == "root" else name
        return f"{c}.{name}"

    def format(self, record: logging.LogRecord) -> str:
        s = self.settings
        out: dict[str, Any] = {}
        if s.level_key:
            out[s.level_key] = self._level_names[_zap_index(record.levelno)]
        if s.time_key:
            out[s.time_key] = _format_time(record.created, s.time_encoder)
        if s.name_key:
            out[s.name_key] = self.logger_name(record.name)
        if not s.disable_caller:
            if s.caller_key:
                path = record.pathname.replace("\\", "/")
                short = path if s.full_caller else "/".join(path.rsplit("/", 2)[-2:])
                out[s.caller_key] = f"{short}:{record.lineno}"
            if s.function_key:
                out[s.function_key] = record.funcName
        if s.message_key:
            out[s.message_key] = record.getMessage()
        out.update(self.fields)
        for k, v in record.__dict__.items():
            if k not in _RECORD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info and record.exc_info[1] is not None:
            out.setdefault("error", str(record.exc_info[1]))
        if s.stacktrace_key:
            stack = ""
            if record.exc_info:
                stack = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            elif record.stack_info:
                stack = record.stack_info
            if stack:
                out[s.stacktrace_key] = stack
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


_INSTALLED = "_kdp_zap_handler"


def _sink_handler(path: str) -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """A handler for one of zap's output paths: ``stdout``, ``stderr`` or a file to append to.
    A file that cannot be opened is reported and skipped (zap's fallback is stderr too)."""
    if path == "stdout":
        return logging.StreamHandler(sys.stdout)
    if path == "stderr":
        return logging.StreamHandler(sys.stderr)
    if path.startswith("file://"):
        path = path[len("file://"):]
    try:
        return logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot open log output %r (%s); using stderr", path, exc)
        return None


def configure_logging(logging_config_json: str, level: str, component: str = "queueproxy",
                      key: str = "", *, pod: str = "", fields: Mapping[str, Any] | None = None,
                      stream: TextIO | None = None) -> list[logging.Handler]:
    """Send every log record to zap-style JSON lines and set the root level.

    ``key`` is ``<namespace>/<revision>`` (the ``knative.dev/key`` field, omitted when
    empty), ``pod`` the ``knative.dev/pod`` field. ``stream`` overrides ``outputPaths``
    (tests pass one). Returns the handlers installed; raises ``ConfigError`` on bad input.
    """
    settings = parse_logging_config(logging_config_json, level)
    extra: dict[str, Any] = {}
    if key:
        extra["knative.dev/key"] = key
    if pod:
        extra["knative.dev/pod"] = pod
    extra.update(fields or {})
    formatter = ZapJSONFormatter(settings, component, extra)
    if stream is not None:
        handlers: list[logging.StreamHandler] = [logging.StreamHandler(stream)]  # type: ignore[type-arg]
    else:
        handlers = [h for h in (_sink_handler(p) for p in settings.output_paths) if h is not None]
        handlers = handlers or [logging.StreamHandler(sys.stderr)]
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _INSTALLED, False):
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    for handler in handlers:
        handler.terminator = settings.line_ending
        handler.setFormatter(formatter)
        setattr(handler, _INSTALLED, True)
        root.addHandler(handler)
    root.setLevel(settings.level)
    return list(handlers)
