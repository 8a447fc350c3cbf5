"""Write coalescing for the engine's connections.

While one connection's ``data_received`` runs, every write the proxy makes (to the client
or to an upstream) is held and sent as one ``transport.write`` per connection when the
callback returns: a response head and its body, or a request head and its body, leave in
one system call instead of two. Writes made anywhere else go out at once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Writer", "begin", "dirty", "end", "received"]

active = False
dirty: list[Any] = []


def begin() -> bool:
    """Start batching; returns False if a batch is already open (the caller must not end it)."""
    global active
    if active:
        return False
    active = True
    return True


def end() -> None:
    global active
    active = False
    if dirty:
        for conn in dirty:
            conn.flush()
        dirty.clear()


def received(handle: Callable[[bytes], None], data: bytes) -> None:
    """Run a connection's ``data_received`` work with writes batched (unless a batch is open)."""
    if begin():
        try:
            handle(data)
        finally:
            end()
    else:
        handle(data)


class Writer:
    """``write``/``flush`` for the engine's connections (both sides): batched while a
    ``data_received`` runs, straight to the transport otherwise. The class using it has
    ``transport``, ``closed`` (no more writes) and ``wbuf`` (None when nothing is held)."""

    __slots__ = ()
    transport: Any
    closed: bool
    wbuf: list[bytes] | None

    def write(self, data: bytes) -> None:
        if active:
            buf = self.wbuf
            if buf is None:
                self.wbuf = [data]
                dirty.append(self)
            else:
                buf.append(data)
            return
        t = self.transport
        if t is not None and not self.closed:
            t.write(data)

    def flush(self) -> None:
        buf = self.wbuf
        if buf is not None:
            self.wbuf = None
            t = self.transport
            if t is not None and not self.closed:
                t.write(buf[0] if len(buf) == 1 else b"".join(buf))
