"""Job referrals and the count of unjustified refusals (社会救助暂行办法 Art 45; research.md §7.7).

A member of working age who refuses a suitable job referral from human resources and social security
three times without a justified reason has their own benefit reduced or stopped (not the household's).
Form B (`form.employment_income`) records each referral as a row of its `job_referrals` group, naming
the member; a referral recorded again in a later visit (a re-check copying the list, or a revision
carrying the answers over) is the same referral, so referrals are told apart by member, date and job.
Where two visits disagree about one referral (a correction), the later visit is believed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace

from server.domain.answers import Answers, rows_of

TEMPLATE = "form.employment_income"
GROUP = "job_referrals"
UNJUSTIFIED = "refused_unjustified"
REFUSALS_THAT_REDUCE_OR_STOP = 3
"""The third unjustified refusal is the one that reduces or stops the member's benefit (Art 45)."""


@dataclass(frozen=True, slots=True)
class Referral:
    """One referral as one visit recorded it."""

    member_id: str
    referred_on: dt.date
    job: str
    response: str
    refusal_reason: str | None
    visit_id: uuid.UUID
    confirmed: bool
    """An approved visit recorded it with this response: a reviewer checked it."""

    @property
    def key(self) -> tuple[str, dt.date, str]:
        return self.member_id, self.referred_on, " ".join(self.job.split()).casefold()


@dataclass(frozen=True, slots=True)
class RecordedVisit:
    """A visit's current Form B answers, with what the count needs to know of the visit."""

    visit_id: uuid.UUID
    created_at: dt.datetime
    approved: bool
    answers: Answers


@dataclass(frozen=True, slots=True)
class MemberTally:
    member_id: str
    referrals: list[Referral]
    """Each referral once, as the latest visit recording it says, oldest referral first."""

    @property
    def unjustified_refusals(self) -> int:
        return sum(r.response == UNJUSTIFIED for r in self.referrals)

    @property
    def confirmed_unjustified_refusals(self) -> int:
        return sum(r.response == UNJUSTIFIED and r.confirmed for r in self.referrals)

    @property
    def reduce_or_stop_due(self) -> bool:
        """Confirmed refusals reached the third: the member's own benefit is to be reduced or stopped."""
        return self.confirmed_unjustified_refusals >= REFUSALS_THAT_REDUCE_OR_STOP


def tally(visits: Iterable[RecordedVisit]) -> list[MemberTally]:
    """Every member's referrals across the household's visits, members in the order first referred."""
    latest: dict[tuple[str, dt.date, str], Referral] = {}
    approved: dict[tuple[str, dt.date, str], Referral] = {}
    for visit in sorted(visits, key=lambda v: v.created_at):
        for referral in referrals_in(visit):
            latest[referral.key] = referral  # a later visit's record of the same referral wins
            if visit.approved:
                approved[referral.key] = referral
    by_member: dict[str, list[Referral]] = {}
    for key, referral in sorted(latest.items(), key=lambda item: (item[1].referred_on, item[1].job)):
        # Copied into a visit still open, a referral an approved visit recorded stays confirmed; changed
        # there, it waits for that visit's review.
        checked = approved.get(key)
        confirmed = checked is not None and checked.response == referral.response
        by_member.setdefault(referral.member_id, []).append(replace(referral, confirmed=confirmed))
    return [MemberTally(member, referrals) for member, referrals in by_member.items()]


def referrals_in(visit: RecordedVisit) -> list[Referral]:
    """The referral rows of one visit's Form B that are complete enough to count (removed rows are not)."""
    found = []
    for row in rows_of(visit.answers, GROUP):
        referral = _referral(visit, row)
        if referral is not None:
            found.append(referral)
    return found


def _referral(visit: RecordedVisit, row: str) -> Referral | None:
    def value(item: str) -> object:
        return visit.answers.get((f"{GROUP}.{item}", row))

    member, day, job, response = value("member_ref"), value("referred_on"), value("job"), value("response")
    if not (
        isinstance(member, str)
        and isinstance(day, str)
        and isinstance(job, str)
        and isinstance(response, str)
    ):
        return None  # a row still being filled in: the form's own completeness check reports it
    try:
        referred_on = dt.date.fromisoformat(day)
    except ValueError:
        return None
    reason = value("refusal_reason")
    return Referral(
        member_id=member,
        referred_on=referred_on,
        job=job,
        response=response,
        refusal_reason=reason if isinstance(reason, str) else None,
        visit_id=visit.visit_id,
        confirmed=visit.approved,
    )
