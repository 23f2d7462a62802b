"""Households on dibao and their members. ID numbers are stored whole and masked at the edge."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.models.base import Base, CreatedAt
from server.db.types import JSONType, utcnow


class HouseholdStatus(enum.StrEnum):
    applicant = "applicant"
    active = "active"
    phase_out = "phase_out"
    suspended = "suspended"
    exited = "exited"


class Household(CreatedAt, Base):
    __tablename__ = "households"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    registry_no: Mapped[str] = mapped_column(String(64), unique=True)
    community_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    address: Mapped[str] = mapped_column(Text)
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16), default=HouseholdStatus.applicant)
    recheck_class: Mapped[str | None] = mapped_column(String(16))
    monthly_benefit_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(default=1)
    field_versions: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    """field -> the record version at which it last changed: what makes offline merges three-way."""
    last_writers: Mapped[dict[str, list[Any]]] = mapped_column(JSONType, default=dict)
    """field -> [rank, sync client id or null] of its last writer: rank (supervisor 1, field worker 0)
    decides precedence; the client tells a device's own earlier edit from a concurrent one."""
    deleted_at: Mapped[dt.datetime | None]
    """Archived: a tombstone, never resurrected by a late edit."""
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    members: Mapped[list[Member]] = relationship(
        back_populates="household", lazy="raise", order_by="Member.created_at"
    )


class Member(CreatedAt, Base):
    __tablename__ = "members"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    id_number: Mapped[str] = mapped_column(String(18))
    sex: Mapped[str | None] = mapped_column(String(8))
    birth_date: Mapped[dt.date | None]
    health: Mapped[str | None] = mapped_column(String(32))
    disability: Mapped[str | None] = mapped_column(String(64))
    work_capacity: Mapped[str | None] = mapped_column(String(16))
    employment: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(default=1)
    field_versions: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    last_writers: Mapped[dict[str, list[Any]]] = mapped_column(JSONType, default=dict)
    deleted_at: Mapped[dt.datetime | None]

    household: Mapped[Household] = relationship(back_populates="members", lazy="raise")
