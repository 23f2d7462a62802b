"""Who investigates a visit: the team a supervisor assigned, and changing it while the file is open.

Field workers fall ill, go on leave or leave the job while a visit they were assigned is still open. The
rules need two investigators on every home visit, so a reviewer or an admin puts someone else on the team
instead of assigning the household a second visit (which would split its answers over two files).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.rules import RulePack
from schemas.visits import TeamChange, VisitOut
from server.db.models import Visit, VisitStatus, VisitTeamMember
from server.errors import Conflict, Forbidden, stated_reason
from server.services import audit, transaction, visits
from server.services.actor import Actor

TEAM_REASON_MIN_LENGTH = 2


async def change(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, data: TeamChange, rules: RulePack
) -> VisitOut:
    """Put `data.team` on the visit, in that order. The same team sent again (a console that lost the
    answer) answers the visit as it stands and writes nothing, whatever its version by then."""
    if actor.role not in visits.ASSIGNER_ROLES:
        raise Forbidden("Only reviewers and administrators change a visit's team.")
    reason = stated_reason(data.reason, TEAM_REASON_MIN_LENGTH, "Say why the team changes.")
    visit, household = await visits.get(session, actor, visit_id, lock=True)
    before = [m.user_id for m in visit.team]
    if set(before) == set(data.team):
        return await visits.visit_out(session, visit, household, rules)
    if visit.status in (VisitStatus.approved, VisitStatus.rejected):
        raise Conflict(f"The visit is {visit.status} and locked: its team is on record.", code="visit_locked")
    if data.version != visit.version:
        raise Conflict(
            "The visit changed since you read it: look at it again, then change its team.",
            code="visit_changed",
            details={"version": {"seen": data.version, "now": visit.version}},
        )
    visits.check_team_shape(data.team)
    await visits.check_team(session, data.team, household)
    await _replace(session, visit, data.team)
    visit.version += 1  # the devices' copy of the visit carries its team: it is stamped anew
    visits.record_transition(session, actor, visit, "team", visit.status, rules, reason=reason)
    changes = {"from": [str(u) for u in before], "to": [str(u) for u in data.team]}
    audit.record(session, actor, "visit.team", "visit", visit.id, changes, reason=reason)
    await transaction.commit(session)
    session.expire(visit, ["team"])  # a read loading the team again does not replace a loaded collection
    visit, household = await visits.get(session, actor, visit.id)
    return await visits.visit_out(session, visit, household, rules)


async def _replace(session: AsyncSession, visit: Visit, team: list[uuid.UUID]) -> None:
    """The team's rows: those who stay keep theirs (with their new place), the others go or come."""
    kept = {m.user_id: m for m in visit.team}
    for member in [m for m in visit.team if m.user_id not in team]:
        await session.delete(member)
    for position, user_id in enumerate(team):
        if user_id in kept:
            kept[user_id].position = position
        else:
            session.add(VisitTeamMember(visit_id=visit.id, user_id=user_id, position=position))
