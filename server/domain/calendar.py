"""Working-day arithmetic against a holiday calendar with swapped working days (调休).

Dibao deadlines are mostly counted in working days (工作日): 3 to start an investigation, 10 for
the county review, 30 in total. A working day is Monday to Friday unless the State Council makes it
a holiday, plus the odd Saturday or Sunday it turns into a working day to bridge a holiday. Publicity
(公示) is the exception and runs in calendar days, holidays included.

Counting convention (as in the regulations and in everyday use): the day a period starts on is not
counted. "3 working days after Friday" is the third working day that follows Friday.

The functions step one day at a time. Deadlines span at most a few hundred days, so that costs
microseconds, and it is obviously correct in a way that week-arithmetic shortcuts are not once
swapped weekends are involved.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from importlib import resources
from typing import Literal

import msgspec

from schemas.calendars import DayKind, HolidayCalendar

Unit = Literal["working", "calendar"]

CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8), "CST")
_ONE_DAY = dt.timedelta(days=1)
_SATURDAY = 5
# Calendar codes become file names; keep them to a plain slug so a code can never walk the tree.
_CODE = re.compile(r"[a-z0-9][a-z0-9-]*")


FIXED_DATE_HOLIDAYS: dict[tuple[int, int], str] = {
    (1, 1): "元旦",
    (5, 1): "劳动节",
    (5, 2): "劳动节",
    (10, 1): "国庆节",
    (10, 2): "国庆节",
    (10, 3): "国庆节",
}
"""(month, day) -> name of the statutory days off that fall on the same date every year (全国年节及纪念日
放假办法, as revised in 2024: New Year's Day 1, Labour Day 2, National Day 3; every shipped calendar has
them). Spring Festival, Qingming, Dragon Boat and Mid-Autumn follow the lunar calendar or a solar term,
and the swapped days around each break are announced a year at a time, so neither can be foreseen."""


class WorkingCalendar:
    """Which days are working days: Mon-Fri, minus holidays, plus swapped weekend workdays.

    Dates outside the overrides are treated as an ordinary week, so a calendar only knows the years
    it was given; build it from every year a deadline can reach (e.g. `cn-2025` and `cn-2026`). Given
    `known_years`, the years its overrides cover, it also keeps the fixed-date statutory holidays
    (`FIXED_DATE_HOLIDAYS`) off in every other year: an estimate, better than counting 1 January as a
    working day, until that year's calendar is shipped.
    """

    __slots__ = ("_holidays", "_known_years", "_workdays")

    def __init__(
        self, overrides: Iterable[tuple[dt.date, DayKind]] = (), *, known_years: Iterable[int] | None = None
    ) -> None:
        self._known_years = None if known_years is None else frozenset(known_years)
        holidays: set[dt.date] = set()
        workdays: set[dt.date] = set()
        for day, kind in overrides:
            if kind == "holiday":
                holidays.add(day)
            elif kind == "workday":
                # A "workday" on a weekday would change nothing, so it is almost certainly a typo
                # in the data (a wrong date); better to refuse the file than to miscount silently.
                if day.weekday() < _SATURDAY:
                    raise ValueError(
                        f"{day} is a weekday; only a Saturday or Sunday can be a swapped workday"
                    )
                workdays.add(day)
            else:
                raise ValueError(f"unknown day kind {kind!r} for {day}")
        clash = holidays & workdays
        if clash:
            raise ValueError(f"dates marked both holiday and workday: {sorted(clash)}")
        self._holidays = frozenset(holidays)
        self._workdays = frozenset(workdays)

    @classmethod
    def from_calendars(cls, *calendars: HolidayCalendar) -> WorkingCalendar:
        """One working calendar from several files, e.g. consecutive years or national + local."""
        return cls((day.date, day.kind) for calendar in calendars for day in calendar.days)

    def is_working_day(self, day: dt.date) -> bool:
        if day.weekday() >= _SATURDAY:
            return day in self._workdays
        return day not in self._holidays and self.assumed_holiday(day) is None

    def assumed_holiday(self, day: dt.date) -> str | None:
        """The fixed-date statutory holiday `day` is assumed to be, in a year no calendar covers."""
        if self._known_years is None or day.year in self._known_years or day in self._workdays:
            return None
        return FIXED_DATE_HOLIDAYS.get((day.month, day.day))

    def years_not_covered(self, start: dt.date, end: dt.date) -> list[int]:
        """The years from `start` to `end` with no calendar, whose holidays are only assumed."""
        if self._known_years is None:
            return []
        return [
            y for y in range(min(start, end).year, max(start, end).year + 1) if y not in self._known_years
        ]

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The date on which the nth working day after `start` falls (`start` itself not counted).

        n=0 returns `start` unchanged, even on a holiday. Negative n counts backwards: -1 is the
        last working day before `start`.
        """
        step = _ONE_DAY if n > 0 else -_ONE_DAY
        day = start
        remaining = abs(n)
        while remaining:
            day += step
            if self.is_working_day(day):
                remaining -= 1
        return day

    def working_days_between(self, a: dt.date, b: dt.date) -> int:
        """Working days passed walking from `a` to `b`, not counting `a`, counting `b`.

        For a <= b that is the number of working days in (a, b]. For a > b it is minus the number in
        [b, a), so that `working_days_between(d, add_working_days(d, n)) == n` for every n, of
        either sign.
        """
        if a <= b:
            count = 0
            day = a + _ONE_DAY
            while day <= b:
                count += self.is_working_day(day)
                day += _ONE_DAY
            return count
        return -self.working_days_between(b - _ONE_DAY, a - _ONE_DAY)

    @staticmethod
    def add_calendar_days(start: dt.date, n: int) -> dt.date:
        """Plain date arithmetic; holidays do not matter (used for 7-day publicity, 公示)."""
        return start + dt.timedelta(days=n)

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after `day`."""
        return self.add_working_days(day, 1)

    def working_day_on_or_after(self, day: dt.date) -> dt.date:
        """`day` if it is a working day, else the next one (for rules that move a deadline off a holiday)."""
        return day if self.is_working_day(day) else self.next_working_day(day)

    def due_after(self, start: dt.date, days: int, *, unit: Unit) -> dt.date:
        """The last day of a period of `days` that starts on `start` (not counted).

        `unit` is required on purpose: whether a timer runs in working or calendar days differs
        between timers (T_pub1 is 7 calendar days, T_county 10 working days) and between local rules,
        so every caller has to say which.
        """
        if unit == "working":
            return self.add_working_days(start, days)
        if unit == "calendar":
            return self.add_calendar_days(start, days)
        raise ValueError(f"unknown unit {unit!r}")


def china_today() -> dt.date:
    """The deployment's date: China Standard Time, whatever zone the server runs in."""
    return dt.datetime.now(CHINA_STANDARD_TIME).date()


def is_overdue(due: dt.date, today: dt.date) -> bool:
    """A deadline is met by acting on the due date itself; it is overdue from the day after."""
    return today > due


def load_calendar(code: str) -> HolidayCalendar:
    """The shipped calendar `server/data/calendars/<code>.json`, e.g. `cn-2025`.

    Raises ValueError for an unknown or malformed code, msgspec.ValidationError for a bad file.
    """
    if not _CODE.fullmatch(code):
        raise ValueError(f"invalid calendar code {code!r}")
    resource = resources.files("server.data.calendars").joinpath(f"{code}.json")
    if not resource.is_file():
        raise ValueError(f"unknown calendar {code!r}")
    calendar = msgspec.json.decode(resource.read_bytes(), type=HolidayCalendar)
    if calendar.code != code:
        # The file name is the lookup key and `code` is what gets recorded with a deadline; a copied
        # file that was not edited would otherwise label one year's dates with another's code.
        raise ValueError(f"calendar file {code}.json declares code {calendar.code!r}")
    return calendar
