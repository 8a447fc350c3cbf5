"""queue-proxy configuration from upstream's environment variables (plus a few of ours).

``Config.from_env(environ)`` applies defaults, parses and validates; every error names the
variable, the bad value and what is allowed, and ``__main__`` exits non-zero with it.
Upstream's names and required-ness are kept exactly (``pkg/queue/sharedmain/main.go``):
a required variable must be *present*, an empty string is accepted for string fields.
Our own knobs (for many queue-proxies on one machine, and for the gRPC stats push) use the
``KDP_`` prefix and default to upstream's behaviour.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Config", "ConfigError", "parse_go_bool", "parse_go_int"]


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _underscores_ok(s: str) -> bool:
    """Go's rule: an underscore must sit between digits (or right after a base prefix)."""
    saw, i, hexa = "^", 0, False
    if len(s) >= 2 and s[0] == "0" and s[1] in "bBoOxX":
        saw, i, hexa = "0", 2, s[1] in "xX"
    for c in s[i:]:
        if c.isdigit() or hexa and c in "abcdefABCDEF":
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def parse_go_int(value: str, bits: int = 64) -> int:
    """Go's ``strconv.ParseInt(value, 0, bits)``: the base comes from the prefix (0x, 0o,
    0b, or a leading 0 for octal) and underscores may separate digits."""
    body = value[1:] if value[:1] in ("+", "-") else value
    if not body or not body.isascii():
        raise ValueError(f"invalid syntax: {value!r}")
    if "_" in body and not _underscores_ok(body):
        raise ValueError(f"invalid syntax: {value!r}")
    digits = body.replace("_", "")
    base = 10
    if len(digits) > 1 and digits[0] == "0":
        base, digits = {"x": (16, digits[2:]), "o": (8, digits[2:]), "b": (2, digits[2:])}.get(
            digits[1].lower(), (8, digits[1:]))
    try:
        if not digits or not digits.isalnum():
            raise ValueError
        n = int(digits, base)
    except ValueError:
        raise ValueError(f"invalid syntax: {value!r}") from None
    if value[0] == "-":
        n = -n
    if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
        raise ValueError(f"value out of range: {value!r}")
    return n


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"invalid syntax: {value!r}")


@dataclass(frozen=True, slots=True)
class Config:
    # identity (upstream)
    namespace: str
    configuration: str
    revision: str
    pod_name: str
    pod_ip: str
    service: str = ""
    # listeners and upstream (upstream)
    serving_port: int = 8012
    tls_port: int = 8112
    user_port: int = 8080
    # behaviour (upstream)
    container_concurrency: int = 0
    revision_timeout: float = 300.0
    response_start_timeout: float = 0.0
    idle_timeout: float = 0.0
    readiness_probe: str = ""
    multi_container_probes: bool = False
    http2_auto_detection: bool = False
    full_duplex: bool = False
    logging_config: str = ""
    logging_level: str = ""
    observability_config: str = ""
    # ours
    bind_host: str = "0.0.0.0"
    """Where the listeners bind (upstream: every interface)."""
    user_host: str = "127.0.0.1"
    admin_port: int = 8022
    stat_port: int = 9090
    cert_dir: str = "/var/lib/knative/certs"
    drain_quiet_period: float = 30.0
    """Upstream's drainSleepDuration: the drain waits this long with no request."""
    autoscaler_address: str = ""
    """host:port of our autoscaler's StatIngest gRPC service; empty = scrape only."""
    max_head_bytes: int = 64 * 1024
    header_timeout: float = 60.0

    @property
    def queue_depth(self) -> int:
        return 10 * self.container_concurrency

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        def req(key: str) -> str:
            if key not in env:
                raise ConfigError(f"required environment variable {key} is not set")
            return env[key]

        def opt(key: str, default: str = "") -> str:
            return env.get(key, default)

        def as_int(key: str, raw: str, lo: int, hi: int, what: str, bits: int = 64) -> int:
            try:
                n = parse_go_int(raw, bits)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not an integer; allowed: {what}") from None
            if not lo <= n <= hi:
                raise ConfigError(f"{key}={raw!r} is out of range; allowed: {what}")
            return n

        def port(key: str, raw: str) -> int:
            if not raw.isdigit():
                raise ConfigError(f"{key}={raw!r} is not a port number; allowed: 0..65535")
            return as_int(key, raw, 0, 65535, "0..65535")

        def as_bool(key: str, default: bool) -> bool:
            raw = env.get(key)
            if raw is None or raw == "":
                return default
            try:
                return parse_go_bool(raw)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not a boolean; allowed: true, false, 1, 0, t, f") from None

        def seconds(key: str, raw: str, lo: int) -> float:
            if raw == "" and key not in ("REVISION_TIMEOUT_SECONDS",):
                return 0.0
            return float(as_int(key, raw, lo, 2**31 - 1, f"whole seconds >= {lo}"))

        def dur(key: str, default: float) -> float:
            raw = env.get(key)
            if raw is None or raw == "":
                return default
            try:
                v = float(raw)
            except ValueError:
                raise ConfigError(f"{key}={raw!r} is not a number of seconds; allowed: >= 0") from None
            if not v >= 0 or v == float("inf"):
                raise ConfigError(f"{key}={raw!r} is out of range; allowed: >= 0")
            return v

        cc_raw = req("CONTAINER_CONCURRENCY")
        cc = as_int("CONTAINER_CONCURRENCY", cc_raw, -(2**63), 2**63 - 1, "an integer (0 = unlimited)")
        return cls(
            namespace=req("SERVING_NAMESPACE"),
            configuration=req("SERVING_CONFIGURATION"),
            revision=req("SERVING_REVISION"),
            pod_name=req("SERVING_POD"),
            pod_ip=req("SERVING_POD_IP"),
            service=opt("SERVING_SERVICE"),
            serving_port=port("QUEUE_SERVING_PORT", req("QUEUE_SERVING_PORT")),
            tls_port=port("QUEUE_SERVING_TLS_PORT", req("QUEUE_SERVING_TLS_PORT")),
            user_port=port("USER_PORT", req("USER_PORT")),
            container_concurrency=max(cc, 0),
            revision_timeout=seconds("REVISION_TIMEOUT_SECONDS", req("REVISION_TIMEOUT_SECONDS"), 0),
            response_start_timeout=seconds("REVISION_RESPONSE_START_TIMEOUT_SECONDS",
                                           opt("REVISION_RESPONSE_START_TIMEOUT_SECONDS"), 0),
            idle_timeout=seconds("REVISION_IDLE_TIMEOUT_SECONDS", opt("REVISION_IDLE_TIMEOUT_SECONDS"), 0),
            readiness_probe=opt("SERVING_READINESS_PROBE"),
            multi_container_probes=as_bool("ENABLE_MULTI_CONTAINER_PROBES", False),
            http2_auto_detection=as_bool("ENABLE_HTTP2_AUTO_DETECTION", False),
            full_duplex=as_bool("ENABLE_HTTP_FULL_DUPLEX", False),
            logging_config=req("SERVING_LOGGING_CONFIG"),
            logging_level=req("SERVING_LOGGING_LEVEL"),
            observability_config=opt("OBSERVABILITY_CONFIG"),
            bind_host=opt("KDP_BIND_HOST", "0.0.0.0") or "0.0.0.0",
            user_host=opt("KDP_USER_HOST", "127.0.0.1") or "127.0.0.1",
            admin_port=port("KDP_ADMIN_PORT", opt("KDP_ADMIN_PORT", "8022")),
            stat_port=port("KDP_STAT_PORT", opt("KDP_STAT_PORT", "9090")),
            cert_dir=opt("KDP_CERT_DIR", "/var/lib/knative/certs"),
            drain_quiet_period=dur("KDP_DRAIN_QUIET_PERIOD", 30.0),
            autoscaler_address=opt("KDP_AUTOSCALER_ADDRESS"),
            max_head_bytes=as_int("KDP_MAX_HEADER_BYTES", opt("KDP_MAX_HEADER_BYTES", "65536"),
                                  1024, 16 * 1024 * 1024, "1024..16777216 bytes"),
            header_timeout=dur("KDP_HEADER_TIMEOUT", 60.0) or 60.0,
        )
