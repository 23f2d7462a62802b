"""The working calendar on the wire: days, overrides, and deadline arithmetic."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec


class CalendarDayOut(msgspec.Struct, kw_only=True):
    date: dt.date
    working: bool
    kind: Literal["holiday", "workday"] | None
    """Why the day differs from Mon-Fri: a holiday, or a swapped working day (调休) on a weekend."""
    name: str | None
    source: Literal["national", "local"] | None


class CalendarOverride(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["holiday", "workday"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Deadline(msgspec.Struct):
    start: dt.date
    days: int
    unit: Literal["working", "calendar"]
    due: dt.date
