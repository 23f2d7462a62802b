"""Visits to a household, the team that makes them, their answers (observations) and their history.

Observations are append-only: a correction is a new observation for the same item and row. The current
answer folds them in ordinal order: the latest wins, but one made on a base merges list answers
(sync/answer_merge.py). Transitions record every change of state.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.models.base import Base, CreatedAt
from server.db.types import JSONType, utcnow


class VisitStatus(enum.StrEnum):
    assigned = "assigned"
    in_progress = "in_progress"
    in_review = "in_review"
    returned = "returned"
    approved = "approved"
    rejected = "rejected"


EDITABLE = frozenset({VisitStatus.assigned, VisitStatus.in_progress, VisitStatus.returned})


class Visit(CreatedAt, Base):
    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_status_due", "status", "due_date"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=VisitStatus.assigned)
    due_date: Mapped[dt.date] = mapped_column(Date)
    review_level: Mapped[int] = mapped_column(default=0)
    """0 outside review; 1..n while waiting at that level of the rule pack."""
    review_due: Mapped[dt.date | None] = mapped_column(Date)
    templates: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    """Pinned [{"code", "version"}]: answers validate against these versions for the visit's whole life."""
    outcome: Mapped[str | None] = mapped_column(String(16))
    outcome_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    outcome_reason: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(default=1)
    previous_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visits.id"))
    """The approved visit this revision amends: an approved visit is never changed, only superseded."""
    answer_count: Mapped[int] = mapped_column(default=0)
    rules: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    submitted_at: Mapped[dt.datetime | None]
    locked_at: Mapped[dt.datetime | None]
    version: Mapped[int] = mapped_column(default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    team: Mapped[list[VisitTeamMember]] = relationship(lazy="raise", order_by="VisitTeamMember.position")


class VisitTeamMember(Base):
    __tablename__ = "visit_team"

    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(default=0)


class Observation(Base):
    """One answer to one item (or one cell of a repeat row), stamped where and when it was made."""

    __tablename__ = "observations"
    __table_args__ = (
        Index("ix_observations_visit_item", "visit_id", "template_code", "item", "row_id", "ordinal"),
        UniqueConstraint("visit_id", "ordinal"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"))
    ordinal: Mapped[int]
    """Arrival order within the visit (the server's, never the device's clock)."""
    template_code: Mapped[str] = mapped_column(String(64))
    template_version: Mapped[int]
    item: Mapped[str] = mapped_column(String(200))
    row_id: Mapped[uuid.UUID | None]
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    base: Mapped[Any] = mapped_column(JSONType, nullable=True)
    """The item's value as the device saw it: with it, list answers merge (sync/answer_merge.py)."""
    note: Mapped[str | None] = mapped_column(Text)
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    accuracy_m: Mapped[float | None]
    fix_time: Mapped[dt.datetime | None]
    provider: Mapped[str | None] = mapped_column(String(16))
    mock_location: Mapped[bool | None]
    device_time: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("devices.id"))


class VisitTransition(Base):
    """Every change of a visit's state: who, at which level, what, why, when, under which rules."""

    __tablename__ = "visit_transitions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(16))
    """assign | start | submit | approve | return | reject | amend | propose"""
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    level: Mapped[int | None]
    level_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    rules: Mapped[str] = mapped_column(String(64))
    county_home_visit_on: Mapped[dt.date | None] = mapped_column(Date)
    """The day the confirming level made its own home visit before this decision (2021 办法 Art 20)."""


class HolidayOverride(Base):
    """A date the deployment's calendar treats differently from Mon-Fri: a holiday, or a swapped workday."""

    __tablename__ = "calendar_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(64))
