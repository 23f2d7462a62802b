"""The audit log cannot be changed or emptied, by the API or by SQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.domain.id_numbers import mask
from tests.helpers import Client, audit_rows, household_id, login, run_db
from tests.visit_flow import TEAM, assign


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"])
def test_database_refuses_to_change_audit_rows(client: Client, statement: str) -> None:
    login(client, "demo-worker-1")
    before = [(r.id, r.action) for r in audit_rows(client)]
    assert before

    async def tamper(session: Any) -> None:
        await session.execute(text(statement))

    with pytest.raises(DBAPIError, match="append-only"):
        run_db(client, tamper)
    assert [(r.id, r.action) for r in audit_rows(client)] == before


def test_no_route_writes_to_the_audit_log_directly(client: Client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if "audit" in p and set(paths[p]) & {"put", "patch", "delete"}]


def test_an_id_number_typed_anywhere_reaches_the_audit_log_masked(client: Client) -> None:
    """Whatever people type (a reveal's reason, a proposal's reason) is kept in the audit log as they
    wrote it, but an ID number in it only masked: the log can never be corrected afterwards. An address
    is not kept at all (an edit's row names the fields it changed)."""
    admin = login(client, "demo-admin", device="desk")
    household = client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=admin).json()
    member = household["members"][0]
    full = client.post(
        f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "入户前核对身份"}, headers=admin
    ).json()["id_number"]
    typed = f"申请人口述身份证号 {full}"
    revealed = client.post(f"/api/v1/members/{member['id']}/reveal-id", json={"reason": typed}, headers=admin)
    assert revealed.status_code == 200, revealed.text
    moved = client.patch(
        f"/api/v1/households/{household['id']}",
        json={"version": household["version"], "address": f"和平路 1 号 {full}"},
        headers=admin,
    )
    assert moved.status_code == 200, moved.text
    visit = assign(client)
    worker = login(client, TEAM[0])
    proposed = client.put(
        f"/api/v1/visits/{visit['id']}/proposal",
        json={"outcome": "no_change", "reason": typed},
        headers=worker,
    )
    assert proposed.status_code == 200, proposed.text

    rows = audit_rows(client)
    assert not [r.action for r in rows if full in f"{r.changes} {r.reason}"]
    masked = mask(full)
    assert audit_rows(client, "member.reveal_id")[-1].reason == f"申请人口述身份证号 {masked}"
    moved_row = audit_rows(client, "household.update")[-1].changes  # the field, not the address
    assert moved_row == {"changed": ["address"], "version": household["version"] + 1}
    assert audit_rows(client, "visit.propose")[-1].changes["reason"] == f"申请人口述身份证号 {masked}"


def test_household_and_member_writes_audit_what_changed_not_the_personal_values(client: Client) -> None:
    """The audit log kept a copy of every address, member name, relation, health and disability written
    through REST, in clear, in rows nobody can ever correct or delete. It now keeps what changed (the
    fields, the record's new version, the records it touches); the values stay in the record's history,
    which shows them only to those who may see the record."""
    from tests.server.test_households import new_household, valid_id

    worker = login(client, "demo-worker-1")
    body = new_household("AUDIT-0001")
    body["members"][0] |= {"name": "李秀英", "health": "serious_illness", "disability": "视力二级"}
    created = client.post("/api/v1/households", json=body, headers=worker).json()
    added = client.post(
        f"/api/v1/households/{created['id']}/members",
        json={"name": "李小明", "relation": "child", "id_number": valid_id("13010220100101123")},
        headers=worker,
    ).json()
    moved = client.patch(
        f"/api/v1/households/{created['id']}",
        json={"version": created["version"], "address": "幸福里 7 栋 302"},
        headers=worker,
    ).json()
    ill = client.patch(  # a name is a supervisor's to change
        f"/api/v1/members/{added['id']}",
        json={"version": added["version"], "health": "chronic", "name": "李晓明"},
        headers=login(client, "demo-reviewer-community", device="desk"),
    ).json()

    def row(action: str) -> dict[str, Any]:
        [found] = audit_rows(client, action)
        return found.changes

    assert row("household.create") == {
        "community_id": body["community_id"],
        "members": [created["members"][0]["id"]],
        "version": 1,
    }
    assert row("member.create") == {"household_id": created["id"], "version": 1}
    assert row("household.update") == {"changed": ["address"], "version": moved["version"]}
    assert row("member.update") == {"changed": ["health", "name"], "version": ill["version"]}
    writes = [r for r in audit_rows(client) if r.action.split(".")[0] in ("household", "member")]
    written = str([(r.changes, r.reason) for r in writes])
    for personal in [
        "李秀英",
        "李小明",
        "李晓明",
        "视力二级",
        "serious_illness",
        "chronic",
        "和平路",
        "幸福里",
        "applicant",
    ]:
        assert personal not in written, personal
    history = client.get(f"/api/v1/members/{added['id']}/history", headers=worker).json()
    assert history[-1]["data"]["name"] == "李晓明" and history[-1]["changed"] == ["health", "name"]
