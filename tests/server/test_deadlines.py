"""Visit deadlines follow the working calendar, including holidays and swapped working days (调休)."""

from __future__ import annotations

import datetime as dt

from server.services.rules import today
from tests.helpers import Client, audit_rows, login
from tests.visit_flow import assign


def test_2026_national_day_and_its_swapped_saturday(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    days = client.get("/api/v1/calendar/days?start=2026-09-18&end=2026-10-12", headers=worker).json()
    by_day = {d["date"]: d for d in days}
    assert by_day["2026-09-20"]["working"] and by_day["2026-09-20"]["kind"] == "workday"  # a Sunday
    assert not any(by_day[f"2026-10-0{n}"]["working"] for n in range(1, 8))
    assert by_day["2026-10-10"]["working"]  # a Saturday
    # 10 working days from Fri 2026-09-18 count Sun 09-20 and skip the holiday week: Fri 10-09.
    due = client.get("/api/v1/calendar/deadline?start=2026-09-18&days=10", headers=worker).json()["due"]
    assert due == "2026-10-09"
    seven = client.get(
        "/api/v1/calendar/deadline?start=2026-09-29&days=7&unit=calendar", headers=worker
    ).json()
    assert seven["due"] == "2026-10-06"  # publicity runs in calendar days, holidays or not


def test_a_local_holiday_moves_a_new_visits_due_date(client: Client) -> None:
    before = dt.date.fromisoformat(assign(client, "DB-C01-0001", purpose="new_application")["due_date"])
    admin = login(client, "demo-admin")
    response = client.put(
        f"/api/v1/calendar/days/{before.isoformat()}",
        json={"kind": "holiday", "name": "区人大选举日"},
        headers=admin,
    )
    assert response.status_code == 200
    after = dt.date.fromisoformat(assign(client, "DB-C01-0002", purpose="new_application")["due_date"])
    window = client.get(f"/api/v1/calendar/days?start={before}&end={after}", headers=admin).json()
    assert after > before and window[0]["source"] == "local" and not window[0]["working"]
    assert [d["date"] for d in window[1:] if d["working"]] == [after.isoformat()]  # the next working day
    [row] = audit_rows(client, "calendar.set")
    assert row.changes["new"] == {"kind": "holiday", "name": "区人大选举日"}


def test_a_local_swapped_workday_counts(client: Client) -> None:
    admin = login(client, "demo-admin")
    start = today()
    saturday = start + dt.timedelta(days=(5 - start.weekday()) % 7 or 7)
    url = f"/api/v1/calendar/deadline?start={saturday - dt.timedelta(days=1)}&days=1"
    plain = client.get(url, headers=admin).json()["due"]
    assert (
        client.put(
            f"/api/v1/calendar/days/{saturday}", json={"kind": "workday", "name": "调休"}, headers=admin
        ).status_code
        == 200
    )
    assert client.get(url, headers=admin).json()["due"] == saturday.isoformat() != plain
    weekday = saturday + dt.timedelta(days=2)
    refused = client.put(
        f"/api/v1/calendar/days/{weekday}", json={"kind": "workday", "name": "x"}, headers=admin
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "not_a_weekend"
    assert (
        client.put(
            f"/api/v1/calendar/days/{saturday}",
            json={"kind": "holiday", "name": "x"},
            headers=login(client, "demo-reviewer-community"),
        ).status_code
        == 403
    )
    assert client.delete(f"/api/v1/calendar/days/{saturday}", headers=admin).status_code == 204
    assert client.get(url, headers=admin).json()["due"] == plain


def test_a_deadline_past_the_last_representable_date_is_a_422(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    for unit in ("calendar", "working"):
        r = client.get(f"/api/v1/calendar/deadline?start=9999-12-30&days=5&unit={unit}", headers=worker)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "date_out_of_range"


def test_a_deadline_past_the_shipped_calendars_skips_new_year_and_says_it_is_estimated(
    client: Client,
) -> None:
    worker = login(client, "demo-worker-1")
    answer = client.get("/api/v1/calendar/deadline?start=2026-12-18&days=10", headers=worker).json()
    assert (answer["due"], answer["years_not_covered"]) == ("2027-01-04", [2027])
    covered = client.get("/api/v1/calendar/deadline?start=2026-09-18&days=10", headers=worker).json()
    assert covered["years_not_covered"] == []
    days = client.get("/api/v1/calendar/days?start=2026-12-31&end=2027-01-01", headers=worker).json()
    assert [(d["working"], d["source"]) for d in days] == [(True, None), (False, "assumed")]
