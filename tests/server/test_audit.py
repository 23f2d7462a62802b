"""The audit log cannot be changed or emptied, by the API or by SQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.helpers import Client, audit_rows, login, run_db


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
