"""Read, in a few queries, every record a push batch is about to change.

A batch of 100 mutations would otherwise run 100 locked reads one by one. The preload runs one locked
read per table, in the order every write locks in (households, members, visits, conflicts, each by id:
see lock_order), so two pushes, or a push and a request, locking overlapping rows never deadlock; and
the handlers take their records from here. Only the fast pass of a push uses it (see sync_push):
when that pass fails, the batch is applied again the slow way, with the services' own reads.

Households are locked along with their members and visits: a record's community decides whose devices
get its changes, so a household moving community meanwhile waits for the push instead of racing it.

A record is handed out only under the same rules the services' reads apply (in the actor's scope,
archived or not as asked); anything else falls back to the service's own query, which then answers as it
always does (NotFound, Forbidden).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from schemas.sync import (
    ConflictResolveV1,
    HouseholdArchiveV1,
    HouseholdUpdateV1,
    MemberCreateV1,
    MemberRemoveV1,
    MemberUpdateV1,
    Mutation,
    VisitAnswerV1,
    VisitProposeV1,
    VisitSubmitV1,
)
from server.db.id_lists import among
from server.db.models import Household, Jurisdiction, Member, Observation, SyncConflict, Visit
from server.services import lock_order
from server.services.actor import Actor, under
from server.services.visits import StoredAnswers

T = TypeVar("T")


@dataclass
class Preloaded:
    communities: frozenset[uuid.UUID] = frozenset()
    households: dict[uuid.UUID, Household] = field(default_factory=dict)
    members: dict[uuid.UUID, Member] = field(default_factory=dict)
    visits: dict[uuid.UUID, tuple[Visit, Household]] = field(default_factory=dict)
    observations: StoredAnswers = field(default_factory=dict)
    """The batch's observations already stored; the fast pass adds those it stores."""

    def household(self, household_id: uuid.UUID) -> Household | None:
        """A household in scope, archived or not (sync merges into archived ones too)."""
        household = self.households.get(household_id)
        return household if household is not None and self._in_scope(household) else None

    def member(self, member_id: uuid.UUID) -> tuple[Member, Household] | None:
        member = self.members.get(member_id)
        household = None if member is None else self.households.get(member.household_id)
        if member is None or household is None or not self._in_scope(household):
            return None
        return member, household

    def visit(self, visit_id: uuid.UUID) -> tuple[Visit, Household] | None:
        found = self.visits.get(visit_id)
        return found if found is not None and self._in_scope(found[1]) else None

    def _in_scope(self, household: Household) -> bool:
        # Checked again on every use: a supervisor's edit earlier in the batch may have moved it.
        return household.community_id in self.communities


async def preload(session: AsyncSession, actor: Actor, mutations: Iterable[Mutation]) -> Preloaded:
    """Lock every existing record the batch writes, in the order all writes lock in (lock_order), and
    read those the handlers take from here. Locking each record as its mutation comes would lock in the
    batch's order, and two batches locking a household and the other's member would deadlock."""
    wanted = _Wanted.of(mutations)
    communities = select(Jurisdiction.id).where(under(actor))
    pre = Preloaded(communities=frozenset((await session.execute(communities)).scalars()))
    if wanted.visits_only():
        # A field worker's usual batch: each visit's household is locked with it, in household order
        # (lock_order), by the visits' own query: no household to read first, none to lock alone.
        await _read_visits(session, pre, wanted)
        return pre
    # What decides the order is read first, unlocked: a member's, a visit's or a conflict's record's
    # household never changes.
    decided_households, decided_members = await lock_order.records_of_conflicts(session, wanted.conflicts)
    member_ids = wanted.members | decided_members
    household_ids = (
        wanted.households
        | decided_households
        | await lock_order.owners_of_members(session, member_ids)
        | await lock_order.owners_of_visits(session, wanted.visits)
    )
    if household_ids:
        targets = select(Household).where(among(session, Household.id, household_ids)).order_by(Household.id)
        pre.households.update((h.id, h) for h in await _locked(session, targets))
    if member_ids:
        members = select(Member).where(among(session, Member.id, member_ids)).order_by(Member.id)
        pre.members.update((m.id, m) for m in await _locked(session, members))
    await _read_visits(session, pre, wanted)
    if wanted.conflicts:
        decided = select(SyncConflict.id).where(among(session, SyncConflict.id, wanted.conflicts))
        await _locked(session, decided.order_by(SyncConflict.id))
    return pre


async def _read_visits(session: AsyncSession, pre: Preloaded, wanted: _Wanted) -> None:
    """The visits, locked with their households, and the answers of the batch already stored."""
    if wanted.visits:
        pre.visits.update(await _visits(session, wanted.visits))
        pre.households.update((household.id, household) for _, household in pre.visits.values())
    if wanted.observations:
        stored = select(Observation).where(among(session, Observation.id, wanted.observations))
        pre.observations.update((o.id, o) for o in (await session.execute(stored)).scalars())


@dataclass
class _Wanted:
    """The ids a batch names, by table."""

    households: set[uuid.UUID] = field(default_factory=set)
    members: set[uuid.UUID] = field(default_factory=set)
    visits: set[uuid.UUID] = field(default_factory=set)
    conflicts: set[uuid.UUID] = field(default_factory=set)
    observations: set[uuid.UUID] = field(default_factory=set)

    def visits_only(self) -> bool:
        return not (self.households or self.members or self.conflicts)

    @classmethod
    def of(cls, mutations: Iterable[Mutation]) -> _Wanted:
        wanted = cls()
        for m in mutations:
            if isinstance(m, HouseholdUpdateV1 | HouseholdArchiveV1 | MemberCreateV1):
                wanted.households.add(m.household_id)
            elif isinstance(m, MemberUpdateV1 | MemberRemoveV1):
                wanted.members.add(m.member_id)
            elif isinstance(m, VisitAnswerV1 | VisitProposeV1 | VisitSubmitV1):
                wanted.visits.add(m.visit_id)
                if isinstance(m, VisitAnswerV1):
                    wanted.observations.update(o.id for o in m.observations)
            elif isinstance(m, ConflictResolveV1):
                wanted.conflicts.add(m.conflict_id)
            # household.create locks nothing: its rows are new (a race for its id is handled at commit)
        return wanted


async def _locked(session: AsyncSession, query: Select[T]) -> Sequence[T]:
    # In id order: two pushes locking overlapping rows take the locks in the same order.
    return (await session.execute(query.with_for_update())).scalars().all()


async def _visits(
    session: AsyncSession, ids: set[uuid.UUID]
) -> list[tuple[uuid.UUID, tuple[Visit, Household]]]:
    query = (
        select(Visit, Household)
        .join(Household, Household.id == Visit.household_id)
        .where(among(session, Visit.id, ids))
        .options(selectinload(Visit.team))
        .order_by(Household.id, Visit.id)  # households locked in id order, like the query above
        # PostgreSQL locks a row's tables in the order OF names them: the household before its visit.
        .with_for_update(of=(Household, Visit))
    )
    return [(visit.id, (visit, household)) for visit, household in (await session.execute(query)).all()]
