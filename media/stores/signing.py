"""HMAC signatures for the local store's short-lived download URLs.

The message is ``f"{key}\\n{expires}"``: the newline cannot occur in a valid key,
so no (key, expires) pair can be re-split into another one.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def _message(key: str, expires: int) -> bytes:
    return f"{key}\n{expires}".encode()


def sign(secret: bytes, key: str, expires: int) -> str:
    """Hex HMAC-SHA256 binding ``key`` to the unix time ``expires``."""
    if not secret:
        raise ValueError("signing secret must not be empty")
    return hmac.new(secret, _message(key, expires), hashlib.sha256).hexdigest()


def verify(secret: bytes, key: str, expires: int, signature: str, now: float | None = None) -> bool:
    """True only for an unexpired ``expires`` whose ``signature`` matches, compared in constant time."""
    current = time.time() if now is None else now
    if expires < current:
        return False
    # compare_digest raises TypeError on non-ASCII str, so reject those up front.
    if not signature.isascii():
        return False
    return hmac.compare_digest(sign(secret, key, expires), signature.lower())
