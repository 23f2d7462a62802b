"""Households and members: masking, reveal with reason, versioned changes, and an audit row per write."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from server.db.models import Jurisdiction
from server.demo import HOUSEHOLDS_PER_COMMUNITY
from server.domain.id_numbers import check_character, problem
from tests.helpers import Client, audit_rows, household_id, login, node_id, posted_at_once

MASKED = re.compile(r"^\d{3}\*{15}$")  # nothing of the sequence number or the check digit


def valid_id(first17: str = "13010219800101123") -> str:
    return first17 + check_character(first17)


def new_household(registry_no: str = "NEW-0001", **extra: Any) -> dict[str, Any]:
    return {
        "registry_no": registry_no,
        "community_id": str(node_id("C01")),
        "address": "和平路 1 号",
        "lat": 38.04,
        "lon": 114.51,
        "members": [{"name": "测试", "relation": "applicant", "id_number": valid_id(), "sex": "male"}],
        **extra,
    }


def test_every_id_number_in_every_response_is_masked(client: Client) -> None:
    headers = login(client, "demo-admin")
    page = client.get("/api/v1/households?limit=500", headers=headers).json()
    numbers = [m["id_number_masked"] for h in page["items"] for m in h["members"]]
    assert numbers and all(MASKED.match(n) for n in numbers)
    assert "id_number" not in str(page).replace("id_number_masked", "")


def test_reviewer_reveals_an_id_number_with_a_reason_and_it_is_audited(client: Client) -> None:
    household = client.get(
        f"/api/v1/households/{household_id('DB-C01-0001')}", headers=login(client, "demo-admin")
    ).json()
    member = household["members"][0]
    reviewer = login(client, "demo-reviewer-community")
    response = client.post(
        f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "verify at re-check"}, headers=reviewer
    )
    assert response.status_code == 200
    full = response.json()["id_number"]
    assert len(full) == 18 and member["id_number_masked"] == full[:3] + "*" * 15
    rows = audit_rows(client, "member.reveal_id")
    assert [(r.entity_id, r.reason) for r in rows] == [(member["id"], "verify at re-check")]
    assert full not in str(rows[0].changes)


def test_field_worker_may_not_reveal_and_must_give_a_reason(client: Client) -> None:
    member = client.get(
        f"/api/v1/households/{household_id('DB-C01-0001')}", headers=login(client, "demo-admin")
    ).json()["members"][0]
    worker = login(client, "demo-worker-1")
    refused = client.post(
        f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "curious"}, headers=worker
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "reveal_forbidden"
    for short in ("", "abc"):  # the code the docs promise, not the schema's generic validation_error
        too_short = client.post(
            f"/api/v1/members/{member['id']}/reveal-id",
            json={"reason": short},
            headers=login(client, "demo-admin"),
        )
        assert too_short.status_code == 422 and too_short.json()["error"]["code"] == "reason_required", short
    blank = client.post(  # five spaces pass a length check, and say nothing
        f"/api/v1/members/{member['id']}/reveal-id",
        json={"reason": "     "},
        headers=login(client, "demo-admin"),
    )
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "reason_required"
    assert "id_number" not in blank.text
    assert audit_rows(client, "member.reveal_id") == []


def test_every_refused_reveal_is_audited_without_the_number(client: Client) -> None:
    """A field worker asking for a full ID number got 403 and left no trace: nobody could see who keeps
    trying to read numbers they may not. Every refusal (the role, no reason, a member out of reach) is
    now a row naming who asked, why they said, and the code they got."""
    admin = login(client, "demo-admin", device="desk")
    household = client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=admin).json()
    member = household["members"][0]
    url = f"/api/v1/members/{member['id']}/reveal-id"
    worker = login(client, "demo-worker-1")
    assert client.post(url, json={"reason": "curious about her"}, headers=worker).status_code == 403
    assert client.post(url, json={"reason": "abc"}, headers=admin).status_code == 422
    elsewhere = login(client, "demo-reviewer-community", device="other")
    hidden = client.get(f"/api/v1/households/{household_id('DB-C03-0001')}", headers=admin).json()
    outside = f"/api/v1/members/{hidden['members'][0]['id']}/reveal-id"
    assert client.post(outside, json={"reason": "checking a rumour"}, headers=elsewhere).status_code == 404

    rows = audit_rows(client, "member.reveal_id_refused")
    assert [(r.entity_id, r.changes, r.reason) for r in rows] == [
        (member["id"], {"code": "reveal_forbidden"}, "curious about her"),
        (member["id"], {"code": "reason_required"}, "abc"),
        (hidden["members"][0]["id"], {"code": "not_found"}, "checking a rumour"),
    ]
    assert all(r.actor_id is not None and r.device_id is not None for r in rows)
    assert audit_rows(client, "member.reveal_id") == []
    full = client.post(url, json={"reason": "入户前核对身份"}, headers=admin).json()["id_number"]
    assert not [r for r in audit_rows(client) if full in f"{r.changes} {r.reason}"]


def test_create_household_is_audited_with_masked_id_numbers(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    response = client.post("/api/v1/households", json=new_household(), headers=worker)
    assert response.status_code == 201, response.text
    body = response.json()
    assert MASKED.match(body["members"][0]["id_number_masked"])
    [row] = audit_rows(client, "household.create")
    assert row.entity_id == body["id"]
    assert row.changes == {
        "community_id": str(node_id("C01")),
        "members": [body["members"][0]["id"]],
        "version": 1,
    }
    assert valid_id() not in str(row.changes)
    assert row.actor_id is not None and row.device_id is not None and row.at.tzinfo is not None


def test_a_bad_check_digit_is_refused_naming_the_member(client: Client) -> None:
    body = new_household()
    body["members"].append({"name": "乙", "relation": "spouse", "id_number": "130102198001011230"})
    if check_character("13010219800101123") == "0":
        body["members"][1]["id_number"] = "130102198001011231"
    response = client.post("/api/v1/households", json=body, headers=login(client, "demo-worker-1"))
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "members[1].id_number", "message": "check digit does not match"}
    ]
    assert audit_rows(client, "household.create") == []


def test_duplicate_registry_number_is_a_409_and_a_retry_creates_nothing(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    assert client.post("/api/v1/households", json=new_household(), headers=worker).status_code == 201
    again = client.post("/api/v1/households", json=new_household(), headers=worker)
    assert again.status_code == 409
    assert len(audit_rows(client, "household.create")) == 1


def test_a_create_sent_again_with_its_id_creates_nothing_more(client: Client) -> None:
    """Client-made ids make creates safe to retry; an id already used for something else is a 409."""
    worker = login(client, "demo-worker-1")
    body = new_household(id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9a01")
    body["members"][0]["id"] = "5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9a02"
    first = client.post("/api/v1/households", json=body, headers=worker)
    again = client.post("/api/v1/households", json=body, headers=worker)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert len(audit_rows(client, "household.create")) == 1

    url = f"/api/v1/households/{household_id('DB-C01-0003')}/members"
    member = {"id": "5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9a03", "name": "新成员", "relation": "child"}
    member["id_number"] = valid_id("13010220100101123")
    added = [client.post(url, json=member, headers=worker) for _ in range(2)]
    assert [a.status_code for a in added] == [201, 201], added[1].text
    assert added[0].json() == added[1].json()
    assert len(audit_rows(client, "member.create")) == 1

    reused = [
        # a member id of another household
        client.post(url, json=member | {"id": body["members"][0]["id"]}, headers=worker),
        # the same household id and registry number with another address
        client.post("/api/v1/households", json=body | {"address": "别处"}, headers=worker),
        # the same member id with another name
        client.post(url, json=member | {"name": "别人"}, headers=worker),
        # a household id already taken by another registry number
        client.post("/api/v1/households", json=body | {"registry_no": "NEW-0002"}, headers=worker),
        # a new household whose member takes an id already in use
        client.post(
            "/api/v1/households",
            json=new_household("NEW-0003", members=[body["members"][0]]),
            headers=worker,
        ),
    ]
    codes = ["duplicate_id", "created_otherwise", "created_otherwise", "duplicate_id", "duplicate_id"]
    for response, code in zip(reused, codes, strict=True):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == code
    assert len(audit_rows(client, "household.create")) == 1
    assert len(audit_rows(client, "member.create")) == 1


def test_a_household_created_twice_at_once_converges_and_a_collision_gets_its_own_409(client: Client) -> None:
    """Two tablets (or a retry overtaking its first try) create under one id at the same moment. On
    PostgreSQL both find the id free and insert; the loser's commit fails on a unique key, and it must
    answer as a create arriving after the winner's: the same create converges (201, the same household),
    other content under the id is `created_otherwise`, the id with another registry number or a member id
    of another household `duplicate_id`; only a registry number in use is `duplicate`. The test holds the
    community's row, which each insert refers to, until both requests wait on a lock: the race happens
    every time. On SQLite the two take turns, and the answers are the same."""
    tablets = [login(client, "demo-worker-1", device=f"tablet-{i}") for i in (1, 2)]
    held = select(Jurisdiction.id).where(Jurisdiction.id == node_id("C01"))

    def created(registry_no: str) -> dict[str, Any]:
        body = new_household(registry_no, id=str(uuid.uuid4()))
        body["members"][0]["id"] = str(uuid.uuid4())
        return body

    def race(first: dict[str, Any], second: dict[str, Any]) -> list[Any]:
        posts = [
            ("/api/v1/households", body, tablet)
            for body, tablet in zip((first, second), tablets, strict=True)
        ]
        return posted_at_once(client, posts, held)

    same = created("RACE-0001")
    twins = race(same, same)
    assert [t.status_code for t in twins] == [201, 201], [t.text for t in twins]
    assert twins[0].json() == twins[1].json()
    assert [r.entity_id for r in audit_rows(client, "household.create")] == [same["id"]]

    rivals_of: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
        ("RACE-0002", lambda first: first | {"address": "别处"}, "created_otherwise"),
        ("RACE-0003", lambda first: first | {"registry_no": "RACE-0033"}, "duplicate_id"),
        ("RACE-0004", lambda first: created("RACE-0004"), "duplicate"),
        ("RACE-0005", lambda first: created("RACE-0055") | {"members": first["members"]}, "duplicate_id"),
    ]
    for registry_no, other, code in rivals_of:
        first = created(registry_no)
        rivals = race(first, other(first))
        assert sorted(r.status_code for r in rivals) == [201, 409], [r.text for r in rivals]
        made, refused = sorted(rivals, key=lambda r: r.status_code)
        assert refused.json()["error"]["code"] == code, refused.text
        stored = client.get(f"/api/v1/households/{made.json()['id']}", headers=tablets[0])
        assert stored.json() == made.json()
    assert len(audit_rows(client, "household.create")) == 5


def test_one_member_id_twice_in_a_new_household_is_refused(client: Client) -> None:
    body = new_household()
    body["members"].append(body["members"][0] | {"relation": "spouse"})
    body["members"][0]["id"] = body["members"][1]["id"] = "5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9a04"
    refused = client.post("/api/v1/households", json=body, headers=login(client, "demo-worker-1"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "members[1].id"


def test_change_needs_the_current_version(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0002')}"
    before = client.get(url, headers=worker).json()
    changed = client.patch(url, json={"version": before["version"], "address": "新地址 9 号"}, headers=worker)
    assert changed.status_code == 200
    assert changed.json()["version"] == before["version"] + 1
    stale = client.patch(url, json={"version": before["version"], "address": "另一个"}, headers=worker)
    assert stale.status_code == 409
    assert stale.json()["error"]["details"]["current_version"] == before["version"] + 1
    [row] = audit_rows(client, "household.update")
    assert row.changes == {"changed": ["address"], "version": before["version"] + 1}


def test_approver_reads_but_does_not_edit_households(client: Client) -> None:
    approver = login(client, "demo-approver-district")
    url = f"/api/v1/households/{household_id('DB-C01-0002')}"
    assert client.get(url, headers=approver).status_code == 200
    assert client.patch(url, json={"version": 1, "address": "x"}, headers=approver).status_code == 403


def test_keyset_pages_cover_every_household_once(client: Client) -> None:
    admin = login(client, "demo-admin")
    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/v1/households?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=admin).json()
        seen += [h["registry_no"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 4 * HOUSEHOLDS_PER_COMMUNITY
    assert seen == sorted(seen)
    bad = client.get("/api/v1/households?cursor=garbage", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_cursor"
    # A NUL inside the encoded cursor passes the URL's NUL check, and PostgreSQL failed on it with a 500.
    nul = base64.urlsafe_b64encode(json.dumps(["DB-C01\u0000", str(uuid.uuid4())]).encode()).decode()
    bad = client.get(f"/api/v1/households?cursor={nul}", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_cursor"


def test_filter_by_community_and_status(client: Client) -> None:
    admin = login(client, "demo-admin")
    items = client.get(
        f"/api/v1/households?community_id={node_id('C02')}&status=active", headers=admin
    ).json()["items"]
    assert items and {h["community_id"] for h in items} == {str(node_id("C02"))}
    assert {h["status"] for h in items} == {"active"}


def test_add_member_is_its_own_record_and_leaves_household_edits_valid(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0003')}"
    before = client.get(url, headers=worker).json()
    added = client.post(
        f"{url}/members",
        json={"name": "新成员", "relation": "child", "id_number": valid_id("13010220100101123")},
        headers=worker,
    )
    assert added.status_code == 201
    after = client.get(url, headers=worker).json()
    assert added.json()["version"] == 1
    # Members version on their own: an edit of the household made against `before` still applies.
    assert after["version"] == before["version"]
    assert len(after["members"]) == len(before["members"]) + 1
    assert len(audit_rows(client, "member.create")) == 1
    history = client.get(f"/api/v1/members/{added.json()['id']}/history", headers=worker).json()
    assert [v["version"] for v in history] == [1]
    assert history[0]["data"]["id_number"].count("*") >= 8


def test_recheck_class_changes_keep_their_history_and_guarded_fields_need_a_supervisor(
    client: Client,
) -> None:
    worker = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0004')}"
    for new_class in ("B", "C"):
        version = client.get(url, headers=worker).json()["version"]
        changed = client.patch(url, json={"version": version, "recheck_class": new_class}, headers=worker)
        assert changed.status_code == 200, changed.text
    history = client.get(f"{url}/history", headers=worker).json()
    assert [v["data"]["recheck_class"] for v in history if "recheck_class" in v["changed"]][-2:] == ["B", "C"]
    assert all(v["author_id"] for v in history[-2:])
    version = client.get(url, headers=worker).json()["version"]
    refused = client.patch(url, json={"version": version, "monthly_benefit_fen": 1}, headers=worker)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "guarded_field"
    reviewer = login(client, "demo-reviewer-community")
    allowed = client.patch(url, json={"version": version, "monthly_benefit_fen": 1}, headers=reviewer)
    assert allowed.status_code == 200 and allowed.json()["monthly_benefit_fen"] == 1


def test_a_field_worker_registers_an_applicant_and_a_supervisor_sets_status_and_amount(
    client: Client,
) -> None:
    """A household's status and benefit amount come from review and approval, and a field worker's
    change of either waits for a supervisor: a create setting them otherwise than an application's is
    refused like a PATCH of them (a silent 201 would put an amount nobody approved on the books)."""
    worker, reviewer = login(client, "demo-worker-1"), login(client, "demo-reviewer-community")
    guarded_fields: list[tuple[str, dict[str, Any]]] = [
        ("NEW-0001", {"status": "active"}),
        ("NEW-0002", {"monthly_benefit_fen": 45000}),
    ]
    for registry_no, guarded in guarded_fields:
        refused = client.post(
            "/api/v1/households", json=new_household(registry_no, **guarded), headers=worker
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "guarded_field"
    assert audit_rows(client, "household.create") == []
    stated = new_household("NEW-0001", status="applicant", monthly_benefit_fen=0)  # an application's: fine
    applicant = client.post("/api/v1/households", json=stated, headers=worker)
    assert applicant.status_code == 201, applicant.text
    assert (applicant.json()["status"], applicant.json()["monthly_benefit_fen"]) == ("applicant", 0)
    decided = new_household("NEW-0002", status="active", monthly_benefit_fen=45000)
    registered = client.post("/api/v1/households", json=decided, headers=reviewer)
    assert registered.status_code == 201, registered.text
    assert (registered.json()["status"], registered.json()["monthly_benefit_fen"]) == ("active", 45000)


def test_an_id_number_born_in_the_future_or_before_1900_is_refused(client: Client) -> None:
    def born(day: dt.date) -> str:
        return valid_id(f"130102{day:%Y%m%d}123")

    today = dt.date(2026, 3, 1)
    assert problem(born(today), today=today) is None
    assert problem(born(dt.date(1900, 1, 1)), today=today) is None
    assert "future" in (problem(born(dt.date(2026, 3, 2)), today=today) or "")
    assert problem(born(dt.date(1899, 12, 31)), today=today) is not None
    assert problem(born(dt.date(2099, 12, 31))) is not None  # against today in China Standard Time
    body = new_household()
    body["members"][0]["id_number"] = born(dt.date(2099, 12, 31))
    response = client.post("/api/v1/households", json=body, headers=login(client, "demo-worker-1"))
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["members[0].id_number"]


def test_a_members_birth_date_and_sex_must_agree_with_their_id_number(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    born_1980_male = valid_id("11010119800101001")
    body = new_household("NEW-MISMATCH")
    body["members"][0] |= {"id_number": born_1980_male, "birth_date": "1995-06-30", "sex": "female"}
    refused = client.post("/api/v1/households", json=body, headers=worker)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "id_number_mismatch"
    assert [d["field"] for d in refused.json()["error"]["details"]] == [
        "members[0].birth_date",
        "members[0].sex",
    ]
    url = f"/api/v1/households/{household_id('DB-C01-0003')}/members"
    member = {"name": "新成员", "relation": "child", "id_number": born_1980_male, "sex": "female"}
    refused = client.post(url, json=member, headers=worker)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "id_number_mismatch"
    added = client.post(url, json=member | {"sex": "male", "birth_date": "1980-01-01"}, headers=worker)
    assert added.status_code == 201, added.text
    patch_url = f"/api/v1/members/{added.json()['id']}"
    refused = client.patch(patch_url, json={"version": 1, "birth_date": "1980-01-02"}, headers=worker)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == [  # what the stored (masked) number holds is not said
        {"field": "body.birth_date", "message": "does not agree with the member's ID number"}
    ]
    agreeing = client.patch(patch_url, json={"version": 1, "sex": "male", "birth_date": None}, headers=worker)
    assert agreeing.status_code == 200, agreeing.text
