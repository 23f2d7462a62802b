"""The deployment's rule pack and working calendar."""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources
from pathlib import Path
from typing import cast

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.calendars import DayKind
from schemas.rules import ReviewLevel, RulePack
from server.db.models import HolidayOverride
from server.domain.calendar import WorkingCalendar, china_today, load_calendar


@functools.cache
def load_rules(path: str = "") -> RulePack:
    """The rule pack at `path`, or the shipped default. Read once per process: it is configuration."""
    raw = (
        Path(path).read_bytes()
        if path
        else resources.files("server.data").joinpath("rules/default.yaml").read_bytes()
    )
    return msgspec.yaml.decode(raw, type=RulePack)


def rules_tag(rules: RulePack) -> str:
    """What decisions store, so each can be judged under the rules it was made under."""
    return f"{rules.code}@{rules.version}"


def waiting_level(rules: RulePack, number: int) -> int:
    """The level a file sent up to level `number` waits at under these rules. A deployment may replace its
    pack with one of fewer levels (confirmation delegated to the subdistrict): a file already past the new
    last level waits at that one, the confirming level, instead of at a level that no longer exists."""
    return min(number, len(rules.review_levels))


def level(rules: RulePack, number: int) -> ReviewLevel:
    return rules.review_levels[waiting_level(rules, number) - 1]


async def working_calendar(session: AsyncSession, rules: RulePack) -> WorkingCalendar:
    """The shipped national calendars with this deployment's own overrides on top."""
    base = [(d.date, d.kind) for code in rules.calendars for d in load_calendar(code).days]
    local = [(row.day, row.kind) for row in (await session.execute(select(HolidayOverride))).scalars()]
    merged = dict(base) | dict(local)
    return WorkingCalendar(
        ((day, cast(DayKind, kind)) for day, kind in merged.items()),
        known_years={day.year for day, _ in base},  # a year's file lists at least its 1 January
    )


def today() -> dt.date:
    """The deployment's date: China Standard Time, whatever zone the server runs in."""
    return china_today()
