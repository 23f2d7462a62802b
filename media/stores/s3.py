"""Blob store on any S3-compatible service (MinIO, Ceph RGW, AWS) via the ``minio`` client.

``minio`` is synchronous but thread-safe, so one client is shared and every call
runs in a bounded thread pool; the pool size also caps concurrent connections.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import InvalidResponseError, S3Error, ServerError

from media.stores.base import (
    DEFAULT_CHUNK_SIZE,
    BlobNotFound,
    BlobStat,
    BlobStoreUnavailable,
    PartsMissing,
    PendingDirect,
    StagingLost,
    check_expires_in,
    check_key,
    check_upload_id,
    content_disposition,
    direct_part_numbers,
    direct_part_size,
)

T = TypeVar("T")

DEFAULT_REGION = "us-east-1"
_OCTET_STREAM = "application/octet-stream"
# Staged pieces of resumable uploads, one object per accepted request, named by its start offset. The
# leading dot keeps them outside the key space (check_key refuses it), so no blob can collide with one.
STAGING_PREFIX = ".uploads/"
_OFFSET_DIGITS = 16
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Errors that mean "the service is not there or not working", as opposed to "no such blob".
_UNREACHABLE = (urllib3.exceptions.HTTPError, ServerError, InvalidResponseError)


class S3BlobStore:
    """Blobs as objects in a single bucket; keys are used verbatim as object names."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = True,
        region: str = DEFAULT_REGION,
        public_endpoint: str = "",
        threads: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self._http = _pool_manager(threads, timeout)
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        # Presigning is pure computation, but the URL must name the host that
        # clients can reach, and a fixed region keeps minio from asking the server.
        public_host, public_secure = _split_public_endpoint(public_endpoint, endpoint, secure)
        self._presign_http = _pool_manager(1, timeout)
        self._presigner = Minio(
            public_host,
            access_key=access_key,
            secret_key=secret_key,
            secure=public_secure,
            region=region,
            http_client=self._presign_http,
        )
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blob-s3")

    @classmethod
    def from_url(
        cls, url: str, *, public_endpoint: str = "", threads: int = 8, timeout: float = 30.0
    ) -> S3BlobStore:
        """Build from ``s3://ACCESS:SECRET@host:port/bucket?secure=false&region=us-east-1``.

        Percent-encode ``/``, ``+``, ``@`` or ``:`` inside the credentials.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"not an s3:// URL: {parts.scheme}://")
        if not parts.hostname or parts.username is None or parts.password is None:
            raise ValueError("s3 URL needs ACCESS:SECRET@host")
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError("s3 URL path must be exactly one bucket name")
        query = dict(urllib.parse.parse_qsl(parts.query))
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(
            endpoint=f"{host}:{parts.port}" if parts.port else host,
            bucket=bucket,
            access_key=urllib.parse.unquote(parts.username),
            secret_key=urllib.parse.unquote(parts.password),
            secure=_parse_bool(query.get("secure", "true")),
            region=query.get("region") or DEFAULT_REGION,
            public_endpoint=public_endpoint,
            threads=threads,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    async def _run(self, key: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking minio call in the pool, translating its errors to the store's."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except S3Error as exc:
            translated = _translate(exc, key)
            if translated is exc:
                raise
            raise translated from exc
        except _UNREACHABLE as exc:
            raise BlobStoreUnavailable(f"S3 at {self.endpoint} failed: {exc}") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it already exists (idempotent, race-tolerant)."""
        if await self._run(None, self._client.bucket_exists, self.bucket):
            return
        try:
            await self._run(None, self._client.make_bucket, self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- writes ------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> BlobStat:
        check_key(key)
        await self._run(key, self._put_stream, key, _BytesReader(data), len(data), content_type)
        return await self._stat_after_put(key)

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> BlobStat:
        check_key(key)
        await self._run(key, self._put_path, key, path, content_type)
        return await self._stat_after_put(key)

    def _put_path(self, key: str, path: Path, content_type: str | None) -> None:
        with open(path, "rb") as src:
            size = path.stat().st_size
            self._put_stream(key, src, size, content_type)

    def _put_stream(self, key: str, src: BinaryIO, size: int, content_type: str | None) -> None:
        # Large files go up as multipart; one part (>= 5 MiB) is in memory at a
        # time. num_parallel_uploads=1 stops minio spawning threads of its own,
        # which would escape the pool bound.
        self._client.put_object(
            self.bucket, key, src, size, content_type=content_type or _OCTET_STREAM, num_parallel_uploads=1
        )

    async def _stat_after_put(self, key: str) -> BlobStat:
        # PUT responses carry no Last-Modified; ask the server, whose clock is the truth.
        stat = await self.stat(key)
        if stat is None:
            raise BlobStoreUnavailable(f"S3 lost {key!r} right after writing it")
        return stat

    async def delete(self, key: str) -> None:
        check_key(key)
        # S3 DELETE already succeeds for missing keys.
        await self._run(key, self._client.remove_object, self.bucket, key)

    # -- staging of resumable uploads ---------------------------------------
    #
    # S3 multipart parts must be at least 5 MiB (except the last) while tus clients send 64 KB pieces, so
    # each piece is staged as its own small object and the pieces are joined when the upload completes
    # (the server reads the whole file then anyway, to verify its SHA-256 and decode it).

    @staticmethod
    def _piece(upload_id: str, offset: int) -> str:
        return f"{STAGING_PREFIX}{check_upload_id(upload_id)}/{offset:0{_OFFSET_DIGITS}d}"

    async def stage_append(self, upload_id: str, offset: int, source: BinaryIO, size: int) -> None:
        name = self._piece(upload_id, offset)
        await self._run(None, self._put_stream, name, source, size, _OCTET_STREAM)

    async def stage_export(self, upload_id: str, length: int, target: Path) -> None:
        pieces = await self._run(None, self._pieces, upload_id)
        await self._run(None, self._join, upload_id, pieces, length, target)

    def _pieces(self, upload_id: str) -> dict[int, tuple[str, int]]:
        """offset -> (object name, size) of every staged piece."""
        prefix = f"{STAGING_PREFIX}{check_upload_id(upload_id)}/"
        found: dict[int, tuple[str, int]] = {}
        for obj in self._client.list_objects(self.bucket, prefix=prefix):
            name = str(obj.object_name)
            tail = name[len(prefix) :]
            if tail.isdigit():
                found[int(tail)] = (name, int(obj.size or 0))
        return found

    def _join(self, upload_id: str, pieces: dict[int, tuple[str, int]], length: int, target: Path) -> None:
        """Follow the chain of pieces from offset 0: each starts where the previous one ended."""
        with open(target, "wb") as out:
            position = 0
            while position < length:
                if position not in pieces or pieces[position][1] == 0:
                    raise StagingLost(upload_id)
                name, size = pieces[position]
                take = min(size, length - position)
                response = self._client.get_object(self.bucket, name, offset=0, length=take)
                try:
                    for chunk in response.stream(DEFAULT_CHUNK_SIZE):
                        out.write(chunk)
                finally:
                    response.close()
                    response.release_conn()
                position += take
            if out.tell() != length:
                raise StagingLost(upload_id)

    async def stage_discard(self, upload_id: str) -> None:
        pieces = await self._run(None, self._pieces, upload_id)
        for name, _ in pieces.values():
            await self._run(None, self._client.remove_object, self.bucket, name)

    # -- direct uploads: the device sends the parts to S3 itself (DirectUploads) -------------------

    async def direct_begin(self, upload_id: str) -> str:
        name = self._piece(upload_id, 0)
        headers = {"Content-Type": _OCTET_STREAM}
        return await self._run(None, self._client._create_multipart_upload, self.bucket, name, headers)

    def direct_part_url(self, upload_id: str, direct_id: str, number: int, *, expires_in: int) -> str:
        # No I/O: the presigner's region is fixed. The URL names the public endpoint, as devices need.
        return self._presigner.get_presigned_url(
            "PUT",
            self.bucket,
            self._piece(upload_id, 0),
            expires=timedelta(seconds=check_expires_in(expires_in)),
            extra_query_params={"partNumber": str(number), "uploadId": direct_id},
        )

    async def direct_parts(self, upload_id: str, direct_id: str) -> dict[int, int]:
        return await self._run(None, self._received_parts, upload_id, direct_id)

    def _received_parts(self, upload_id: str, direct_id: str) -> dict[int, int]:
        joined = self._joined_size(upload_id)
        if joined is None:
            try:
                return {p.part_number: int(p.size or 0) for p in self._parts(upload_id, direct_id)}
            except StagingLost:
                joined = self._joined_size(upload_id)  # completed meanwhile by a concurrent call?
                if joined is None:
                    raise
        return {n: direct_part_size(n, joined) for n in direct_part_numbers(joined)}

    async def direct_complete(self, upload_id: str, direct_id: str, length: int) -> None:
        await self._run(None, self._complete_direct, upload_id, direct_id, length)

    def _complete_direct(self, upload_id: str, direct_id: str, length: int) -> None:
        if self._joined_size(upload_id) is not None:
            return  # completed by an earlier call whose answer was lost
        try:
            try:
                self._join_parts(upload_id, direct_id, length)
            except S3Error as exc:
                if exc.code not in _PARTS_CHANGED:
                    raise
                # A part PUT again between our listing and the join (its ETag changed): list again, once.
                self._join_parts(upload_id, direct_id, length)
        except S3Error as exc:
            if exc.code in _PARTS_CHANGED:
                raise PartsMissing(list(direct_part_numbers(length))) from exc
            if exc.code != "NoSuchUpload":
                raise
            self._require_joined(upload_id, exc)
        except StagingLost as exc:
            self._require_joined(upload_id, exc)

    def _join_parts(self, upload_id: str, direct_id: str, length: int) -> None:
        parts = {p.part_number: p for p in self._parts(upload_id, direct_id)}
        # A part of the wrong size (cut short, or another file's) counts as not there: PUT it again.
        wrong = [
            n
            for n in direct_part_numbers(length)
            if n not in parts or parts[n].size != direct_part_size(n, length)
        ]
        if wrong:
            raise PartsMissing(wrong)
        chosen = [
            parts[n] for n in direct_part_numbers(length)
        ]  # parts past the announced length are left out
        self._client._complete_multipart_upload(self.bucket, self._piece(upload_id, 0), direct_id, chosen)

    def _require_joined(self, upload_id: str, cause: Exception) -> None:
        """The multipart upload is gone: a concurrent call joined it (success), or it was aborted."""
        if self._joined_size(upload_id) is None:
            raise StagingLost(upload_id) from cause

    def _parts(self, upload_id: str, direct_id: str) -> list[Part]:
        name = self._piece(upload_id, 0)
        try:
            return list(self._client._list_parts(self.bucket, name, direct_id).parts)
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                raise StagingLost(upload_id) from exc  # aborted, or expired by a bucket lifecycle rule
            raise

    def _joined_size(self, upload_id: str) -> int | None:
        """Size of the staged object once the parts are joined into it; None before."""
        try:
            return int(self._client.stat_object(self.bucket, self._piece(upload_id, 0)).size or 0)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise

    async def direct_abort(self, upload_id: str, direct_id: str) -> None:
        try:
            await self._run(
                None, self._client._abort_multipart_upload, self.bucket, self._piece(upload_id, 0), direct_id
            )
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def direct_pending(self) -> list[PendingDirect]:
        return await self._run(None, self._open_multiparts)

    def _open_multiparts(self) -> list[PendingDirect]:
        found: list[PendingDirect] = []
        key_marker, id_marker = None, None
        while True:
            page = self._client._list_multipart_uploads(
                self.bucket, prefix=STAGING_PREFIX, key_marker=key_marker, upload_id_marker=id_marker
            )
            for upload in page.uploads:
                owner = upload.object_name[len(STAGING_PREFIX) :].partition("/")[0]
                if upload.upload_id and _names_an_upload(owner):  # none of ours otherwise
                    initiated = upload.initiated_time or datetime.now(UTC)  # unknown: as if just begun
                    found.append(PendingDirect(owner, upload.upload_id, initiated.astimezone(UTC)))
            if not page.is_truncated:
                return found
            key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker

    # -- reads -------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        check_key(key)
        return await self._run(key, self._get_all, key)

    def _get_all(self, key: str) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    async def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        check_key(key)
        response = await self._run(key, self._client.get_object, self.bucket, key)
        try:
            while chunk := await self._run(key, response.read, chunk_size):
                yield bytes(chunk)
        finally:
            # close() drops a half-read connection instead of pooling it dirty.
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> BlobStat | None:
        check_key(key)
        try:
            obj = await self._run(key, self._client.stat_object, self.bucket, key)
        except BlobNotFound:
            return None
        modified = obj.last_modified or datetime.now(UTC)
        return BlobStat(
            key=key,
            size=int(obj.size or 0),
            content_type=obj.content_type,
            modified=modified.replace(tzinfo=UTC) if modified.tzinfo is None else modified.astimezone(UTC),
        )

    # -- URLs, health, lifecycle ------------------------------------------

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        check_key(key)
        expires = timedelta(seconds=check_expires_in(expires_in))
        headers: dict[str, str | list[str] | tuple[str]] | None = None
        if filename:
            headers = {"response-content-disposition": content_disposition(filename)}
        # No I/O happens here (the region is fixed), so no thread hop is needed.
        return self._presigner.presigned_get_object(
            self.bucket, key, expires=expires, response_headers=headers
        )

    async def check(self) -> None:
        """Raise BlobStoreUnavailable unless the service answers and the bucket exists."""
        try:
            exists = await self._run(None, self._client.bucket_exists, self.bucket)
        except S3Error as exc:
            raise BlobStoreUnavailable(f"S3 at {self.endpoint} refused the health check: {exc}") from exc
        if not exists:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket!r} does not exist")

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True)
        self._http.clear()
        self._presign_http.clear()


class _BytesReader:
    """A read-only view over ``bytes`` for put_object without copying into a BytesIO."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._pos + size
        chunk = self._view[self._pos : end].tobytes()
        self._pos += len(chunk)
        return chunk


_PARTS_CHANGED = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})


def _pool_manager(size: int, timeout: float) -> urllib3.PoolManager:
    """Explicit timeouts and few retries: a dead S3 must fail fast, not hang requests for minutes."""
    return urllib3.PoolManager(
        maxsize=max(size, 1),
        timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )


def _names_an_upload(upload_id: str) -> bool:
    try:
        check_upload_id(upload_id)
    except ValueError:
        return False
    return True


def _translate(exc: S3Error, key: str | None) -> Exception:
    if exc.code == "NoSuchKey" and key is not None:
        return BlobNotFound(key)
    if exc.code == "NoSuchBucket":
        return BlobStoreUnavailable(f"S3 bucket is missing: {exc}")
    return exc


def _split_public_endpoint(public: str, endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept ``host:port`` or ``https://host:port`` for the public endpoint."""
    if not public:
        return endpoint, secure
    if "://" not in public:
        return public.rstrip("/"), secure
    parts = urllib.parse.urlsplit(public)
    if parts.scheme not in ("http", "https") or parts.path.strip("/"):
        raise ValueError(f"public_endpoint must be http(s)://host[:port] without a path: {public!r}")
    return parts.netloc, parts.scheme == "https"


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")
