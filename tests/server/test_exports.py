"""Exports of visits and observations: filtered, scoped, audited, and free of ID numbers and names."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import uuid

import pytest

from server.demo import demo_id
from server.domain.calendar import CHINA_STANDARD_TIME
from server.services.rules import today
from tests.helpers import Client, audit_rows, login
from tests.visit_flow import GPS, assign, completed_visit


def rows(response_text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response_text.lstrip("\ufeff"))))


def test_visit_csv_follows_filters_and_scope(client: Client) -> None:
    reviewer = login(client, "demo-reviewer-subdistrict")
    response = client.get("/api/v1/exports/visits.csv?status=in_review", headers=reviewer)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    exported = rows(response.text)
    assert exported and {r["status"] for r in exported} == {"in_review"}
    assert {r["community"] for r in exported} == {"C01"}
    assert str(demo_id("visit", "DB-C01-0004")) in {r["visit_id"] for r in exported}
    outside = client.get("/api/v1/exports/visits.csv", headers=login(client, "demo-admin")).text
    assert len(rows(outside)) >= len(exported)
    assert [(r.entity_type, r.changes) for r in audit_rows(client, "export")] == [
        ("visits", {"status": "in_review"}),
        ("visits", {}),
    ]


def test_observation_geojson_has_points_and_no_personal_identifiers(client: Client) -> None:
    visit, _ = completed_visit(client)
    admin = login(client, "demo-admin")
    response = client.get("/api/v1/exports/observations.geojson?status=in_progress", headers=admin)
    body = json.loads(response.text)
    assert body["type"] == "FeatureCollection"
    mine = [f for f in body["features"] if f["properties"]["visit_id"] == visit["id"]]
    assert mine, "the visit's observations are exported"
    assert {tuple(f["geometry"]["coordinates"]) for f in mine} == {(114.512, 38.041)}
    household = client.get(f"/api/v1/households/{visit['household_id']}", headers=admin).json()
    text = response.text
    assert household["address"] not in text
    assert all(m["name"] not in text for m in household["members"])
    revealed = client.post(
        f"/api/v1/members/{household['members'][0]['id']}/reveal-id",
        json={"reason": "export check"},
        headers=admin,
    ).json()["id_number"]
    assert revealed not in text


def test_field_workers_do_not_export_and_formulas_are_defused(client: Client) -> None:
    assert client.get("/api/v1/exports/visits.csv", headers=login(client, "demo-worker-1")).status_code == 403
    admin = login(client, "demo-admin")
    assert client.get("/api/v1/exports/nothing.csv", headers=admin).status_code in (400, 404, 422)
    # A misspelt status would export an empty file that looks like "no such visits": it is refused.
    mistyped = client.get("/api/v1/exports/visits.csv?status=aproved", headers=admin)
    assert mistyped.status_code == 422, mistyped.text
    assert mistyped.json()["error"]["details"] == [
        {"field": "status", "message": "Invalid enum value 'aproved'"}
    ]
    from server.services.exports import _cell

    assert (
        _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("-5") == "-5" and _cell("+86 123") == "'+86 123"
    )
    assert _cell("\t=HYPERLINK(1)") == "'\t=HYPERLINK(1)" and _cell("\r=1+1") == "'\r=1+1"


def test_observation_export_holds_only_the_visits_the_list_shows(client: Client) -> None:
    """Filtered and scoped like the visit list: a community reviewer's export of approved visits holds the
    answers of their community's approved visits, and nothing else."""
    completed_visit(client)  # in progress, in C01: must not go out with ?status=approved
    reviewer = login(client, "demo-reviewer-community")
    for query in ("?status=approved", ""):
        listed = client.get(f"/api/v1/visits{query}{'&' if query else '?'}limit=200", headers=reviewer).json()
        shown = {v["id"] for v in listed["items"]}
        exported = rows(client.get(f"/api/v1/exports/observations.csv{query}", headers=reviewer).text)
        assert exported, query
        assert {r["visit_id"] for r in exported} <= shown, query


def test_addresses_answered_in_a_form_stay_out_of_the_observation_export(client: Client) -> None:
    """Form A asks for the hukou address and the actual one, the re-check form for a new one: a worker
    types the household's real address there. The export keeps the rows (the items were answered) but
    not the addresses, nor a note beside them."""
    visit = assign(client)
    worker = login(client, "demo-worker-1")
    household = client.get(f"/api/v1/households/{visit['household_id']}", headers=worker).json()
    answers = {
        "hukou_address": (household["address"], None),
        "lives_at_hukou_address": (False, None),
        "actual_address": ("解放街3号2单元401室", "住在女儿家：解放街3号"),
    }
    observations = [
        {
            "id": str(uuid.uuid4()),
            "template": "form.home_visit",
            "item": item,
            "row_id": None,
            "value": value,
            "note": note,
            "gps": GPS,
            "device_time": dt.datetime.now(dt.UTC).isoformat(),
        }
        for item, (value, note) in answers.items()
    ]
    stored = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": observations}, headers=worker
    )
    assert stored.status_code == 200, stored.text

    reviewer = login(client, "demo-reviewer-community", device="desk")
    exported = {
        name: client.get(f"/api/v1/exports/{name}", headers=reviewer)
        for name in ("observations.csv", "observations.geojson")
    }
    for name, response in exported.items():
        assert response.status_code == 200, response.text
        for address in (household["address"], "解放街3号"):
            assert address not in response.text, name
    mine = {r["item"]: r for r in rows(exported["observations.csv"].text) if r["visit_id"] == visit["id"]}
    assert set(mine) == set(answers)
    assert (mine["hukou_address"]["value"], mine["actual_address"]["note"]) == ("null", "")
    assert mine["lives_at_hukou_address"]["value"] == "false"  # a yes/no about the address holds none


def test_an_export_is_named_for_the_day_in_china(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file name carried the server's own date: on a server kept in UTC, every export made before 08:00
    in China was named for the day before. A zone whose date differs from China's now shows it."""
    china_hour = dt.datetime.now(CHINA_STANDARD_TIME).hour
    # UTC-12 is a day behind China until 20:00 there, UTC+14 a day ahead from 18:00: an hour to spare.
    monkeypatch.setenv("TZ", "Etc/GMT+12" if china_hour < 19 else "Etc/GMT-14")
    time.tzset()
    try:
        expected = today()
        assert dt.date.today() != expected  # the server's zone and China disagree on the date
        response = client.get("/api/v1/exports/visits.csv", headers=login(client, "demo-admin"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert response.status_code == 200
    assert f'filename="fivestep-visits-{expected.isoformat()}.csv"' in response.headers["content-disposition"]


def test_a_note_beside_a_cleared_address_stays_out_of_the_observation_export(client: Client) -> None:
    """An address answer cleared (value null: the household moved back, the item no longer applies) may
    carry the reason in its note, and the reason is where they live: the note stayed in the export, since
    only a text answer counted as an address."""
    visit = assign(client)
    worker = login(client, "demo-worker-1")
    cleared_id = str(uuid.uuid4())
    cleared = {
        "id": cleared_id,
        "template": "form.home_visit",
        "item": "actual_address",
        "row_id": None,
        "value": None,
        "note": "已搬回户籍地：解放街3号2单元401室",
        "gps": GPS,
        "device_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    stored = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [cleared]}, headers=worker
    )
    assert stored.status_code == 200, stored.text

    reviewer = login(client, "demo-reviewer-community", device="desk")
    for name in ("observations.csv", "observations.geojson"):
        response = client.get(f"/api/v1/exports/{name}", headers=reviewer)
        assert response.status_code == 200, response.text
        assert cleared_id in response.text, name  # the row stays: the item was answered
        assert "解放街3号" not in response.text, name
