"""What an app sees of one request, whatever the protocol: the surface ``queueproxy.http1``'s
``Exchange`` and ``queueproxy.h2``'s ``H2Stream`` share, and the revision timeouts.

Apps (the queue-proxy's handler, the activator's) read the request (``method``, ``target``,
``headers``, ``special``), answer with ``respond`` or ``prepare`` + ``forward``, and may set the
hooks below. The protocol classes implement the I/O.

Timeouts: three deadlines measured from the head's arrival (upstream's timeout handler):
total, response start (until anything is written) and idle (since the last write, re-armed
lazily). The connection keeps one timer; ``check_deadline`` runs when it fires.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ExchangeBase"]


class ExchangeBase:
    __slots__ = (
        "conn", "method", "target", "version", "headers", "special", "content_length", "chunked",
        "upgrade", "keep_alive", "started_at", "on_finish", "status", "bytes_out", "state", "context",
        "on_response", "on_connect_error", "response_headers", "timeout_body",
        "_retried", "_resp_started", "_deadline_total", "_deadline_start", "_idle", "_last_write",
    )

    def __init__(self, conn: Any, n_special: int) -> None:
        self.conn = conn
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        """(name as sent, lower-case name, value), in order."""
        self.special: list[bytes | None] = [None] * n_special
        """The headers apps look at, by index (``queueproxy.http1.SPECIAL``)."""
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade = False
        self.keep_alive = True
        self.started_at = 0.0
        self.on_finish: Callable[[Any], None] | None = None
        self.status = 0
        self.bytes_out = 0
        self.state = 0  # 0 new, 1 forwarding, 2 answered here, 3 done
        self.context: Any = None
        # Hooks for apps that need more than the queue-proxy does (the activator):
        self.on_response: Callable[[Any], None] | None = None
        """Called when the upstream's final response head arrives."""
        self.on_connect_error: Callable[[Any, BaseException], bool] | None = None
        """Called when dialing the upstream failed (nothing was sent); True = handled (the app
        called ``redirect``), False = answer 502."""
        self.response_headers: list[bytes] | None = None
        """Extra response header lines (``b"Name: value\\r\\n"``) added to the final head."""
        self.timeout_body = b"request timeout"
        self._retried = False
        self._resp_started = False
        self._deadline_total = 0.0
        self._deadline_start = 0.0
        self._idle = 0.0
        self._last_write = 0.0

    # ---- what apps read -------------------------------------------------------------

    def header(self, lname: bytes) -> bytes | None:
        for _, n, v in self.headers:
            if n == lname:
                return v
        return None

    @property
    def maybe_delivered(self) -> bool:
        """True when this request may already have reached the app: the engine re-dialed
        after a reused connection died under it. Such a request must not be sent elsewhere."""
        return self._retried

    # ---- timeouts -------------------------------------------------------------------

    def set_timeouts(self, total: float, response_start: float = 0.0, idle: float = 0.0) -> None:
        """Arm the revision timeouts (seconds, 0 = off), measured from the head's arrival."""
        start = self.started_at
        self._deadline_total = start + total if total > 0 else 0.0
        self._deadline_start = start + response_start if response_start > 0 else 0.0
        self._idle = idle
        self._last_write = start
        d = self._next_deadline()
        if d:
            self._arm_at(d)

    def _next_deadline(self) -> float:
        d = self._deadline_total
        if not self._resp_started:
            if self._deadline_start and (not d or self._deadline_start < d):
                d = self._deadline_start
        if self._idle:
            i = self._last_write + self._idle
            if not d or i < d:
                d = i
        return d

    def check_deadline(self, now: float) -> None:
        """The connection's timer fired: time out if a deadline passed, else re-arm."""
        if self.state == 3:
            return
        d = self._next_deadline()
        if d and d > now:
            self._arm_at(d)
        elif d:
            self.timeout()

    def _arm_at(self, when: float) -> None:
        raise NotImplementedError

    def timeout(self) -> None:
        raise NotImplementedError
