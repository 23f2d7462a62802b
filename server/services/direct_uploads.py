"""Direct uploads: the device PUTs a photo's parts straight to the object store through presigned URLs
(an S3 multipart upload), so the bytes never pass through the server. When the device says it is done,
the server joins the parts, checks the whole file's SHA-256 and ingests it exactly as it does a tus
upload (docs/uploads.md).

A direct upload is a row of the same ``uploads`` table as a tus upload: HEAD, DELETE (termination) and
expiry work on both. Its ``direct_id`` is the store's multipart upload id. Only a store that can take
parts itself (``DirectUploads``: S3/MinIO) offers it; on the local folder, tus is the way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import anyio

from media.stores import BlobStore, BlobStoreUnavailable, DirectUploads, PartsMissing, StagingLost
from media.stores.base import DIRECT_PART_SIZE, MAX_URL_LIFETIME, direct_part_numbers, direct_part_size
from schemas.config import Settings
from schemas.photos import DirectPartOut, DirectUploadIn, DirectUploadOut
from server.db.engine import Database
from server.db.models import Photo, Upload, UploadState
from server.db.types import utcnow
from server.errors import Conflict
from server.services import photos, uploads
from server.services.actor import Actor


def direct(store: BlobStore) -> DirectUploads:
    if not isinstance(store, DirectUploads):
        raise Conflict(
            "This server keeps photos in a local folder, which takes no direct uploads; "
            "send the file through tus at /api/v1/uploads.",
            code="direct_upload_unavailable",
        )
    return store


def creation(body: DirectUploadIn, settings: Settings) -> uploads.Creation:
    """The same checks as a tus creation, from the JSON body instead of headers."""
    metadata = {
        "sha256": body.sha256,
        "filename": body.filename or "",
        "content_type": body.content_type or "",
    }
    return uploads.checked_creation(body.length, metadata, "", settings)


async def create(
    db: Database, actor: Actor, store: BlobStore, body: DirectUploadIn, settings: Settings
) -> DirectUploadOut:
    """A new direct upload with a URL for each part; complete at once when the photo is already stored."""
    target = direct(store)
    data = creation(body, settings)
    async with db.read_session() as session:
        stored = await session.get(Photo, data.sha256) is not None
    if stored:  # complete at once, or refused for its length: no multipart upload needed
        async with db.write_session() as session:
            return _out(target, await uploads.create(session, actor, data, settings), {})
    # The multipart upload first, then the row that records it: a store that cannot open one leaves no
    # upload behind (none the device could name, none to expire). A server that dies in between leaves a
    # multipart upload no row records; the cleanup aborts those (uploads.abort_unrecorded_parts).
    upload_id = uuid.uuid4()
    direct_id = await target.direct_begin(upload_id.hex)
    try:
        async with db.write_session() as session:
            upload = await uploads.create(
                session, actor, data, settings, upload_id=upload_id, direct_id=direct_id
            )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await target.direct_abort(upload_id.hex, direct_id)
        raise
    if upload.state == UploadState.complete:  # stored meanwhile through another upload: nothing to send
        with contextlib.suppress(BlobStoreUnavailable):  # recorded with the upload: aborted at its expiry
            await uploads.discard_bytes(store, upload.id, direct_id)
    return _out(target, upload, {})


async def status(
    db: Database, actor: Actor, store: BlobStore, upload_id: uuid.UUID, settings: Settings
) -> DirectUploadOut:
    """Which parts the store holds, and fresh URLs for the others. Asking keeps the upload alive, as an
    accepted PATCH keeps a tus upload alive: the server never sees the part PUTs themselves."""
    target = direct(store)
    upload = await _kept_alive(db, actor, upload_id, settings)
    if upload.state == UploadState.complete:
        return _out(target, upload, {})
    return _out(target, upload, await _parts(db, actor, store, upload))


async def complete(
    db: Database,
    actor: Actor,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    upload_id: uuid.UUID,
    settings: Settings,
) -> DirectUploadOut:
    """Join the parts, then verify and ingest as for tus. Asking again after an answer was lost is safe."""
    target = direct(store)
    upload = await _kept_alive(db, actor, upload_id, settings)
    if upload.state == UploadState.receiving:
        try:
            await target.direct_complete(upload.id.hex, _direct_id(upload), upload.length)
        except PartsMissing as exc:
            raise Conflict(
                f"Parts {exc.missing} have not arrived whole; PUT them and complete again.",
                code="parts_missing",
                details={"missing": exc.missing},
            ) from None
        except StagingLost:
            return _out(target, await _lost(db, actor, store, upload), {})
        upload = await _received(db, actor, upload.id)
        await photos.finish(db, actor, store, limiter, upload)
        upload = await _usable(db, actor, upload_id)
    return _out(target, upload, {})


async def _usable(db: Database, actor: Actor, upload_id: uuid.UUID) -> Upload:
    async with db.read_session() as session:
        upload = await uploads.get(session, actor, upload_id)
        uploads.check_usable(upload)
        return upload


def _direct_id(upload: Upload) -> str:
    if upload.direct_id is None:
        raise Conflict(
            "This is a tus upload; send its bytes with PATCH /api/v1/uploads/{id}.",
            code="not_a_direct_upload",
        )
    return upload.direct_id


async def _parts(db: Database, actor: Actor, store: BlobStore, upload: Upload) -> dict[int, int]:
    try:
        return await direct(store).direct_parts(upload.id.hex, _direct_id(upload))
    except StagingLost:
        await _lost(db, actor, store, upload)
        return {}  # it turned out complete: nothing left to send


async def _lost(db: Database, actor: Actor, store: BlobStore, upload: Upload) -> Upload:
    """The store no longer knows the parts: aborted or expired by a bucket lifecycle rule (404
    staging_lost: start a new upload), unless a concurrent request completed the upload and dropped them
    (then that is the answer)."""
    async with db.write_session() as session:
        await uploads.fail(session, actor, store, upload.id, uploads.STAGING_LOST)
    current = await _usable(db, actor, upload.id)  # 404 if it failed just now
    if current.state != UploadState.complete:
        raise uploads.staging_lost()
    return current


async def _kept_alive(db: Database, actor: Actor, upload_id: uuid.UUID, settings: Settings) -> Upload:
    """The caller's usable upload (410 if refused or expired); an unfinished one lives on from now."""
    async with db.write_session() as session:
        upload = await uploads.get(session, actor, upload_id, lock=True)
        uploads.check_usable(upload)
        if upload.state == UploadState.receiving:
            upload.expires_at = utcnow() + dt.timedelta(hours=settings.upload_expiry_hours)
        await session.commit()
        return upload


async def _received(db: Database, actor: Actor, upload_id: uuid.UUID) -> Upload:
    """All bytes are staged: the offset says so, as after the last tus PATCH (HEAD then finishes a
    crashed ingest the same way for both kinds)."""
    async with db.write_session() as session:
        upload = await uploads.get(session, actor, upload_id, lock=True)
        if upload.state == UploadState.receiving:
            upload.upload_offset = upload.length
        await session.commit()
        return upload


def _out(target: DirectUploads, upload: Upload, received: dict[int, int]) -> DirectUploadOut:
    done = upload.state == UploadState.complete
    numbers = direct_part_numbers(upload.length)
    whole = {n for n in numbers if received.get(n) == direct_part_size(n, upload.length)}
    have = list(numbers) if done else sorted(whole)
    lifetime = _url_lifetime(upload.expires_at)
    to_send = [] if done or upload.direct_id is None else [n for n in numbers if n not in whole]
    return DirectUploadOut(
        upload_id=upload.id,
        state="complete" if done else "receiving",
        length=upload.length,
        part_size=DIRECT_PART_SIZE,
        received=have,
        parts=[
            DirectPartOut(
                number=n,
                url=target.direct_part_url(upload.id.hex, upload.direct_id or "", n, expires_in=lifetime),
            )
            for n in to_send
        ],
        urls_expire_at=utcnow() + dt.timedelta(seconds=lifetime) if to_send else None,
        expires_at=upload.expires_at,
    )


def _url_lifetime(expires_at: dt.datetime) -> int:
    """URLs live as long as the upload does (S3 caps them at seven days)."""
    left = int((expires_at - utcnow()).total_seconds())
    return max(60, min(left, MAX_URL_LIFETIME))
