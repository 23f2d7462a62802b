"""Multi-level review of submitted visits: approve (up a level, or lock at the last), return, reject.

Who may act at a level comes from the rule pack: the role, and the level of the tree the reviewer is
bound to (a community reviewer at level 1, a subdistrict reviewer at level 2, a district approver at
level 3 by default). The household must lie under the reviewer's node, as for every read.
"""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.rules import ReviewLevel, RulePack
from schemas.visits import ReviewDecision, VisitOut
from server.db.models import Household, HouseholdStatus, Visit, VisitStatus, VisitTransition
from server.db.types import utcnow
from server.domain.answers import Answers, rows_of
from server.errors import Conflict, Forbidden, stated_reason
from server.services import audit, county_visits, households, photos, transaction
from server.services.actor import Actor
from server.services.rules import level, today, waiting_level, working_calendar
from server.services.visits import (
    amount_contradicts,
    current_answers,
    get,
    notice_problems,
    publicity_ends,
    record_transition,
    visit_out,
)

REASON_MIN_LENGTH = 2
NODE_DEPTH = {"district": 1, "subdistrict": 2, "community": 3}


def _node_level_of(actor: Actor) -> int:
    return actor.jurisdiction_path.strip("/").count("/") + 1


def _may_decide(actor: Actor, at: ReviewLevel) -> bool:
    return actor.role == at.role and _node_level_of(actor) == NODE_DEPTH[at.node_level]


def _require_authority(actor: Actor, at: ReviewLevel) -> None:
    if not _may_decide(actor, at):
        raise Forbidden(
            f"Level '{at.code}' is decided by a {at.role} of a {at.node_level}.", code="not_your_review_level"
        )


def _require_some_level(actor: Actor, rules: RulePack) -> None:
    """Checked before anything about the file: someone who decides at no level of the pack (a field
    worker, an administrator) hears that the review is not theirs, not that the file changed since they
    read it, which would say that reading it again would let them decide."""
    if not any(_may_decide(actor, at) for at in rules.review_levels):
        raise Forbidden(
            "Your role and node decide at no review level; "
            + ", ".join(f"'{at.code}' by a {at.role} of a {at.node_level}" for at in rules.review_levels)
            + ".",
            code="not_your_review_level",
        )


def _require_last_level(visit: Visit, rules: RulePack) -> None:
    """Refusing a file (不予确认) is the confirming level's decision: the county's, or the level it is
    delegated to (2021 办法 Art 21). The levels below give an opinion: they pass the file on or return it
    to the team with their comments, and a refusal there would lock it before the county saw it."""
    if visit.review_level < len(rules.review_levels):
        last = rules.review_levels[-1]
        raise Forbidden(
            f"Only the last level ('{last.code}') refuses a file; approve it with your comments, or return it.",
            code="reject_at_last_level_only",
        )


async def decide(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, decision: ReviewDecision, rules: RulePack
) -> VisitOut:
    visit, household = await get(session, actor, visit_id, lock=True)  # outside their node: 404
    _require_some_level(actor, rules)
    decision = _with_reason_stripped(decision)
    if await _decided_already(session, actor, visit, decision, rules):
        return await visit_out(session, visit, household, rules)  # the same decision sent again
    unreceived = await _require_seen_as_is(session, visit, decision)
    if visit.status != VisitStatus.in_review:
        raise Conflict(f"The visit is {visit.status}, not waiting for review.", code="not_in_review")
    if (waiting := waiting_level(rules, visit.review_level)) != visit.review_level:
        visit.review_level = waiting  # sent up under a pack with more levels: decided at this one's last
    at = level(rules, visit.review_level)
    _require_authority(actor, at)
    if decision.decision == "reject":
        _require_last_level(visit, rules)
    county_visit = None
    if decision.decision != "return" and visit.review_level == len(rules.review_levels):
        first_submitted = await county_visits.first_submitted_on(session, visit)
        county_visits.require_county_visit(
            await current_answers(session, visit.id), decision, first_submitted
        )
        county_visit = decision.county_home_visit_on
    before, number = visit.status, visit.review_level
    missing: list[dict[str, str | None]] = []
    if decision.decision == "approve":
        missing = _missing_evidence_accepted(unreceived, decision)
        await _approve(session, actor, visit, household, at, rules)
    elif decision.decision == "return":
        visit.status, visit.review_level, visit.review_due = VisitStatus.returned, 0, None
    else:
        visit.status, visit.review_level, visit.review_due = VisitStatus.rejected, 0, None
        visit.locked_at = utcnow()
    visit.version += 1
    record_transition(
        session,
        actor,
        visit,
        decision.decision,
        before,
        rules,
        reason=decision.reason,
        at_level=number,
        county_home_visit_on=county_visit,
    )
    audit.record(
        session,
        actor,
        f"visit.{decision.decision}",
        "visit",
        visit.id,
        {"level": number, "level_code": at.code, "to": visit.status}
        | ({"missing_evidence": [m["sha256"] for m in missing]} if missing else {})
        | ({"county_home_visit_on": county_visit} if county_visit else {}),
        reason=decision.reason,
    )
    await transaction.commit(session)
    return await visit_out(session, visit, household, rules)


async def _decided_already(
    session: AsyncSession, actor: Actor, visit: Visit, decision: ReviewDecision, rules: RulePack
) -> bool:
    """This decision is the visit's latest step, taken by this reviewer with this reason: a console that
    lost the answer sends it again, and must hear it was done, not that the visit moved on (an approval
    moves it to the next level, where the same reviewer has no say). No reviewer decides twice in a row
    on purpose: after a decision the visit waits for another level or for the team."""
    latest = (
        await session.execute(
            select(VisitTransition)
            .where(VisitTransition.visit_id == visit.id)
            .order_by(VisitTransition.at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return (
        latest is not None
        and visit.version == decision.version + 1  # that decision was the one change since it was read
        and latest.actor_id == actor.user_id
        and (latest.action, latest.reason) == (decision.decision, decision.reason)
        and not _still_waiting_where_decided(visit, latest, rules)
    )


async def _require_seen_as_is(
    session: AsyncSession, visit: Visit, decision: ReviewDecision
) -> list[dict[str, str | None]]:
    """The decision was made on the visit as it stands: the same version (answers, proposal, level) and
    the same evidence received. A file returned and resubmitted meanwhile, or a photo that arrived since,
    is evidence the reviewer never saw: they look again and decide on that. Returns the evidence still
    missing (expected, or refused)."""
    present, missing = await photos.arrived_and_missing(session, visit.id)
    if (decision.version, decision.evidence_present) == (visit.version, present):
        return missing
    raise Conflict(
        "The visit or its evidence changed since you read it: look at it again, then decide.",
        code="visit_changed",
        details={
            "version": {"seen": decision.version, "now": visit.version},
            "evidence_present": {"seen": decision.evidence_present, "now": present},
        },
    )


def _still_waiting_where_decided(visit: Visit, latest: VisitTransition, rules: RulePack) -> bool:
    """The visit waits for review at the very level `latest` was decided at, so that decision did not
    move it and this one is no retry of it: a file sent up past the last level of a new rule pack waits
    at that level, where the reviewer who passed it up under the old pack now confirms it."""
    return visit.status == VisitStatus.in_review and waiting_level(rules, visit.review_level) == latest.level


def _with_reason_stripped(decision: ReviewDecision) -> ReviewDecision:
    """The decision with its reason stripped; one to return or reject needs a reason that says something
    (the schema's minimum length counts spaces, and "  " tells the team nothing)."""
    if decision.decision != "approve":
        stated_reason(decision.reason, REASON_MIN_LENGTH, f"To {decision.decision} a visit, say why.")
    return msgspec.structs.replace(decision, reason=(decision.reason or "").strip() or None)


def _missing_evidence_accepted(
    missing: list[dict[str, str | None]], decision: ReviewDecision
) -> list[dict[str, str | None]]:
    """What the answers name and the server has not received (`missing`): nothing, or accepted with a
    reason.

    A reviewer looking at the evidence sees the gaps, but approving without the photos the team took must
    be a decision someone signs, not an oversight (the "look" step's photos are the file's proof).
    """
    if not missing:
        return []
    if not decision.accept_missing_evidence:
        raise Conflict(
            f"{len(missing)} photo(s) or signature image(s) the answers name have not reached the server "
            "(or were refused: status refused, never to come). Wait for the team's tablets to upload them, "
            "return the visit, or approve with accept_missing_evidence and a reason.",
            code="evidence_missing",
            details={"missing": missing},
        )
    stated_reason(decision.reason, REASON_MIN_LENGTH, "To approve while evidence is missing, say why.")
    return missing


async def _approve(
    session: AsyncSession, actor: Actor, visit: Visit, household: Household, at: ReviewLevel, rules: RulePack
) -> None:
    needs_publicity = rules.publicity_template in {t["code"] for t in visit.templates}
    if at.after_publicity and needs_publicity:  # re-checks without a publicize step post no notice
        await _require_publicity_done(session, visit, rules)
    elif needs_publicity and _publicity_checked_below(rules, visit.review_level):
        # An objection received during the publicity may be entered after the level that checked it
        # (`visits._require_new_objections_only`): it holds the file at every level above that one too.
        answers = await current_answers(session, visit.id)
        _require_no_pending_objection(answers.get(rules.publicity_template, {}), rules)
    if visit.review_level < len(rules.review_levels):
        visit.review_level += 1
        calendar = await working_calendar(session, rules)
        visit.review_due = calendar.add_working_days(
            today(), level(rules, visit.review_level).deadline_working_days
        )
        return
    await _require_proposal_current(session, visit, household)
    visit.status, visit.review_level, visit.review_due = VisitStatus.approved, 0, None
    visit.locked_at = utcnow()
    if visit.outcome is not None:  # submission requires one; a proposal of no change changes nothing
        households.put_outcome_into_effect(
            session, actor, household, visit.id, visit.outcome, visit.outcome_amount_fen, today()
        )


def _publicity_checked_below(rules: RulePack, number: int) -> bool:
    """A level below level `number` waits for the publicity: in a pack where that is not the last."""
    return any(lv.after_publicity for lv in rules.review_levels[: number - 1])


async def _require_proposal_current(session: AsyncSession, visit: Visit, household: Household) -> None:
    """The proposal still agrees with the household's benefit, as it had to when proposed: another visit
    approved or a supervisor's correction since may have moved the benefit past it, and carrying it out
    then would do the opposite of what it says (a "raise" that cuts). The team proposes again on the
    household as it stands. An amended revision's proposal, carried over from the approval it amends and
    already in effect, changes nothing and is no outdated one. An archived household gets nothing
    carried out."""
    if visit.outcome is None or household.deleted_at is not None:
        return
    current = household.monthly_benefit_fen
    why = amount_contradicts(visit.outcome, visit.outcome_amount_fen, current) or _stopped_since(
        visit, household
    )
    if why is None or await _carried_and_in_effect(session, visit, household):
        return
    raise Conflict(
        f"The proposal no longer fits the household: {why}. The benefit changed since it was proposed; "
        "return the file so the team proposes again.",
        code="proposal_outdated",
        details={
            "proposal": {"outcome": visit.outcome, "amount_fen": visit.outcome_amount_fen},
            "monthly_benefit_fen": current,
        },
    )


def _stopped_since(visit: Visit, household: Household) -> str | None:
    """A stop approved on another visit meanwhile: the household is exited, and a raise, a reduction or
    a phase-out carried out now would pay it again while it stays exited. Only an admission (a new
    application) or another stop still fits it."""
    assert visit.outcome is not None  # _require_proposal_current asks only about a visit with one
    if household.status != HouseholdStatus.exited or visit.outcome in ("admit", "stop"):
        return None
    if not households.outcome_values(visit.outcome, visit.outcome_amount_fen):
        return None  # changes nothing
    return (
        f"the household's benefit was stopped (status exited): a {visit.outcome} has nothing left to change"
    )


async def _carried_and_in_effect(session: AsyncSession, visit: Visit, household: Household) -> bool:
    """The visit is an amended revision whose proposal is the approved one of the revision it amends, and
    the household stands where that approval put it."""
    if visit.previous_id is None:
        return False
    previous = await session.get(Visit, visit.previous_id)
    proposal = (visit.outcome, visit.outcome_amount_fen)
    if previous is None or (previous.outcome, previous.outcome_amount_fen) != proposal:
        return False
    assert visit.outcome is not None  # _require_proposal_current asks only about a visit with one
    effect = households.outcome_values(visit.outcome, visit.outcome_amount_fen)
    return all(getattr(household, field) == value for field, value in effect.items())


async def _require_publicity_done(session: AsyncSession, visit: Visit, rules: RulePack) -> None:
    """The 7-day publicity (公示) ran its course from a real notice date without being taken down early, and
    no objection is left open."""
    answers = await current_answers(session, visit.id)
    ends = publicity_ends(visit, answers, rules)
    if ends is None or today() <= ends:
        raise Conflict(
            "The 7-day publicity (公示) has not ended"
            + (f": it ends on {ends}." if ends else "; no notice date."),
            code="publicity_not_over",
            details={"publicity_ends_on": ends.isoformat() if ends else None},
        )
    for problem in await notice_problems(session, visit, answers, rules):  # submitted before the check
        raise Conflict(problem.message, code=problem.guard, details={"item": problem.item})
    _require_no_pending_objection(answers.get(rules.publicity_template, {}), rules)


def _require_no_pending_objection(answers: Answers, rules: RulePack) -> None:
    """An objection during publicity forces re-investigation or 民主评议 before the file goes on."""
    group = rules.objection_outcome_item.rsplit(".", 1)[0]
    pending = [
        row
        for row in rows_of(answers, group)
        if answers.get((rules.objection_outcome_item, row)) in (None, "pending")  # None: recorded in review
    ]
    if pending:
        raise Conflict(
            f"{len(pending)} objection(s) raised during publicity still pending: return the file so the team "
            "can re-investigate or hold a democratic appraisal (民主评议) and record the outcome.",
            code="objection_pending",
            details={"item": f"{rules.publicity_template}:{rules.objection_outcome_item}", "rows": pending},
        )
