"""Readiness of the user container: ``SERVING_READINESS_PROBE`` parsed, and the prober that runs it.

The upstream controller strips the user container's readiness probe and hands it to the
queue-proxy as JSON (``pkg/queue/readiness``): one Kubernetes ``corev1.Probe`` object, or, when
``ENABLE_MULTI_CONTAINER_PROBES`` is true, an array of them. The empty string means "always
ready". This module holds

- the probe as frozen dataclasses (``ProbeSpec`` with an ``HTTPGetAction``, ``TCPSocketAction``
  or ``GRPCAction``) and ``parse_readiness_probes``, which raises ``ProbeConfigError`` naming
  ``SERVING_READINESS_PROBE``, the bad value and what is allowed;
- ``ReadinessProber``: the policy. All probes run concurrently and all must pass; concurrent
  callers share one run. With ``periodSeconds == 0`` (aggressive mode) each probe is tried every
  50 ms, each try with a 100 ms timeout, for up to 10 s, until ``successThreshold`` consecutive
  passes (the streak survives across runs and resets on any failure). With ``periodSeconds > 0``
  a run is a single try with ``timeoutSeconds``. ``initialDelaySeconds`` and
  ``failureThreshold`` are parsed and ignored, as upstream ignores them (the kubelet applies them
  to the queue-proxy's own readiness probe).

The wire side of each try lives in ``queueproxy.probe_checks``.

Shape of the JSON, as upstream decodes it: a single object when multi-container probing is off
(an array is an error there, as in upstream), an array when it is on (a lone object is an error;
``[]`` or ``null`` means no probes, so always ready). Field names match case-insensitively, as Go's
decoder does; unknown fields are ignored. Where upstream would accept a probe that can never pass
(no handler, an ``exec`` handler, a named or missing port), we refuse it at startup instead.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from queueproxy import probe_checks
from queueproxy.httptoken import is_token
from queueproxy.probe_checks import CheckFailed

__all__ = [
    "AGGRESSIVE_ATTEMPT_TIMEOUT",
    "AGGRESSIVE_INTERVAL",
    "AGGRESSIVE_POLL_TIMEOUT",
    "Action",
    "CheckRunner",
    "GRPCAction",
    "HTTPGetAction",
    "ProbeConfigError",
    "ProbeSpec",
    "ReadinessProber",
    "TCPSocketAction",
    "build_readiness_prober",
    "make_check_runner",
    "parse_readiness_probes",
]

logger = logging.getLogger(__name__)

READINESS_PROBE_ENV = "SERVING_READINESS_PROBE"
MULTI_CONTAINER_ENV = "ENABLE_MULTI_CONTAINER_PROBES"
LOCAL_HOST = "127.0.0.1"

AGGRESSIVE_INTERVAL = 0.05
"""Seconds between the starts of two tries in aggressive mode (upstream ``retryInterval``)."""
AGGRESSIVE_ATTEMPT_TIMEOUT = 0.1
"""Timeout of one try in aggressive mode (upstream ``aggressiveProbeTimeout``)."""
AGGRESSIVE_POLL_TIMEOUT = 10.0
"""How long one aggressive run keeps trying before it fails (upstream ``PollTimeout``)."""
_EPSILON = 1e-6  # float slack when comparing schedule times against the deadline

_INT32_MAX = 2**31 - 1
_BAD_VALUE_CHARS = re.compile(r"[\x00\r\n]")
_CONTROL_CHARS = re.compile(r"[\x00-\x20\x7f]")
# Go's request writer takes these from the request itself and drops header copies of them.
_IGNORED_HEADERS = frozenset({"host", "user-agent", "content-length", "transfer-encoding", "trailer"})


class ProbeConfigError(ValueError):
    """``SERVING_READINESS_PROBE`` (or its companion flag) cannot be used; the message says why."""

    def __init__(self, reason: str, *, key: str = READINESS_PROBE_ENV) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HTTPGetAction:
    port: int
    host: str = LOCAL_HOST
    path: str = ""
    scheme: str = "HTTP"  # "HTTP" or "HTTPS"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        """The request target: ``/`` + path (one leading slash trimmed, as upstream), escaped."""
        path = self.path.split("#", 1)[0]
        path = "/" + (path[1:] if path.startswith("/") else path)
        head, sep, query = path.partition("?")
        return quote(head, safe="/%:@!$&'()*+,;=-._~") + sep + quote(query, safe="/?%:@!$&'()*+,;=-._~")


@dataclass(frozen=True, slots=True)
class TCPSocketAction:
    port: int
    host: str = LOCAL_HOST


@dataclass(frozen=True, slots=True)
class GRPCAction:
    port: int
    service: str = ""


Action = HTTPGetAction | TCPSocketAction | GRPCAction


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One decoded ``corev1.Probe``. Absent numbers are 0, as in Go."""

    action: Action
    success_threshold: int = 0
    timeout_seconds: int = 0
    period_seconds: int = 0
    failure_threshold: int = 0  # ignored, as upstream does
    initial_delay_seconds: int = 0  # ignored, as upstream does

    @property
    def aggressive(self) -> bool:
        return self.period_seconds == 0

    @property
    def attempt_timeout(self) -> float:
        """Timeout of one try: 100 ms when aggressive, else ``timeoutSeconds`` but at least 1 s
        (the controller raises it to 1 s too)."""
        return AGGRESSIVE_ATTEMPT_TIMEOUT if self.aggressive else float(max(1, self.timeout_seconds))


# --- parsing ------------------------------------------------------------------------------------


def parse_readiness_probes(value: str, *, multi_container: bool = False) -> tuple[ProbeSpec, ...]:
    """Decode ``SERVING_READINESS_PROBE``. An empty (or blank) value gives ``()``: always ready."""
    if not value.strip():
        return ()
    try:
        doc = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ProbeConfigError(f"is not valid JSON ({exc}); got {_show(value)}") from None
    if multi_container:
        if doc is None:
            return ()
        if not isinstance(doc, list):
            raise ProbeConfigError(
                f"must be a JSON array of probes when {MULTI_CONTAINER_ENV} is true; got {_show(doc)}"
            )
        return tuple(_parse_probe(item, f"probe [{i}]") for i, item in enumerate(doc))
    if isinstance(doc, list):
        raise ProbeConfigError(
            f"must be a single JSON probe object when {MULTI_CONTAINER_ENV} is false (set it to true "
            f"to pass an array); got {_show(doc)}"
        )
    return (_parse_probe(doc, "probe"),)


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _field(obj: dict[str, object], name: str) -> object:
    """Go's rule: the exact key first, then a case-insensitive match."""
    if name in obj:
        return obj[name]
    folded = name.lower()
    for key, value in obj.items():
        if key.lower() == folded:
            return value
    return None


def _object(obj: dict[str, object], name: str, where: str) -> dict[str, object] | None:
    value = _field(obj, name)
    if value is not None and not isinstance(value, dict):
        raise ProbeConfigError(f"{where}: {name} must be a JSON object; got {_show(value)}")
    return value


def _int(obj: dict[str, object], name: str, where: str) -> int:
    value = _field(obj, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT32_MAX:
        raise ProbeConfigError(
            f"{where}: {name} must be an integer from 0 to {_INT32_MAX}; got {_show(value)}"
        )
    return value


def _str(obj: dict[str, object], name: str, where: str) -> str:
    value = _field(obj, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProbeConfigError(f"{where}: {name} must be a string; got {_show(value)}")
    return value


def _port(obj: dict[str, object], where: str) -> int:
    """An IntOrString port: a number, or a string of digits. Named ports are not resolvable here."""
    value = _field(obj, "port")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ProbeConfigError(
            f"{where}: port must be a number from 1 to 65535 (or a string of digits); got {_show(value)}"
        )
    return value


def _parse_probe(doc: object, where: str) -> ProbeSpec:
    if not isinstance(doc, dict):
        raise ProbeConfigError(f"{where} must be a JSON object (a Kubernetes Probe); got {_show(doc)}")
    action: Action
    if (http := _object(doc, "httpGet", where)) is not None:
        action = _parse_http(http, f"{where}.httpGet")
    elif (tcp := _object(doc, "tcpSocket", where)) is not None:
        host = _str(tcp, "host", f"{where}.tcpSocket") or LOCAL_HOST
        action = TCPSocketAction(port=_port(tcp, f"{where}.tcpSocket"), host=host)
    elif (grpc := _object(doc, "grpc", where)) is not None:
        at = f"{where}.grpc"
        action = GRPCAction(port=_port(grpc, at), service=_str(grpc, "service", at))
    elif _field(doc, "exec") is not None:
        raise ProbeConfigError(
            f"{where}: exec probes are not supported by the queue-proxy (the controller turns them into "
            "tcpSocket probes); use httpGet, tcpSocket or grpc"
        )
    else:
        raise ProbeConfigError(
            f"{where} has no handler; expected one of httpGet, tcpSocket, grpc; got {_show(doc)}"
        )
    return ProbeSpec(
        action=action,
        success_threshold=_int(doc, "successThreshold", where),
        timeout_seconds=_int(doc, "timeoutSeconds", where),
        period_seconds=_int(doc, "periodSeconds", where),
        failure_threshold=_int(doc, "failureThreshold", where),
        initial_delay_seconds=_int(doc, "initialDelaySeconds", where),
    )


def _parse_http(obj: dict[str, object], where: str) -> HTTPGetAction:
    scheme = (_str(obj, "scheme", where) or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        got = _show(_field(obj, "scheme"))
        raise ProbeConfigError(f"{where}: scheme must be HTTP or HTTPS; got {got}")
    path = _str(obj, "path", where)
    if _CONTROL_CHARS.search(path.replace(" ", "")):
        raise ProbeConfigError(f"{where}: path must not contain control characters; got {_show(path)}")
    raw_headers = _field(obj, "httpHeaders")
    if raw_headers is not None and not isinstance(raw_headers, list):
        raise ProbeConfigError(f"{where}: httpHeaders must be a JSON array; got {_show(raw_headers)}")
    headers: list[tuple[str, str]] = []
    for i, item in enumerate(raw_headers or ()):
        at = f"{where}.httpHeaders[{i}]"
        if not isinstance(item, dict):
            raise ProbeConfigError(f"{at} must be an object with name and value; got {_show(item)}")
        name, value = _str(item, "name", at), _str(item, "value", at)
        if not is_token(name):
            raise ProbeConfigError(f"{at}: name must be an HTTP header token; got {_show(name)}")
        if _BAD_VALUE_CHARS.search(value):
            raise ProbeConfigError(f"{at}: value must not contain CR, LF or NUL; got {_show(value)}")
        if name.lower() in _IGNORED_HEADERS:
            logger.warning("%s: header %s is set by the prober itself; ignoring the probe's", at, name)
            continue
        headers.append((name, value))
    return HTTPGetAction(
        port=_port(obj, where),
        host=_str(obj, "host", where) or LOCAL_HOST,
        path=path,
        scheme=scheme,
        headers=tuple(headers),
    )


# --- checks -------------------------------------------------------------------------------------

CheckRunner = Callable[[Action, float], Awaitable[None]]
"""One try of one action with a timeout: returns on pass, raises (``CheckFailed``) on failure."""


def make_check_runner(*, http2_auto_detect: bool = False) -> CheckRunner:
    """The real checks of ``probe_checks``; ``http2_auto_detect`` tries h2c first for HTTP probes."""

    async def run(action: Action, timeout: float) -> None:
        if isinstance(action, HTTPGetAction):
            await probe_checks.http_get(
                host=action.host,
                port=action.port,
                target=action.target,
                headers=action.headers,
                tls=action.scheme == "HTTPS",
                try_h2c=http2_auto_detect,
                timeout=timeout,
            )
        elif isinstance(action, TCPSocketAction):
            await probe_checks.tcp_connect(action.host, action.port, timeout)
        else:  # upstream always dials 127.0.0.1 for gRPC probes
            await probe_checks.grpc_health_check(
                host=LOCAL_HOST, port=action.port, service=action.service, timeout=timeout
            )

    return run


# --- the prober ---------------------------------------------------------------------------------


class ReadinessProber:
    """Runs the probes when asked; one run at a time, shared by every concurrent caller.

    ``clock`` (float seconds, default ``loop.time``) and ``sleep`` (default ``asyncio.sleep``) are
    injected so the 50 ms / 10 s schedule of aggressive mode can be tested on a fake timeline;
    ``check`` replaces the real network checks.
    """

    def __init__(
        self,
        probes: Sequence[ProbeSpec],
        *,
        http2_auto_detect: bool = False,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        check: CheckRunner | None = None,
    ) -> None:
        self._probes = tuple(probes)
        self._clock = clock
        self._sleep = sleep
        self._check = check or make_check_runner(http2_auto_detect=http2_auto_detect)
        self._streaks = [0] * len(self._probes)
        self._errors: list[str | None] = [None] * len(self._probes)
        self._inflight: asyncio.Task[bool] | None = None
        self._last_ok = not self._probes
        self._ever_ready = self._last_ok

    @property
    def probes(self) -> tuple[ProbeSpec, ...]:
        return self._probes

    @property
    def last_ok(self) -> bool:
        """Whether the last finished run passed (False before the first, True without probes)."""
        return self._last_ok

    @property
    def ever_ready(self) -> bool:
        """Whether any run has passed since start."""
        return self._ever_ready

    @property
    def last_errors(self) -> tuple[str, ...]:
        """Why the probes failed in the last failed run, one line each (empty after a pass)."""
        return tuple(e for e in self._errors if e is not None)

    async def probe(self) -> bool:
        """Run the probes (or join the run under way) and say whether the user container is ready.

        A caller cancelled while waiting does not cancel the run: other callers may share it.
        """
        if not self._probes:
            return True
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(), name="readiness-probe")
            self._inflight = task
            task.add_done_callback(self._run_done)
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel a run under way (at shutdown, so no task outlives the loop)."""
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _run_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled() and task.exception() is not None:  # a bug, not a probe failure
            logger.error("readiness probe run crashed", exc_info=task.exception())

    async def _run(self) -> bool:
        results = await asyncio.gather(*(self._probe_one(i) for i in range(len(self._probes))))
        ok = all(results)
        if ok and not self._ever_ready:
            logger.info("user container is ready")
        elif not ok:
            logger.info("user container is not ready: %s", "; ".join(self.last_errors))
        elif not self._last_ok:
            logger.info("user container is ready again")
        self._last_ok = ok
        self._ever_ready = self._ever_ready or ok
        return ok

    async def _try(self, index: int, timeout: float) -> bool:
        try:
            await self._check(self._probes[index].action, timeout)
        except CheckFailed as exc:
            self._errors[index] = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - any error of a check is a failed try, not a crash
            logger.debug("readiness check raised", exc_info=True)
            self._errors[index] = f"{type(exc).__name__}: {exc}"
            return False
        self._errors[index] = None
        return True

    async def _probe_one(self, index: int) -> bool:
        spec = self._probes[index]
        if not spec.aggressive:
            return await self._try(index, spec.attempt_timeout)
        clock = self._clock or asyncio.get_running_loop().time
        deadline = clock() + AGGRESSIVE_POLL_TIMEOUT
        failures = 0
        while True:
            started = clock()
            if await self._try(index, AGGRESSIVE_ATTEMPT_TIMEOUT):
                self._streaks[index] += 1
                if self._streaks[index] >= spec.success_threshold:
                    return True
            else:
                self._streaks[index] = 0
                failures += 1
            # The next try starts one interval after this one started (at once if this one ran
            # longer). No try starts at or after the deadline; the run fails at the deadline.
            wake_at = min(started + AGGRESSIVE_INTERVAL, deadline)
            now = clock()
            if wake_at > now:
                await self._sleep(wake_at - now)
            if wake_at >= deadline - _EPSILON or clock() >= deadline - _EPSILON:
                break
        window = f"{AGGRESSIVE_POLL_TIMEOUT:g}s"
        if failures and self._errors[index] is not None:
            self._errors[index] = f"failed {failures} times in {window}: {self._errors[index]}"
        elif self._errors[index] is None:
            threshold = spec.success_threshold
            self._errors[index] = f"fewer than {threshold} passes in a row within {window}"
        return False


def build_readiness_prober(
    serving_readiness_probe: str, *, multi_container: bool = False, http2_auto_detect: bool = False
) -> ReadinessProber:
    """The prober for the queue-proxy's env values; raises ``ProbeConfigError`` on a bad probe."""
    probes = parse_readiness_probes(serving_readiness_probe, multi_container=multi_container)
    return ReadinessProber(probes, http2_auto_detect=http2_auto_detect)
