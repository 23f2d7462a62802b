"""Households and members on the wire. ID numbers leave the server masked, except through a reveal."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

HouseholdStatus = Literal["applicant", "active", "phase_out", "suspended", "exited"]
RecheckClass = Literal["A", "B", "C", "yearly", "half_yearly"]
Fen = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_00)]
"""Money in integer fen (1/100 yuan), never floats."""
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
IdNumber = Annotated[str, msgspec.Meta(min_length=18, max_length=18, pattern=r"^[0-9]{17}[0-9Xx]$")]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# The member columns' widths (server/db/models/households.py): longer text is a 422 here, not a database error.
Relation = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Health = Annotated[str, msgspec.Meta(max_length=32)]
Disability = Annotated[str, msgspec.Meta(max_length=64)]
Employment = Annotated[str, msgspec.Meta(max_length=32)]


class MemberIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: uuid.UUID | None = None
    name: ShortText
    relation: Relation
    id_number: IdNumber
    sex: Literal["male", "female"] | None = None
    birth_date: dt.date | None = None
    health: Health | None = None
    disability: Disability | None = None
    work_capacity: Literal["full", "partial", "none"] | None = None
    employment: Employment | None = None


class MemberOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    household_id: uuid.UUID
    name: str
    relation: str
    id_number_masked: str
    sex: str | None
    birth_date: dt.date | None
    health: str | None
    disability: str | None
    work_capacity: str | None
    employment: str | None
    version: int


class HouseholdIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: uuid.UUID | None = None
    registry_no: ShortText
    community_id: uuid.UUID
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    lat: Latitude | None = None
    lon: Longitude | None = None
    status: HouseholdStatus = "applicant"
    recheck_class: RecheckClass | None = None
    monthly_benefit_fen: Fen = 0
    members: list[MemberIn] = []


class HouseholdPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Only the fields present change. `version` is the one the caller saw: a stale one is refused."""

    version: int
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    lat: Latitude | msgspec.UnsetType | None = msgspec.UNSET
    lon: Longitude | msgspec.UnsetType | None = msgspec.UNSET
    status: HouseholdStatus | msgspec.UnsetType = msgspec.UNSET
    recheck_class: RecheckClass | msgspec.UnsetType | None = msgspec.UNSET
    monthly_benefit_fen: Fen | msgspec.UnsetType = msgspec.UNSET


class MemberPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Only the fields present change. `version` is the one the caller saw: a stale one is refused."""

    version: int
    name: ShortText | msgspec.UnsetType = msgspec.UNSET
    relation: Relation | msgspec.UnsetType = msgspec.UNSET
    id_number: IdNumber | msgspec.UnsetType = msgspec.UNSET
    sex: Literal["male", "female"] | msgspec.UnsetType | None = msgspec.UNSET
    birth_date: dt.date | msgspec.UnsetType | None = msgspec.UNSET
    health: Health | msgspec.UnsetType | None = msgspec.UNSET
    disability: Disability | msgspec.UnsetType | None = msgspec.UNSET
    work_capacity: Literal["full", "partial", "none"] | msgspec.UnsetType | None = msgspec.UNSET
    employment: Employment | msgspec.UnsetType | None = msgspec.UNSET


class RecordVersionOut(msgspec.Struct, kw_only=True):
    """One version of a household or member: what it held, what changed, who changed it and how."""

    version: int
    data: dict[str, Any]
    changed: list[str]
    author_id: uuid.UUID | None
    mutation_id: uuid.UUID | None
    at: dt.datetime
    note: str | None


class HouseholdOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    registry_no: str
    community_id: uuid.UUID
    address: str
    lat: float | None
    lon: float | None
    status: str
    recheck_class: str | None
    monthly_benefit_fen: int
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    members: list[MemberOut]
    archived_at: dt.datetime | None = None
    """Null, but in the answer to a create sent again after its household was archived: the household
    as it stands, which no other read shows any more."""


class HouseholdPage(msgspec.Struct):
    items: list[HouseholdOut]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last page."""


class RevealRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)]
    """Why the full number is needed: at least 5 characters besides spaces, else `422 reason_required`
    (checked by the server, not here, so that "" and "abc" get the same code as five spaces)."""


class RevealedId(msgspec.Struct):
    member_id: uuid.UUID
    id_number: str


class JobReferralOut(msgspec.Struct, kw_only=True):
    """One job referral, as the latest visit recording it says."""

    referred_on: dt.date
    job: str
    response: str
    """accepted | refused_justified | refused_unjustified"""
    refusal_reason: str | None
    visit_id: uuid.UUID
    """The latest visit recording it."""
    confirmed: bool
    """An approved visit recorded it with this response: a reviewer checked it."""


class MemberReferralsOut(msgspec.Struct, kw_only=True):
    member_id: str
    """As Form B names the member: the member's id on the server."""
    unjustified_refusals: int
    """Refusals without a justified reason, in any visit."""
    confirmed_unjustified_refusals: int
    """Those recorded in approved visits: the count the rule applies to."""
    reduce_or_stop_due: bool
    """The confirmed count reached `refusals_that_reduce_or_stop`: this member's own benefit is to be reduced
    or stopped (社会救助暂行办法 Art 45); the household's other members are not affected."""
    referrals: list[JobReferralOut]


class JobReferralsOut(msgspec.Struct, kw_only=True):
    """A household's job referrals across all its visits, counted per member."""

    household_id: uuid.UUID
    refusals_that_reduce_or_stop: int
    members: list[MemberReferralsOut]
