"""Opaque bearer tokens. The server keeps only their SHA-256, so a database leak yields no session."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    return "fs_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
