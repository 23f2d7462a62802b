"""The key a failed sign-in is counted under: a keyed digest of the username, never the username.

The counter must exist for names nobody has (or a guesser learns which names exist by which get locked),
and a name nobody has is often a password typed into the wrong field. Stored as typed, it would sit in
the database in clear; a plain hash of it would fall to a dictionary. An HMAC under the server's secret
counts every process's failures alike and tells a reader of the table nothing.
"""

from __future__ import annotations

import hashlib
import hmac


def throttle_key(secret: bytes, username: str) -> str:
    return hmac.new(secret, username.encode(), hashlib.sha256).hexdigest()
