"""Pull cursors: opaque to devices, (database epoch, server sequence) to the server."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass


class BadCursor(ValueError):
    """Not a cursor this protocol hands out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: uuid.UUID
    """Changes when the database is restored from a backup: older cursors then mean nothing."""
    seq: int
    floor: int = 0
    """The tombstone floor when the cursor was handed out. Only a purge *after* that can have removed
    tombstones this client still needs: a fresh sync paging through old rows must not be reset forever."""


def encode(cursor: Cursor) -> str:
    raw = f"{cursor.epoch.hex}.{cursor.seq}.{cursor.floor}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        epoch, seq, floor = raw.split(".")
        cursor = Cursor(uuid.UUID(hex=epoch), int(seq), int(floor))
    except (ValueError, UnicodeDecodeError):
        raise BadCursor(text) from None
    if cursor.seq < 0 or cursor.floor < 0:
        raise BadCursor(text)
    return cursor
