"""Direct uploads at /api/v1/uploads/direct: the device PUTs the parts to the object store itself
(presigned S3 multipart), then asks the server to complete. See docs/uploads.md."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, JSONBody

from schemas.photos import DirectUploadIn, DirectUploadOut
from server.dependencies import AppSettings, CurrentActor, DbSession, provide_actor
from server.routes.uploads import BASE, read_session
from server.services import direct_uploads
from server.services.actor import Actor


async def provide_signed_in(request: Request[Any, Any, Any], db_session: DbSession) -> Actor:
    """The caller, with the sign-in's read ended: the work that follows (store calls, image processing)
    uses short sessions of its own and must not hold a pooled connection all along."""
    actor = await provide_actor(request, db_session)
    await db_session.commit()
    return actor


class DirectUploadController(Controller):
    path = f"{BASE}/direct"
    tags = ["uploads"]
    dependencies = {"actor": Provide(provide_signed_in), "db_session": Provide(read_session)}

    @post("/", status_code=201, summary="Start a direct upload: a presigned URL for each part")
    async def start(
        self,
        state: State,
        data: JSONBody[DirectUploadIn],
        actor: CurrentActor,
        settings: AppSettings,
    ) -> DirectUploadOut:
        return await direct_uploads.create(state.db, actor, state.store, data, settings)

    @get("/{upload_id:uuid}", summary="Parts received so far, and fresh URLs for the others")
    async def progress(
        self,
        state: State,
        actor: CurrentActor,
        settings: AppSettings,
        upload_id: FromPath[uuid.UUID],
    ) -> DirectUploadOut:
        return await direct_uploads.status(state.db, actor, state.store, upload_id, settings)

    @post(
        "/{upload_id:uuid}/complete", status_code=200, summary="Join the parts, verify and ingest the photo"
    )
    async def complete(
        self,
        state: State,
        actor: CurrentActor,
        settings: AppSettings,
        upload_id: FromPath[uuid.UUID],
    ) -> DirectUploadOut:
        return await direct_uploads.complete(
            state.db, actor, state.store, state.image_limiter, upload_id, settings
        )
