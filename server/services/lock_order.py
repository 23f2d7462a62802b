"""The one order in which writes lock households, members, visits and conflicts.

Two transactions that lock overlapping rows in different orders can each end up holding a row the other
waits for; PostgreSQL then kills one of them (a deadlock), and a push or a request fails that had nothing
wrong with it. So every write takes its row locks in this order:

1. households, by id;
2. members, by id (a member's household first, even when only the member changes);
3. visits, by household then id;
4. conflicts, by id (the record a decision writes comes before the conflict itself).

A lock taken later in this order never waits for one taken earlier by a transaction that then waits
for it. Where a lock must come after one on the household, the household's id is read first without a
lock: a member's or a visit's household never changes, and a conflict's record neither.

A write that locks visits alone (a field worker's push of answers) may lock each household together with
its visits, in one statement ordered by household then visit and naming the household first in its
`FOR UPDATE OF` (PostgreSQL locks a row's tables in that order): every household lock is still taken in
id order and before the records under it, which is all the order above asks.

SQLite has one writer at a time (BEGIN IMMEDIATE), so there these locks cost nothing and do nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.id_lists import among
from server.db.models import Household, Member, SyncConflict, Visit


async def lock_households(session: AsyncSession, ids: Collection[uuid.UUID]) -> None:
    if ids:
        query = select(Household.id).where(among(session, Household.id, ids)).order_by(Household.id)
        await session.execute(query.with_for_update())


async def lock_household_of_member(session: AsyncSession, member_id: uuid.UUID) -> None:
    """The member's household, before the member is locked (a member that does not exist locks nothing)."""
    owner = (await session.execute(select(Member.household_id).where(Member.id == member_id))).scalar()
    await lock_households(session, [owner] if owner is not None else [])


async def lock_household_of_visit(session: AsyncSession, visit_id: uuid.UUID) -> None:
    owner = (await session.execute(select(Visit.household_id).where(Visit.id == visit_id))).scalar()
    await lock_households(session, [owner] if owner is not None else [])


async def owners_of_members(session: AsyncSession, ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    query = select(Member.household_id).where(among(session, Member.id, ids))
    return set((await session.execute(query)).scalars())


async def owners_of_visits(session: AsyncSession, ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    query = select(Visit.household_id).where(among(session, Visit.id, ids))
    return set((await session.execute(query)).scalars())


async def records_of_conflicts(
    session: AsyncSession, ids: Collection[uuid.UUID]
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """The households and the members that deciding these conflicts may write (read without a lock)."""
    households: set[uuid.UUID] = set()
    members: set[uuid.UUID] = set()
    if not ids:
        return households, members
    query = select(SyncConflict.entity, SyncConflict.entity_id).where(among(session, SyncConflict.id, ids))
    for entity, entity_id in await session.execute(query):
        try:
            record = uuid.UUID(entity_id)
        except ValueError:  # a quarantined mutation's or a client's: no record to write
            continue
        if entity == "household":
            households.add(record)
        elif entity == "member":
            members.add(record)
    return households, members


async def lock_records_of_conflict(session: AsyncSession, conflict_id: uuid.UUID) -> None:
    """What deciding the conflict may write, in the order above, before the conflict itself is locked."""
    households, members = await records_of_conflicts(session, [conflict_id])
    await lock_households(session, households | await owners_of_members(session, members))
    if members:
        query = select(Member.id).where(among(session, Member.id, members)).order_by(Member.id)
        await session.execute(query.with_for_update())
