"""Holiday calendar files: the national (or a local) holiday arrangement for one year.

A file lists only the exceptions to the Monday-Friday week, because that is how the State Council
publishes them: days off (which may include weekend days inside a holiday block) and weekend days
that become working days to bridge a holiday (调休上班).
"""

from __future__ import annotations

import datetime
from typing import Literal

import msgspec

DayKind = Literal["holiday", "workday"]


class CalendarDay(msgspec.Struct, forbid_unknown_fields=True):
    """One exception to the ordinary week.

    `holiday`: no work that day, whatever the weekday. `workday`: a Saturday or Sunday that is a
    working day (调休上班).
    """

    date: datetime.date
    kind: DayKind
    name: str


class HolidayCalendar(msgspec.Struct, forbid_unknown_fields=True):
    """A named set of exceptions, e.g. `cn-2025`; `source` cites the notice it was copied from."""

    code: str
    name: str
    source: str
    days: list[CalendarDay]
