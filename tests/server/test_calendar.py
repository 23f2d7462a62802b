"""Working-day arithmetic against the shipped 2025 national calendar.

Expected dates are worked out by hand from the State Council notice, not from the code under test.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.calendars import HolidayCalendar
from server.domain.calendar import FIXED_DATE_HOLIDAYS, WorkingCalendar, is_overdue, load_calendar

D = dt.date


@pytest.fixture(scope="module")
def cn2025() -> WorkingCalendar:
    return WorkingCalendar.from_calendars(load_calendar("cn-2025"))


# A module-level instance for the Hypothesis tests, which cannot take function-scoped fixtures.
CN2025 = WorkingCalendar.from_calendars(load_calendar("cn-2025"))


# --- the shipped file -------------------------------------------------------------------------------


def test_shipped_2025_file_matches_the_notice() -> None:
    calendar = load_calendar("cn-2025")
    assert calendar.code == "cn-2025"
    assert "国办发明电〔2024〕12号" in calendar.source
    holidays = {d.date for d in calendar.days if d.kind == "holiday"}
    workdays = {d.date for d in calendar.days if d.kind == "workday"}
    assert workdays == {D(2025, 1, 26), D(2025, 2, 8), D(2025, 4, 27), D(2025, 9, 28), D(2025, 10, 11)}
    # 1 + 8 + 3 + 5 + 3 + 8 days off, weekends inside the blocks included.
    assert len(holidays) == 28
    assert {D(2025, 1, 1), D(2025, 1, 28), D(2025, 2, 4), D(2025, 4, 4), D(2025, 4, 6)} <= holidays
    assert {
        D(2025, 5, 1),
        D(2025, 5, 5),
        D(2025, 5, 31),
        D(2025, 6, 2),
        D(2025, 10, 1),
        D(2025, 10, 8),
    } <= holidays
    assert len(calendar.days) == len(holidays) + len(workdays)  # no date listed twice


def test_2025_has_248_working_days(cn2025: WorkingCalendar) -> None:
    # 261 weekdays, 18 of them holidays, plus 5 swapped weekend workdays.
    assert cn2025.working_days_between(D(2024, 12, 31), D(2025, 12, 31)) == 248


@pytest.mark.parametrize("code", ["../calendars/cn-2025", "cn-2025.json", "CN-2025", ""])
def test_load_calendar_refuses_codes_that_are_not_slugs(code: str) -> None:
    with pytest.raises(ValueError, match="invalid calendar code"):
        load_calendar(code)


def test_load_calendar_unknown_code() -> None:
    with pytest.raises(ValueError, match="unknown calendar"):
        load_calendar("cn-1999")


def test_calendar_file_with_an_unknown_kind_is_rejected() -> None:
    raw = b'{"code": "x", "name": "x", "source": "x", "days": [{"date": "2025-01-01", "kind": "off", "name": "x"}]}'
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=HolidayCalendar)


# --- is_working_day ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2025, 1, 1), False),  # New Year's Day, a Wednesday
        (D(2025, 1, 2), True),
        (D(2025, 1, 25), False),  # ordinary Saturday
        (D(2025, 1, 26), True),  # Sunday, swapped working day
        (D(2025, 2, 4), False),  # last day of Spring Festival, a Tuesday
        (D(2025, 2, 5), True),
        (D(2025, 2, 8), True),  # Saturday, swapped working day
        (D(2025, 2, 9), False),
        (D(2025, 4, 27), True),  # Sunday before Labour Day
        (D(2025, 5, 5), False),  # Monday inside Labour Day
        (D(2025, 6, 2), False),  # Monday, Dragon Boat
        (D(2025, 9, 28), True),  # Sunday before National Day
        (D(2025, 10, 8), False),  # Wednesday, last day of National Day + Mid-Autumn
        (D(2025, 10, 11), True),  # Saturday after National Day
        (D(2025, 10, 12), False),
    ],
)
def test_is_working_day(cn2025: WorkingCalendar, day: dt.date, working: bool) -> None:
    assert cn2025.is_working_day(day) is working


# --- add_working_days -------------------------------------------------------------------------------


def test_three_working_days_after_friday_before_spring_festival(cn2025: WorkingCalendar) -> None:
    # Fri 01-24 -> Sun 01-26 (swapped, 1) -> Mon 01-27 (2) -> 01-28..02-04 off -> Wed 02-05 (3).
    start = D(2025, 1, 24)
    assert cn2025.add_working_days(start, 1) == D(2025, 1, 26)
    assert cn2025.add_working_days(start, 2) == D(2025, 1, 27)
    assert cn2025.add_working_days(start, 3) == D(2025, 2, 5)


def test_ten_working_day_county_review_across_national_day(cn2025: WorkingCalendar) -> None:
    # Fri 09-26 -> Sun 09-28 (1), Mon 29 (2), Tue 30 (3), 10-01..10-08 off, Thu 10-09 (4), Fri 10 (5),
    # Sat 11 (6, swapped), Mon 13 (7), Tue 14 (8), Wed 15 (9), Thu 16 (10).
    assert cn2025.add_working_days(D(2025, 9, 26), 10) == D(2025, 10, 16)
    assert cn2025.due_after(D(2025, 9, 26), 10, unit="working") == D(2025, 10, 16)


def test_zero_working_days_returns_start_even_on_a_holiday(cn2025: WorkingCalendar) -> None:
    assert cn2025.add_working_days(D(2025, 10, 3), 0) == D(2025, 10, 3)


def test_start_on_a_holiday_counts_from_the_next_working_day(cn2025: WorkingCalendar) -> None:
    # Accepted (受理) on a holiday: the first working day is Thu 10-09.
    assert cn2025.add_working_days(D(2025, 10, 3), 1) == D(2025, 10, 9)
    assert cn2025.add_working_days(D(2025, 10, 3), 3) == D(2025, 10, 11)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (D(2025, 2, 5), -1, D(2025, 1, 27)),  # back over Spring Festival
        (D(2025, 2, 5), -2, D(2025, 1, 26)),  # the swapped Sunday counts backwards too
        (D(2025, 2, 5), -3, D(2025, 1, 24)),
        (D(2025, 10, 9), -1, D(2025, 9, 30)),
        (D(2025, 9, 29), -1, D(2025, 9, 28)),
        (D(2025, 10, 13), -1, D(2025, 10, 11)),  # Monday -> the swapped Saturday, not Friday
        (D(2025, 1, 2), -1, D(2024, 12, 31)),  # over New Year's Day into a year the file does not cover
    ],
)
def test_negative_n_counts_backwards(
    cn2025: WorkingCalendar, start: dt.date, n: int, expected: dt.date
) -> None:
    assert cn2025.add_working_days(start, n) == expected


def test_thirty_working_day_total_from_mid_april(cn2025: WorkingCalendar) -> None:
    # T_total from Mon 04-14 crosses Labour Day (with the swapped Sun 04-27).
    # April 15-30: 12 weekdays + Sun 27 = 13; May 6-9 = 4 (17); May 12-16 = 5 (22); May 19-23 = 5 (27);
    # May 26, 27, 28 -> 30th working day is Wed 05-28.
    assert cn2025.add_working_days(D(2025, 4, 14), 30) == D(2025, 5, 28)


# --- between, calendar days, next working day, overdue ----------------------------------------------


def test_working_days_between(cn2025: WorkingCalendar) -> None:
    assert cn2025.working_days_between(D(2025, 1, 24), D(2025, 2, 5)) == 3
    assert cn2025.working_days_between(D(2025, 9, 30), D(2025, 10, 8)) == 0  # all holiday
    assert cn2025.working_days_between(D(2025, 9, 26), D(2025, 10, 16)) == 10
    assert cn2025.working_days_between(D(2025, 3, 5), D(2025, 3, 5)) == 0
    # Backwards: minus the working days in [b, a).
    assert cn2025.working_days_between(D(2025, 2, 5), D(2025, 1, 24)) == -3
    assert cn2025.working_days_between(D(2025, 10, 16), D(2025, 9, 26)) == -10


def test_seven_day_publicity_ignores_holidays(cn2025: WorkingCalendar) -> None:
    assert cn2025.add_calendar_days(D(2025, 9, 29), 7) == D(2025, 10, 6)
    assert cn2025.due_after(D(2025, 9, 29), 7, unit="calendar") == D(2025, 10, 6)
    assert cn2025.due_after(D(2025, 9, 29), 7, unit="working") == D(2025, 10, 15)


def test_next_working_day(cn2025: WorkingCalendar) -> None:
    assert cn2025.next_working_day(D(2025, 9, 30)) == D(2025, 10, 9)
    assert cn2025.next_working_day(D(2025, 1, 24)) == D(2025, 1, 26)
    assert cn2025.next_working_day(D(2025, 3, 5)) == D(2025, 3, 6)  # strictly after, even from a working day
    assert cn2025.working_day_on_or_after(D(2025, 3, 5)) == D(2025, 3, 5)
    assert cn2025.working_day_on_or_after(D(2025, 10, 4)) == D(2025, 10, 9)


def test_is_overdue_from_the_day_after_the_due_date() -> None:
    due = D(2025, 10, 16)
    assert not is_overdue(due, D(2025, 10, 15))
    assert not is_overdue(due, due)
    assert is_overdue(due, D(2025, 10, 17))


def test_without_overrides_only_weekends_are_off() -> None:
    plain = WorkingCalendar()
    assert plain.add_working_days(D(2025, 10, 3), 1) == D(2025, 10, 6)  # Fri -> Mon
    assert plain.working_days_between(D(2025, 9, 28), D(2025, 10, 12)) == 10


def test_construction_rejects_inconsistent_data() -> None:
    with pytest.raises(ValueError, match="weekday"):
        WorkingCalendar([(D(2025, 1, 27), "workday")])  # a Monday
    with pytest.raises(ValueError, match="both holiday and workday"):
        WorkingCalendar([(D(2025, 1, 26), "holiday"), (D(2025, 1, 26), "workday")])


# --- properties -------------------------------------------------------------------------------------

# From half a year before the file to half a year after, so the plain-week fallback is exercised too.
dates = st.dates(min_value=D(2024, 7, 1), max_value=D(2026, 6, 30))
counts = st.integers(min_value=0, max_value=60)


@given(start=dates, n=counts)
def test_between_inverts_add(start: dt.date, n: int) -> None:
    end = CN2025.add_working_days(start, n)
    assert CN2025.working_days_between(start, end) == n
    if n > 0:
        assert end > start
        assert CN2025.is_working_day(end)
        # ...and it is the earliest such day: the day before still leaves one to go.
        assert CN2025.working_days_between(start, end - dt.timedelta(days=1)) == n - 1


@given(start=dates, n=counts)
def test_backwards_between_inverts_add(start: dt.date, n: int) -> None:
    begin = CN2025.add_working_days(start, -n)
    assert CN2025.working_days_between(start, begin) == -n
    if n > 0:
        assert begin < start
        assert CN2025.is_working_day(begin)


@given(start=dates, n=counts)
def test_add_is_strictly_monotonic_in_n(start: dt.date, n: int) -> None:
    assert CN2025.add_working_days(start, n) < CN2025.add_working_days(start, n + 1)
    assert CN2025.add_working_days(start, -n) > CN2025.add_working_days(start, -n - 1)


@given(start=dates, n=counts)
def test_add_from_a_working_day_round_trips(start: dt.date, n: int) -> None:
    day = CN2025.working_day_on_or_after(start)
    assert CN2025.add_working_days(CN2025.add_working_days(day, n), -n) == day


# --- 2026 (国办发明电〔2025〕7号) --------------------------------------------------------------------
# Expected values are worked out by hand from the notice text, not from the file under test.

CN2026_WORKDAYS = {
    D(2026, 1, 4),  # Sunday, 元旦
    D(2026, 2, 14),  # Saturday, before Spring Festival
    D(2026, 2, 28),  # Saturday, after Spring Festival
    D(2026, 5, 9),  # Saturday, after Labour Day
    D(2026, 9, 20),  # Sunday, before National Day
    D(2026, 10, 10),  # Saturday, after National Day
}


@pytest.fixture(scope="module")
def cn2026() -> WorkingCalendar:
    return WorkingCalendar.from_calendars(load_calendar("cn-2026"))


def test_shipped_2026_file_matches_the_notice() -> None:
    calendar = load_calendar("cn-2026")
    assert calendar.code == "cn-2026"
    assert "国办发明电〔2025〕7号" in calendar.source
    holidays = {d.date for d in calendar.days if d.kind == "holiday"}
    workdays = {d.date for d in calendar.days if d.kind == "workday"}
    assert workdays == CN2026_WORKDAYS
    # Seven breaks of 3 + 9 + 3 + 5 + 3 + 3 + 7 days, weekends inside the blocks included.
    assert len(holidays) == 33
    assert all(d.year == 2026 for d in holidays | workdays)
    assert len(calendar.days) == len(holidays) + len(workdays)  # no date listed twice


def test_2026_breaks_are_listed_day_by_day() -> None:
    calendar = load_calendar("cn-2026")
    by_name: dict[str, set[dt.date]] = {}
    for day in calendar.days:
        if day.kind == "holiday":
            by_name.setdefault(day.name, set()).add(day.date)

    def span(first: dt.date, last: dt.date) -> set[dt.date]:
        return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}

    assert by_name == {
        "元旦": span(D(2026, 1, 1), D(2026, 1, 3)),
        "春节": span(D(2026, 2, 15), D(2026, 2, 23)),
        "清明节": span(D(2026, 4, 4), D(2026, 4, 6)),
        "劳动节": span(D(2026, 5, 1), D(2026, 5, 5)),
        "端午节": span(D(2026, 6, 19), D(2026, 6, 21)),
        "中秋节": span(D(2026, 9, 25), D(2026, 9, 27)),
        "国庆节": span(D(2026, 10, 1), D(2026, 10, 7)),
    }


@pytest.mark.parametrize("day", sorted(CN2026_WORKDAYS))
def test_2026_swapped_weekend_days_are_working_days(cn2026: WorkingCalendar, day: dt.date) -> None:
    assert day.weekday() >= 5  # really a Saturday or Sunday
    assert cn2026.is_working_day(day)


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2026, 1, 1), False),  # Thursday, New Year's Day
        (D(2026, 1, 2), False),  # Friday, bridged
        (D(2026, 1, 5), True),
        (D(2026, 2, 13), True),  # Friday before Spring Festival
        (D(2026, 2, 15), False),  # Sunday, first day (腊月二十八)
        (D(2026, 2, 17), False),  # Tuesday, 正月初一
        (D(2026, 2, 23), False),  # Monday, last day (正月初七)
        (D(2026, 2, 24), True),
        (D(2026, 2, 21), False),  # Saturday inside the break
        (D(2026, 3, 1), False),  # ordinary Sunday after the swapped Saturday
        (D(2026, 4, 6), False),  # Monday, Qingming
        (D(2026, 5, 5), False),  # Tuesday, Labour Day
        (D(2026, 5, 6), True),
        (D(2026, 6, 19), False),  # Friday, Dragon Boat
        (D(2026, 9, 25), False),  # Friday, Mid-Autumn
        (D(2026, 9, 30), True),
        (D(2026, 10, 7), False),  # Wednesday, last day of National Day
        (D(2026, 10, 8), True),
        (D(2026, 10, 11), False),  # ordinary Sunday
    ],
)
def test_is_working_day_2026(cn2026: WorkingCalendar, day: dt.date, working: bool) -> None:
    assert cn2026.is_working_day(day) is working


def test_2026_has_248_working_days(cn2026: WorkingCalendar) -> None:
    # 2026 starts on a Thursday: 52 weeks + 1 day, so 261 weekdays. Weekdays off: 元旦 2 (Jan 1-2),
    # 春节 6 (Feb 16-20, 23), 清明 1 (Apr 6), 劳动节 3 (May 1, 4, 5), 端午 1 (Jun 19), 中秋 1 (Sep 25),
    # 国庆 5 (Oct 1, 2, 5, 6, 7) = 19. Plus 6 swapped weekend days: 261 - 19 + 6 = 248.
    assert cn2026.working_days_between(D(2025, 12, 31), D(2026, 12, 31)) == 248


def test_three_working_days_across_spring_festival_2026(cn2026: WorkingCalendar) -> None:
    # Fri 02-13 -> Sat 02-14 (swapped, 1) -> 02-15..02-23 off -> Tue 02-24 (2) -> Wed 02-25 (3).
    start = D(2026, 2, 13)
    assert cn2026.add_working_days(start, 1) == D(2026, 2, 14)
    assert cn2026.add_working_days(start, 2) == D(2026, 2, 24)
    assert cn2026.add_working_days(start, 3) == D(2026, 2, 25)
    assert cn2026.add_working_days(D(2026, 2, 24), -1) == D(2026, 2, 14)


def test_ten_working_days_across_mid_autumn_and_national_day_2026(cn2026: WorkingCalendar) -> None:
    # Fri 09-18 -> Sun 09-20 (swapped, 1), Mon-Thu 21-24 (2-5), 25-27 off, Mon-Wed 28-30 (6-8),
    # 10-01..10-07 off, Thu 10-08 (9), Fri 10-09 (10).
    assert cn2026.add_working_days(D(2026, 9, 18), 10) == D(2026, 10, 9)
    assert cn2026.next_working_day(D(2026, 9, 30)) == D(2026, 10, 8)
    # ...and one more lands on the swapped Saturday.
    assert cn2026.add_working_days(D(2026, 9, 18), 11) == D(2026, 10, 10)


def test_deadline_across_the_2025_2026_year_end() -> None:
    both = WorkingCalendar.from_calendars(load_calendar("cn-2025"), load_calendar("cn-2026"))
    # Wed 2025-12-31 -> 2026-01-01..03 off -> Sun 01-04 (swapped, 1) -> Mon 01-05 (2) -> Tue 01-06 (3).
    assert both.add_working_days(D(2025, 12, 31), 3) == D(2026, 1, 6)
    assert both.working_days_between(D(2025, 12, 31), D(2026, 1, 6)) == 3
    # 2025 alone does not know about 2026 and miscounts, which is why both years are loaded.
    assert CN2025.add_working_days(D(2025, 12, 31), 3) == D(2026, 1, 5)


@pytest.mark.parametrize("code", ["cn-2025", "cn-2026"])
def test_every_shipped_calendar_has_the_fixed_date_holidays_off(code: str) -> None:
    calendar = load_calendar(code)
    year = calendar.days[0].date.year
    off = {d.date for d in calendar.days if d.kind == "holiday"}
    assert {D(year, month, day) for month, day in FIXED_DATE_HOLIDAYS} <= off


def test_a_year_no_calendar_covers_keeps_only_the_fixed_date_holidays() -> None:
    both = load_calendar("cn-2025").days + load_calendar("cn-2026").days
    calendar = WorkingCalendar(((d.date, d.kind) for d in both), known_years=[2025, 2026])
    assert not calendar.is_working_day(D(2027, 1, 1)) and calendar.assumed_holiday(D(2027, 1, 1)) == "元旦"
    assert not calendar.is_working_day(D(2027, 10, 1))  # a Friday; the 2nd and 3rd fall on the weekend
    assert calendar.is_working_day(D(2027, 10, 4))  # the days made up for them are not known yet
    assert calendar.assumed_holiday(D(2026, 1, 1)) is None  # known years come from their files
    # Fri 2026-12-18: 12-21..25 (5), 12-28..31 (9), 2027-01-01 assumed off, Mon 01-04 (10).
    assert calendar.add_working_days(D(2026, 12, 18), 10) == D(2027, 1, 4)
    assert calendar.years_not_covered(D(2026, 12, 18), D(2027, 1, 4)) == [2027]
    assert calendar.years_not_covered(D(2025, 3, 1), D(2026, 3, 1)) == []
    assert WorkingCalendar().is_working_day(D(2027, 1, 1))  # without known_years: an ordinary week
