"""Small helpers the tests share: sign in as a demo user, read the audit log, send requests at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.engine import Database
from server.db.models import AuditEvent
from server.demo import demo_id

Client = TestClient[Litestar]
T = TypeVar("T")


def login(
    client: httpx.Client, username: str, device: str = "tablet-1", password: str = "demo"
) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/login", json={"username": username, "password": password, "device_id": device}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


NEW_USER_PASSWORD = "a-long-enough-password"


def new_user(client: Client, username: str, node: str = "C01", role: str = "field_worker") -> str:
    """An account the demo admin makes, bound to `node`, with NEW_USER_PASSWORD; its id."""
    body = {
        "username": username,
        "display_name": "新同事",
        "role": role,
        "jurisdiction_id": str(node_id(node)),
        "password": NEW_USER_PASSWORD,
    }
    made = client.post("/api/v1/admin/users", json=body, headers=login(client, "demo-admin", device="desk"))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def household_id(registry_no: str) -> uuid.UUID:
    return demo_id("household", registry_no)


def node_id(code: str) -> uuid.UUID:
    return demo_id("node", code)


def run_db(client: Client, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `await fn(session)` against the app's database, inside the app's event loop."""

    async def call() -> T:
        db: Database = client.app.state.db
        async with db.write_session() as session:
            result = await fn(session)
            await session.commit()
            return result

    return client.blocking_portal.call(call)


def audit_rows(client: Client, action: str | None = None) -> list[AuditEvent]:
    async def fetch(session: AsyncSession) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        return list((await session.execute(query)).scalars())

    return list(run_db(client, fetch))


def posted_at_once(
    client: Client, posts: Sequence[tuple[str, Any, dict[str, str]]], held: Select[Any]
) -> list[httpx.Response]:
    """POST each (url, JSON body, headers) at the same moment; their answers, in that order.

    On PostgreSQL the row `held` selects is locked until every request waits on a lock, then let go. Pick
    a row each request's write must share (one its inserts refer to by foreign key): every request has
    then passed its checks before any of them commits, so a race between them happens every time, not
    by luck. SQLite has one writer (BEGIN IMMEDIATE): there the requests take turns."""
    db: Database = client.app.state.db

    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            sent = [http.post(url, json=body, headers=headers) for url, body, headers in posts]
            if db.is_sqlite:
                return list(await asyncio.gather(*sent))
            async with db.engine.connect() as lock:
                await lock.execute(held.with_for_update())
                answers = asyncio.gather(*sent)
                try:
                    await waiting_on_locks(db, len(sent))
                finally:
                    await lock.rollback()
                    answered = list(await answers)
                return answered

    return list(client.blocking_portal.call(race))


async def waiting_on_locks(db: Database, count: int, patience: float = 10.0) -> None:
    """Until `count` sessions of this (PostgreSQL) database wait on a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + patience
    async with db.engine.connect() as watch:
        while (await watch.execute(query)).scalar_one() < count:
            assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} requests wait on a lock"
            await watch.rollback()  # pg_stat_activity is read once per transaction
            await asyncio.sleep(0.02)


def sent_in_turn(
    client: Client, requests: Sequence[tuple[str, str, Any, dict[str, str]]], held: Select[Any]
) -> list[httpx.Response]:
    """Send each (method, url, JSON body, headers) only once the ones before it wait on a lock; their
    answers, in that order.

    On PostgreSQL the rows `held` selects are locked until all requests wait, then let go: each request
    has then taken what it locks before the held rows, in the order they were sent, every time. So two
    writes that lock the same rows in different orders meet in a deadlock every time, not by luck. SQLite
    has one writer (BEGIN IMMEDIATE): there the requests take turns."""
    db: Database = client.app.state.db

    async def in_turn() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            if db.is_sqlite:
                return [await http.request(m, url, json=body, headers=h) for m, url, body, h in requests]
            async with db.engine.connect() as lock:
                await lock.execute(held.with_for_update())
                sent: list[asyncio.Task[httpx.Response]] = []
                try:
                    for method, url, body, headers in requests:
                        sent.append(
                            asyncio.create_task(http.request(method, url, json=body, headers=headers))
                        )
                        await waiting_on_locks(db, len(sent))
                finally:
                    await lock.rollback()
                return list(await asyncio.gather(*sent))

    return list(client.blocking_portal.call(in_turn))
