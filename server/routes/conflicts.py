"""Sync conflicts in your jurisdiction, and their resolution from the desk."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from schemas.conflicts import ConflictOut, ResolveRequest
from server.dependencies import CurrentActor, DbSession, provide_actor
from server.services import conflicts


class ConflictController(Controller):
    path = "/api/v1/conflicts"
    tags = ["sync"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/", summary="Conflicts and quarantined mutations in your jurisdiction, oldest first")
    async def list_conflicts(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        status: FromQuery[Literal["open", "resolved"] | None] = "open",
        entity_id: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[ConflictOut]:
        return await conflicts.list_open(db_session, actor, status=status, entity_id=entity_id, limit=limit)

    @post("/{conflict_id:uuid}/resolve", status_code=200, summary="Keep, take, set or dismiss (supervisors)")
    async def resolve(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        conflict_id: FromPath[uuid.UUID],
        data: JSONBody[ResolveRequest],
    ) -> ConflictOut:
        return await conflicts.resolve(db_session, actor, conflict_id, data.decision, data.value)
