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
    source: Literal["national", "local", "assumed"] | None
    """`assumed`: a fixed-date statutory holiday (1 January, 1-2 May, 1-3 October) in a year no shipped
    calendar covers yet."""


class CalendarOverride(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["holiday", "workday"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Deadline(msgspec.Struct):
    start: dt.date
    days: int
    unit: Literal["working", "calendar"]
    due: dt.date
    years_not_covered: list[int] = []
    """Years the working-day count ran through with no shipped holiday calendar: there only the fixed-date
    statutory holidays are known, so `due` is an estimate until that year's calendar ships."""
