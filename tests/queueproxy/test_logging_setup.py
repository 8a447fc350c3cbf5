"""Process logs: zap-style JSON lines from SERVING_LOGGING_CONFIG and SERVING_LOGGING_LEVEL."""
from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from queueproxy.config import ConfigError
from queueproxy.logging_setup import (
    LoggingSettings,
    ZapJSONFormatter,
    configure_logging,
    parse_logging_config,
    parse_zap_level,
)

# config-logging's zap-logger-config example, as upstream ships it.
UPSTREAM_EXAMPLE = """{
  "level": "info",
  "development": false,
  "outputPaths": ["stdout"],
  "errorOutputPaths": ["stderr"],
  "encoding": "json",
  "encoderConfig": {
    "timeKey": "timestamp",
    "levelKey": "severity",
    "nameKey": "logger",
    "callerKey": "caller",
    "messageKey": "message",
    "stacktraceKey": "stacktrace",
    "lineEnding": "",
    "levelEncoder": "",
    "timeEncoder": "iso8601",
    "durationEncoder": "",
    "callerEncoder": ""
  }
}"""

CREATED = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def record(name: str = "queueproxy.drain", level: int = logging.INFO, msg: str = "draining %d",
           args: tuple[object, ...] = (3,), **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, "/app/queueproxy/drain.py", 42, msg, args, None, "drain_loop")
    rec.created = CREATED
    rec.__dict__.update(extra)
    return rec


def line(settings: LoggingSettings, rec: logging.LogRecord, **kw: object) -> dict[str, object]:
    text = ZapJSONFormatter(settings, **kw).format(rec)  # type: ignore[arg-type]
    return json.loads(text)  # type: ignore[no-any-return]


def test_defaults_are_zapdrivers_production_fields() -> None:
    out = line(parse_logging_config("", ""), record(), fields={"knative.dev/key": "default/hello-00001"})
    assert list(out.items()) == [
        ("severity", "INFO"),
        ("timestamp", "2023-11-14T22:13:20.25Z"),
        ("logger", "queueproxy.drain"),
        ("caller", "queueproxy/drain.py:42"),
        ("message", "draining 3"),
        ("knative.dev/key", "default/hello-00001"),
    ]


def test_upstreams_example_config_gives_lowercase_levels_and_iso8601_millis() -> None:
    settings = parse_logging_config(UPSTREAM_EXAMPLE, "")
    assert settings.output_paths == ("stdout",)
    out = line(settings, record(level=logging.WARNING))
    assert out["severity"] == "warn"
    assert out["timestamp"] == "2023-11-14T22:13:20.250Z"


@pytest.mark.parametrize(("encoder", "levels"), [
    pytest.param(None, ["DEBUG", "INFO", "WARNING", "ERROR", "EMERGENCY"], id="zapdriver"),
    pytest.param("capital", ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"], id="capital"),
    pytest.param("lowercase", ["debug", "info", "warn", "error", "fatal"], id="lowercase"),
])
def test_level_encoders(encoder: str | None, levels: list[str]) -> None:
    cfg = "" if encoder is None else json.dumps({"encoderConfig": {"levelEncoder": encoder}})
    settings = parse_logging_config(cfg, "debug")
    got = [line(settings, record(level=lv))["severity"]
           for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)]
    assert got == levels


@pytest.mark.parametrize(("encoder", "want"), [
    ("rfc3339nano", "2023-11-14T22:13:20.25Z"), ("RFC3339", "2023-11-14T22:13:20Z"),
    ("iso8601", "2023-11-14T22:13:20.250Z"), ("millis", 1_700_000_000_250.0),
    ("nanos", 1_700_000_000_250_000_000), ("epoch", CREATED), ("", CREATED),
])
def test_time_encoders(encoder: str, want: object) -> None:
    settings = parse_logging_config(json.dumps({"encoderConfig": {"timeEncoder": encoder}}))
    assert line(settings, record())["timestamp"] == want


def test_renamed_and_omitted_keys() -> None:
    cfg = {"encoderConfig": {"messageKey": "msg", "levelKey": "level", "timeKey": "",
                             "callerKey": "", "nameKey": "name", "functionKey": "func"}}
    out = line(parse_logging_config(json.dumps(cfg)), record())
    assert out == {"level": "INFO", "name": "queueproxy.drain", "func": "drain_loop", "msg": "draining 3"}
    assert list(out) == ["level", "name", "func", "msg"]


def test_disable_caller_and_full_caller() -> None:
    out = line(parse_logging_config('{"disableCaller": true}'), record())
    assert "caller" not in out
    out = line(parse_logging_config('{"encoderConfig": {"callerEncoder": "full"}}'), record())
    assert out["caller"] == "/app/queueproxy/drain.py:42"


def test_initial_fields_fixed_fields_and_extra_fields_follow_the_message() -> None:
    settings = parse_logging_config('{"initialFields": {"commit": "abc123"}}')
    out = line(settings, record(count=3), fields={"knative.dev/key": "ns/rev", "knative.dev/pod": "p"})
    keys = list(out)
    assert keys[keys.index("message") + 1:] == ["commit", "knative.dev/key", "knative.dev/pod", "count"]


@pytest.mark.parametrize(("name", "want"), [
    ("root", "queueproxy"), ("queueproxy", "queueproxy"), ("queueproxy.drain", "queueproxy.drain"),
    ("asyncio", "queueproxy.asyncio"), ("queueproxyish", "queueproxy.queueproxyish"),
])
def test_logger_names_are_children_of_the_component(name: str, want: str) -> None:
    assert line(LoggingSettings(), record(name=name))["logger"] == want


def test_exceptions_carry_error_and_stacktrace() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        rec = record(level=logging.ERROR, msg="failed", args=())
        rec.exc_info = sys.exc_info()
    out = line(LoggingSettings(), rec)
    assert out["error"] == "bad thing"
    assert str(out["stacktrace"]).startswith("Traceback") and "ValueError: bad thing" in str(out["stacktrace"])
    assert list(out)[-1] == "stacktrace"


@pytest.mark.parametrize(("text", "level"), [
    ("debug", logging.DEBUG), ("INFO", logging.INFO), ("", logging.INFO), ("warn", logging.WARNING),
    ("warning", logging.WARNING), ("Error", logging.ERROR), ("dpanic", logging.CRITICAL),
    ("fatal", logging.CRITICAL),
])
def test_zap_level_names(text: str, level: int) -> None:
    assert parse_zap_level(text, "K") == level


def test_level_override_beats_the_config_and_empty_keeps_it() -> None:
    assert parse_logging_config(UPSTREAM_EXAMPLE, "debug").level == logging.DEBUG
    assert parse_logging_config('{"level": "error"}', "").level == logging.ERROR
    assert parse_logging_config("", "").level == logging.INFO


@pytest.mark.parametrize(("config", "level", "fragment"), [
    pytest.param("{oops", "", "SERVING_LOGGING_CONFIG is not valid JSON", id="bad json"),
    pytest.param("[]", "", "SERVING_LOGGING_CONFIG must be a JSON object", id="not an object"),
    pytest.param('{"level": "loud"}', "", "SERVING_LOGGING_CONFIG level='loud' is not a log level", id="bad level"),
    pytest.param('{"level": 3}', "", "SERVING_LOGGING_CONFIG level=3 is not a level name", id="level not text"),
    pytest.param('{"outputPaths": "stdout"}', "", "outputPaths='stdout' is not a list", id="paths not list"),
    pytest.param('{"encoderConfig": []}', "", "encoderConfig=[] is not an object", id="encoder not object"),
    pytest.param('{"encoderConfig": {"messageKey": 1}}', "", "encoderConfig.messageKey=1 is not a string",
                 id="key not text"),
    pytest.param("", "verbose", "SERVING_LOGGING_LEVEL='verbose' is not a log level; allowed: debug",
                 id="bad override"),
])
def test_bad_values_name_the_variable(config: str, level: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_logging_config(config, level)
    assert fragment in str(info.value)


def test_configure_logging_writes_json_lines_with_the_revision_key() -> None:
    out = io.StringIO()
    configure_logging("", "", "queueproxy", "default/hello-00001", pod="hello-pod", stream=out)
    logging.getLogger("queueproxy.test").info("ready on %d", 8012)
    logging.getLogger("queueproxy.test").debug("not at info level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == "INFO" and entry["message"] == "ready on 8012"
    assert entry["knative.dev/key"] == "default/hello-00001" and entry["knative.dev/pod"] == "hello-pod"
    assert entry["logger"] == "queueproxy.test"


def test_reconfiguring_replaces_our_handler_and_keeps_others() -> None:
    first, second = io.StringIO(), io.StringIO()
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    configure_logging("", "info", stream=first)
    configure_logging("", "debug", stream=second)
    logging.getLogger("queueproxy.test").debug("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"
    assert other in logging.getLogger().handlers


def test_output_paths_choose_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging('{"outputPaths": ["stdout"], "encoderConfig": {"lineEnding": "\\r\\n"}}', "", key="k")
    logging.getLogger("queueproxy.test").warning("to stdout")
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.endswith("\r\n") and json.loads(captured.out)["message"] == "to stdout"


def test_an_output_file_is_appended_to(tmp_path: object) -> None:
    path = f"{tmp_path}/qp.log"
    handlers = configure_logging(json.dumps({"outputPaths": [path]}), "")
    logging.getLogger("queueproxy.test").error("to a file")
    for h in handlers:
        h.close()
    with open(path, encoding="utf-8") as f:
        assert json.loads(f.read())["message"] == "to a file"
