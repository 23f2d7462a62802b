"""Small helpers the tests share: sign in as a demo user, read the audit log."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import select

from server.db.engine import Database
from server.db.models import AuditEvent
from server.demo import demo_id

Client = TestClient  # type: ignore[type-arg]


def login(client: Client, username: str, device: str = "tablet-1", password: str = "demo") -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/login", json={"username": username, "password": password, "device_id": device}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def household_id(registry_no: str) -> uuid.UUID:
    return demo_id("household", registry_no)


def node_id(code: str) -> uuid.UUID:
    return demo_id("node", code)


def run_db(client: Client, fn: Any) -> Any:
    """Run `await fn(session)` against the app's database, inside the app's event loop."""

    async def call() -> Any:
        db: Database = client.app.state.db
        async with db.write_session() as session:
            result = await fn(session)
            await session.commit()
            return result

    return client.blocking_portal.call(call)


def audit_rows(client: Client, action: str | None = None) -> list[AuditEvent]:
    async def fetch(session: Any) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        return list((await session.execute(query)).scalars())

    return list(run_db(client, fetch))
