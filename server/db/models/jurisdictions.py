"""The district (区) > subdistrict (街道) > community (社区) tree that scopes every user and household."""

from __future__ import annotations

import enum
import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base, CreatedAt


class Level(enum.StrEnum):
    district = "district"
    subdistrict = "subdistrict"
    community = "community"


CHILD_LEVEL = {Level.district: Level.subdistrict, Level.subdistrict: Level.community}


class Jurisdiction(CreatedAt, Base):
    __tablename__ = "jurisdictions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jurisdictions.id"))
    level: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    # Materialised path of codes ("/D01/S01/C01/"): "under a node" is a prefix test, one indexed LIKE.
    path: Mapped[str] = mapped_column(String(512), unique=True)
