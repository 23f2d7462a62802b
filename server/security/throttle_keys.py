"""The key a failed sign-in is counted under: a keyed digest of the username, never the username.

The counter must exist for names nobody has (or a guesser learns which names exist by which get locked),
and a name nobody has is often a password typed into the wrong field. Stored as typed, it would sit in
the database in clear; a plain hash of it would fall to a dictionary. An HMAC under the server's secret
counts every process's failures alike and tells a reader of the table nothing.

A tablet the account has signed in on before counts its own failures (``device_key``), so that a stranger's
guesses, counted under the account's key for every other device, do not lock the worker out of it
(services/auth.py). The two kinds are digests under two keys derived from the secret: no username, whatever
it holds, can make its count land on a device's.
"""

from __future__ import annotations

import hashlib
import hmac

_PER_DEVICE = b"fivestep sign-in failures of one known device"


def throttle_key(secret: bytes, username: str, device_key: str | None = None) -> str:
    """The account's counter for devices it has not signed in on (None), or that of one it has."""
    if device_key is None:
        return hmac.new(secret, username.encode(), hashlib.sha256).hexdigest()
    per_device = hmac.new(secret, _PER_DEVICE, hashlib.sha256).digest()
    return hmac.new(per_device, f"{username}\0{device_key}".encode(), hashlib.sha256).hexdigest()
