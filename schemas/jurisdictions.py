"""The district > subdistrict > community tree on the wire."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

LevelName = Literal["district", "subdistrict", "community"]


class JurisdictionOut(msgspec.Struct):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    level: LevelName
    code: str
    name: str
    path: str
