"""Apply one pushed mutation through the same services the REST API uses: one path per rule.

Authorisation is checked here, when the mutation is applied, not when the device made it: a worker moved
to another community cannot land edits in the old one. Each handler returns the conflict records it
opened (empty when the mutation merged cleanly).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.rules import RulePack
from schemas.sync import (
    ConflictResolveV1,
    HouseholdArchiveV1,
    HouseholdCreateV1,
    HouseholdUpdateV1,
    MemberCreateV1,
    MemberRemoveV1,
    MemberUpdateV1,
    Mutation,
    VisitAnswerV1,
    VisitProposeV1,
    VisitSubmitV1,
)
from server.db.models import Household, Member, SyncConflict
from server.errors import Invalid
from server.services import audit, conflicts, edits, households, transaction, visits
from server.services.actor import Actor
from server.services.sync_preload import Preloaded
from sync.merge import rank

Handler = Callable[[AsyncSession, Actor, Any, RulePack, Preloaded | None], Awaitable[list[uuid.UUID]]]


async def apply(
    session: AsyncSession, actor: Actor, mutation: Mutation, rules: RulePack, pre: Preloaded | None = None
) -> list[uuid.UUID]:
    """`pre`: the batch's records read ahead (sync_preload); None reads each record when needed."""
    handler: Handler = HANDLERS[type(mutation)]
    return await handler(session, actor, mutation, rules, pre)


async def _household_create(
    session: AsyncSession, actor: Actor, m: HouseholdCreateV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    if m.household.id is None:
        raise _needs_id("household.id")
    existing = await session.get(Household, m.household.id)
    if existing is None:
        return await households.create_offline(session, actor, m.household, m.mutation_id)
    # The same create delivered again under another mutation: converged, with what keeps its proposals.
    return await households.require_same_create(session, actor, existing, m.household)


async def _household_update(
    session: AsyncSession, actor: Actor, m: HouseholdUpdateV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    household = await _household(session, actor, m.household_id, pre)
    return _merge(session, actor, household, household, m, "household.update")


async def _household_archive(
    session: AsyncSession, actor: Actor, m: HouseholdArchiveV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    household = await _household(session, actor, m.household_id, pre)
    return _archive(session, actor, household, household, m, "household.archive")


async def _member_create(
    session: AsyncSession, actor: Actor, m: MemberCreateV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    if m.member.id is None:
        raise _needs_id("member.id")
    household = await _household(session, actor, m.household_id, pre)
    existing = await session.get(Member, m.member.id)
    if existing is not None:
        await households.require_same_member_create(session, actor, existing, household.id, m.member)
        return []  # the same create delivered again under another mutation: converged
    if household.deleted_at is not None:
        proposed = msgspec.to_builtins(m.member)
        if (kept := await _kept_before(session, actor, household, proposed)) is not None:
            return [kept]  # the same create queued again: the same conflict keeps it
        scope = str(household.community_id)
        conflict = edits.new_conflict(
            household, "update_after_delete", None, None, None, proposed, actor, m.mutation_id, scope
        )
        session.add(conflict)
        _audit(session, actor, "member.create", m.member.id, m, edits.Outcome(conflict_ids=[conflict.id]))
        return [conflict.id]
    await households.add_member(session, actor, household.id, m.member)
    return []


async def _kept_before(
    session: AsyncSession, actor: Actor, household: Household, proposed: dict[str, Any]
) -> uuid.UUID | None:
    """The conflict that already keeps this user's member create on an archived household, if any."""
    query = select(SyncConflict.id, SyncConflict.client_value).where(
        SyncConflict.entity == "household",
        SyncConflict.entity_id == str(household.id),
        SyncConflict.kind == "update_after_delete",
        SyncConflict.author_id == actor.user_id,
    )
    return next((id_ for id_, value in await session.execute(query) if value == proposed), None)


async def _member_update(
    session: AsyncSession, actor: Actor, m: MemberUpdateV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    member, household = await _member_and_household(session, actor, m.member_id, pre)
    return _merge(session, actor, member, household, m, "member.update")


async def _member_remove(
    session: AsyncSession, actor: Actor, m: MemberRemoveV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    member, household = await _member_and_household(session, actor, m.member_id, pre)
    return _archive(session, actor, member, household, m, "member.remove")


def _merge(
    session: AsyncSession,
    actor: Actor,
    record: Household | Member,
    household: Household,
    m: HouseholdUpdateV1 | MemberUpdateV1,
    action: str,
) -> list[uuid.UUID]:
    changes = _validated(edits.kind_of(record), m.changes)
    if isinstance(record, Member):  # as on the REST path: refused, and so kept for a supervisor
        # A field worker's new ID number is guarded: it waits for a supervisor, and is checked when taken
        # (conflicts._apply); their other changes are checked against the stored one. A supervisor's is
        # written at once, so checked now.
        waits = rank(actor.role) == 0
        applied = {name: new for name, (_, new) in changes.items() if not (waits and name == "id_number")}
        households.require_agreement(record, applied)
    outcome = edits.merge_offline(
        session,
        actor,
        record,
        m.base_version,
        changes,
        mutation_id=m.mutation_id,
        scope=str(household.community_id),
        client=transaction.push_client(session),
        household_archived=household.deleted_at is not None,
    )
    _audit(session, actor, action, record.id, m, outcome)
    return outcome.conflict_ids


def _archive(
    session: AsyncSession,
    actor: Actor,
    record: Household | Member,
    household: Household,
    m: HouseholdArchiveV1 | MemberRemoveV1,
    action: str,
) -> list[uuid.UUID]:
    outcome = edits.archive_offline(
        session,
        actor,
        record,
        m.base_version,
        m.reason,
        mutation_id=m.mutation_id,
        scope=str(household.community_id),
        client=transaction.push_client(session),
    )
    _audit(session, actor, action, record.id, m, outcome)
    return outcome.conflict_ids


async def _visit_answer(
    session: AsyncSession, actor: Actor, m: VisitAnswerV1, rules: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    found = pre.visit(m.visit_id) if pre is not None else None
    visit, _ = found or await visits.get(session, actor, m.visit_id, lock=True)
    stored = pre.observations if pre is not None else await visits.already_stored(session, m.observations)
    await visits.add_answers(session, actor, visit, m.observations, rules, stored)
    return []


async def _visit_propose(
    session: AsyncSession, actor: Actor, m: VisitProposeV1, rules: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    await visits.propose(session, actor, m.visit_id, m.proposal, rules)
    return []


async def _visit_submit(
    session: AsyncSession, actor: Actor, m: VisitSubmitV1, rules: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    await visits.submit(session, actor, m.visit_id, rules)
    return []


async def _conflict_resolve(
    session: AsyncSession, actor: Actor, m: ConflictResolveV1, _: RulePack, pre: Preloaded | None
) -> list[uuid.UUID]:
    await conflicts.resolve(session, actor, m.conflict_id, m.decision, m.value, mutation_id=m.mutation_id)
    return []


HANDLERS: dict[type[Any], Handler] = {
    HouseholdCreateV1: _household_create,
    HouseholdUpdateV1: _household_update,
    HouseholdArchiveV1: _household_archive,
    MemberCreateV1: _member_create,
    MemberUpdateV1: _member_update,
    MemberRemoveV1: _member_remove,
    VisitAnswerV1: _visit_answer,
    VisitProposeV1: _visit_propose,
    VisitSubmitV1: _visit_submit,
    ConflictResolveV1: _conflict_resolve,
}


def _needs_id(field: str) -> Invalid:
    return Invalid(
        f"{field} is required in sync: records made offline carry the device's UUID.",
        details=[{"field": field, "message": "required"}],
    )


def _validated(kind: edits.Kind, changes: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    values = edits.validate(kind, {name: change.new for name, change in changes.items()})
    return {name: (changes[name].old, values[name]) for name in changes}


async def _household(
    session: AsyncSession, actor: Actor, household_id: uuid.UUID, pre: Preloaded | None
) -> Household:
    households.require_writer(actor)
    found = pre.household(household_id) if pre is not None else None
    return found or await households.get(
        session, actor, household_id, lock=True, archived=True, members=False
    )


async def _member_and_household(
    session: AsyncSession, actor: Actor, member_id: uuid.UUID, pre: Preloaded | None
) -> tuple[Member, Household]:
    households.require_writer(actor)
    found = pre.member(member_id) if pre is not None else None
    if found is not None:
        return found
    member = await households.get_member(session, actor, member_id, lock=True, archived=True)
    household = await households.get(session, actor, member.household_id, archived=True, members=False)
    return member, household


def _audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    entity_id: uuid.UUID,
    m: Mutation,
    outcome: edits.Outcome,
) -> None:
    audit.record(
        session,
        actor,
        action,
        action.split(".")[0],
        entity_id,
        {"mutation_id": m.mutation_id, "applied": outcome.applied, "conflicts": outcome.conflict_ids},
    )
