"""Photos: ingest a completed upload through the image pipeline, read a photo within scope, serve originals.

Ingest runs ``media.pipeline.process_image`` in worker threads bounded by a CapacityLimiter
(``FIVESTEP_IMAGE_WORKERS``), never on the event loop; Pillow releases the GIL while it decodes, scales and
encodes. Nothing is half-stored: the whole-file SHA-256 is checked and the image fully processed before
the first blob is written, blobs are content-addressed (writing one twice is harmless), and the photo row
is inserted only after all three blobs are in the store.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from sqlalchemy import CursorResult, Select, String, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from media.formats import ImageFormat, ImageRejected
from media.pipeline import DEFAULT_MAX_PIXELS, ProcessedImage, Sha256Mismatch, process_image
from media.stores import BlobStore, BlobStoreUnavailable, StagingLost
from schemas.config import Settings
from schemas.photos import DerivativeOut, EvidenceItem, EvidenceOut, ExifOut, PhotoOut
from server.db.engine import Database
from server.db.models import (
    Household,
    Jurisdiction,
    Photo,
    PhotoRef,
    PhotoRefusal,
    SyncConflict,
    Upload,
    UploadState,
    User,
    Visit,
)
from server.db.types import utcnow
from server.domain.answers import in_removed_row
from server.domain.evidence import Reference, references
from server.domain.photo_blobs import keys
from server.domain.tus import Gone
from server.errors import DomainError, Forbidden, NotFound, TryLater, stated_reason
from server.malloc import give_back_free_memory
from server.services import audit, conflicts, integrity, uploads, visits
from server.services.actor import SYSTEM, Actor, communities_in_scope, under_path

log = logging.getLogger("fivestep.photos")
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "heif": "heic"}


class _FinishedElsewhere(Exception):
    """Another request finished this upload while this one was processing it."""


class Refused(DomainError):
    """The completed upload is not a photo we keep; the upload is discarded."""

    status, code = 422, "image_refused"


# -- ingest ------------------------------------------------------------------------------------------


def ingest_file(path: Path, expected_sha256: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ProcessedImage:
    """Blocking: verify the whole file's SHA-256, then process it. Runs in a worker thread."""
    try:
        return process_image(path, max_pixels=max_pixels, expected_sha256=expected_sha256)
    finally:
        give_back_free_memory()  # the decoded image is freed by now


WAIT_POLL_SECONDS = 0.2
WAIT_LIMIT_SECONDS = 25.0
"""How long a request waits for another one's processing before answering 503 with Retry-After: shorter
than clients' timeouts, so retried HEADs do not pile up as waiting handlers."""


async def finish(
    db: Database, actor: Actor, store: BlobStore, limiter: anyio.CapacityLimiter, upload: Upload
) -> None:
    """Turn a fully received upload into a stored photo, or refuse it with a code and discard it.

    No transaction is open while the image is processed; the photo row and the upload's completion are
    written together in one short transaction at the end. One request processes a file at a time: a
    tus client whose last PATCH timed out asks with HEAD while the server is still at it, and that HEAD
    waits for the outcome instead of decoding the same photo a second time.
    """
    async with db.read_session() as session:
        known = await session.get(Photo, upload.sha256) is not None
    claim = None
    if not known:
        claim = await _claim(db, upload)
        if claim is None:
            await outcome_of_other(db, actor, store, limiter, upload)
            await _discard_staged(store, upload)  # this request's copy, when the other had the file whole
            return
    try:
        staged = functools.partial(store.stage_export, upload.id.hex, upload.length)
        await _ingested(db, actor, store, limiter, upload, None if known else staged)
    except _FinishedElsewhere:
        return
    except BaseException:
        if claim is not None:  # a refusal has ended the upload already; anything else may be retried
            await _release(db, upload.id, claim)
        raise
    await _discard_staged(store, upload)


async def finish_whole(
    db: Database,
    actor: Actor,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    upload: Upload,
    body: BinaryIO,
) -> bool:
    """Ingest an upload whose whole file arrived in this one request body (``body``), without staging it:
    on a good link a device sends a photo in one PATCH, and staging it only to read it back is a second
    copy of every byte (on S3, two transfers and four requests a photo).

    Nothing is acknowledged before the photo is stored: the offset stays 0 until the upload completes, so
    a failure or a crash mid-way leaves the client to send the file again, as tus expects. False when this
    request may not take the upload (another is processing it, or bytes were staged meanwhile): the caller
    then stages the body the usual way, and the usual path sorts it out.
    """
    claim = await _claim(db, upload, unstaged=True)
    if claim is None:
        return False
    try:
        async with db.read_session() as session:
            known = await session.get(Photo, upload.sha256) is not None

        async def from_body(path: Path) -> None:
            await anyio.to_thread.run_sync(_write_out, body, path)

        staged = await _ingested(db, actor, store, limiter, upload, None if known else from_body)
    except BaseException:
        # A refusal has ended the upload already; after anything else the client sends the file again.
        await _release(db, upload.id, claim)
        raise
    if staged:  # the file was also sent again meanwhile, and that request gave up waiting
        await _discard_staged(store, upload)
    return True


async def _ingested(
    db: Database,
    actor: Actor,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    upload: Upload,
    fill: Callable[[Path], Awaitable[None]] | None,
) -> bool:
    """Process and store the file ``fill`` writes out (None: its photo is stored already), then write the
    photo row and the upload's completion in one short transaction. True if bytes of it were staged."""
    processed = None if fill is None else await _processed_and_stored(db, actor, store, limiter, upload, fill)
    async with db.write_session() as session:
        if processed is not None and await session.get(Photo, upload.sha256) is None:
            _add_photo(session, actor, upload, processed)
        return await _complete(session, actor, upload.id)


def _write_out(body: BinaryIO, path: Path) -> None:
    body.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(body, out, 64 << 10)  # small: twenty photos arriving at once copy side by side


async def _processed_and_stored(
    db: Database,
    actor: Actor,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    upload: Upload,
    fill: Callable[[Path], Awaitable[None]],
) -> ProcessedImage:
    """Write the whole file to a private temporary ``path`` with ``fill``, then verify, process and store."""
    with tempfile.TemporaryDirectory(prefix="fivestep-ingest-") as tmp:
        path = Path(tmp) / "upload"
        processed = await _process(db, actor, store, limiter, upload, path, fill)
        await _store_blobs(store, upload, processed, path)
        return processed


async def _discard_staged(store: BlobStore, upload: Upload) -> None:
    """The photo is stored: left-over staged bytes are only clutter, removed again at expiry if need be."""
    try:
        await store.stage_discard(upload.id.hex)
    except BlobStoreUnavailable as exc:
        log.warning("staged bytes of a stored upload left for the cleanup: %s", exc)


async def _claim(db: Database, upload: Upload, *, unstaged: bool = False) -> dt.datetime | None:
    """Take the upload for processing unless another request holds it (and its lease is not over);
    the claim's time, which identifies it, or None. ``unstaged``: only while no byte of it is staged
    (the whole file is in the claiming request's body). Only a claimed upload writes a photo's blobs;
    the cleanup removes blobs no row names under the same per-file lock, so never these."""
    now = utcnow()
    async with db.write_session() as session:
        await uploads.lock_content(session, upload.sha256)
        claimed = await session.execute(
            update(Upload)
            .where(
                Upload.id == upload.id,
                Upload.state == UploadState.receiving,
                Upload.expires_at > now,  # the cleanup may be removing it
                uploads.claim_is_free(),
                *([Upload.upload_offset == 0] if unstaged else []),
            )
            .values(processing_since=now)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return now if cast(CursorResult[Any], claimed).rowcount == 1 else None


async def _release(db: Database, upload_id: uuid.UUID, claim: dt.datetime) -> None:
    """Give up this request's own claim (not one that took over after its lease ran out)."""
    with anyio.CancelScope(shield=True):  # also when the request was cancelled mid-way
        async with db.write_session() as session:
            await session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.processing_since == claim)
                .values(processing_since=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()


def being_ingested_whole(upload: Upload) -> bool:
    """A request is ingesting this upload from its own body (nothing staged, see `finish_whole`)."""
    return upload.state == UploadState.receiving and upload.upload_offset == 0 and uploads.is_claimed(upload)


async def outcome_of_other(
    db: Database, actor: Actor, store: BlobStore, limiter: anyio.CapacityLimiter, upload: Upload
) -> None:
    """Wait for the request processing this upload (a tus client whose PATCH timed out asks with HEAD, or
    sends the file again, meanwhile); answer as it ends (stored, or refused: 410), or 503 after
    WAIT_LIMIT_SECONDS. When it gives up with every byte staged, process them here; a file it had whole
    is gone with it, and the upload stays at offset 0 for the client to send again."""
    deadline = anyio.current_time() + WAIT_LIMIT_SECONDS
    while anyio.current_time() < deadline:
        await anyio.sleep(WAIT_POLL_SECONDS)
        async with db.read_session() as session:
            current = await session.get(Upload, upload.id)
        if current is None or current.state == UploadState.complete:
            return  # stored (or the upload was terminated meanwhile)
        if current.state == UploadState.failed:
            raise Gone(
                "This upload was refused and its bytes discarded; start a new one.",
                code=current.failure_code or "upload_gone",
            )
        if not uploads.is_claimed(current):
            if uploads.needs_finishing(current):  # released after a failure, or abandoned
                await finish(db, actor, store, limiter, current)
            return
    raise TryLater(
        "The photo is still being processed; ask again shortly.", code="upload_processing", retry_after=5
    )


async def _process(
    db: Database,
    actor: Actor,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    upload: Upload,
    path: Path,
    fill: Callable[[Path], Awaitable[None]],
) -> ProcessedImage:
    """Write the file into ``path`` (joining the staged pieces, say), verify and process; a refusal discards
    the upload."""
    try:
        await fill(path)
        return await anyio.to_thread.run_sync(ingest_file, path, upload.sha256, limiter=limiter)
    except StagingLost:
        if await _completed(db, upload.id):  # a concurrent finish (a retried HEAD, say) stored it first
            raise _FinishedElsewhere from None
        await _refuse(db, actor, store, upload.id, uploads.STAGING_LOST)
        raise uploads.staging_lost() from None
    except Sha256Mismatch as exc:
        await _refuse(db, actor, store, upload.id, "sha256_mismatch")
        raise Refused(
            "The file's SHA-256 is not the one announced in Upload-Metadata; it was discarded.",
            code="sha256_mismatch",
            details={"announced": upload.sha256, "received": exc.actual},
        ) from None
    except ImageRejected as exc:
        await _refuse(db, actor, store, upload.id, exc.code, content=upload.sha256)
        raise Refused(exc.message, code=exc.code) from None
    except OSError as exc:
        # Our own disk failed (the temporary copy could not be written or read back): nothing is wrong
        # with the photo, so the upload stays as it is and the client asks again.
        log.warning("ingest could not use its temporary copy: %s", type(exc).__name__)
        raise TryLater(
            "The server could not process the photo just now; send or ask again shortly.",
            code="ingest_unavailable",
            retry_after=5,
        ) from exc


async def _completed(db: Database, upload_id: uuid.UUID) -> bool:
    async with db.read_session() as session:
        upload = await session.get(Upload, upload_id)
        return upload is not None and upload.state == UploadState.complete


async def _refuse(
    db: Database,
    actor: Actor,
    store: BlobStore,
    upload_id: uuid.UUID,
    code: str,
    *,
    content: str | None = None,
) -> None:
    """End the upload refused with ``code``; when the refusal is about the ``content`` itself (its SHA-256
    verified), record it by that SHA-256 too, so the visits naming the photo show it refused for good."""
    try:
        async with db.write_session() as session:
            if content is not None and await session.get(PhotoRefusal, content) is None:
                session.add(PhotoRefusal(sha256=content, code=code, refused_at=utcnow()))
            await uploads.fail(session, actor, store, upload_id, code)
    except IntegrityError:  # the same content refused through another upload at the same moment
        async with db.write_session() as session:
            await uploads.fail(session, actor, store, upload_id, code)


async def _store_blobs(store: BlobStore, upload: Upload, processed: ProcessedImage, path: Path) -> None:
    original, display, thumb = keys(upload.sha256)
    await store.put_file(original, path, content_type=processed.format.mime_type)
    await store.put(display, processed.display.data, content_type="image/jpeg")
    await store.put(thumb, processed.thumbnail.data, content_type="image/jpeg")


def _add_photo(session: AsyncSession, actor: Actor, upload: Upload, processed: ProcessedImage) -> None:
    original, display, thumb = keys(upload.sha256)
    exif = processed.exif
    session.add(
        Photo(
            sha256=upload.sha256,
            format=processed.format.value,
            byte_size=upload.length,
            width=processed.width,
            height=processed.height,
            captured_at=exif.captured_at.isoformat() if exif.captured_at else None,
            captured_has_offset=exif.has_offset,
            gps_lat=exif.latitude,
            gps_lon=exif.longitude,
            gps_alt=exif.altitude,
            make=exif.make,
            model=exif.model,
            software=exif.software,
            orientation=exif.orientation,
            dhash=processed.dhash_hex,
            original_key=original,
            display_key=display,
            display_width=processed.display.width,
            display_height=processed.display.height,
            thumb_key=thumb,
            thumb_width=processed.thumbnail.width,
            thumb_height=processed.thumbnail.height,
            uploaded_by=upload.owner_id,
            created_at=utcnow(),
        )
    )
    audit.record(session, actor, "photo.create", "photo", upload.sha256, {"upload_id": upload.id})


async def _complete(session: AsyncSession, actor: Actor, upload_id: uuid.UUID) -> bool:
    """Mark the upload complete and commit; a concurrent finish of the same file may win the photo row.
    True if bytes of it were staged (the file came whole, but was also sent again meanwhile, say)."""
    try:
        # Reading the upload flushes the photo row added before: a conflict can surface here already.
        upload = await session.get(Upload, upload_id, with_for_update=True)
        staged = upload is not None and upload.upload_offset > 0
        if upload is not None and upload.state == UploadState.receiving:
            upload.state = UploadState.complete
            upload.upload_offset = upload.length  # already so, unless it came whole and was never staged
            audit.record(session, actor, "upload.complete", "upload", upload.id, {"sha256": upload.sha256})
        await session.commit()
    except IntegrityError:  # the same file was stored through another upload meanwhile: keep that one
        await session.rollback()
        return await _complete(session, actor, upload_id)
    return staged


# -- expiry ------------------------------------------------------------------------------------------


async def cleanup(
    db: Database,
    store: BlobStore,
    limiter: anyio.CapacityLimiter,
    now: dt.datetime | None = None,
) -> int:
    """The uploads' cleanup (``uploads.cleanup``), once the expired uploads that hold every byte of their
    file are processed: those bytes are the household's evidence, and the tablet that sent them (its
    last PATCH answered 503, the server stopped mid-way) may never ask again."""
    cutoff = now or utcnow()
    await finish_stranded(db, store, limiter, cutoff)
    return await uploads.cleanup(db, store, cutoff)


async def finish_stranded(
    db: Database, store: BlobStore, limiter: anyio.CapacityLimiter, cutoff: dt.datetime
) -> int:
    """Process the uploads past their expiry whose bytes all arrived and that nobody processes; how many
    were stored. A refusal ends an upload as always; a passing failure leaves it for the next round."""
    async with db.read_session() as session:
        query = select(Upload.id).where(
            Upload.state == UploadState.receiving,
            Upload.upload_offset == Upload.length,
            Upload.expires_at <= cutoff,
            uploads.claim_is_free(),
        )
        stranded = list((await session.scalars(query)).all())
    stored = 0
    for upload_id in stranded:
        try:
            stored += await _finish_stranded(db, store, limiter, upload_id)
        except Exception as exc:  # refused (it says why), storage down, ...: the others still go now
            log.warning("stranded upload not processed: %s", getattr(exc, "code", type(exc).__name__))
    return stored


async def _finish_stranded(
    db: Database, store: BlobStore, limiter: anyio.CapacityLimiter, upload_id: uuid.UUID
) -> bool:
    async with db.write_session() as session:
        upload = await session.get(Upload, upload_id, with_for_update=True)
        if upload is None or not uploads.needs_finishing(upload) or uploads.is_claimed(upload):
            return False
        # Alive again for as long as a claim holds, so it can be claimed (an expiring upload cannot be).
        upload.expires_at = utcnow() + uploads.PROCESSING_LEASE
        await session.commit()
    await finish(db, SYSTEM, store, limiter, upload)
    return True


# -- reading -----------------------------------------------------------------------------------------


def _refs_in_scope(actor: Actor, sha256: str) -> Select[uuid.UUID]:
    return (
        select(PhotoRef.visit_id)
        .join(Visit, Visit.id == PhotoRef.visit_id)
        .join(Household, Household.id == Visit.household_id)
        .where(PhotoRef.sha256 == sha256, communities_in_scope(actor))
        .distinct()
    )


async def visible(session: AsyncSession, actor: Actor, sha256: str) -> tuple[Photo, list[uuid.UUID]]:
    """The photo and the visits in scope that reference it; 404 unless one does, or the caller uploaded it
    and no visit references it yet (a photo sent before its answer). Once a visit names it, the visit's
    area decides, for its uploader too: a worker moved to another community no longer sees it."""
    photo = await session.get(Photo, sha256.lower())
    if photo is None:
        raise NotFound("No such photo.")
    visit_ids = sorted((await session.execute(_refs_in_scope(actor, photo.sha256))).scalars())
    if not visit_ids and not (
        not await _referenced(session, photo)
        and (
            photo.uploaded_by == actor.user_id or await _named_by_a_handed_over_answer(session, actor, photo)
        )
    ):
        raise NotFound("No such photo.")
    return photo, visit_ids


async def _named_by_a_handed_over_answer(session: AsyncSession, actor: Actor, photo: Photo) -> bool:
    """Whether the answer of a tablet handed over (quarantined, never applied: no visit names its files;
    kept by the handover, `author_inactive`, or refused earlier, whose file the tablet held) names the
    photo among the conflicts the caller sees: its supervisors judge it with its pictures, which the
    colleague who handed the tablet in uploaded (docs/sync-protocol.md, "Handing a tablet over"). That
    colleague is the conflict's `handed_over_by`, or whoever else could have handed that tablet in (a user
    of the conflict's area or over it): a handover one user began and the link cut off is finished by the
    next to sign in on the tablet, who sends the files. A file someone else uploaded is not the tablet's.
    Only for a photo no visit names: once one does, the visit's area decides."""
    query = select(SyncConflict.id).where(
        SyncConflict.kind == "quarantined",
        SyncConflict.handed_over_by.is_not(None),
        or_(
            SyncConflict.handed_over_by == photo.uploaded_by,
            SyncConflict.scope.in_(await _area_of(session, photo.uploaded_by)),
        ),
        SyncConflict.scope.in_(await conflicts.scope_ids(session, actor)),
        sql_cast(SyncConflict.client_value, String).contains(photo.sha256),
    )
    return (await session.execute(query.limit(1))).first() is not None


async def _area_of(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """The ids of the nodes under the user's node (theirs included), as a conflict's scope names them."""
    path = select(Jurisdiction.path).join(User, User.jurisdiction_id == Jurisdiction.id)
    node = (await session.execute(path.where(User.id == user_id))).scalar()
    if node is None:
        return []
    return [str(i) for (i,) in await session.execute(select(Jurisdiction.id).where(under_path(node)))]


async def _referenced(session: AsyncSession, photo: Photo) -> bool:
    query = select(PhotoRef.visit_id).where(PhotoRef.sha256 == photo.sha256).limit(1)
    return (await session.execute(query)).first() is not None


def _exif_out(photo: Photo, *, sees_gps: bool) -> ExifOut:
    """The file's claims. Its GPS is where the photo was taken, the household's home as a rule: shown only
    to the roles that may read the original file, which carries it anyway."""
    claims_gps = photo.gps_lat is not None or photo.gps_lon is not None
    return ExifOut(
        captured_at=photo.captured_at,
        captured_has_offset=photo.captured_has_offset,
        latitude=photo.gps_lat if sees_gps else None,
        longitude=photo.gps_lon if sees_gps else None,
        altitude=photo.gps_alt if sees_gps else None,
        gps_withheld=claims_gps and not sees_gps,
        make=photo.make,
        model=photo.model,
        software=photo.software,
        orientation=photo.orientation,
    )


async def photo_out(
    session: AsyncSession, actor: Actor, store: BlobStore, settings: Settings, sha256: str
) -> PhotoOut:
    photo, visit_ids = await visible(session, actor, sha256)
    ttl = settings.signed_url_ttl_seconds
    expires = utcnow() + dt.timedelta(seconds=ttl)
    ext = ".jpg"
    return PhotoOut(
        sha256=photo.sha256,
        format=photo.format,
        byte_size=photo.byte_size,
        width=photo.width,
        height=photo.height,
        dhash=photo.dhash,
        exif=_exif_out(photo, sees_gps=actor.role in settings.original_roles),
        display=DerivativeOut(
            url=await store.signed_url(photo.display_key, expires_in=ttl, filename=photo.sha256[:16] + ext),
            width=photo.display_width,
            height=photo.display_height,
            expires_at=expires,
        ),
        thumbnail=DerivativeOut(
            url=await store.signed_url(photo.thumb_key, expires_in=ttl),
            width=photo.thumb_width,
            height=photo.thumb_height,
            expires_at=expires,
        ),
        uploaded_by=photo.uploaded_by,
        created_at=photo.created_at,
        visits=visit_ids,
    )


async def original(
    session: AsyncSession, actor: Actor, store: BlobStore, settings: Settings, sha256: str, reason: str | None
) -> tuple[Photo, AsyncIterator[bytes]]:
    """The original file, for roles allowed to see it; each fetch is audited with its reason, and so is
    each refusal of a photo the caller can see (`photo.original_refused`). A photo out of reach is a 404
    without a row: the path then names no photo of theirs, and may hold anything typed into it."""
    photo, _ = await visible(session, actor, sha256)
    try:
        if actor.role not in settings.original_roles:
            raise Forbidden(f"A {actor.role} may not fetch original photos.", code="original_forbidden")
        why = stated_reason(
            reason, audit.REVEAL_REASON_MIN_LENGTH, "Say why you need the original: ?reason=..."
        )
    except DomainError as refused:
        await audit.record_refused(
            session, actor, "photo.original_refused", "photo", photo.sha256, refused, reason
        )
        raise
    audit.record(session, actor, "photo.original", "photo", photo.sha256, reason=why[:500])
    await session.commit()
    return photo, store.iter_chunks(photo.original_key)


def media_type(photo: Photo) -> str:
    return ImageFormat(photo.format).mime_type


def original_filename(photo: Photo) -> str:
    return f"{photo.sha256}.{_EXTENSIONS.get(photo.format, 'bin')}"


# -- a visit's evidence ------------------------------------------------------------------------------


async def evidence(
    session: AsyncSession, actor: Actor, store: BlobStore, settings: Settings, visit_id: uuid.UUID
) -> EvidenceOut:
    """Every photo and signature image the visit's current answers name: present, refused (with the code),
    or still expected."""
    visit, household = await visits.get(session, actor, visit_id)
    arrived = await visits.observations(session, visit_id)
    fold = visits.folded_holding(arrived)
    wanted, stored, refused = await _named_and_stored(session, fold[0])
    ttl = settings.signed_url_ttl_seconds
    items = []
    for template, item, row, ref in wanted:
        photo = stored.get(ref.sha256)
        refusal = None if photo else refused.get(ref.sha256)
        items.append(
            EvidenceItem(
                sha256=ref.sha256,
                kind=ref.kind,
                template=template,
                item=item,
                row_id=row,
                view=ref.view,
                status="present" if photo else "refused" if refusal else "expected",
                thumbnail_url=await store.signed_url(photo.thumb_key, expires_in=ttl) if photo else None,
                refusal=refusal,
            )
        )
    expected = sum(1 for i in items if i.status == "expected")
    present = sum(1 for i in items if i.status == "present")
    refused_count = len(items) - expected - present
    return EvidenceOut(
        visit_id=visit_id,
        version=visit.version,
        expected=expected,
        present=present,
        refused=refused_count,
        items=items,
        checks=await integrity.checks(session, actor, visit, household, arrived, fold, wanted, stored),
        household_located=household.lat is not None and household.lon is not None,
    )


async def arrived_and_missing(
    session: AsyncSession, visit_id: uuid.UUID
) -> tuple[int, list[dict[str, str | None]]]:
    """How many of the evidence items the visit's current answers name have arrived (`EvidenceOut.present`),
    and those the server does not hold, as ``{template, item, row_id, sha256, kind, status, refusal}`` in
    evidence order (the caller checked access): ``expected`` (not received yet) or ``refused`` (the file
    sent was refused, ``refusal`` says why: it will never come). One reading of the answers for a review
    decision, which needs both."""
    wanted, stored, refused = await _named_and_stored(
        session, await visits.current_answers(session, visit_id)
    )
    missing = [
        {
            "template": template,
            "item": item,
            "row_id": row,
            "sha256": ref.sha256,
            "kind": ref.kind,
            "status": "refused" if ref.sha256 in refused else "expected",
            "refusal": refused.get(ref.sha256),
        }
        for template, item, row, ref in wanted
        if ref.sha256 not in stored
    ]
    return len(wanted) - len(missing), missing


async def _named_and_stored(
    session: AsyncSession, current: visits.VisitAnswers
) -> tuple[list[tuple[str, str, str | None, Reference]], dict[str, Photo], dict[str, str]]:
    """The references of the visit's `current` answers, sorted, the photo rows of those received, and the
    refusal codes of those refused. A removed row's photos are wanted no more than a replaced answer's: the
    tablet shows neither."""
    wanted = [
        (template, item, row, ref)
        for template, answers in current.items()
        for (item, row), value in answers.items()
        if not in_removed_row(answers, item, row)
        for ref in references(value)
    ]
    wanted.sort(key=lambda w: (w[0], w[1], w[2] or "", w[3].sha256))
    shas = {ref.sha256 for *_, ref in wanted}
    stored = {
        p.sha256: p for p in (await session.execute(select(Photo).where(Photo.sha256.in_(shas)))).scalars()
    }
    refusals = select(PhotoRefusal.sha256, PhotoRefusal.code).where(
        PhotoRefusal.sha256.in_(shas - set(stored))
    )
    refused = {sha: code for sha, code in await session.execute(refusals)}
    return wanted, stored, refused
