"""Liveness and readiness: is the database reachable, is the blob store reachable."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from server.db.engine import Database

CHECK_TIMEOUT = 5.0


class Health(msgspec.Struct):
    status: str
    database: str
    blob_store: str


@get("/health", tags=["operations"], summary="200 when the database and the blob store answer, else 503")
async def health(state: State) -> Response[Health]:
    database = await _probe(_ping_database(state.db))
    blob_store = await _probe(state.store.check())
    ok = database == blob_store == "ok"
    body = Health(status="ok" if ok else "unavailable", database=database, blob_store=blob_store)
    return Response(body, status_code=200 if ok else 503)


async def _ping_database(db: Database) -> None:
    async with db.read_session() as session:
        await session.execute(text("SELECT 1"))


async def _probe(check: Any) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except Exception as exc:  # any failure is "down"; the kind is enough for an operator
        return f"error: {type(exc).__name__}"
    return "ok"
