"""Visits: assignment to a two-person team, answers, the outcome proposal, submission, amendment.

Answers are observations, appended and never changed. Submission runs the "four no-let-go" guards
(四个不放过) through `server.domain.answers` and refuses with the full list of what is missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import Select, and_, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from schemas.rules import Purpose, RulePack
from schemas.visits import (
    GpsFix,
    ObservationIn,
    ObservationOut,
    Outcome,
    OverdueVisit,
    Proposal,
    Provider,
    SubmissionProblem,
    TeamMember,
    TemplateRef,
    VisitCreate,
    VisitOut,
    VisitPage,
)
from server.db import observation_rows
from server.db.models import (
    EDITABLE,
    AuditEvent,
    Household,
    Member,
    Observation,
    User,
    Visit,
    VisitStatus,
    VisitTeamMember,
    VisitTransition,
)
from server.db.observation_rows import ObservationRow
from server.db.types import utcnow
from server.domain import answers as rules_of_answers
from server.domain import id_numbers
from server.domain.calendar import CHINA_STANDARD_TIME, is_overdue
from server.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    created_otherwise,
    id_in_use,
    stated_reason,
)
from server.services import audit, lock_order, templates, transaction
from server.services.actor import Actor, communities_in_scope
from server.services.rules import level, rules_tag, today, waiting_level, working_calendar
from sync import answer_merge

ASSIGNER_ROLES = frozenset({"reviewer", "admin"})
NEEDS_AMOUNT = frozenset({"admit", "raise", "reduce"})
PROPOSAL_REASON_MIN_LENGTH = 2


# -- reading -------------------------------------------------------------------------------------


def _scoped(actor: Actor) -> Select[Visit, Household]:
    return (
        select(Visit, Household)
        .join(Household, Household.id == Visit.household_id)
        .where(communities_in_scope(actor))
        .options(selectinload(Visit.team))
    )


async def get(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, *, lock: bool = False
) -> tuple[Visit, Household]:
    query = _scoped(actor).where(Visit.id == visit_id)
    if lock:
        # The household too: a record's community decides whose devices get its changes, and a
        # household moving community meanwhile must wait for this write, not race it. The household
        # first: the order all writes lock in (lock_order).
        await lock_order.lock_household_of_visit(session, visit_id)
        query = query.with_for_update(of=(Visit, Household))
    row = (await session.execute(query)).one_or_none()
    if row is None:
        raise NotFound("No such visit.")
    return row[0], row[1]


async def visit_out(session: AsyncSession, visit: Visit, household: Household, rules: RulePack) -> VisitOut:
    names = await _names(session, [m.user_id for m in visit.team])
    ends = await publicity_ends_on(session, visit, rules)
    due = visit.review_due if visit.status == VisitStatus.in_review else visit.due_date
    return VisitOut(
        id=visit.id,
        household_id=visit.household_id,
        registry_no=household.registry_no,
        community_id=household.community_id,
        purpose=visit.purpose,
        status=visit.status,  # type: ignore[arg-type]
        due_date=visit.due_date,
        overdue=visit.status in (*EDITABLE, VisitStatus.in_review)
        and due is not None
        and is_overdue(due, today()),
        review_level=waiting_level(rules, visit.review_level),
        review_level_code=level(rules, visit.review_level).code if visit.review_level else None,
        review_due=visit.review_due,
        publicity_ends_on=ends,
        templates=[TemplateRef(t["code"], t["version"]) for t in visit.templates],
        team=[TeamMember(m.user_id, *names[m.user_id]) for m in visit.team],
        proposal=_proposal(visit),
        revision=visit.revision,
        previous_id=visit.previous_id,
        created_at=visit.created_at,
        submitted_at=visit.submitted_at,
        locked_at=visit.locked_at,
        version=visit.version,
    )


def _proposal(visit: Visit) -> Proposal | None:
    if visit.outcome is None:
        return None
    return Proposal(
        outcome=cast(Outcome, visit.outcome),
        amount_fen=visit.outcome_amount_fen,
        reason=id_numbers.mask_text(
            visit.outcome_reason or ""
        ),  # free text: an ID number typed in leaves masked
    )


async def _names(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
    rows = await session.execute(
        select(User.id, User.username, User.display_name).where(User.id.in_(user_ids))
    )
    return {uid: (username, display) for uid, username, display in rows}


async def list_page(
    session: AsyncSession,
    actor: Actor,
    rules: RulePack,
    *,
    community_id: uuid.UUID | None = None,
    status: str | None = None,
    review_level: int | None = None,
    due_from: dt.date | None = None,
    due_to: dt.date | None = None,
    mine: bool = False,
    cursor: str | None = None,
    limit: int = 100,
) -> VisitPage:
    """Keyset pagination on (due_date, id)."""
    query = filtered(actor, community_id, status, review_level, due_from, due_to, mine)
    query = query.order_by(Visit.due_date, Visit.id).limit(limit + 1)
    if cursor:
        after_due, after_id = _decode_cursor(cursor)
        query = query.where(tuple_(Visit.due_date, Visit.id) > tuple_(after_due, after_id))
    rows = list((await session.execute(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [await visit_out(session, v, h, rules) for v, h in rows]
    next_cursor = _encode_cursor(rows[-1][0]) if more else None
    return VisitPage(items=items, next_cursor=next_cursor)


def filtered(
    actor: Actor,
    community_id: uuid.UUID | None,
    status: str | None,
    review_level: int | None,
    due_from: dt.date | None,
    due_to: dt.date | None,
    mine: bool,
) -> Select[Visit, Household]:
    query = _scoped(actor)
    if community_id is not None:
        query = query.where(Household.community_id == community_id)
    if status is not None:
        query = query.where(Visit.status == status)
    if review_level is not None:
        query = query.where(Visit.review_level == review_level)
    if due_from is not None:
        query = query.where(Visit.due_date >= due_from)
    if due_to is not None:
        query = query.where(Visit.due_date <= due_to)
    if mine:
        query = query.where(
            Visit.id.in_(select(VisitTeamMember.visit_id).where(VisitTeamMember.user_id == actor.user_id))
        )
    return query


def _encode_cursor(visit: Visit) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([visit.due_date.isoformat(), str(visit.id)])).decode()


def _decode_cursor(cursor: str) -> tuple[dt.date, uuid.UUID]:
    try:
        due, raw = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=tuple[str, str])
        return dt.date.fromisoformat(due), uuid.UUID(raw)
    except (ValueError, msgspec.DecodeError):
        raise Invalid("The cursor is not one this server handed out.", code="bad_cursor") from None


# -- assignment ----------------------------------------------------------------------------------


DUE_DATE_REACH = dt.timedelta(days=366)


async def create(session: AsyncSession, actor: Actor, data: VisitCreate, rules: RulePack) -> VisitOut:
    if actor.role not in ASSIGNER_ROLES:
        raise Forbidden("Only reviewers and administrators assign visits.")
    # Locked, as every write to a household's visits: a move to another community waits for this
    # assignment, or this one waits for the move and sees it (the team and the feed both follow it).
    household = (
        await session.execute(
            select(Household)
            .where(Household.id == data.household_id, communities_in_scope(actor))
            .with_for_update(of=Household)
        )
    ).scalar_one_or_none()
    if household is None:
        raise NotFound("No such household.")
    check_team_shape(data.team)
    if data.id is not None and (earlier := await _visit_with_team(session, data.id)) is not None:
        # Before the checks of what may change later (an archived household, a worker who left): the
        # visit was made when they held, and a retry arriving since answers it all the same.
        return await _sent_again(session, actor, earlier, data, rules)
    if household.deleted_at is not None:
        raise Conflict(
            "The household is archived: no visit can be assigned to it.", code="household_archived"
        )
    _require_purpose(rules, data.purpose)
    if data.due_date is not None and abs(data.due_date - today()) > DUE_DATE_REACH:
        # A visit entered late may be due already, but not years off: a typo would sit overdue forever.
        raise Invalid(
            f"A due date must lie within {DUE_DATE_REACH.days} days of today ({today()}).",
            details=[{"field": "due_date", "message": f"more than {DUE_DATE_REACH.days} days from today"}],
        )
    await check_team(session, data.team, household)
    pinned = [await templates.latest_published(session, code) for code in rules.templates[data.purpose]]
    visit = Visit(
        id=data.id or uuid.uuid4(),
        household_id=household.id,
        purpose=data.purpose,
        due_date=data.due_date or await _due_from_today(session, rules, data.purpose),
        templates=[{"code": t.code, "version": t.version} for t in pinned],
        rules=rules_tag(rules),
        created_by=actor.user_id,
    )
    try:
        session.add(visit)
        await session.flush()
        session.add_all(
            VisitTeamMember(visit_id=visit.id, user_id=uid, position=i) for i, uid in enumerate(data.team)
        )
        record_transition(session, actor, visit, "assign", None, rules)
        fields = msgspec.to_builtins(data) | {"id": str(visit.id)}
        audit.record(session, actor, "visit.create", "visit", visit.id, fields)
        await transaction.commit(session)
    except IntegrityError as exc:
        # Another request inserted this id since the check above, for another household (one household's
        # assignments take turns on its row; on PostgreSQL both found the id free): its visit answers this
        # one as if this had come second (409 duplicate_id).
        await transaction.rollback(session)
        if (
            not transaction.lost_race(session, exc)
            or data.id is None
            or (earlier := await _visit_with_team(session, data.id)) is None
        ):
            raise
        return await _sent_again(session, actor, earlier, data, rules)
    visit, household = await get(session, actor, visit.id)
    return await visit_out(session, visit, household, rules)


def _require_purpose(rules: RulePack, purpose: str) -> None:
    """A locality's pack may list only the purposes it runs (no data-match visits without a data feed):
    another has neither checklists nor a due date here."""
    if purpose not in rules.templates or purpose not in rules.visit_due_working_days:
        raise Invalid(
            f"The rule pack {rules_tag(rules)} has no {purpose} visits.",
            code="purpose_not_in_rules",
            details=[{"field": "purpose", "message": f"one of {sorted(rules.templates)}"}],
        )


async def _visit_with_team(session: AsyncSession, visit_id: uuid.UUID) -> Visit | None:
    """The visit of this id whatever its scope (an id is taken for everyone), with its team."""
    query = select(Visit).where(Visit.id == visit_id).options(selectinload(Visit.team))
    return (await session.execute(query)).scalar_one_or_none()


async def _sent_again(
    session: AsyncSession, actor: Actor, visit: Visit, data: VisitCreate, rules: RulePack
) -> VisitOut:
    """A create naming an existing visit's id is the same create sent again (a console that lost the
    answer) only if it asks for what that visit was assigned: its household, purpose and team (the same
    people, in any order, as assigned: not as a later change of team left it), and the due date it was
    given, if it names one, so a retry arriving after the visit moved on still matches. It then answers the visit as
    it stands and writes nothing; anything else is refused, never merged: it would be lost silently."""
    if visit.household_id != data.household_id:
        raise id_in_use("visit", visit.id)
    if (
        visit.purpose != data.purpose
        or await _assigned_team(session, visit) != set(data.team)
        or (data.due_date is not None and data.due_date != visit.due_date)
    ):
        raise created_otherwise("visit", visit.id, "assign a different visit under a new id")
    visit, household = await get(session, actor, visit.id)
    return await visit_out(session, visit, household, rules)


async def _assigned_team(session: AsyncSession, visit: Visit) -> set[uuid.UUID]:
    """The team the visit was assigned: its team now, or, once a supervisor changed it, the team its
    assignment's audit row names (`visit_teams`)."""
    events = (
        await session.execute(
            select(AuditEvent.action, AuditEvent.changes)
            .where(
                AuditEvent.entity_type == "visit",
                AuditEvent.entity_id == str(visit.id),
                AuditEvent.action.in_(["visit.create", "visit.team"]),
            )
            .order_by(AuditEvent.id)
        )
    ).all()
    created = next((changes for action, changes in events if action == "visit.create"), None)
    if created is None or not any(action == "visit.team" for action, _ in events):
        return {m.user_id for m in visit.team}  # a visit the demo seed or an import made has no such row
    return {uuid.UUID(u) for u in created["team"]}


async def _due_from_today(session: AsyncSession, rules: RulePack, purpose: str) -> dt.date:
    """The rule pack's working days for the purpose, counted from today on the working calendar."""
    calendar = await working_calendar(session, rules)
    return calendar.add_working_days(today(), rules.visit_due_working_days[cast(Purpose, purpose)])


def check_team_shape(team: list[uuid.UUID]) -> None:
    if len(set(team)) != len(team) or len(team) < 2:
        raise Invalid("A visit needs at least two different investigators.", code="team_invalid")


async def check_team(session: AsyncSession, team: list[uuid.UUID], household: Household) -> None:
    """Every investigator is an active field worker of the household's community (today)."""
    found = (
        await session.execute(
            select(User.id).where(
                User.id.in_(team),
                User.role == "field_worker",
                User.active.is_(True),
                User.jurisdiction_id == household.community_id,
            )
        )
    ).scalars()
    missing = set(team) - set(found)
    if missing:
        raise Invalid(
            "Every investigator must be an active field worker of the household's community.",
            code="team_invalid",
            details=[{"field": "team", "message": f"not eligible: {sorted(str(m) for m in missing)}"}],
        )


def record_transition(
    session: AsyncSession,
    actor: Actor,
    visit: Visit,
    action: str,
    from_status: str | None,
    rules: RulePack,
    *,
    reason: str | None = None,
    at_level: int | None = None,
    county_home_visit_on: dt.date | None = None,
) -> None:
    """A timeline row. `at_level` is the review level a decision was taken at (default: the visit's);
    `county_home_visit_on` the confirming level's own home visit a decision there rests on."""
    number = at_level if at_level is not None else visit.review_level
    session.add(
        VisitTransition(
            id=uuid.uuid4(),
            visit_id=visit.id,
            actor_id=actor.user_id,
            action=action,
            from_status=from_status,
            to_status=visit.status,
            level=number or None,
            level_code=level(rules, number).code if number else None,
            reason=reason,
            rules=rules_tag(rules),
            county_home_visit_on=county_home_visit_on,
        )
    )


# -- answers -------------------------------------------------------------------------------------


def _require_team(visit: Visit, actor: Actor) -> None:
    if actor.user_id not in {m.user_id for m in visit.team}:
        raise Forbidden("Only the visit's investigators answer it.", code="not_on_team")


def require_editable(visit: Visit) -> None:
    if visit.status in (VisitStatus.approved, VisitStatus.rejected):
        raise Conflict(
            f"The visit is {visit.status} and locked; amend it to make a new revision.", code="visit_locked"
        )
    if visit.status == VisitStatus.in_review:
        raise Conflict(
            "The visit is under review; it can be changed once it is returned.", code="visit_in_review"
        )


async def answer(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, batch: list[ObservationIn], rules: RulePack
) -> list[ObservationOut]:
    """Append observations, all or none. Re-sending one already stored (same id, same content) is a no-op.

    Two batches for one visit take turns on its lock, but one for another visit may store an id of this
    batch after this one found it free (on PostgreSQL): the commit then fails on the key, and the batch
    is answered once more from the start, reading that observation as a batch arriving after it does
    (`409 observation_conflict`)."""
    try:
        return await _append(session, actor, visit_id, batch, rules)
    except IntegrityError as exc:
        await transaction.rollback(session)
        if not transaction.lost_race(session, exc):
            raise
    return await _append(session, actor, visit_id, batch, rules)


async def _append(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, batch: list[ObservationIn], rules: RulePack
) -> list[ObservationOut]:
    visit, _ = await get(session, actor, visit_id, lock=True)
    stored = await already_stored(session, batch)
    await add_answers(session, actor, visit, batch, rules, stored)  # adds the new ones to `stored`
    await transaction.commit(session)
    return [observation_out(stored[obs.id]) for obs in batch]


StoredAnswers = dict[uuid.UUID, Observation | ObservationRow]
"""Observations of a batch by id: read from the database, or appended by this transaction."""


async def add_answers(
    session: AsyncSession,
    actor: Actor,
    visit: Visit,
    batch: list[ObservationIn],
    rules: RulePack,
    stored: StoredAnswers,
) -> None:
    """Append to a visit read with its lock. `stored` holds those of the batch's observations already
    stored (a sync push reads all of its batch's at once); the new ones are added to it. The caller
    commits (a push flushes a whole batch at once)."""
    _require_team(visit, actor)
    fresh = _new_only(visit, batch, stored)
    if not fresh:
        return
    in_review = visit.status == VisitStatus.in_review
    if not in_review or not _objection_answers_only(fresh, rules):
        require_editable(visit)
    pinned = {t["code"]: t["version"] for t in visit.templates}
    problems = [p for i, obs in enumerate(fresh) for p in await _obs_problems(session, i, obs, pinned)]
    if problems:
        raise Invalid("; ".join(f"{p['field']}: {p['message']}" for p in problems), details=problems)
    if in_review:  # after the values' own checks: a mistyped date is a slip to correct, not a late one
        await _require_new_objections_only(session, visit, fresh, rules)
    arrived = utcnow()
    for obs in fresh:
        visit.answer_count += 1
        row = _observation(visit, obs, pinned[obs.template], actor, arrived)
        stored[row.id] = row
        observation_rows.append(session.sync_session, row)  # written at the flush, with the visit's change
    if visit.status == VisitStatus.assigned:
        visit.status = VisitStatus.in_progress
        record_transition(session, actor, visit, "start", VisitStatus.assigned, rules)
    visit.version += 1
    audit.record(
        session,
        actor,
        "visit.answer",
        "visit",
        visit.id,
        {"observations": [{"id": str(o.id), "template": o.template, "item": o.item} for o in fresh]},
    )


OBJECTION_RECEIVED = "received_on"
"""The day an objection was received: an item of the objection group, beside the rule pack's outcome item."""


async def _require_new_objections_only(
    session: AsyncSession, visit: Visit, fresh: list[ObservationIn], rules: RulePack
) -> None:
    """A file under review is locked, but the publicity (公示) runs while it is reviewed, and what the
    neighbours object during it must be on file (2021 办法 Art 19: an objection forces re-investigation or
    民主评议 before the county confirms). So answers may add objection rows to the publicize step, rows
    begun since the file was submitted: each received within the publicity period and still `pending`
    (or without an outcome yet), which holds the file back at the `after_publicity` level until it is
    returned and settled. The answers are all to that group (`_objection_answers_only`; anything else
    waits for the return, `409 visit_in_review`) and their values passed their items' checks."""
    group = rules.objection_outcome_item.rsplit(".", 1)[0]
    settled = await _rows_before_submission(session, visit, rules.publicity_template, group)
    answers = await current_answers(session, visit.id)
    step = answers.get(rules.publicity_template, {})
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    for obs in fresh:
        row = str(obs.row_id) if obs.row_id else None
        if row is None or row in settled:
            raise Conflict(
                "The visit is under review: an objection already on file is settled once it is returned.",
                code="visit_in_review",
                details={"row_id": row},
            )
        current = {path.removeprefix(group + "."): v for (path, r), v in step.items() if r == row}
        rows[row] = (rows.get(row) or current) | {obs.item.removeprefix(group + "."): obs.value}
    posted, _ = _notice_dates(visit, answers, rules)
    ends = publicity_ends(visit, answers, rules)
    for row, values in rows.items():
        _require_pending_in_period(row, values, posted, ends, rules)


def _objection_answers_only(fresh: list[ObservationIn], rules: RulePack) -> bool:
    """Every answer is to the publicize step's objection group: the only answers a file in review takes."""
    group = rules.objection_outcome_item.rsplit(".", 1)[0]
    return all(o.template == rules.publicity_template and o.item.startswith(group + ".") for o in fresh)


async def _rows_before_submission(session: AsyncSession, visit: Visit, template: str, group: str) -> set[str]:
    """Rows of the repeat group answered before the visit was last submitted: the file under review."""
    query = select(Observation.row_id).where(
        Observation.visit_id == visit.id,
        Observation.template_code == template,
        or_(Observation.item == group, Observation.item.startswith(group + ".")),
        Observation.row_id.is_not(None),
        Observation.received_at <= visit.submitted_at,
    )
    return {str(row) for row in (await session.execute(query)).scalars()}


def _require_pending_in_period(
    row: str, values: dict[str, Any], posted: dt.date | None, ends: dt.date | None, rules: RulePack
) -> None:
    """A new objection on a file under review: received during the publicity, not settled yet."""
    if values.get(rules.objection_outcome_item.rsplit(".", 1)[1]) not in (None, "pending"):
        raise Conflict(
            "The visit is under review: an objection recorded now stays pending until the file is returned "
            "for re-investigation or democratic appraisal (民主评议).",
            code="visit_in_review",
            details={"row_id": row, "item": rules.objection_outcome_item},
        )
    received = values.get(OBJECTION_RECEIVED)
    if received is None:
        return  # the row is completed in later answers; submission requires the date anyway
    try:
        day: dt.date | None = dt.date.fromisoformat(received)
    except (TypeError, ValueError):
        day = None  # not reached: the item's own check refused the value (422) before
    if day is not None and posted is not None and ends is not None and posted <= day <= min(ends, today()):
        return
    raise Conflict(
        "Only an objection received during the publicity "
        + (f"({posted} to {ends})" if posted and ends else "(no notice date)")
        + " is recorded on a file under review; a complaint after it goes through its own channel.",
        code="objection_outside_publicity",
        details={
            "row_id": row,
            "publicity_starts_on": posted.isoformat() if posted else None,
            "publicity_ends_on": ends.isoformat() if ends else None,
        },
    )


async def already_stored(session: AsyncSession, batch: list[ObservationIn]) -> StoredAnswers:
    query = select(Observation).where(Observation.id.in_([b.id for b in batch]))
    return {o.id: o for o in (await session.execute(query)).scalars()}


def _new_only(visit: Visit, batch: list[ObservationIn], stored: StoredAnswers) -> list[ObservationIn]:
    """Drop observations already stored; refuse an id reused for different content."""
    if len({o.id for o in batch}) != len(batch):
        raise Invalid("An observation id appears twice in the batch.", code="duplicate_id")
    fresh = []
    for obs in batch:
        earlier = stored.get(obs.id)
        if earlier is None:
            fresh.append(obs)
        elif earlier.visit_id != visit.id:
            raise Conflict(f"Observation {obs.id} was stored for another visit.", code="observation_conflict")
        elif (earlier.template_code, earlier.item, earlier.value, earlier.base) != (
            obs.template,
            obs.item,
            obs.value,
            obs.base,
        ):
            raise Conflict(
                f"Observation {obs.id} was stored with other content.", code="observation_conflict"
            )
    return fresh


async def _obs_problems(
    session: AsyncSession, i: int, obs: ObservationIn, pinned: dict[str, int]
) -> list[dict[str, str]]:
    field = f"observations[{i}]"
    if obs.template not in pinned:
        return [
            {
                "field": f"{field}.template",
                "message": f"{obs.template!r} is not one of this visit's checklists",
            }
        ]
    template, paths = await templates.pinned_with_paths(session, obs.template, pinned[obs.template])
    item = paths.items.get(obs.item)
    if item is None:
        return [
            {
                "field": f"{field}.item",
                "message": f"{obs.template} v{template.version} has no item {obs.item!r}",
            }
        ]
    in_repeat = obs.item in paths.repeated
    if in_repeat != (obs.row_id is not None):
        need = "needs a row_id (it is inside a repeat group)" if in_repeat else "takes no row_id"
        return [{"field": f"{field}.row_id", "message": f"{obs.item} {need}"}]
    return [
        {"field": f"{field}.{name}", "message": f"{obs.item}: {why}"}
        for name, value in (("value", obs.value), ("base", obs.base))
        if (why := rules_of_answers.check_value(item, value))
    ]


def _observation(
    visit: Visit, obs: ObservationIn, template_version: int, actor: Actor, arrived: dt.datetime
) -> ObservationRow:
    gps = obs.gps
    return ObservationRow(
        id=obs.id,
        visit_id=visit.id,
        ordinal=visit.answer_count,
        template_code=obs.template,
        template_version=template_version,
        item=obs.item,
        row_id=obs.row_id,
        value=obs.value,
        base=obs.base,
        note=obs.note,
        lat=gps.lat if gps else None,
        lon=gps.lon if gps else None,
        accuracy_m=gps.accuracy_m if gps else None,
        fix_time=gps.fix_time if gps else None,
        provider=gps.provider if gps else None,
        mock_location=gps.mock if gps else None,
        device_time=obs.device_time,
        received_at=arrived,
        author_id=actor.user_id,
        device_id=actor.device_id,
    )


def observation_out(o: Observation | ObservationRow) -> ObservationOut:
    gps = None
    if o.lat is not None and o.lon is not None:
        gps = GpsFix(
            lat=o.lat,
            lon=o.lon,
            accuracy_m=o.accuracy_m or 0.0,
            fix_time=o.fix_time,
            provider=cast(Provider, o.provider or "other"),
            mock=bool(o.mock_location),
        )
    return ObservationOut(
        id=o.id,
        visit_id=o.visit_id,
        ordinal=o.ordinal,
        template=o.template_code,
        template_version=o.template_version,
        item=o.item,
        row_id=o.row_id,
        value=id_numbers.mask_within(o.value),  # an ID number typed into an answer or note leaves masked
        base=id_numbers.mask_within(o.base),
        note=None if o.note is None else id_numbers.mask_text(o.note),
        gps=gps,
        device_time=o.device_time,
        received_at=o.received_at,
        author_id=o.author_id,
        device_id=o.device_id,
    )


async def observations(session: AsyncSession, visit_id: uuid.UUID) -> list[Observation]:
    query = select(Observation).where(Observation.visit_id == visit_id).order_by(Observation.ordinal)
    return list((await session.execute(query)).scalars())


VisitAnswers = dict[str, dict[tuple[str, str | None], Any]]
"""A visit's current answers: template code -> (item, row) -> value."""


async def current_answers(session: AsyncSession, visit_id: uuid.UUID) -> VisitAnswers:
    """template code -> (item, row) -> value, folded in server arrival order: the latest answer wins, but
    one made on a base merges into list answers it had not seen (sync/answer_merge.py)."""
    return folded(await observations(session, visit_id))


Holders = dict[tuple[str, str, str | None], list[Observation]]
"""For each answer (template, item, row), the observations holding it, in arrival order: the latest, and
each earlier one merged into it since it was last replaced outright (two tablets photographing the home
side by side, sync/answer_merge.py)."""


def folded(arrived: Iterable[Observation]) -> VisitAnswers:
    """One visit's observations, in arrival order, folded into its current answers (`current_answers`)."""
    return folded_holding(arrived)[0]


def folded_holding(arrived: Iterable[Observation]) -> tuple[VisitAnswers, Holders]:
    """`folded`, and which observations hold each answer (the integrity checks read their fixes)."""
    current: VisitAnswers = defaultdict(dict)
    holding: Holders = {}
    for obs in arrived:
        row = str(obs.row_id) if obs.row_id else None
        answers, key = current[obs.template_code], (obs.item, row)
        value = answer_merge.merged(answers.get(key), obs.value, obs.base)
        # `merged` hands back the answer itself when it replaces the value outright, a new one when it merges.
        held = (obs.template_code, obs.item, row)
        if value is obs.value:
            holding[held] = [obs]
        else:
            holding.setdefault(held, []).append(obs)
        if value is None:
            answers.pop(key, None)
        else:
            answers[key] = value
    return current, holding


# -- proposal, submission ------------------------------------------------------------------------


async def propose(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID, proposal: Proposal, rules: RulePack
) -> VisitOut:
    visit, household = await get(session, actor, visit_id, lock=True)
    _require_team(visit, actor)
    require_editable(visit)
    # Reviewers judge the proposal by its reason, and a reduction or a stop is notified with it (Art 32).
    reason = stated_reason(proposal.reason, PROPOSAL_REASON_MIN_LENGTH, "Say why this outcome is proposed.")
    proposal = msgspec.structs.replace(proposal, reason=reason)
    if proposal.outcome in NEEDS_AMOUNT and proposal.amount_fen is None:
        raise Invalid(
            f"A proposal to {proposal.outcome} needs the monthly amount in fen.",
            details=[{"field": "amount_fen", "message": "required for this outcome"}],
        )
    if why := amount_contradicts(proposal.outcome, proposal.amount_fen, household.monthly_benefit_fen):
        raise Invalid(
            f"amount_fen: {why}",
            code="amount_contradicts_outcome",
            details=[{"field": "amount_fen", "message": why}],
        )
    visit.outcome, visit.outcome_amount_fen, visit.outcome_reason = (
        proposal.outcome,
        proposal.amount_fen,
        proposal.reason,
    )
    visit.version += 1
    record_transition(session, actor, visit, "propose", visit.status, rules, reason=proposal.reason)
    audit.record(session, actor, "visit.propose", "visit", visit.id, msgspec.to_builtins(proposal))
    await transaction.commit(session)
    return await visit_out(session, visit, household, rules)


def amount_contradicts(outcome: str, amount: int | None, current_fen: int) -> str | None:
    """A raise that lowers the amount (or a reduce that raises it, a "no change" that changes it, a stop
    that keeps paying) is a slip of the finger that a reviewer would approve unread: refuse it where it
    is typed. The last level's approval asks again (reviews.py): the benefit may have moved since."""
    if amount is None:
        return None
    if outcome == "raise" and amount <= current_fen:
        return f"a raise must exceed the current {current_fen} fen a month"
    if outcome == "reduce" and not 0 < amount < current_fen:
        return f"a reduction must be above 0 (that is a stop) and below the current {current_fen} fen a month"
    if outcome == "admit" and amount <= 0:
        return "an admission needs a monthly amount above 0"
    if outcome == "no_change" and amount != current_fen:
        return f"no change keeps the current {current_fen} fen a month"
    if outcome == "stop" and amount != 0:
        return "a stop pays nothing: 0 fen a month, or no amount"
    return None


FORM_OUTCOMES = {"increase": "raise"}
"""The outcome form's words where they differ from the proposal's: 增发 (increase) is a raise."""


def outcome_contradicts_form(
    visit: Visit, answers: VisitAnswers, rules: RulePack
) -> SubmissionProblem | None:
    """The re-check form the household signs states the proposed outcome (and amount) too: a proposal
    saying otherwise would have the reviewers approve what nobody signed. Compared only where both say
    something; an unanswered form item is the completeness guard's."""
    form = answers.get(rules.outcome_template, {})
    on_form, amount = form.get((rules.outcome_item, None)), form.get((rules.outcome_amount_item, None))
    if visit.outcome is None or not isinstance(on_form, str):
        return None
    same_outcome = FORM_OUTCOMES.get(on_form, on_form) == visit.outcome
    same_amount = amount is None or visit.outcome_amount_fen is None or amount == visit.outcome_amount_fen
    if same_outcome and same_amount:
        return None
    return SubmissionProblem(
        "outcome_contradicts_form",
        f"{rules.outcome_template}:{rules.outcome_item}",
        None,
        f"the proposal ({visit.outcome}, {visit.outcome_amount_fen} fen) differs from the signed form "
        f"({on_form}, {amount} fen)",
    )


def appraisal_missing(answers: VisitAnswers, rules: RulePack) -> list[SubmissionProblem]:
    """Objections settled by a democratic appraisal (民主评议) in a file that holds no appraisal: the
    objection must be re-investigated or appraised before the file goes on, and the appraisal's record
    (date, participants, conclusion, signatures) is what shows it was."""
    publicity = answers.get(rules.publicity_template, {})
    if publicity.get((rules.appraisal_held_item, None)) is True:
        return []
    group = rules.objection_action_item.rsplit(".", 1)[0]
    return [
        SubmissionProblem(
            "appraisal_missing",
            f"{rules.publicity_template}:{rules.objection_action_item}",
            row,
            f"the objection was settled by a democratic appraisal, but none is recorded "
            f"({rules.appraisal_held_item})",
        )
        for row in rules_of_answers.rows_of(publicity, group)
        if publicity.get((rules.objection_action_item, row)) in rules.appraisal_actions
        and publicity.get((rules.objection_outcome_item, row)) not in (None, "pending")
    ]


async def submission_problems(
    session: AsyncSession, visit: Visit, answers: VisitAnswers, rules: RulePack
) -> list[SubmissionProblem]:
    context = await guard_context(session, visit)
    found: list[rules_of_answers.Problem] = []
    for ref in visit.templates:
        template = await templates.pinned(session, ref["code"], ref["version"])
        found += rules_of_answers.completeness(template, answers.get(template.code, {}), context)
    problems = [SubmissionProblem(p.guard, p.item, p.row, p.message) for p in found]
    if visit.outcome is None:
        problems.append(SubmissionProblem("outcome_missing", "visit:proposal", None, "no outcome proposed"))
    if differs := outcome_contradicts_form(visit, answers, rules):
        problems.append(differs)
    return problems + appraisal_missing(answers, rules)


async def guard_context(session: AsyncSession, visit: Visit) -> rules_of_answers.Context:
    names = await _names(session, [m.user_id for m in visit.team])
    members = await session.execute(  # a removed member is no longer there to sign
        select(Member.id, Member.name).where(
            Member.household_id == visit.household_id, Member.deleted_at.is_(None)
        )
    )
    return rules_of_answers.Context(
        investigators={str(uid): display for uid, (_, display) in names.items()},
        members={str(mid): name for mid, name in members},
    )


async def submit(session: AsyncSession, actor: Actor, visit_id: uuid.UUID, rules: RulePack) -> VisitOut:
    visit, household = await get(session, actor, visit_id, lock=True)
    _require_team(visit, actor)
    require_editable(visit)
    answers = await current_answers(session, visit.id)
    problems = await submission_problems(session, visit, answers, rules)
    problems += await notice_problems(session, visit, answers, rules)
    if problems:
        raise Invalid(
            f"The visit cannot be submitted: {len(problems)} problems.",
            code="submission_incomplete",
            details=[msgspec.to_builtins(p) for p in problems],
        )
    calendar = await working_calendar(session, rules)
    before = visit.status
    visit.status, visit.review_level = VisitStatus.in_review, 1
    visit.review_due = calendar.add_working_days(today(), level(rules, 1).deadline_working_days)
    visit.submitted_at = utcnow()
    visit.version += 1
    record_transition(session, actor, visit, "submit", before, rules)
    audit.record(session, actor, "visit.submit", "visit", visit.id, {"from": before})
    await transaction.commit(session)
    return await visit_out(session, visit, household, rules)


async def publicity_ends_on(session: AsyncSession, visit: Visit, rules: RulePack) -> dt.date | None:
    """The last day of the 7-calendar-day publicity (公示), from the date the notice went up."""
    return publicity_ends(visit, await current_answers(session, visit.id), rules)


def publicity_ends(visit: Visit, answers: VisitAnswers, rules: RulePack) -> dt.date | None:
    posted, _ = _notice_dates(visit, answers, rules)
    return None if posted is None else posted + dt.timedelta(days=rules.publicity_calendar_days)


def _notice_dates(
    visit: Visit, answers: VisitAnswers, rules: RulePack
) -> tuple[dt.date | None, dt.date | None]:
    """The days the publicity notice went up and came down, as answered (None: not answered yet, or the
    visit has no publicize step)."""
    if rules.publicity_template not in {t["code"] for t in visit.templates}:
        return None, None
    step = answers.get(rules.publicity_template, {})
    posted, removed = (
        step.get((item, None)) for item in (rules.publicity_start_item, rules.publicity_end_item)
    )
    return (
        dt.date.fromisoformat(posted) if isinstance(posted, str) else None,
        dt.date.fromisoformat(removed) if isinstance(removed, str) else None,
    )


async def notice_problems(
    session: AsyncSession, visit: Visit, answers: VisitAnswers, rules: RulePack
) -> list[SubmissionProblem]:
    """What the publicity notice's dates, as answered, cannot be:
    - before the visit existed: the publicity would end the day the file is approved (an amended revision
      carries the notice its first revision posted, so the first revision's day counts);
    - a day still to come (in China): a slip that would put off the end of the publicity, and the county's
      decision, until then;
    - taken down before its last day: the neighbours had less than the 7 days to object that the
      publicity is for, which counting from the posting date alone would pass all the same."""
    posted, removed = _notice_dates(visit, answers, rules)
    if posted is None:
        return []
    put_up = f"{rules.publicity_template}:{rules.publicity_start_item}"
    problems = []
    assigned = await _first_assigned_on(session, visit)
    if posted < assigned:
        message = f"the notice cannot have gone up on {posted}, before the visit was assigned on {assigned}"
        problems.append(SubmissionProblem("notice_before_visit", put_up, None, message))
    if posted > today():
        message = f"the notice cannot have gone up on {posted}, after today ({today()})"
        problems.append(SubmissionProblem("notice_in_future", put_up, None, message))
    ends = posted + dt.timedelta(days=rules.publicity_calendar_days)
    if removed is not None and removed < ends:
        message = (
            f"the notice was taken down on {removed}, before its {rules.publicity_calendar_days}-day "
            f"publicity ended on {ends}"
        )
        where = f"{rules.publicity_template}:{rules.publicity_end_item}"
        problems.append(SubmissionProblem("publicity_cut_short", where, None, message))
    return problems


async def _first_assigned_on(session: AsyncSession, visit: Visit) -> dt.date:
    """The day (China Standard Time) the visit's first revision was created."""
    created, previous = visit.created_at, visit.previous_id
    while previous is not None:
        row = (
            await session.execute(select(Visit.created_at, Visit.previous_id).where(Visit.id == previous))
        ).one()
        created, previous = row.created_at, row.previous_id
    return created.astimezone(CHINA_STANDARD_TIME).date()


# -- amendment -----------------------------------------------------------------------------------


async def amend(session: AsyncSession, actor: Actor, visit_id: uuid.UUID, rules: RulePack) -> VisitOut:
    """An approved visit is never changed: a new revision starts from its answers and goes through review."""
    visit, household = await get(session, actor, visit_id, lock=True)
    if actor.role not in ASSIGNER_ROLES and actor.user_id not in {m.user_id for m in visit.team}:
        raise Forbidden("Only the team, reviewers and administrators amend a visit.")
    if visit.status != VisitStatus.approved:
        raise Conflict("Only an approved visit is amended; edit this one directly.", code="not_approved")
    _require_purpose(rules, visit.purpose)  # its due date comes from the pack
    newer = (await session.execute(select(Visit.id).where(Visit.previous_id == visit.id))).first()
    if newer is not None:
        raise Conflict(
            "This visit already has a newer revision.",
            code="already_amended",
            details={"visit_id": str(newer[0])},
        )
    revision = Visit(
        id=uuid.uuid4(),
        household_id=visit.household_id,
        purpose=visit.purpose,
        status=VisitStatus.in_progress,
        due_date=await _due_from_today(session, rules, visit.purpose),  # the old one has long passed
        templates=visit.templates,
        revision=visit.revision + 1,
        previous_id=visit.id,
        rules=rules_tag(rules),
        created_by=actor.user_id,
        outcome=visit.outcome,
        outcome_amount_fen=visit.outcome_amount_fen,
        outcome_reason=visit.outcome_reason,
    )
    session.add(revision)
    await session.flush()
    session.add_all(
        VisitTeamMember(visit_id=revision.id, user_id=m.user_id, position=m.position) for m in visit.team
    )
    for old in await observations(session, visit.id):
        revision.answer_count += 1
        session.add(_carried(old, revision))
    record_transition(session, actor, revision, "amend", None, rules, reason=f"amends {visit.id}")
    audit.record(session, actor, "visit.amend", "visit", revision.id, {"previous_id": str(visit.id)})
    await transaction.commit(session)
    revision, household = await get(session, actor, revision.id)
    return await visit_out(session, revision, household, rules)


def _carried(old: Observation, revision: Visit) -> Observation:
    fields = {c.key: getattr(old, c.key) for c in Observation.__table__.columns}
    return Observation(
        **(fields | {"id": uuid.uuid4(), "visit_id": revision.id, "ordinal": revision.answer_count})
    )


# -- history, deadlines --------------------------------------------------------------------------


async def timeline(
    session: AsyncSession, actor: Actor, visit_id: uuid.UUID
) -> list[tuple[VisitTransition, str]]:
    await get(session, actor, visit_id)
    rows = await session.execute(
        select(VisitTransition, User.display_name)
        .join(User, User.id == VisitTransition.actor_id)
        .where(VisitTransition.visit_id == visit_id)
        .order_by(VisitTransition.at, VisitTransition.id)
    )
    return [(t, name) for t, name in rows]


async def overdue(session: AsyncSession, actor: Actor, community_id: uuid.UUID | None) -> list[OverdueVisit]:
    day = today()
    query = filtered(actor, community_id, None, None, None, None, False).where(
        or_(
            and_(Visit.status.in_([s.value for s in EDITABLE]), Visit.due_date < day),
            and_(Visit.status == VisitStatus.in_review, Visit.review_due < day),
        )
    )
    result = []
    for visit, household in (await session.execute(query.order_by(Visit.due_date, Visit.id))).all():
        in_review = visit.status == VisitStatus.in_review
        due = visit.review_due if in_review else visit.due_date
        assert due is not None
        result.append(
            OverdueVisit(
                visit_id=visit.id,
                registry_no=household.registry_no,
                community_id=household.community_id,
                status=visit.status,
                what="review" if in_review else "visit",
                due=due,
                days_overdue=(day - due).days,
            )
        )
    return result
