"""Photos: metadata with signed derivative URLs, the audited original, and a visit's photo evidence."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from media.stores.base import content_disposition
from schemas.photos import EvidenceOut, PhotoOut
from server.db.engine import Database
from server.dependencies import AppSettings, CurrentActor, DbSession, provide_actor
from server.services import photos

Reason = Annotated[
    str | None, QueryParameter(name="reason", description="why you need the original (audited)")
]


class PhotoController(Controller):
    path = "/api/v1/photos"
    tags = ["photos"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/{sha256:str}", summary="A photo's EXIF claims, size, hashes, signed derivative URLs and visits")
    async def get_photo(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        settings: AppSettings,
        sha256: FromPath[str],
    ) -> PhotoOut:
        return await photos.photo_out(db_session, actor, request.app.state.store, settings, sha256)

    @get("/{sha256:str}/original", summary="The original file, for roles allowed to see it (audited)")
    async def get_original(
        self,
        request: Request[Any, Any, Any],
        actor: CurrentActor,
        settings: AppSettings,
        sha256: FromPath[str],
        reason: Reason = None,
    ) -> Stream:
        db: Database = request.app.state.db
        async with db.write_session() as session:  # the audit row is a write, even on a GET
            photo, chunks = await photos.original(
                session, actor, request.app.state.store, settings, sha256, reason
            )
        return Stream(
            chunks,
            media_type=photos.media_type(photo),
            headers={
                "Content-Length": str(photo.byte_size),
                "Content-Disposition": content_disposition(photos.original_filename(photo)),
                "Cache-Control": "no-store",
            },
        )


class EvidenceController(Controller):
    path = "/api/v1/visits"
    tags = ["visits"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/{visit_id:uuid}/evidence", summary="Photos the visit's answers reference: expected or present")
    async def get_evidence(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        settings: AppSettings,
        visit_id: FromPath[uuid.UUID],
    ) -> EvidenceOut:
        return await photos.evidence(db_session, actor, request.app.state.store, settings, visit_id)
