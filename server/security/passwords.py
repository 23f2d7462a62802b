"""Password hashing with scrypt (memory-hard, in the standard library: no native dependency to build).

Stored as `scrypt$n$r$p$salt$hash` so the cost can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1  # 16 MiB and about 50 ms per check on these machines
_DUMMY: str | None = None


def hash_password(password: str, *, n: int | None = None) -> str:
    n = n or N  # read at each call: the test suite lowers it (tests/conftest.py)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=R, p=P, maxmem=64 * 1024 * 1024, dklen=32)
    return "$".join(["scrypt", str(n), str(R), str(P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest + "==")
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt + "=="),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def burn_equal_time(password: str) -> None:
    """Spend what a real check costs, so an unknown username answers as slowly as a known one."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("not-a-password")
    verify_password(password, _DUMMY)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
