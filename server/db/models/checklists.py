"""Checklist templates stored as data. Published versions never change; visits pin the version they use."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base, CreatedAt
from server.db.types import JSONType


class TemplateStatus(enum.StrEnum):
    draft = "draft"
    published = "published"
    retired = "retired"


class ChecklistTemplate(CreatedAt, Base):
    __tablename__ = "checklist_templates"
    __table_args__ = (UniqueConstraint("code", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=TemplateStatus.draft)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    etag: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]
