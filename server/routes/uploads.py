"""tus 1.0 at /api/v1/uploads: discovery, creation (+ with upload), HEAD, PATCH, termination.

Every answer carries ``Tus-Resumable``; errors are the usual JSON body with a code. See docs/uploads.md.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, MediaType, Request, Response, delete, head, patch, post, route
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import HttpMethod
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from server.db.engine import Database
from server.db.models import Upload, UploadState
from server.dependencies import AppSettings, CurrentActor, DbSession, provide_actor
from server.domain import tus
from server.errors import EXCEPTION_HANDLERS
from server.request_sessions import open_session
from server.services import photos, uploads
from server.services.actor import Actor

BASE = "/api/v1/uploads"


def _with_tus_version(handler: Any) -> Any:
    """tus core: a 412 names the versions the server speaks. (Tus-Resumable, on every answer, is added by
    server/tus_edge.py.)"""

    def wrapped(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        response: Response[Any] = handler(request, exc)
        if isinstance(exc, tus.UnsupportedVersion):
            response.headers["Tus-Version"] = tus.VERSION
        return response

    return wrapped


def _headers(upload: Upload, **extra: str) -> dict[str, str]:
    headers = {
        "Tus-Resumable": tus.VERSION,
        "Upload-Offset": str(upload.upload_offset),
        "Cache-Control": "no-store",
    }
    if upload.state == UploadState.receiving:
        headers["Upload-Expires"] = tus.http_date(upload.expires_at)
    return headers | extra


def _without_body(status: int, headers: dict[str, str]) -> Response[None]:
    """tus answers say everything in headers. ``None`` would be sent as the JSON ``null``; as text it is
    nothing (and server/tus_edge.py drops the Content-Type of an empty answer)."""
    return Response(None, status_code=status, headers=headers, media_type=MediaType.TEXT)


def _offset_stream(request: Request[Any, Any, Any]) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == tus.OFFSET_STREAM


async def read_session(state: State, request: Request[Any, Any, Any]) -> AsyncSession:
    """Uploads read through a deferred transaction even on POST/PATCH/DELETE (signing in included) and write
    through short explicit ones, so SQLite's single write lock is never held while a body arrives."""
    db: Database = state.db
    return open_session(request, db.read_session)


async def _finish_if_complete(state: State, actor: Actor, upload: Upload) -> Upload:
    """The upload, processed if all its bytes are in, as it stands then: the completion is written in a
    session of its own, and the answer must not describe the upload as it was before (still receiving,
    with an Upload-Expires a stored upload no longer has)."""
    if not uploads.needs_finishing(upload):
        return upload
    await photos.finish(state.db, actor, state.store, state.image_limiter, upload)
    async with state.db.read_session() as fresh:
        return await uploads.get(fresh, actor, upload.id)


async def _settled(state: State, actor: Actor, upload: Upload) -> Upload:
    """The upload once whatever its last bytes started is over, for HEAD to report."""
    upload = await _finish_if_complete(state, actor, upload)  # all bytes in, but a crash stopped the ingest
    if photos.being_ingested_whole(upload):  # the file came whole in a PATCH still being processed
        await photos.outcome_of_other(state.db, actor, state.store, state.image_limiter, upload)
        async with state.db.read_session() as fresh:
            return await uploads.get(fresh, actor, upload.id)
    return upload


async def _receive_at(
    request: Request[Any, Any, Any],
    db_session: DbSession,
    actor: Actor,
    settings: Settings,
    upload_id: uuid.UUID,
    offset: int,
    checksum: tuple[str, bytes] | None,
) -> Upload:
    """The PATCH body path, shared with creation-with-upload: check, spool and verify, stage, finish."""
    state: State = request.app.state
    upload = await uploads.prepare_patch(db_session, actor, upload_id, offset, request.content_length)
    if uploads.is_complete(upload):
        await uploads.discard(request.stream(), upload.length)
        return upload
    body = await uploads.receive(request.stream(), upload.length - offset, checksum)
    try:
        if uploads.is_whole_file(upload, offset, body) and await photos.finish_whole(
            state.db, actor, state.store, state.image_limiter, upload, body.file
        ):
            async with state.db.read_session() as fresh:  # the request's session holds the upload as it was
                return await uploads.get(fresh, actor, upload_id)
        async with state.db.write_session() as session:
            upload = await uploads.append(session, actor, state.store, upload_id, offset, body, settings)
    finally:
        body.close()
    return await _finish_if_complete(state, actor, upload)


async def _receive_first_bytes(
    request: Request[Any, Any, Any],
    db_session: DbSession,
    actor: Actor,
    settings: Settings,
    upload_id: uuid.UUID,
    checksum: tuple[str, bytes] | None,
) -> Upload:
    """Creation-with-upload's body. Should it fail, the new upload goes with it: the error answer carries
    no Location (tus-js-client would not read one there: it retries a failed creation with a new POST), so
    nobody could ever resume it, and each retry would leave one more behind until it expired."""
    try:
        return await _receive_at(request, db_session, actor, settings, upload_id, 0, checksum)
    except Exception:
        state: State = request.app.state
        await uploads.abandon(state.db, actor, state.store, upload_id)
        raise


class UploadController(Controller):
    path = BASE
    tags = ["uploads"]
    dependencies = {"actor": Provide(provide_actor), "db_session": Provide(read_session)}
    exception_handlers = {
        exc_type: _with_tus_version(handler) for exc_type, handler in EXCEPTION_HANDLERS.items()
    }
    request_max_body_size = None  # bodies are bounded by Upload-Length, checked while they stream

    @route(
        "/",
        http_method=[HttpMethod.OPTIONS],
        status_code=204,
        summary="tus discovery",
        include_in_schema=False,
    )
    async def announce(self, settings: AppSettings) -> Response[None]:
        # Named to sort before "create": Litestar registers a controller's handlers by name, and a path's
        # first handler decides whether it gets Litestar's automatic OPTIONS answer instead of this one.
        return Response(
            None,
            status_code=204,
            headers={
                "Tus-Resumable": tus.VERSION,
                "Tus-Version": tus.VERSION,
                "Tus-Extension": tus.EXTENSIONS,
                "Tus-Max-Size": str(settings.max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
            },
        )

    @route(
        "/{upload_id:uuid}",
        http_method=[HttpMethod.OPTIONS],
        status_code=204,
        summary="tus: the methods an upload takes",
        include_in_schema=False,
    )
    async def announce_upload(self) -> Response[None]:
        # Litestar's automatic answer lists only the methods of the path's first handler (OPTIONS, PATCH).
        # Named, like "announce", to sort before the path's other handlers.
        return Response(
            None,
            status_code=204,
            headers={"Allow": "DELETE, HEAD, OPTIONS, PATCH", "Tus-Resumable": tus.VERSION},
        )

    @post("/", status_code=201, summary="tus creation (and creation-with-upload)")
    async def create(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        settings: AppSettings,
    ) -> Response[None]:
        tus.check_version(request.headers.get("tus-resumable"))
        data = uploads.creation(
            request.headers.get("upload-length"), request.headers.get("upload-metadata"), settings
        )
        with_body = _offset_stream(request)
        checksum = tus.parse_checksum(request.headers.get("upload-checksum")) if with_body else None
        if with_body:  # what can be refused before the upload exists is: nothing is left behind then
            uploads.check_body_fits(data.length, request.content_length)
        await db_session.commit()  # end the sign-in's snapshot: the body path must see the new upload
        async with request.app.state.db.write_session() as session:
            upload = await uploads.create(session, actor, data, settings)
        if with_body and upload.state == UploadState.receiving:
            upload = await _receive_first_bytes(request, db_session, actor, settings, upload.id, checksum)
        return _without_body(201, _headers(upload, Location=f"{BASE}/{upload.id}"))

    @head("/{upload_id:uuid}", summary="tus: how many bytes the server has")
    async def status(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: DbSession,
        actor: CurrentActor,
        upload_id: FromPath[uuid.UUID],
    ) -> Response[None]:
        tus.check_version(request.headers.get("tus-resumable"))
        upload = await uploads.get(db_session, actor, upload_id)
        uploads.check_usable(upload)
        await db_session.commit()
        try:
            upload = await _settled(state, actor, upload)
        except photos.Refused as refused:
            # Every later HEAD answers a refused upload 410 (check_usable); so does the one that refused
            # it, rather than the 422 of the PATCH that brings the last byte. A HEAD has no body to tell
            # them apart, and the code is in the error either way.
            raise tus.Gone(refused.message, code=refused.code, details=refused.details) from None
        extra = {"Upload-Length": str(upload.length)}
        if upload.metadata_header:
            extra["Upload-Metadata"] = upload.metadata_header
        return _without_body(200, _headers(upload, **extra))

    @patch("/{upload_id:uuid}", status_code=204, summary="tus: append bytes at Upload-Offset")
    async def append(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        settings: AppSettings,
        upload_id: FromPath[uuid.UUID],
    ) -> Response[None]:
        tus.check_version(request.headers.get("tus-resumable"))
        if not _offset_stream(request):
            raise tus.WrongContentType(f"A PATCH body must be sent as Content-Type: {tus.OFFSET_STREAM}.")
        offset = tus.parse_count("Upload-Offset", request.headers.get("upload-offset"))
        checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
        upload = await _receive_at(request, db_session, actor, settings, upload_id, offset, checksum)
        return Response(None, status_code=204, headers=_headers(upload))

    @delete("/{upload_id:uuid}", status_code=204, summary="tus termination")
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        upload_id: FromPath[uuid.UUID],
    ) -> Response[None]:
        tus.check_version(request.headers.get("tus-resumable"))
        async with request.app.state.db.write_session() as session:
            await uploads.terminate(session, actor, request.app.state.store, upload_id)
        return Response(None, status_code=204, headers={"Tus-Resumable": tus.VERSION})
