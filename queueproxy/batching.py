"""Write coalescing for the engine's connections.

While one connection's ``data_received`` runs, every write the proxy makes (to the client
or to an upstream) is held and sent as one ``transport.write`` per connection when the
callback returns: a response head and its body, or a request head and its body, leave in
one system call instead of two. Writes made anywhere else go out at once.
"""
from __future__ import annotations

from typing import Any

__all__ = ["begin", "end", "dirty"]

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
