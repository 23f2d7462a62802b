"""Visits, their answers (observations), outcome proposals and review decisions on the wire."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

from schemas.households import Fen
from schemas.rules import Purpose
from schemas.times import DeviceTime, require_utc_instants

VisitStatus = Literal["assigned", "in_progress", "in_review", "returned", "approved", "rejected"]
Outcome = Literal["no_change", "raise", "reduce", "stop", "admit", "add_member", "remove_member", "phase_out"]
Provider = Literal["gps", "network", "fused", "other"]
Reason = Annotated[str, msgspec.Meta(min_length=2, max_length=2000)]


class GpsFix(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The device's location fix when the answer was made. Never trusted alone: reviewers compare it."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0)]
    fix_time: DeviceTime | None = None
    """GNSS time of the fix: satellite UTC, independent of the tablet's clock."""
    provider: Provider = "gps"
    mock: bool = False
    """Android's mock-location flag."""

    def __post_init__(self) -> None:
        require_utc_instants(self.fix_time)


class VisitCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: uuid.UUID | None = None
    household_id: uuid.UUID
    purpose: Purpose
    team: Annotated[list[uuid.UUID], msgspec.Meta(min_length=2, max_length=6)]
    """At least two field workers: the rules require two investigators."""
    due_date: dt.date | None = None
    """Default: the rule pack's working days for the purpose, from today."""


class TeamChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new team for an open visit: someone fell ill, went on leave or left the job."""

    team: Annotated[list[uuid.UUID], msgspec.Meta(min_length=2, max_length=6)]
    """The whole team, in order: at least two active field workers of the household's community."""
    version: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    """The visit's ``version`` as read; a visit changed since is ``409 visit_changed``."""
    reason: Reason
    """Why (on the visit's timeline and in the audit log)."""


class TemplateRef(msgspec.Struct):
    code: str
    version: int


class TeamMember(msgspec.Struct):
    user_id: uuid.UUID
    username: str
    display_name: str


class Proposal(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    outcome: Outcome
    amount_fen: Fen | None = None
    """The monthly amount after the change, in fen; required for admit, raise and reduce."""
    reason: Reason


class VisitOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    household_id: uuid.UUID
    registry_no: str
    community_id: uuid.UUID
    purpose: str
    status: VisitStatus
    due_date: dt.date
    overdue: bool
    review_level: int
    review_level_code: str | None
    review_due: dt.date | None
    publicity_ends_on: dt.date | None
    templates: list[TemplateRef]
    team: list[TeamMember]
    proposal: Proposal | None
    revision: int
    previous_id: uuid.UUID | None
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    locked_at: dt.datetime | None
    version: int


class VisitPage(msgspec.Struct):
    items: list[VisitOut]
    next_cursor: str | None


class ObservationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: uuid.UUID
    """Made by the device. Sending the same observation again (a retry) changes nothing."""
    template: str
    item: str
    """The item's path: `neighbours.position` for a child of the `neighbours` repeat group."""
    row_id: uuid.UUID | None = None
    """The repeat row (made by the device); required inside repeat groups, absent elsewhere."""
    value: Any = None
    base: Any = None
    """The item's value as the device showed it when this answer was made (``{"photos": []}`` or ``[]``
    when it showed none). With a base, a list answer (photos, signatures, multiple choice) is merged
    with answers the device had not seen instead of replacing them: see docs/sync-protocol.md,
    "Answers made side by side". Without one, the latest answer wins."""
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    gps: GpsFix | None = None
    device_time: DeviceTime | None = None

    def __post_init__(self) -> None:
        require_utc_instants(self.device_time)


class ObservationBatch(msgspec.Struct, forbid_unknown_fields=True):
    observations: Annotated[list[ObservationIn], msgspec.Meta(min_length=1, max_length=500)]


class ObservationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    visit_id: uuid.UUID
    ordinal: int
    template: str
    template_version: int
    item: str
    row_id: uuid.UUID | None
    value: Any
    """As the device sent it; the item's current answer merges it with the others (see ``base``)."""
    base: Any
    note: str | None
    gps: GpsFix | None
    device_time: dt.datetime | None
    received_at: dt.datetime
    author_id: uuid.UUID
    device_id: uuid.UUID | None


class SubmissionProblem(msgspec.Struct):
    guard: str
    item: str
    row: str | None
    message: str


class ReviewDecision(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: Literal["approve", "return", "reject"]
    version: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    """The visit's ``version`` as the reviewer read it (``GET /visits/{id}`` or its evidence). A visit
    changed since (answers, proposal, another decision) refuses the decision: ``409 visit_changed``."""
    evidence_present: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    """How many of the visit's photos and signature images were ``present`` in ``GET
    /visits/{id}/evidence`` as the reviewer read it. One that has arrived since refuses the decision
    (``409 visit_changed``): the reviewer has not seen it."""
    reason: Reason | None = None
    """Required to return (the comments go back to the devices) or to reject, and to approve while
    evidence is still missing."""
    county_home_visit_on: dt.date | None = None
    """The day the confirming (last) level made its own home visit, which it must before it approves or
    rejects a file filed separately or complained about (2021 办法 Art 20; ``422 county_visit_required``
    without it). Read at the last level only."""
    accept_missing_evidence: bool = False
    """Approve although photos or signature images the answers name have not reached the server (a tablet
    lost, say). Without it such an approval is refused with ``evidence_missing``; with it, ``reason`` must
    say why, and the transition and the audit record what was missing."""


class TransitionOut(msgspec.Struct, kw_only=True):
    at: dt.datetime
    actor_id: uuid.UUID
    actor: str
    action: str
    from_status: str | None
    to_status: str
    level: int | None
    level_code: str | None
    reason: str | None
    rules: str
    county_home_visit_on: dt.date | None = None
    """On a decision at the last level: the day the confirming level made its own home visit (2021 办法
    Art 20), where the file required one or the approver stated it."""


class OverdueVisit(msgspec.Struct, kw_only=True):
    visit_id: uuid.UUID
    registry_no: str
    community_id: uuid.UUID
    status: str
    what: Literal["visit", "review"]
    due: dt.date
    days_overdue: int


class FollowUpOut(msgspec.Struct, kw_only=True):
    """Something the publicize step leaves owed to someone outside the file (docs/workflow.md)."""

    visit_id: uuid.UUID
    registry_no: str
    community_id: uuid.UUID
    kind: Literal["objection_feedback", "tip_off_feedback", "petition_acceptance", "petition_conclusion"]
    row_id: str
    """The row of the publicize step's `objections`, `tip_offs` or `petitions` group."""
    received_on: dt.date | None
    due: dt.date | None
    """The statutory limit for petitions; none for feedback, owed as soon as there is an outcome."""
    days_overdue: int | None
    """Days past `due` (0 or less: not yet)."""
