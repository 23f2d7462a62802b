"""Read, in a few queries, every record a push batch is about to change.

A batch of 100 mutations would otherwise run 100 locked reads one by one. The preload runs one locked
read per table (in id order, so two pushes lock overlapping rows in the same order and never deadlock)
and the handlers take their records from here. Only the fast pass of a push uses it (see sync_push):
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
    HouseholdArchiveV1,
    HouseholdUpdateV1,
    MemberCreateV1,
    MemberRemoveV1,
    MemberUpdateV1,
    Mutation,
    VisitAnswerV1,
)
from server.db.id_lists import among
from server.db.models import Household, Jurisdiction, Member, Observation, Visit
from server.services.actor import Actor, under

T = TypeVar("T")


@dataclass
class Preloaded:
    communities: frozenset[uuid.UUID] = frozenset()
    households: dict[uuid.UUID, Household] = field(default_factory=dict)
    members: dict[uuid.UUID, Member] = field(default_factory=dict)
    visits: dict[uuid.UUID, tuple[Visit, Household]] = field(default_factory=dict)
    observations: dict[uuid.UUID, Observation] = field(default_factory=dict)
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
    household_ids: set[uuid.UUID] = set()
    member_ids: set[uuid.UUID] = set()
    visit_ids: set[uuid.UUID] = set()
    observation_ids: set[uuid.UUID] = set()
    for m in mutations:
        if isinstance(m, HouseholdUpdateV1 | HouseholdArchiveV1 | MemberCreateV1):
            household_ids.add(m.household_id)
        elif isinstance(m, MemberUpdateV1 | MemberRemoveV1):
            member_ids.add(m.member_id)
        elif isinstance(m, VisitAnswerV1):
            visit_ids.add(m.visit_id)
            observation_ids.update(o.id for o in m.observations)
    communities = select(Jurisdiction.id).where(under(actor))
    pre = Preloaded(communities=frozenset((await session.execute(communities)).scalars()))
    if household_ids:
        targets = select(Household).where(among(session, Household.id, household_ids)).order_by(Household.id)
        pre.households.update((h.id, h) for h in await _locked(session, targets))
    if member_ids:
        members = select(Member).where(among(session, Member.id, member_ids)).order_by(Member.id)
        pre.members.update((m.id, m) for m in await _locked(session, members))
        owners = {m.household_id for m in pre.members.values()} - pre.households.keys()
        if owners:
            of_members = select(Household).where(among(session, Household.id, owners)).order_by(Household.id)
            pre.households.update((h.id, h) for h in await _locked(session, of_members))
    if visit_ids:
        pre.visits.update(await _visits(session, visit_ids))
    if observation_ids:
        stored = select(Observation).where(among(session, Observation.id, observation_ids))
        pre.observations.update((o.id, o) for o in (await session.execute(stored)).scalars())
    return pre


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
        .with_for_update(of=(Visit, Household))
    )
    return [(visit.id, (visit, household)) for visit, household in (await session.execute(query)).all()]
