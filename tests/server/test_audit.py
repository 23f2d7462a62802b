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
    """Whatever people type (a reveal's reason, a proposal's reason, an address) is kept in the audit log
    as they wrote it, but an ID number in it only masked: the log can never be corrected afterwards."""
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
    assert audit_rows(client, "household.update")[-1].changes["address"]["new"] == f"和平路 1 号 {masked}"
    assert audit_rows(client, "visit.propose")[-1].changes["reason"] == f"申请人口述身份证号 {masked}"
