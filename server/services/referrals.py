"""A household's job referrals across its visits, and each member's count of unjustified refusals.

The rule and how referrals are told apart live in `server/domain/referrals.py`; this reads the visits.
"""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.households import JobReferralOut, JobReferralsOut, MemberReferralsOut
from server.db.models import Observation, Visit, VisitStatus
from server.domain import id_numbers, referrals
from server.services import households, visits
from server.services.actor import Actor


async def of_household(session: AsyncSession, actor: Actor, household_id: uuid.UUID) -> JobReferralsOut:
    """Every visit of the household counts, whatever its status: a referral recorded in a visit still in
    progress is shown unconfirmed, so a reviewer sees a third refusal coming before approving it."""
    await households.get(session, actor, household_id, archived=True, members=False)
    household_visits = await _visits(session, household_id)
    arrived = await _referral_answers(session, [v.id for v in household_visits])
    recorded = [
        referrals.RecordedVisit(
            visit_id=visit.id,
            created_at=visit.created_at,
            approved=visit.status == VisitStatus.approved,
            answers=visits.folded(arrived.get(visit.id, [])).get(referrals.TEMPLATE, {}),
        )
        for visit in household_visits
    ]
    return JobReferralsOut(
        household_id=household_id,
        refusals_that_reduce_or_stop=referrals.REFUSALS_THAT_REDUCE_OR_STOP,
        members=[_member_out(t) for t in referrals.tally(recorded)],
    )


async def _visits(session: AsyncSession, household_id: uuid.UUID) -> list[Visit]:
    query = select(Visit).where(Visit.household_id == household_id).order_by(Visit.created_at)
    return list((await session.execute(query)).scalars())


async def _referral_answers(
    session: AsyncSession, visit_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Observation]]:
    """The answers to Form B's referral group of these visits, per visit in arrival order: one query for
    all of them, not every answer of every visit."""
    query = (
        select(Observation)
        .where(
            Observation.visit_id.in_(visit_ids),
            Observation.template_code == referrals.TEMPLATE,
            or_(Observation.item == referrals.GROUP, Observation.item.startswith(f"{referrals.GROUP}.")),
        )
        .order_by(Observation.visit_id, Observation.ordinal)
    )
    by_visit: dict[uuid.UUID, list[Observation]] = {}
    for obs in (await session.execute(query)).scalars():
        by_visit.setdefault(obs.visit_id, []).append(obs)
    return by_visit


def _member_out(tally: referrals.MemberTally) -> MemberReferralsOut:
    return MemberReferralsOut(
        member_id=tally.member_id,
        unjustified_refusals=tally.unjustified_refusals,
        confirmed_unjustified_refusals=tally.confirmed_unjustified_refusals,
        reduce_or_stop_due=tally.reduce_or_stop_due,
        referrals=[
            JobReferralOut(
                referred_on=r.referred_on,
                job=id_numbers.mask_text(r.job),  # free text: an ID number typed in leaves masked
                response=r.response,
                refusal_reason=None if r.refusal_reason is None else id_numbers.mask_text(r.refusal_reason),
                visit_id=r.visit_id,
                confirmed=r.confirmed,
            )
            for r in tally.referrals
        ],
    )
