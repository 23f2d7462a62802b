"""Keyset cursors of the lists ordered by a text key and the row's id (households by registry number,
users by username): opaque to clients, checked when they come back."""

from __future__ import annotations

import base64
import uuid

import msgspec

from server.errors import Invalid


def encode(key: str, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([key, str(row_id)])).decode()


def decode(cursor: str) -> tuple[str, uuid.UUID]:
    """The key and id a cursor of `encode` holds; 422 `bad_cursor` for anything else."""
    try:
        key, raw_id = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=tuple[str, str])
        if "\x00" in key:  # no key holds one, and PostgreSQL cannot compare it
            raise ValueError(key)
        return key, uuid.UUID(raw_id)
    except (ValueError, msgspec.DecodeError):
        raise Invalid(
            "The cursor is not one this server handed out.",
            code="bad_cursor",
            details=[{"field": "cursor", "message": "unknown cursor"}],
        ) from None
