"""Demo visits for community C01's team (demo-worker-1 and -2): a realistic day's work.

Made through the same services as the API, so every rule, transition and audit row applies:
assigned and due, one overdue, one in progress, one waiting at each review level, one returned with
comments, one approved. Idempotent: visit ids derive from the household's registry number.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update

from schemas.visits import GpsFix, ObservationIn, Proposal, ReviewDecision, VisitCreate, VisitOut
from server.db.engine import Database
from server.db.models import Household, Jurisdiction, User, Visit
from server.domain.filled import fill
from server.domain.integrity import LOOK_STEP
from server.services import reviews, templates, visits
from server.services.actor import Actor
from server.services.rules import load_rules, today

TEAM = ("demo-worker-1", "demo-worker-2")
LEVELS = ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district")
# registry no -> (what to do, due in days from today)
PLAN = {
    "DB-C01-0001": ("assigned", 5),
    "DB-C01-0002": ("assigned", -3),
    "DB-C01-0003": ("in_progress", 2),
    "DB-C01-0004": ("level_1", 1),
    "DB-C01-0005": ("level_2", 1),
    "DB-C01-0006": ("level_3", 1),
    "DB-C01-0007": ("returned", 1),
    "DB-C01-0008": ("approved", 1),
}

PLACEHOLDER_PHOTOS = "demo data: the photos named are placeholders, no bytes were taken"

LOOKED_FROM_AWAY = "DB-C01-0004"
"""The file waiting for the community's reviewer: its look step (inside the home) was answered 1.7 km
north of the household, so its evidence shows a `far_from_home` flag for each answer (docs/workflow.md,
"Integrity checks"). Every other answer's fix is at the household."""


async def seed_visits(db: Database) -> None:
    from server.demo import demo_id

    rules = load_rules()
    async with db.write_session() as session:
        await templates.install_shipped(session)
    people = await _actors(db)
    for registry_no, (state, due_in) in PLAN.items():
        visit_id = demo_id("visit", registry_no)
        async with db.read_session() as session:
            if await session.get(Visit, visit_id) is not None:
                continue
        data = VisitCreate(
            id=visit_id,
            household_id=demo_id("household", registry_no),
            purpose="new_application" if registry_no < "DB-C01-0005" else "scheduled_recheck",
            team=[people[u].user_id for u in TEAM],
            due_date=today() + dt.timedelta(days=due_in),
        )
        await _in(db, visits.create, people["demo-reviewer-community"], data, rules)
        await _backdate(db, visit_id, _days_ago())
        await _advance(db, people, visit_id, state)


def _days_ago() -> int:
    """How long ago the demo's visits were made and their notices posted: the publicity is over."""
    return load_rules().publicity_calendar_days + 3


async def _backdate(db: Database, visit_id: uuid.UUID, days: int) -> None:
    """Move the visit's creation back: a publicity notice goes up on or after the day it was assigned."""
    async with db.write_session() as session:
        created = (await session.execute(select(Visit.created_at).where(Visit.id == visit_id))).scalar_one()
        moved = created - dt.timedelta(days=days)
        await session.execute(update(Visit).where(Visit.id == visit_id).values(created_at=moved))
        await session.commit()


async def _in(db: Database, step: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run one service call in its own write transaction, as one API request would."""
    async with db.write_session() as session:
        return await step(session, *args)


async def _actors(db: Database) -> dict[str, Actor]:
    async with db.read_session() as session:
        rows = await session.execute(
            select(User, Jurisdiction.path).join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
        )
        return {
            u.username: Actor(
                user_id=u.id,
                username=u.username,
                display_name=u.display_name,
                role=u.role,
                jurisdiction_id=u.jurisdiction_id,
                jurisdiction_path=path,
            )
            for u, path in rows
        }


async def _advance(db: Database, people: dict[str, Actor], visit_id: uuid.UUID, state: str) -> None:
    rules = load_rules()
    worker = people[TEAM[0]]
    if state == "assigned":
        return
    await _answer_all(db, worker, visit_id, partial=state == "in_progress")
    if state == "in_progress":
        return
    proposal = Proposal(outcome="no_change", reason="家庭收入与人口无变化 (income and members unchanged)")
    await _in(db, visits.propose, worker, visit_id, proposal, rules)
    submitted: VisitOut = await _in(db, visits.submit, worker, visit_id, rules)
    version = submitted.version  # each decision is made on the visit as it stands; its photos never come
    if state == "returned":
        comment = ReviewDecision(
            decision="return",
            reason="请补拍厨房照片并说明邻居B的说法 (retake the kitchen photo)",
            version=version,
            evidence_present=0,
        )
        await _in(db, reviews.decide, people[LEVELS[0]], visit_id, comment, rules)
        return
    approvals = {"level_1": 0, "level_2": 1, "level_3": 2, "approved": 3}[state]
    # The demo's photos are made-up hashes whose bytes never come: each approval says so, as a reviewer
    # approving without the photos must.
    for reviewer in LEVELS[:approvals]:
        approve = ReviewDecision(
            decision="approve",
            accept_missing_evidence=True,
            reason=PLACEHOLDER_PHOTOS,
            version=version,
            evidence_present=0,
            county_home_visit_on=today(),  # the demo's files hold an objection: the county goes itself
        )
        decided: VisitOut = await _in(db, reviews.decide, people[reviewer], visit_id, approve, rules)
        version = decided.version


async def _answer_all(db: Database, worker: Actor, visit_id: uuid.UUID, *, partial: bool) -> None:
    rules = load_rules()
    async with db.read_session() as session:
        visit, household = await visits.get(session, worker, visit_id)
        context = await visits.guard_context(session, visit)
        pinned = [await templates.pinned(session, t["code"], t["version"]) for t in visit.templates]
    where = (household.lat or 38.04, household.lon or 114.51)
    day = today() - dt.timedelta(days=_days_ago())  # publicity already over
    answers = [
        a
        for t in pinned[: 1 if partial else None]
        for a in fill(t, context, day=day, where=where, seed=str(visit_id))
    ]
    batch = [
        ObservationIn(
            id=uuid.uuid5(visit_id, f"{a.template}:{a.item}:{a.row_id}"),
            template=a.template,
            item=a.item,
            row_id=a.row_id,
            value=a.value,
            gps=_fix(household, a.template, where),
            device_time=dt.datetime.now(dt.UTC),
        )
        for a in answers
    ]
    for start in range(0, len(batch), 500):
        await _in(db, visits.answer, worker, visit_id, batch[start : start + 500], rules)


def _fix(household: Household, template: str, where: tuple[float, float]) -> GpsFix:
    """Where the tablet was when it recorded the answer: at the household, but for LOOKED_FROM_AWAY."""
    away = household.registry_no == LOOKED_FROM_AWAY and template == LOOK_STEP
    return GpsFix(lat=where[0] + (0.015 if away else 0.0), lon=where[1], accuracy_m=12.0)
