"""Exports of visits and observations: filtered, scoped, audited, and free of ID numbers and names."""

from __future__ import annotations

import csv
import io
import json

from server.demo import demo_id
from tests.helpers import Client, audit_rows, login
from tests.visit_flow import completed_visit


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
