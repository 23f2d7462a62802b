"""Conflicts a supervisor must look at, and their resolution (from the desk or as a sync mutation).

A resolution is itself an edit: taking the device's value writes a new version as the supervisor, so the
history keeps the old value, the device's value and who decided.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.conflicts import ConflictOut, Decision
from server.db.models import Household, Jurisdiction, Member, SyncConflict
from server.db.types import utcnow
from server.domain import id_numbers
from server.errors import Conflict, Forbidden, Invalid, NotFound
from server.services import audit, edits, households, lock_order, transaction
from server.services.actor import Actor, under

RESOLVER_ROLES = frozenset({"reviewer", "approver", "admin"})


async def scope_ids(session: AsyncSession, actor: Actor) -> list[str]:
    return [str(i) for (i,) in await session.execute(select(Jurisdiction.id).where(under(actor)))]


async def list_open(
    session: AsyncSession, actor: Actor, *, status: str | None, entity_id: str | None, limit: int
) -> list[ConflictOut]:
    query = select(SyncConflict).where(SyncConflict.scope.in_(await scope_ids(session, actor)))
    if status:
        query = query.where(SyncConflict.status == status)
    if entity_id:
        query = query.where(SyncConflict.entity_id == entity_id)
    rows = await session.execute(query.order_by(SyncConflict.created_at, SyncConflict.id).limit(limit))
    return [conflict_out(c) for c in rows.scalars()]


def conflict_values(field: str | None, server_value: Any, client_value: Any) -> tuple[Any, Any]:
    """Both candidates as anyone but a reveal may see them: ID numbers masked, also inside a
    quarantined mutation's arguments (a member update's ``{"old", "new"}``, a number typed into text)."""
    return id_numbers.mask_field(field, server_value), id_numbers.mask_field(field, client_value)


def resolution_shown(field: str | None, resolution: Any) -> Any:
    """A resolution as anyone but a reveal may see it: the value a supervisor set is masked like the
    candidates."""
    if not isinstance(resolution, dict) or resolution.get("value") is None:
        return resolution
    return resolution | {"value": id_numbers.mask_field(field, resolution["value"])}


def conflict_out(c: SyncConflict) -> ConflictOut:
    server_value, client_value = conflict_values(c.field, c.server_value, c.client_value)
    return ConflictOut(
        id=c.id,
        entity=c.entity,
        entity_id=c.entity_id,
        field=c.field,
        kind=c.kind,
        level=c.level,
        base_version=c.base_version,
        server_value=server_value,
        client_value=client_value,
        provisional=c.provisional,
        code=c.code,
        mutation_id=c.mutation_id,
        author_id=c.author_id,
        handed_over_by=c.handed_over_by,
        status=c.status,
        resolution=resolution_shown(c.field, c.resolution),
        resolved_by=c.resolved_by,
        resolved_at=c.resolved_at,
        created_at=c.created_at,
    )


async def resolve(
    session: AsyncSession,
    actor: Actor,
    conflict_id: uuid.UUID,
    decision: Decision,
    value: Any = None,
    *,
    mutation_id: uuid.UUID | None = None,
) -> ConflictOut:
    if actor.role not in RESOLVER_ROLES:
        raise Forbidden(f"A {actor.role} cannot resolve conflicts.", code="resolution_forbidden")
    if value is not None and decision != "set_value":
        # Kept silently, it would read as the value written; a supervisor who meant set_value is told.
        raise Invalid(
            f"A {decision} decision takes no value; send set_value to write one.", code="value_not_taken"
        )
    conflict = await _get(session, actor, conflict_id)
    resolution = {"decision": decision, "value": edits.wire(value)}
    if conflict.status != "open":
        if conflict.resolution == resolution:
            return conflict_out(conflict)  # the same decision again (a retried push): converged
        # Another value set is another decision: answered as done, it would be lost unseen.
        raise Conflict("The conflict was already resolved.", code="already_resolved")
    if decision in ("take_client", "set_value"):
        chosen = conflict.client_value if decision == "take_client" else value
        await _apply(session, actor, conflict, decision, chosen, mutation_id)
    conflict.status = "resolved"
    conflict.resolution = resolution
    conflict.resolved_by, conflict.resolved_at = actor.user_id, utcnow()
    # The record it is about too: take_client and set_value write it, and its id is what a search by
    # record finds (the value itself stays in the conflict and the record's history).
    target = {"entity": conflict.entity, "entity_id": conflict.entity_id, "field": conflict.field}
    audit.record(session, actor, "conflict.resolve", "conflict", conflict.id, {"decision": decision} | target)
    await transaction.commit(session)
    return conflict_out(conflict)


async def _get(session: AsyncSession, actor: Actor, conflict_id: uuid.UUID) -> SyncConflict:
    # The record a decision writes is locked before the conflict: the order all writes lock in.
    await lock_order.lock_records_of_conflict(session, conflict_id)
    query = (
        select(SyncConflict)
        .where(SyncConflict.id == conflict_id, SyncConflict.scope.in_(await scope_ids(session, actor)))
        .with_for_update()
    )
    conflict = (await session.execute(query)).scalar_one_or_none()
    if conflict is None:
        raise NotFound("No such conflict.")
    return conflict


async def _apply(
    session: AsyncSession,
    actor: Actor,
    conflict: SyncConflict,
    decision: Decision,
    chosen: Any,
    mutation_id: uuid.UUID | None,
) -> None:
    if conflict.kind in ("quarantined", "parallel_update", "lost_in_restore"):
        raise Invalid(
            f"A {conflict.kind} conflict can only be kept as it is or dismissed.", code="nothing_to_take"
        )
    if conflict.kind == "delete_after_update" and decision == "set_value":
        # Its decision is to archive (take_client) or not: a value set here would be answered as
        # written while the record was archived instead.
        raise Invalid(
            "An archive is taken (take_client) or not (keep_server): it takes no value.",
            code="value_not_taken",
        )
    record = await _record(session, actor, conflict)
    if conflict.kind == "delete_after_update":
        edits.archive_now(
            session, actor, record, "archive confirmed by a supervisor", mutation_id=mutation_id
        )
        return
    kind = edits.kind_of(record)
    if conflict.kind == "update_after_delete":
        values = chosen if isinstance(chosen, dict) and set(chosen) <= set(kind.fields) else None
        if values is None:
            raise Invalid("This proposal cannot be taken as is; re-enter it by hand.", code="nothing_to_take")
        # The explicit restore, the only way a tombstone comes back (a member of an archived household
        # was not deleted itself: it is written and stays with its household).
        if record.deleted_at is not None:
            record.deleted_at = None
            edits.stamp(
                session,
                actor,
                record,
                ["deleted_at"],
                mutation_id=mutation_id,
                note="restored by a supervisor",
            )
    else:
        values = {conflict.field or "": chosen}
    validated = edits.validate(kind, values)
    if isinstance(record, Member):  # as a PATCH is: an ID number the stored sex or birth date contradicts
        typed = decision == "set_value"
        households.require_agreement(record, validated, where="member", number_typed=typed)
    edits.change_now(session, actor, record, validated)


async def _record(session: AsyncSession, actor: Actor, conflict: SyncConflict) -> Household | Member:
    """The conflict's record, locked, if it lies in the actor's area: the conflict follows its household,
    but what is written is checked again when it is written."""
    key = uuid.UUID(conflict.entity_id)
    record: Household | Member | None = (
        await session.get(Household, key, with_for_update=True)
        if conflict.entity == "household"
        else await session.get(Member, key, with_for_update=True)
    )
    if record is None:
        raise NotFound("The record of this conflict no longer exists.")
    household = record if isinstance(record, Household) else await session.get(Household, record.household_id)
    if household is None or str(household.community_id) not in await scope_ids(session, actor):
        raise NotFound("The record of this conflict is no longer in your area.")
    return record
