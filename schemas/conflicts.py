"""Sync conflicts on the wire: what a supervisor sees and decides."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

Decision = Literal["keep_server", "take_client", "set_value", "dismiss"]
"""keep_server: the current value stays. take_client: the device's value is written (as the supervisor).
set_value: a value the supervisor decided on is written. dismiss: acknowledge (soft) or drop (quarantined)."""


class ConflictOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    entity: str
    entity_id: str
    field: str | None
    kind: str
    """field_conflict | guarded_change | parallel_update | update_after_delete | delete_after_update |
    quarantined | lost_in_restore"""
    level: Literal["hard", "soft"] | str
    base_version: int | None
    server_value: Any
    client_value: Any
    provisional: str | None
    """Which value the record holds meanwhile: server or client."""
    code: str | None
    """For a quarantined mutation: why it was refused."""
    mutation_id: uuid.UUID | None
    author_id: uuid.UUID | None
    handed_over_by: uuid.UUID | None
    """Who handed in the tablet a quarantined edit came from, when its author could no longer sign in
    (docs/sync-protocol.md, "Handing a tablet over"); None while no one handed that tablet in."""
    status: str
    resolution: Any
    resolved_by: uuid.UUID | None
    resolved_at: dt.datetime | None
    created_at: dt.datetime


class ResolveRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: Decision
    value: Any = None
