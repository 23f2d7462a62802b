"""Wire structs of photos and a visit's photo evidence."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

EvidenceStatus = Literal["expected", "present", "refused"]


class ExifOut(msgspec.Struct, kw_only=True):
    """What the file's EXIF claims; none of it is verified. GPS here is never in the served copies."""

    captured_at: str | None
    """DateTimeOriginal, ISO 8601; with its offset when ``captured_has_offset``, else device local time."""
    captured_has_offset: bool
    latitude: float | None
    longitude: float | None
    altitude: float | None
    gps_withheld: bool = False
    """True when the file claims a position that your role may not see: only the roles that may fetch
    originals (reviewers, approvers, admins by default) get the EXIF GPS; everyone else gets nulls."""
    make: str | None
    model: str | None
    software: str | None
    orientation: int | None


class DerivativeOut(msgspec.Struct, kw_only=True):
    """A metadata-free, upright JPEG copy behind a short-lived signed URL."""

    url: str
    width: int
    height: int
    expires_at: dt.datetime


class PhotoOut(msgspec.Struct, kw_only=True):
    sha256: str
    format: str
    byte_size: int
    width: int
    """Of the original, upright."""
    height: int
    dhash: str
    """64-bit difference hash (hex) of the upright image: near-duplicates differ in few bits."""
    exif: ExifOut
    display: DerivativeOut
    thumbnail: DerivativeOut
    uploaded_by: uuid.UUID
    created_at: dt.datetime
    visits: list[uuid.UUID]
    """Visits in your jurisdiction whose answers reference this photo, or did: an answer replaced since
    (a photo attached to the wrong household and taken back) keeps its visit here, and its history shows
    both; the visit's evidence follows its current answers."""


class EvidenceItem(msgspec.Struct, kw_only=True):
    sha256: str
    kind: Literal["photo", "signature"]
    template: str
    item: str
    row_id: str | None
    view: str | None
    status: EvidenceStatus
    thumbnail_url: str | None
    """Short-lived signed URL of the thumbnail, when the photo is present."""
    refusal: str | None = None
    """When refused: why (``not_an_image``, ``unsupported_format``, ``truncated``, ``too_many_pixels``).
    The file will never be taken; the photo has to be taken again."""


IntegrityCheck = Literal[
    "photo_reused",
    "photo_near_duplicate",
    "photo_taken_before_visit",
    "photo_gps_far_from_fix",
    "far_from_home",
    "mock_location",
    "home_relocated_by_team",
]


class IntegrityFlag(msgspec.Struct, kw_only=True):
    """Something in the visit's evidence for a supervisor to look at: a flag to judge, not a verdict."""

    check: IntegrityCheck
    """``photo_reused``: the same file is named by another visit's answer (``same_household`` says whether
    that visit was of this household: an old photo of this home passed off as new).
    ``photo_near_duplicate``: another visit's file is a copy of this one, re-encoded, scaled or cropped
    (``bits``: how many of the 64 bits of their perceptual hashes differ).
    ``photo_taken_before_visit``: the file's EXIF shutter time is over a day before the visit was assigned
    (its first revision: an amendment carries the approved visit's photos, which never count against it).
    ``photo_gps_far_from_fix``: the file's EXIF GPS lies ``distance_m`` from the fix the app recorded with
    the answer that first named it, where it was attached (the coordinates are not shown: they are the
    household's).
    ``far_from_home``: an answer of the look step, done inside the home, was recorded ``distance_m`` from
    the household's recorded location, beyond the fix's accuracy.
    ``mock_location``: the device said the fix came from a mock-location app.
    ``home_relocated_by_team``: the household's recorded location, which ``far_from_home`` measures
    against, was changed by a member of this visit's team since the visit was assigned (``template`` and
    ``item`` are then ``household`` and ``location``)."""
    template: str
    item: str
    row_id: str | None
    sha256: str | None = None
    """The file flagged, for the photo checks."""
    distance_m: int | None = None
    bits: int | None = None
    same_household: bool | None = None
    other_visits: list[uuid.UUID] = []
    """The other visits naming the file, those in the caller's area."""
    elsewhere: int = 0
    """How many other visits naming it are outside the caller's area: counted, never named."""
    message: str


class EvidenceOut(msgspec.Struct, kw_only=True):
    visit_id: uuid.UUID
    version: int
    """The visit's version this evidence was read at: a review decision sends it back with ``present``."""
    expected: int
    """Referenced by an answer, bytes not received yet."""
    present: int
    refused: int
    """Referenced by an answer, and the file sent for it refused: it will never be present."""
    items: list[EvidenceItem]
    checks: list[IntegrityFlag] = []
    """The integrity checks' flags (docs/workflow.md, "Integrity checks"), in evidence order."""
    household_located: bool = True
    """Whether the household has a recorded location: without one, ``far_from_home`` cannot be checked."""


class DirectUploadIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Start a direct upload: the device will PUT the file's parts to the object store itself."""

    sha256: str
    """Of the whole file, lowercase hex: the server checks it when the parts are joined."""
    length: Annotated[int, msgspec.Meta(ge=0)]
    filename: str | None = None
    content_type: str | None = None


class DirectPartOut(msgspec.Struct, kw_only=True):
    number: int
    """1-based. Every part is ``part_size`` bytes but the last, which holds the rest."""
    url: str
    """PUT the part's bytes here (no other header needed). The answer's ETag need not be kept: the
    server lists the parts itself."""


class DirectUploadOut(msgspec.Struct, kw_only=True):
    upload_id: uuid.UUID
    state: Literal["receiving", "complete"]
    length: int
    part_size: int
    received: list[int]
    """Part numbers the store already holds."""
    parts: list[DirectPartOut]
    """The parts still to send, each with a fresh URL; empty once complete."""
    urls_expire_at: dt.datetime | None
    expires_at: dt.datetime
    """When the upload itself expires unless it is completed."""
