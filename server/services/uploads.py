"""tus uploads: creation, appending verified pieces, termination, expiry.

State lives in the `uploads` table and the bytes in the blob store's staging area, so any server process
can continue an upload another one began. A PATCH never holds a database transaction while it reads the
request body (SQLite has one writer): it checks the offset, receives the body into a spooled temporary
file (at most 256 KiB in memory), verifies Upload-Checksum, and only then locks the row, checks the offset
again, stages the bytes and moves the offset, all in one short transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from litestar.exceptions import InternalServerException
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from media.stores import BlobStore, BlobStoreUnavailable, DirectUploads, StagingLost
from schemas.config import Settings
from server.db.engine import Database
from server.db.models import Photo, Upload, UploadState
from server.db.types import utcnow
from server.domain import tus
from server.domain.photo_blobs import keys
from server.errors import Conflict, Invalid, NotFound
from server.services import audit
from server.services.actor import SYSTEM, Actor

log = logging.getLogger("fivestep.uploads")
SPOOL_IN_MEMORY = 256 << 10  # a tus chunk of a weak link stays in memory; a whole photo goes to disk
CLEANUP_INTERVAL_SECONDS = 3600
UNRECORDED_PARTS_GRACE = dt.timedelta(hours=1)
"""A multipart upload no upload records is aborted once this old: a direct upload's row is written
within moments of its multipart upload being opened, so an older one belongs to a server that died in
between."""


@dataclass(frozen=True, slots=True)
class Creation:
    length: int
    sha256: str
    filename: str | None
    content_type: str | None
    metadata_header: str


@dataclass(slots=True)
class Received:
    """A request body, spooled; ``complete`` is False when the client went away before sending it all."""

    file: BinaryIO
    size: int
    complete: bool

    def close(self) -> None:
        self.file.close()


def creation(length_header: str | None, metadata_header: str | None, settings: Settings) -> Creation:
    """A tus creation's headers, checked."""
    if length_header is None:
        raise Invalid(
            "Upload-Length is required (deferred length is not supported).", code="upload_length_required"
        )
    length = tus.parse_count("Upload-Length", length_header)
    return checked_creation(length, tus.parse_metadata(metadata_header), metadata_header or "", settings)


def checked_creation(
    length: int, metadata: dict[str, str], metadata_header: str, settings: Settings
) -> Creation:
    """What every new upload must be, whichever way it is asked for (tus headers, a direct upload's JSON)."""
    if length == 0:
        raise Invalid("An empty file is not a photo.", code="empty_upload")
    if length > settings.max_upload_bytes:
        raise tus.TooLarge(
            f"The file is {length} bytes; the limit is {settings.max_upload_bytes}.",
            details={"max_bytes": settings.max_upload_bytes},
        )
    return Creation(
        length=length,
        sha256=tus.parse_sha256(metadata),
        filename=(metadata.get("filename") or None) and metadata["filename"][:255],
        content_type=(metadata.get("content_type") or metadata.get("filetype") or "")[:100] or None,
        metadata_header=metadata_header,
    )


async def create(
    session: AsyncSession,
    actor: Actor,
    data: Creation,
    settings: Settings,
    *,
    upload_id: uuid.UUID | None = None,
    direct_id: str | None = None,
) -> Upload:
    """A new upload; complete at once (no bytes needed) when a photo with that SHA-256 is stored.
    ``upload_id`` and ``direct_id``: a direct upload's, whose multipart upload the store opened first.

    A stored photo of another length is no file of this length: its SHA-256 cannot be this file's, so
    the creation is refused and nothing is made. Answered "complete" at the announced length, the client
    would take its own file (of that length, not the stored one) for stored.
    """
    stored = await session.get(Photo, data.sha256)
    if stored is not None and stored.byte_size != data.length:
        raise Invalid(
            f"A file with this SHA-256 is stored, and it is not {data.length} bytes long: the sha256 in the "
            "metadata is not this file's. Compute it again from the file.",
            code="sha256_length_mismatch",
        )
    known = stored is not None
    now = utcnow()
    upload = Upload(
        id=upload_id or uuid.uuid4(),
        owner_id=actor.user_id,
        device_id=actor.device_id,
        length=data.length,
        upload_offset=data.length if known else 0,
        sha256=data.sha256,
        filename=data.filename,
        content_type=(data.content_type or "")[:100] or None,
        metadata_header=data.metadata_header,
        state=UploadState.complete if known else UploadState.receiving,
        direct_id=direct_id,
        created_at=now,
        updated_at=now,
        expires_at=now + dt.timedelta(hours=settings.upload_expiry_hours),
    )
    session.add(upload)
    audit.record(
        session,
        actor,
        "upload.create",
        "upload",
        upload.id,
        {"length": data.length, "sha256": data.sha256, "already_stored": known},
    )
    await session.commit()
    return upload


async def get(session: AsyncSession, actor: Actor, upload_id: uuid.UUID, *, lock: bool = False) -> Upload:
    """The caller's own upload; someone else's answers 404 like one that does not exist."""
    query = select(Upload).where(Upload.id == upload_id, Upload.owner_id == actor.user_id)
    if lock:  # read anew under the lock, even if this session read it before
        query = query.with_for_update().execution_options(populate_existing=True)
    upload = (await session.execute(query)).scalar_one_or_none()
    if upload is None:
        raise NotFound("No such upload.")
    return upload


def check_usable(upload: Upload) -> None:
    if upload.state == UploadState.failed and upload.failure_code == STAGING_LOST:
        raise staging_lost()
    if upload.state == UploadState.failed:
        raise tus.Gone(
            "This upload was refused and its bytes discarded; start a new one.",
            code=upload.failure_code or "upload_gone",
        )
    if upload.state == UploadState.receiving and upload.expires_at <= utcnow():
        raise tus.StartAgain("This upload expired; start a new one.", code="upload_expired")


STAGING_LOST = "staging_lost"


def staging_lost() -> tus.StartAgain:
    return tus.StartAgain("The staged bytes of this upload were lost; start a new one.", code=STAGING_LOST)


async def prepare_patch(
    session: AsyncSession, actor: Actor, upload_id: uuid.UUID, offset: int, content_length: int | None
) -> Upload:
    """Check a PATCH before its body is read, then end the transaction (no lock is held while reading).

    A complete upload takes any offset: the caller answers it as done (``is_complete``).
    """
    try:
        upload = await get(session, actor, upload_id)
        check_usable(upload)
        _check_tus(upload)
        room = upload.length
        if not is_complete(upload):
            _check_offset(upload, offset)
            room -= offset
        check_body_fits(room, content_length)
    except BaseException:
        await session.rollback()
        raise
    await session.commit()  # ends the transaction without expiring `upload` (a rollback would)
    return upload


def is_complete(upload: Upload) -> bool:
    """Stored (or created complete because its photo already was): a PATCH to it stores nothing and is
    answered with the whole length, whatever its Upload-Offset. tuspy and tus-java-client ignore the
    creation's Upload-Offset and PATCH from 0 anyway; a 409 would be fatal to them, not "done"."""
    return upload.state == UploadState.complete


def check_body_fits(room: int, content_length: int | None) -> None:
    """A body whose Content-Length goes past Upload-Length is refused before a byte of it is read."""
    if content_length is not None and content_length > room:
        raise _past_upload_length(room)


def _past_upload_length(room: int) -> tus.TooLarge:
    return tus.TooLarge(
        f"The body goes past Upload-Length ({room} bytes were left).", code="past_upload_length"
    )


def _check_tus(upload: Upload) -> None:
    if upload.direct_id is not None:
        raise Conflict(
            "This is a direct upload: PUT its parts to their URLs (GET /api/v1/uploads/direct/{id}).",
            code="not_a_tus_upload",
        )


def _check_offset(upload: Upload, offset: int) -> None:
    if offset != upload.upload_offset:
        raise Conflict(
            f"Upload-Offset {offset} does not match the {upload.upload_offset} bytes received; "
            "ask with HEAD and resume from there.",
            code="offset_mismatch",
            details={"upload_offset": upload.upload_offset},
        )


async def receive(chunks: AsyncIterator[bytes], limit: int, checksum: tuple[str, bytes] | None) -> Received:
    """Spool a request body of at most ``limit`` bytes, verifying its checksum when one was sent.

    A body cut short by the client is kept only without a checksum (then every byte received is good).
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - owned by Received
    hasher = tus.CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    size, complete = 0, True
    try:
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _past_upload_length(limit)
                spool.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
        except InternalServerException:  # Litestar's "client disconnected prematurely"
            complete = False
        if checksum is not None:
            _verify(checksum, hasher, complete)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Received(cast(BinaryIO, spool), size, complete)


async def discard(chunks: AsyncIterator[bytes], limit: int) -> None:
    """Read a body nobody needs to its end, at most ``limit`` bytes: a client that gets its answer while
    still sending would see the connection reset, and a kept-alive connection must be clear for the next
    request."""
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _past_upload_length(limit)
    except InternalServerException:  # the client went away: nothing was to be kept anyway
        pass


def _verify(checksum: tuple[str, bytes], hasher: Any, complete: bool) -> None:
    if not complete:
        raise tus.ChecksumMismatch("The body was cut short, so its checksum cannot match; nothing was kept.")
    if not hmac.compare_digest(hasher.digest(), checksum[1]):
        raise tus.ChecksumMismatch(
            f"The body does not match its Upload-Checksum ({checksum[0]}); nothing of it was kept."
        )


async def append(
    session: AsyncSession,
    actor: Actor,
    store: BlobStore,
    upload_id: uuid.UUID,
    offset: int,
    body: Received,
    settings: Settings,
) -> Upload:
    """Stage the verified body at ``offset`` and move the offset, under the row lock."""
    upload = await get(session, actor, upload_id, lock=True)
    check_usable(upload)
    _check_tus(upload)
    if is_complete(upload):  # another request stored the photo while this body arrived
        return upload
    _check_offset(upload, offset)  # another request may have moved it while this body arrived
    if body.size:
        try:
            await store.stage_append(upload.id.hex, offset, body.file, body.size)
        except StagingLost:
            await _fail(session, actor, store, upload, STAGING_LOST)
            raise staging_lost() from None
        upload.upload_offset = offset + body.size
    upload.expires_at = utcnow() + dt.timedelta(hours=settings.upload_expiry_hours)
    await session.commit()
    return upload


def is_whole_file(upload: Upload, offset: int, body: Received) -> bool:
    """The body is the whole file, from its first byte to its last: it can be ingested without staging."""
    return offset == 0 and body.complete and 0 < body.size == upload.length


PROCESSING_LEASE = dt.timedelta(minutes=5)
"""How long a request's claim to process an upload holds. Longer than any ingest, queueing for an image
worker included; past it (the process died mid-way) the next request for the upload takes over."""


def is_claimed(upload: Upload) -> bool:
    """A request holds this upload for processing, and its lease is not over."""
    return upload.processing_since is not None and upload.processing_since >= _live_claims_since()


def claim_is_free() -> ColumnElement[bool]:
    """``not is_claimed`` as a WHERE clause: nobody holds the upload, or the holder's lease ran out."""
    return or_(Upload.processing_since.is_(None), Upload.processing_since < _live_claims_since())


def _live_claims_since() -> dt.datetime:
    return utcnow() - PROCESSING_LEASE


def needs_finishing(upload: Upload) -> bool:
    return upload.state == UploadState.receiving and upload.upload_offset == upload.length


async def fail(
    session: AsyncSession, actor: Actor, store: BlobStore, upload_id: uuid.UUID, code: str
) -> None:
    """Refuse the upload for good (``code`` says why) and discard its bytes."""
    upload = await session.get(Upload, upload_id, with_for_update=True)
    if upload is not None and upload.state == UploadState.receiving:
        await _fail(session, actor, store, upload, code)


async def _fail(session: AsyncSession, actor: Actor, store: BlobStore, upload: Upload, code: str) -> None:
    upload.state, upload.failure_code = UploadState.failed, code
    audit.record(
        session, actor, "upload.refuse", "upload", upload.id, {"code": code, "sha256": upload.sha256}
    )
    await session.commit()
    try:
        await discard_bytes(store, upload.id, upload.direct_id)
    except BlobStoreUnavailable as exc:  # the refusal stands; the bytes go when the upload expires
        log.warning("refused upload's bytes left for the cleanup: %s", exc)


async def terminate(session: AsyncSession, actor: Actor, store: BlobStore, upload_id: uuid.UUID) -> None:
    """tus termination: the upload and its staged bytes are removed; a stored photo stays, and so do the
    blobs of one a request is storing from it right now (``_discard_unnamed_blobs``)."""
    await lock_content(session, (await get(session, actor, upload_id)).sha256)
    upload = await get(session, actor, upload_id, lock=True)
    await discard_bytes(store, upload.id, upload.direct_id)
    if not is_claimed(upload):
        await _discard_unnamed_blobs(session, store, upload)
    await session.delete(upload)
    audit.record(session, actor, "upload.terminate", "upload", upload.id, {"sha256": upload.sha256})
    await session.commit()


async def abandon(db: Database, actor: Actor, store: BlobStore, upload_id: uuid.UUID) -> None:
    """Terminate an upload whose URL its client never received, as far as can be done now. Whatever
    stops this (storage or database unreachable) leaves the upload to expire; the caller's own error,
    not this one, is what the client must hear."""
    try:
        async with db.write_session() as session:
            await terminate(session, actor, store, upload_id)
    except Exception as exc:
        log.warning("unreachable upload left to expire: %s", type(exc).__name__)


async def discard_bytes(store: BlobStore, upload_id: uuid.UUID, direct_id: str | None) -> None:
    """Staged bytes, and the parts of a direct upload the device never completed."""
    if direct_id is not None and isinstance(store, DirectUploads):
        await store.direct_abort(upload_id.hex, direct_id)
    await store.stage_discard(upload_id.hex)


async def lock_content(session: AsyncSession, sha256: str) -> None:
    """Take turns, per file (SHA-256), between claiming an upload to process it, which goes on to write
    the photo's blobs, and removing blobs no photo row names: without it, a file sent again could have
    its blobs removed between their write and its photo row's. Held until the transaction ends. On SQLite
    every write transaction holds the database's one write lock already."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(key)))


async def _discard_unnamed_blobs(session: AsyncSession, store: BlobStore, upload: Upload) -> None:
    """An upload is going that never completed: if a request stored its photo's blobs and then died (or
    its database write failed) before the photo row, nothing names them, and nothing would ever remove
    them. They go unless a photo row names them or another upload of the same file may still finish
    (it rewrites them). The caller holds ``lock_content`` for the file; deleting absent keys is harmless."""
    if upload.state == UploadState.complete or await session.get(Photo, upload.sha256) is not None:
        return
    others = select(Upload.id).where(
        Upload.sha256 == upload.sha256, Upload.id != upload.id, Upload.state == UploadState.receiving
    )
    if (await session.execute(others.limit(1))).first() is not None:
        return
    for key in keys(upload.sha256):
        await store.delete(key)


# -- expiry ------------------------------------------------------------------------------------------


async def cleanup(db: Database, store: BlobStore, now: dt.datetime | None = None) -> int:
    """Remove uploads past their expiry (unfinished, refused or long complete) and their staged bytes,
    with the blobs an unfinished one's failed ingest left; then the multipart uploads no upload records."""
    cutoff = now or utcnow()
    removed = 0
    for upload_id in await expired(db, cutoff):
        try:
            removed += await remove_if_expired(db, store, upload_id, cutoff)
        except BlobStoreUnavailable as exc:  # the next round tries again; the others go now
            log.warning("expired upload kept for the next cleanup: %s", exc)
    try:
        await abort_unrecorded_parts(db, store, cutoff)
    except BlobStoreUnavailable as exc:
        log.warning("unrecorded multipart uploads kept for the next cleanup: %s", exc)
    return removed


async def abort_unrecorded_parts(db: Database, store: BlobStore, cutoff: dt.datetime) -> int:
    """Abort the multipart uploads older than UNRECORDED_PARTS_GRACE that no upload records (a server
    that died between opening one and writing the upload's row); how many."""
    if not isinstance(store, DirectUploads):
        return 0
    old = [p for p in await store.direct_pending() if p.initiated <= cutoff - UNRECORDED_PARTS_GRACE]
    if not old:
        return 0
    async with db.read_session() as session:
        query = select(Upload.direct_id).where(Upload.direct_id.in_([p.direct_id for p in old]))
        recorded = set((await session.scalars(query)).all())
    unrecorded = [p for p in old if p.direct_id not in recorded]
    for pending in unrecorded:
        await store.direct_abort(pending.upload_id, pending.direct_id)
    return len(unrecorded)


async def expired(db: Database, cutoff: dt.datetime) -> list[uuid.UUID]:
    """The uploads that looked expired a moment ago: each is checked again, locked, before it goes."""
    async with db.read_session() as session:
        query = select(Upload.id).where(Upload.expires_at <= cutoff, claim_is_free())
        return list((await session.scalars(query)).all())


async def remove_if_expired(
    db: Database, store: BlobStore, upload_id: uuid.UUID, cutoff: dt.datetime
) -> bool:
    """Remove the upload and its staged bytes if it is still expired and unclaimed.

    Checked under the row lock before a byte is discarded: a PATCH that committed since the upload was
    listed (its expiry moved) or a request that claimed it for processing keeps its bytes. The bytes go
    before the row, in the same transaction: if discarding fails, the row is still there to try again.
    """
    async with db.write_session() as session:
        sha256 = await session.scalar(select(Upload.sha256).where(Upload.id == upload_id))
        if sha256 is None:
            return False
        await lock_content(session, sha256)  # before the row's lock, in the order a claim takes them
        upload = await session.get(Upload, upload_id, with_for_update=True, populate_existing=True)
        if upload is None or upload.expires_at > cutoff or is_claimed(upload):
            return False  # finished, extended or taken for processing meanwhile
        if needs_finishing(upload):  # every byte is in: photos.cleanup processes it (again next round)
            return False
        await discard_bytes(store, upload.id, upload.direct_id)
        await _discard_unnamed_blobs(session, store, upload)
        await session.delete(upload)
        audit.record(session, SYSTEM, "upload.expire", "upload", upload_id, {"state": upload.state})
        await session.commit()
        return True


async def cleanup_periodically(
    run: Callable[[], Awaitable[int]], interval: float = CLEANUP_INTERVAL_SECONDS
) -> None:
    """Run the cleanup (``photos.cleanup``: this one, after processing what it must not discard) now and
    then every ``interval`` seconds until cancelled; failures are logged."""
    while True:
        try:
            removed = await run()
            if removed:
                log.info("expired uploads removed", extra={"fields": {"count": removed}})
        except Exception as exc:  # a store or database hiccup must not end the loop
            log.warning("upload cleanup failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)
