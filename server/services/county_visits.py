"""The confirming level's own home visit (2021 办法 Art 20), required before it decides some files.

The county (or the level confirmation is delegated to) confirms most files on the papers the community
and the subdistrict sent up, but goes to the household itself when the case was filed separately (a member
is a near relative of dibao staff or of a committee member: Art 11) or when there were complaints about it
(an objection during the publicity, a tip-off, a re-check started by one). research.md §2 steps 2a and 5.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.visits import ReviewDecision
from server.db.models import Visit, VisitTransition
from server.domain.answers import rows_of
from server.domain.calendar import CHINA_STANDARD_TIME
from server.errors import Invalid
from server.services.rules import today
from server.services.visits import VisitAnswers

SEPARATE_FILING = (("step.check", "near_relative_declared"), ("step.check", "near_relative_filed_separately"))
"""Yes to either: the case is filed separately (单独登记备案)."""
COMPLAINT_GROUPS = (("step.publicize", "objections"), ("step.publicize", "tip_offs"))
"""A row in either: someone complained about the case."""
COMPLAINT_TRIGGERS = (("form.recheck", "recheck_reason", "tip_off"),)
"""A re-check started by a tip-off or complaint."""
FIELD = "county_home_visit_on"


def why_required(answers: VisitAnswers) -> list[str]:
    """What in the file requires the confirming level's own home visit (nothing: it may decide on the
    papers), as `template:item` codes."""
    found = [
        f"{template}:{item}"
        for template, item in SEPARATE_FILING
        if answers.get(template, {}).get((item, None))
    ]
    found += [f"{t}:{group}" for t, group in COMPLAINT_GROUPS if rows_of(answers.get(t, {}), group)]
    found += [
        f"{t}:{item}"
        for t, item, value in COMPLAINT_TRIGGERS
        if answers.get(t, {}).get((item, None)) == value
    ]
    return found


def require_county_visit(answers: VisitAnswers, decision: ReviewDecision, first_submitted: dt.date) -> None:
    """A confirmation (approval or refusal) at the last level of a file that needs the confirming level's
    own home visit states the day it was made: on or after the day the file was first submitted, and not
    in the future (China Standard Time). A day stated where none is required goes on the timeline all the
    same, so it is checked the same way."""
    day = decision.county_home_visit_on
    reasons = why_required(answers)
    if not reasons and day is None:
        return
    if day is None:
        raise Invalid(
            "This file needs the confirming level's own home visit before it is decided (2021 办法 Art 20: "
            f"filed separately or complained about: {', '.join(reasons)}); give the day it was made.",
            code="county_visit_required",
            details=[{"field": FIELD, "message": f"required: {', '.join(reasons)}"}],
        )
    if not first_submitted <= day <= today():
        raise Invalid(
            f"{FIELD}: the home visit was made between the file's first submission ({first_submitted}) and "
            f"today ({today()}), not on {day}.",
            details=[{"field": FIELD, "message": f"between {first_submitted} and {today()}"}],
        )


async def first_submitted_on(session: AsyncSession, visit: Visit) -> dt.date:
    """The day this revision was first submitted (China Standard Time). The county may visit the household
    while deciding, return the file for what it found, and confirm the resubmitted file on that visit."""
    first = await session.scalar(
        select(func.min(VisitTransition.at)).where(
            VisitTransition.visit_id == visit.id, VisitTransition.action == "submit"
        )
    )
    assert first is not None  # a visit under review was submitted, and each submission is on its timeline
    return first.astimezone(CHINA_STANDARD_TIME).date()
