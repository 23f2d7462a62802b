"""The working calendar: national holidays with swapped workdays, and the deployment's own overrides."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from litestar import Controller, delete, get, put
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import select

from schemas.calendars import CalendarDay
from schemas.calendars_api import CalendarDayOut, CalendarOverride, Deadline
from server.db.models import HolidayOverride
from server.dependencies import CurrentActor, DbSession, Rules, provide_actor, provide_rules
from server.domain.calendar import WorkingCalendar, load_calendar
from server.errors import Invalid, NotFound
from server.services import audit
from server.services.rules import working_calendar

MAX_SPAN = 400


def _day_out(
    day: dt.date,
    calendar: WorkingCalendar,
    national: dict[dt.date, CalendarDay],
    local: dict[dt.date, HolidayOverride],
) -> CalendarDayOut:
    """One day, and why it is (not) a working day: a local override, the national calendar, or a
    fixed-date statutory holiday assumed in a year no shipped calendar covers."""
    entry = local.get(day) or national.get(day)
    if entry is None and (assumed := calendar.assumed_holiday(day)):
        return CalendarDayOut(date=day, working=False, kind="holiday", name=assumed, source="assumed")
    source: Literal["national", "local"] | None = "local" if day in local else "national" if entry else None
    return CalendarDayOut(
        date=day,
        working=calendar.is_working_day(day),
        kind=entry.kind if entry else None,  # type: ignore[arg-type]
        name=entry.name if entry else None,
        source=source,
    )


class CalendarController(Controller):
    path = "/api/v1/calendar"
    tags = ["calendar"]
    dependencies = {"actor": Provide(provide_actor), "rules": Provide(provide_rules, sync_to_thread=False)}

    @get("/days", summary="Each day from..to: working or not, and why")
    async def days(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        start: FromQuery[dt.date],
        end: FromQuery[dt.date],
    ) -> list[CalendarDayOut]:
        if not 0 <= (end - start).days <= MAX_SPAN:
            raise Invalid(f"end must be on or after start, at most {MAX_SPAN} days later.", code="bad_range")
        calendar = await working_calendar(db_session, rules)
        national = {d.date: d for code in rules.calendars for d in load_calendar(code).days}
        local = {r.day: r for r in (await db_session.execute(select(HolidayOverride))).scalars()}
        return [
            _day_out(start + dt.timedelta(days=n), calendar, national, local)
            for n in range((end - start).days + 1)
        ]

    @get("/deadline", summary="The date `days` working (or calendar) days after `start`")
    async def deadline(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        start: FromQuery[dt.date],
        days: Annotated[int, QueryParameter(ge=0, le=366)],
        unit: FromQuery[Literal["working", "calendar"]] = "working",
    ) -> Deadline:
        calendar = await working_calendar(db_session, rules)
        try:
            due = calendar.due_after(start, days, unit=unit)
        except OverflowError:  # past 9999-12-31, the last date there is
            raise Invalid(
                "The deadline falls after 9999-12-31.",
                code="date_out_of_range",
                details=[{"field": "start", "message": "too late for this many days"}],
            ) from None
        unknown = calendar.years_not_covered(start, due) if unit == "working" else []
        return Deadline(start=start, days=days, unit=unit, due=due, years_not_covered=unknown)

    @put("/days/{day:date}", summary="Declare a local holiday or a swapped working day (admins)")
    async def set_day(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        day: FromPath[dt.date],
        data: JSONBody[CalendarOverride],
    ) -> CalendarOverride:
        actor.require_administers_everything("the working calendar")
        if data.kind == "workday" and day.weekday() < 5:
            raise Invalid("A swapped working day falls on a weekend.", code="not_a_weekend")
        row = await db_session.get(HolidayOverride, day, with_for_update=True)
        before = {"kind": row.kind, "name": row.name} if row else None
        if row is None:
            db_session.add(HolidayOverride(day=day, kind=data.kind, name=data.name))
        else:
            row.kind, row.name = data.kind, data.name
        audit.record(
            db_session,
            actor,
            "calendar.set",
            "calendar_day",
            day.isoformat(),
            {"old": before, "new": {"kind": data.kind, "name": data.name}},
        )
        await db_session.commit()
        return data

    @delete("/days/{day:date}", summary="Remove a local override (admins)")
    async def clear_day(self, db_session: DbSession, actor: CurrentActor, day: FromPath[dt.date]) -> None:
        actor.require_administers_everything("the working calendar")
        row = await db_session.get(HolidayOverride, day, with_for_update=True)
        if row is None:
            raise NotFound("No local override on that day.")
        audit.record(
            db_session,
            actor,
            "calendar.clear",
            "calendar_day",
            day.isoformat(),
            {"old": {"kind": row.kind, "name": row.name}},
        )
        await db_session.delete(row)
        await db_session.commit()
