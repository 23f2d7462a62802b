"""Templates: published ones never change, ETags spare downloads, visits keep their pinned version."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from server.domain.filled import Filled
from tests.helpers import NEW_USER_PASSWORD, Client, audit_rows, login, new_user
from tests.visit_flow import TEAM, assign, complete_answers, observation, post_answers, propose, submit


def _ask_v2(client: Client, admin: dict[str, str]) -> dict[str, Any]:
    body = copy.deepcopy(client.get("/api/v1/templates/step.ask/1", headers=admin).json()["template"])
    body["version"] = 2
    body["sections"][0]["items"].append(
        {"type": "yes_no", "code": "asked_about_pets", "label": {"zh": "询问宠物", "en": "Asked about pets"}}
    )
    return dict(body)


def test_shipped_templates_are_published_and_served_with_an_etag(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    listed = client.get("/api/v1/templates", headers=worker).json()
    assert {t["code"] for t in listed} >= {
        "step.check",
        "step.visit",
        "step.ask",
        "step.look",
        "step.publicize",
    }
    assert {t["status"] for t in listed} == {"published"}
    first = client.get("/api/v1/templates/step.ask/1", headers=worker)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.strip('"') == first.json()["etag"]
    again = client.get("/api/v1/templates/step.ask/1", headers={**worker, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    stale = client.get("/api/v1/templates/step.ask/1", headers={**worker, "If-None-Match": '"other"'})
    assert stale.status_code == 200


def test_a_published_template_cannot_be_edited(client: Client) -> None:
    admin = login(client, "demo-admin")
    body = client.get("/api/v1/templates/step.ask/1", headers=admin).json()["template"]
    body["title"]["en"] = "Changed"
    refused = client.put("/api/v1/templates/step.ask/1", json=body, headers=admin)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "template_immutable"
    assert (
        client.get("/api/v1/templates/step.ask/1", headers=admin).json()["template"]["title"]["en"]
        != "Changed"
    )


def test_draft_lifecycle_and_only_admins_edit(client: Client) -> None:
    admin = login(client, "demo-admin")
    draft = _ask_v2(client, admin)
    assert (
        client.post(
            "/api/v1/templates", json=draft, headers=login(client, "demo-reviewer-community")
        ).status_code
        == 403
    )
    created = client.post("/api/v1/templates", json=draft, headers=admin)
    assert created.status_code == 201 and created.json()["status"] == "draft"
    worker = login(client, "demo-worker-1")
    assert (
        client.get("/api/v1/templates/step.ask/2", headers=worker).status_code == 404
    )  # drafts are not served
    draft["title"]["en"] = "Ask (v2)"
    assert client.put("/api/v1/templates/step.ask/2", json=draft, headers=admin).status_code == 200
    broken = copy.deepcopy(draft)
    broken["sections"][0]["items"].append(broken["sections"][0]["items"][-1])
    invalid = client.put("/api/v1/templates/step.ask/2", json=broken, headers=admin)
    assert invalid.status_code == 422 and "appears twice" in invalid.json()["error"]["message"]
    assert client.post("/api/v1/templates/step.ask/2/publish", headers=admin).json()["status"] == "published"
    assert client.post("/api/v1/templates/step.ask/2/publish", headers=admin).status_code == 409
    assert (
        client.get("/api/v1/templates/step.ask/2", headers=worker).json()["template"]["title"]["en"]
        == "Ask (v2)"
    )


def test_a_visit_keeps_validating_against_the_version_it_pinned(client: Client) -> None:
    old_visit = assign(client, "DB-C01-0002")
    admin = login(client, "demo-admin")
    client.post("/api/v1/templates", json=_ask_v2(client, admin), headers=admin)
    client.post("/api/v1/templates/step.ask/2/publish", headers=admin)
    new_visit = assign(client, "DB-C01-0003")
    pinned = {t["code"]: t["version"] for t in new_visit["templates"]}
    assert pinned["step.ask"] == 2
    assert {t["code"]: t["version"] for t in old_visit["templates"]}["step.ask"] == 1

    worker = login(client, TEAM[0])
    pets = {"observations": [observation(Filled("step.ask", "asked_about_pets", None, True))]}
    on_old = client.post(f"/api/v1/visits/{old_visit['id']}/observations", json=pets, headers=worker)
    assert on_old.status_code == 422 and "v1 has no item" in on_old.json()["error"]["message"]
    on_new = client.post(f"/api/v1/visits/{new_visit['id']}/observations", json=pets, headers=worker)
    assert on_new.status_code == 200 and on_new.json()[0]["template_version"] == 2
    # Retiring v2 stops new visits from pinning it; the visit that pinned it keeps working.
    client.post("/api/v1/templates/step.ask/2/retire", headers=admin)
    assert {t["code"]: t["version"] for t in assign(client, "DB-C01-0004")["templates"]}["step.ask"] == 1
    again = {"observations": [observation(Filled("step.ask", "asked_about_pets", None, False))]}
    assert (
        client.post(f"/api/v1/visits/{new_visit['id']}/observations", json=again, headers=worker).status_code
        == 200
    )


def test_a_template_code_of_the_longest_length_is_created_and_audited(client: Client) -> None:
    """64 characters is the code's limit, so its audit row's `code@version` is longer than that."""
    admin = login(client, "demo-admin")
    draft = _ask_v2(client, admin) | {"code": "a" * 64, "version": 2_147_483_647}
    created = client.post("/api/v1/templates", json=draft, headers=admin)
    assert created.status_code == 201, created.text
    assert [e.entity_id for e in audit_rows(client, "template.create")] == [f"{'a' * 64}@2147483647"]


def test_a_repeat_groups_max_rows_caps_it_at_submission(client: Client) -> None:
    """`max_rows` is documented to cap a group (docs/checklists.md), but nothing counted rows against it: a
    locality's template capping a list was submitted with any number of rows."""
    admin = login(client, "demo-admin")
    # A version of its own: the process caches published versions by (code, version), which never change
    # in one database, but other tests publish another step.ask v2 in theirs.
    capped = _ask_v2(client, admin) | {"version": 3}
    group = next(i for i in capped["sections"][1]["items"] if i["code"] == "neighbours")
    group["max_rows"] = 4
    assert client.post("/api/v1/templates", json=capped, headers=admin).status_code == 201
    assert client.post("/api/v1/templates/step.ask/3/publish", headers=admin).status_code == 200
    visit = assign(client, "DB-C01-0002")
    worker = login(client, TEAM[0])
    answers = complete_answers(client, visit, worker)
    first_row = [
        a for a in answers if a.item.startswith("neighbours.") and a.row_id == answers_row(answers, 0)
    ]
    extra = [
        Filled(a.template, a.item, uuid.uuid5(row, "copy"), a.value)
        for row in (uuid.uuid4(), uuid.uuid4())
        for a in first_row
    ]
    post_answers(client, visit, worker, answers + extra)  # 3 neighbours + 2 more
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]] == [
        ("too_many_rows", "step.ask:neighbours")
    ]
    removed = Filled("step.ask", "neighbours", extra[0].row_id, {"removed": True})
    post_answers(client, visit, worker, [removed])
    assert submit(client, visit, worker).status_code == 200


def answers_row(answers: list[Filled], n: int) -> uuid.UUID | None:
    """The row id of the `n`th neighbour the filler answered."""
    rows = list(dict.fromkeys(a.row_id for a in answers if a.item.startswith("neighbours.")))
    return rows[n]


def test_only_an_admin_of_the_top_node_changes_what_serves_every_community(client: Client) -> None:
    """The checklists and the working calendar serve every community. An admin bound to one subdistrict
    could publish a checklist every tablet then pinned, retire one every community used, or make a day a
    holiday for every district's deadlines."""
    top = login(client, "demo-admin")
    new_user(client, "subdistrict-admin", "S01", role="admin")
    local = login(client, "subdistrict-admin", password=NEW_USER_PASSWORD)
    refused = [
        client.post("/api/v1/templates", json=_ask_v2(client, top), headers=local),
        client.post("/api/v1/templates/step.ask/1/retire", headers=local),
        client.put(
            "/api/v1/calendar/days/2027-01-04", json={"kind": "holiday", "name": "街道活动"}, headers=local
        ),
    ]
    for answer in refused:
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "beyond_jurisdiction", (
            answer.text
        )
    assert client.get("/api/v1/templates/step.ask/1", headers=local).json()["status"] == "published"
    assert audit_rows(client, "template.create") == [] and audit_rows(client, "calendar.set") == []
    holiday = client.put(
        "/api/v1/calendar/days/2027-01-04", json={"kind": "holiday", "name": "区活动"}, headers=top
    )
    assert holiday.status_code == 200, holiday.text
