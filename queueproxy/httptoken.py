"""RFC 9110 tokens: the syntax of methods and header names, shared by the engine (methods),
the readiness probe's config (header names) and the request log (Go's header-key casing)."""
from __future__ import annotations

__all__ = ["TOKEN_CHARS", "is_token"]

TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def is_token(text: str) -> bool:
    """Non-empty and made of token characters only."""
    return bool(text) and TOKEN_CHARS.issuperset(text)
