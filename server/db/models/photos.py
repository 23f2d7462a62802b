"""Resumable uploads, the photos made from them, and which visits reference which photo.

`photo_refs` is filled by a `before_flush` hook on every session (installed when this module is imported,
which `server.db.models` always does): whatever path appends an observation (REST, sync, amendment, the
demo seed), the SHA-256 values its answer names are recorded, before or after the bytes arrive. Answers
written as plain rows (server/db/observation_rows.py) get theirs from the same `photo_ref_rows`. A
reference whose photo row exists is *present*, otherwise *expected*.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, validates

from media.phash import bands, from_hex
from server.db.models.base import Base, CreatedAt
from server.db.models.visits import Observation
from server.db.types import utcnow
from server.domain.evidence import references


class UploadState(enum.StrEnum):
    receiving = "receiving"
    complete = "complete"
    failed = "failed"


class Upload(CreatedAt, Base):
    """One tus upload. Its bytes are staged in the blob store under its id until the last one arrives."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_expires_at", "expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("devices.id"))
    length: Mapped[int] = mapped_column(BigInteger)
    upload_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bytes received and staged so far (tus Upload-Offset)."""
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    metadata_header: Mapped[str] = mapped_column(Text, default="")
    """Upload-Metadata exactly as sent: HEAD must echo it."""
    state: Mapped[str] = mapped_column(String(16), default=UploadState.receiving)
    failure_code: Mapped[str | None] = mapped_column(String(32))
    direct_id: Mapped[str | None] = mapped_column(String(255))
    """The store's multipart upload id when the device sends the bytes to the store itself (direct)."""
    processing_since: Mapped[dt.datetime | None]
    """When a request claimed the received file to process it (server/services/photos.py)."""
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    expires_at: Mapped[dt.datetime]


class Photo(CreatedAt, Base):
    """A stored photo: the original (private evidence) and its two metadata-free JPEG derivatives.

    The EXIF columns are the file's claims, not facts; the app's own GPS fix sits on the observation.
    """

    __tablename__ = "photos"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(8))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]
    captured_at: Mapped[str | None] = mapped_column(String(40))
    """DateTimeOriginal as ISO 8601, with its offset when OffsetTimeOriginal was there (else local time)."""
    captured_has_offset: Mapped[bool] = mapped_column(default=False)
    gps_lat: Mapped[float | None]
    gps_lon: Mapped[float | None]
    gps_alt: Mapped[float | None]
    make: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    software: Mapped[str | None] = mapped_column(String(128))
    orientation: Mapped[int | None]
    dhash: Mapped[str] = mapped_column(String(16))
    # The dHash's four 16-bit bands, each indexed, set with `dhash`: the near-duplicate search looks hashes
    # up by band (multi-index hashing, media/phash.py) instead of comparing every stored photo's.
    dhash_b0: Mapped[int | None] = mapped_column(index=True)
    dhash_b1: Mapped[int | None] = mapped_column(index=True)
    dhash_b2: Mapped[int | None] = mapped_column(index=True)
    dhash_b3: Mapped[int | None] = mapped_column(index=True)
    original_key: Mapped[str] = mapped_column(String(512))
    display_key: Mapped[str] = mapped_column(String(512))
    display_width: Mapped[int]
    display_height: Mapped[int]
    thumb_key: Mapped[str] = mapped_column(String(512))
    thumb_width: Mapped[int]
    thumb_height: Mapped[int]
    uploaded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)

    @validates("dhash")
    def _band(self, _key: str, value: str) -> str:
        self.dhash_b0, self.dhash_b1, self.dhash_b2, self.dhash_b3 = bands(from_hex(value))
        return value


class PhotoRefusal(Base):
    """Content the pipeline refused (not an image, truncated, ...): its SHA-256 was verified first, so the
    refusal is a fact about every file with that SHA-256, and sending it again would be refused again.
    The refused bytes are not kept; this row is how a visit's evidence and the devices learn why the
    photo its answer names will never be present. (A file that did not match its announced SHA-256 says
    nothing about the photo that has it, and leaves no row.)"""

    __tablename__ = "photo_refusals"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    refused_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PhotoRef(Base):
    """An observation naming a photo (or signature image) by SHA-256; the photo may not have arrived yet."""

    __tablename__ = "photo_refs"

    observation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("observations.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """photo | signature"""

    # Only so the unit of work inserts the observation before its references in one flush.
    observation: Mapped[Observation] = relationship(lazy="raise")


def photo_ref_rows(observation_id: uuid.UUID, visit_id: uuid.UUID, value: Any) -> list[dict[str, Any]]:
    """The references an observation's answer makes: the hook below adds them as objects, and
    server/db/observation_rows.py writes them as rows for the observations it writes."""
    return [
        {"observation_id": observation_id, "sha256": ref.sha256, "visit_id": visit_id, "kind": ref.kind}
        for ref in references(value)
    ]


@event.listens_for(Session, "before_flush")
def _record_photo_refs(session: Session, _context: Any, _instances: Any) -> None:
    for obj in list(session.new):
        if isinstance(obj, Observation):
            for row in photo_ref_rows(obj.id, obj.visit_id, obj.value):
                session.add(PhotoRef(observation=obj, **row))
