"""Feedback and petition answers still owed, across the visits of the caller's jurisdiction.

The rules are in `server/domain/follow_ups.py`; this reads the publicize step's answers of every visit in
scope that is not superseded (an amended visit's answers live on in its revision).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Row, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from schemas.rules import RulePack
from schemas.visits import FollowUpOut
from server.db.models import Household, Observation, Visit
from server.domain import follow_ups
from server.services import visits
from server.services.actor import Actor, communities_in_scope
from server.services.rules import today

GROUPS = ("objections", "tip_offs", "petitions")


async def pending(
    session: AsyncSession, actor: Actor, rules: RulePack, community_id: uuid.UUID | None
) -> list[FollowUpOut]:
    """Petitions by due date first, then feedback owed; the oldest received first within each."""
    limits = follow_ups.Limits(rules.petition_acceptance_days, rules.petition_conclusion_days)
    day = today()
    found = []
    for (visit_id, registry_no, community), arrived in (
        await _by_visit(session, actor, rules, community_id)
    ).items():
        answers = visits.folded(arrived).get(rules.publicity_template, {})
        found += [
            FollowUpOut(
                visit_id=visit_id,
                registry_no=registry_no,
                community_id=community,
                kind=owed.kind,
                row_id=owed.row_id,
                received_on=owed.received_on,
                due=owed.due,
                days_overdue=None if owed.due is None else (day - owed.due).days,
            )
            for owed in follow_ups.owed(answers, limits)
        ]
    return sorted(found, key=lambda f: (f.due is None, f.due or day, f.received_on or day, f.registry_no))


_VisitKey = tuple[uuid.UUID, str, uuid.UUID]
"""A visit's id, its household's registry number and community."""


async def _by_visit(
    session: AsyncSession, actor: Actor, rules: RulePack, community_id: uuid.UUID | None
) -> dict[_VisitKey, list[Observation]]:
    """The publicize step's answers to the three groups, per visit, in arrival order."""
    by_visit: dict[_VisitKey, list[Observation]] = {}
    for obs, visit_id, registry_no, community in await _answers(session, actor, rules, community_id):
        by_visit.setdefault((visit_id, registry_no, community), []).append(obs)
    return by_visit


async def _answers(
    session: AsyncSession, actor: Actor, rules: RulePack, community_id: uuid.UUID | None
) -> Sequence[Row[Observation, uuid.UUID, str, uuid.UUID]]:
    successor = aliased(Visit)
    query = (
        select(Observation, Visit.id, Household.registry_no, Household.community_id)
        .join(Visit, Visit.id == Observation.visit_id)
        .join(Household, Household.id == Visit.household_id)
        .where(
            communities_in_scope(actor),
            Observation.template_code == rules.publicity_template,
            or_(
                *(Observation.item == g for g in GROUPS),
                *(Observation.item.startswith(f"{g}.") for g in GROUPS),
            ),
            ~exists().where(successor.previous_id == Visit.id),
        )
        .order_by(Visit.id, Observation.ordinal)
    )
    if community_id is not None:
        query = query.where(Household.community_id == community_id)
    return (await session.execute(query)).all()
