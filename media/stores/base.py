"""The blob store contract shared by the local-disk and S3 implementations."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import msgspec

MAX_KEY_LENGTH = 512
# Filesystems cap one path component at 255 bytes (NAME_MAX); S3 does not, but a
# key must be storable by every backend, so the contract takes the smaller limit.
MAX_SEGMENT_LENGTH = 255
DEFAULT_CHUNK_SIZE = 1 << 20
# S3 refuses presigned URLs valid for more than seven days; both stores share the cap.
MAX_URL_LIFETIME = 7 * 24 * 3600

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BlobNotFound(KeyError):
    """The key does not name a stored blob."""


class BlobStoreUnavailable(RuntimeError):
    """The backing storage cannot be reached or used right now."""


class StagingLost(RuntimeError):
    """An upload's staged bytes are missing or shorter than the caller's record says."""


class PartsMissing(RuntimeError):
    """A direct upload was asked to complete before all of its parts arrived."""

    def __init__(self, missing: list[int]) -> None:
        super().__init__(f"parts not received: {missing}")
        self.missing = missing


DIRECT_PART_SIZE = 5 << 20
"""Part size of direct uploads: S3's smallest part (only the last may be shorter). Small parts keep a
retry over a weak link short; a 50 MB upload still needs only 10."""


def direct_part_numbers(length: int) -> range:
    """The parts (1-based) of a ``length``-byte file."""
    return range(1, max(1, -(-length // DIRECT_PART_SIZE)) + 1)


def direct_part_size(number: int, length: int) -> int:
    """Size of part ``number`` (1-based) of a ``length``-byte file."""
    return min(DIRECT_PART_SIZE, length - (number - 1) * DIRECT_PART_SIZE)


class BlobStat(msgspec.Struct, frozen=True):
    """What a store knows about one blob; ``modified`` is always tz-aware UTC."""

    key: str
    size: int
    content_type: str | None
    modified: datetime


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative slash path, else raise ValueError.

    Segments starting with a dot are refused as a whole: that covers ``.`` and
    ``..`` (which would alias or escape on disk) and keeps keys out of the local
    store's private ``.tmp`` staging folder.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"blob key must be 1..{MAX_KEY_LENGTH} characters")
    if not _KEY_CHARS.fullmatch(key):
        raise ValueError(f"blob key has characters outside [A-Za-z0-9._/-]: {key!r}")
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"blob key has an empty segment or a leading/trailing slash: {key!r}")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ValueError(f"blob key segment longer than {MAX_SEGMENT_LENGTH} characters: {key!r}")
        if segment.startswith("."):
            raise ValueError(f"blob key segment may not start with a dot: {key!r}")
    return key


def check_upload_id(upload_id: str) -> str:
    """Staging areas are named by an upload id: 1..64 characters of ``[A-Za-z0-9_-]``."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise ValueError(f"upload id must be 1..64 characters of [A-Za-z0-9_-]: {upload_id!r}")
    return upload_id


def check_expires_in(expires_in: int) -> int:
    """Signed URLs are meant to be short-lived; refuse zero, negative or week-plus lifetimes."""
    if not 0 < expires_in <= MAX_URL_LIFETIME:
        raise ValueError(f"expires_in must be 1..{MAX_URL_LIFETIME} seconds, got {expires_in}")
    return expires_in


def content_disposition(filename: str) -> str:
    """An ``attachment`` header value that survives non-ASCII names (RFC 6266 / 5987).

    Old clients read the sanitised ASCII ``filename``; modern ones prefer ``filename*``.
    """
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{quoted}"


@runtime_checkable
class BlobStore(Protocol):
    """Asynchronous storage of immutable-ish byte blobs under slash-path keys."""

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> BlobStat:
        """Store ``data`` under ``key``, atomically replacing any previous blob."""
        ...

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> BlobStat:
        """Store the file at ``path``, streaming it rather than loading it whole."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the whole blob; raise BlobNotFound if missing."""
        ...

    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream the blob in chunks; raise BlobNotFound (on first iteration) if missing."""
        ...

    async def stat(self, key: str) -> BlobStat | None:
        """Return metadata, or None if the key holds no blob."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error."""
        ...

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """Return a URL that lets its holder read the blob for ``expires_in`` seconds."""
        ...

    # -- staging of resumable uploads: bytes arrive in pieces, are kept durably, then leave as one file.

    async def stage_append(self, upload_id: str, offset: int, source: BinaryIO, size: int) -> None:
        """Durably add ``size`` bytes read from ``source`` at ``offset`` of the upload's staging area.

        Anything staged earlier at or after ``offset`` is replaced: the caller's record of the offset is
        the truth, so bytes a failed earlier attempt left beyond it never count. Raises StagingLost when
        fewer than ``offset`` bytes are staged.
        """
        ...

    async def stage_export(self, upload_id: str, length: int, target: Path) -> None:
        """Write the first ``length`` staged bytes to the local file ``target``; StagingLost if short."""
        ...

    async def stage_discard(self, upload_id: str) -> None:
        """Remove everything staged for the upload; discarding nothing is not an error."""
        ...

    async def check(self) -> None:
        """Health probe: raise BlobStoreUnavailable if the storage cannot be used."""
        ...

    async def close(self) -> None:
        """Release threads and connections; the store is unusable afterwards."""
        ...


class PendingDirect(msgspec.Struct, frozen=True):
    """A multipart upload the store holds open: whose staged bytes (``upload_id``), its id, and when it
    began (tz-aware UTC)."""

    upload_id: str
    direct_id: str
    initiated: datetime


@runtime_checkable
class DirectUploads(Protocol):
    """A store the device can send an upload's bytes to itself, part by part, through presigned URLs
    (S3 multipart), without the bytes passing through the server. The parts land as the upload's staged
    bytes: once completed, ``stage_export`` reads them like those of any tus upload."""

    async def direct_begin(self, upload_id: str) -> str:
        """Open the multipart upload of ``upload_id``'s staged bytes; the store's id for it."""
        ...

    def direct_part_url(self, upload_id: str, direct_id: str, number: int, *, expires_in: int) -> str:
        """A URL the holder can PUT part ``number`` (1-based, DIRECT_PART_SIZE bytes but the last) to."""
        ...

    async def direct_parts(self, upload_id: str, direct_id: str) -> dict[int, int]:
        """Part number -> size of the parts received so far (all of them once completed)."""
        ...

    async def direct_complete(self, upload_id: str, direct_id: str, length: int) -> None:
        """Join the parts into the staged bytes. PartsMissing unless every part of a ``length``-byte file
        is there, each of its size; StagingLost when the store no longer knows the upload. Completing
        again once completed does nothing."""
        ...

    async def direct_abort(self, upload_id: str, direct_id: str) -> None:
        """Drop the parts of an unfinished direct upload; aborting nothing is not an error."""
        ...

    async def direct_pending(self) -> list[PendingDirect]:
        """Every multipart upload of staged bytes the store holds open (for the cleanup to find those no
        upload records)."""
        ...
