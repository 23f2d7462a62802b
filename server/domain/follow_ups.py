"""What the publicize step leaves owed to people outside the file: feedback and petition answers.

A real-name objector (公示异议) or tip-off reporter (实名举报) is told the outcome once there is one
(审核确认办法 Art 37); a petition (信访) gets a written notice of acceptance and then a conclusion within
statutory limits (信访工作条例 Art 23 and 34), which the rule pack may adjust. The step's items only
record dates; this reads them back as the list of what is still to do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from server.domain.answers import Answers, rows_of

Kind = Literal["objection_feedback", "tip_off_feedback", "petition_acceptance", "petition_conclusion"]


@dataclass(frozen=True, slots=True)
class Limits:
    petition_acceptance_days: int
    petition_conclusion_days: int


@dataclass(frozen=True, slots=True)
class FollowUp:
    kind: Kind
    row_id: str
    received_on: dt.date | None
    due: dt.date | None
    """None for feedback: it is owed from the outcome on, and no law sets a number of days."""


def owed(answers: Answers, limits: Limits) -> list[FollowUp]:
    """Everything the publicize step's current answers leave to do, in the order of its groups' rows."""
    return [
        *_feedback(answers, "objections", "objection_feedback"),
        *_feedback(answers, "tip_offs", "tip_off_feedback"),
        *_petitions(answers, limits),
    ]


def _feedback(answers: Answers, group: str, kind: Kind) -> list[FollowUp]:
    found = []
    for row in rows_of(answers, group):
        value = _row(answers, group, row)
        if value("real_name") is not True or _date(value("feedback_given_on")) is not None:
            continue
        # An objection has an outcome once it is no longer pending; a tip-off once it was verified.
        settled = (
            value("outcome") not in (None, "pending") if group == "objections" else value("verified") is True
        )
        if settled:
            found.append(FollowUp(kind, row, _date(value("received_on")), None))
    return found


def _petitions(answers: Answers, limits: Limits) -> list[FollowUp]:
    found = []
    for row in rows_of(answers, "petitions"):
        value = _row(answers, "petitions", row)
        received, accepted = _date(value("received_on")), _date(value("acceptance_notified_on"))
        if accepted is None:
            due = _after(received, limits.petition_acceptance_days)
            found.append(FollowUp("petition_acceptance", row, received, due))
        if _date(value("concluded_on")) is None:
            due = _after(accepted or received, limits.petition_conclusion_days)
            found.append(FollowUp("petition_conclusion", row, received, due))
    return found


def _row(answers: Answers, group: str, row: str) -> Callable[[str], object]:
    """The value of the row's item, by the item's code within the group."""
    return lambda item: answers.get((f"{group}.{item}", row))


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _after(day: dt.date | None, days: int) -> dt.date | None:
    return None if day is None else day + dt.timedelta(days=days)
