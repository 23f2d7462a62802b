"""Write audit rows. There is no function to change or remove one, and the database refuses it too.

An audit row outlives every record it names, and nobody can correct it: whatever lands in one stays. So
every ID number in its data or its reason is masked here, whichever caller wrote it: a member's number as
a change, or one a person typed into a reason, an address or a proposal. The full number stays in the
member's record, where each reading of it is itself an audit row (`member.reveal_id`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import AuditEvent
from server.domain.id_numbers import mask_text, mask_within
from server.errors import DomainError
from server.services.actor import Actor

REVEAL_REASON_MIN_LENGTH = 5
"""Characters, besides spaces, of the reason a reveal (a full ID number, a photo's original) is audited
with: room for a short one such as 核对身份信息 ("checking identity details"), none for "x" or ".."."""


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str,
    changes: Mapping[str, Any] | None = None,
    *,
    reason: str | None = None,
) -> None:
    """Add an audit row to the caller's transaction: it commits or rolls back with the change itself."""
    row = _row(action, entity_type, entity_id, changes, reason, actor.request_id)
    row.actor_id, row.device_id = actor.user_id, actor.device_id
    session.add(row)


async def record_refused(
    session: AsyncSession,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str,
    refused: DomainError,
    reason: str | None,
) -> None:
    """Audit a reveal refused (the role, no reason given, out of reach) with the code the caller got and
    the reason they gave, and commit it: the refusal raised next must not take its row with it. Someone
    who keeps asking for what they may not see is what an auditor looks for first."""
    stated = (reason or "").strip()[:500]
    record(session, actor, action, entity_type, entity_id, {"code": refused.code}, reason=stated or None)
    await session.commit()


def record_unauthenticated(
    session: AsyncSession,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str,
    changes: Mapping[str, Any] | None = None,
    *,
    request_id: str | None = None,
) -> None:
    """As `record`, for what someone not signed in tried (a wrong password): the row names no actor."""
    session.add(_row(action, entity_type, entity_id, changes, None, request_id))


def _row(
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str,
    changes: Mapping[str, Any] | None,
    reason: str | None,
    request_id: str | None,
) -> AuditEvent:
    return AuditEvent(
        actor_id=None,
        device_id=None,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        changes=mask_within(_jsonable(dict(changes or {}))),
        reason=None if reason is None else mask_text(reason),
        request_id=request_id,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID | dt.date | dt.datetime):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return value
