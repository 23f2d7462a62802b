"""Blob store on a local (or network-mounted) directory.

Every blocking file operation runs in the store's own bounded thread pool, so a
slow disk stalls at most ``threads`` uploads and never the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from media.stores import signing
from media.stores.base import (
    DEFAULT_CHUNK_SIZE,
    BlobNotFound,
    BlobStat,
    BlobStoreUnavailable,
    StagingLost,
    check_expires_in,
    check_key,
    check_upload_id,
)

T = TypeVar("T")

TMP_DIR = ".tmp"
UPLOADS_DIR = (
    ".uploads"  # staging files of resumable uploads; outside the key space (keys never start with ".")
)
# Content type travels with the file as an extended attribute, set on the temp
# file before the rename so content and type appear together.
_CONTENT_TYPE_XATTR = "user.fivestep.content_type"
_COPY_BUFFER = 1 << 20
# A path that exists but is not a regular file (or crosses one) holds no blob.
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class LocalBlobStore:
    """Blobs as plain files under ``root``; keys map directly to relative paths."""

    def __init__(self, root: Path, *, base_url: str, secret: bytes, threads: int = 4) -> None:
        if not secret:
            raise ValueError("LocalBlobStore needs a non-empty signing secret")
        self.root = Path(root).expanduser()
        self._tmp = self.root / TMP_DIR
        self._uploads = self.root / UPLOADS_DIR
        self._base_url = base_url.rstrip("/")
        self._secret = secret
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blob-local")

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def prepare(self) -> None:
        """Create the root and its staging folder if missing."""
        await self._run(self._tmp.mkdir, 0o755, True, True)

    # -- writes ------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> BlobStat:
        target = self._path(key)
        return await self._run(self._write, key, target, lambda out: out.write(data), content_type)

    async def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> BlobStat:
        target = self._path(key)

        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, _COPY_BUFFER)

        return await self._run(self._write, key, target, copy, content_type)

    def _write(
        self, key: str, target: Path, fill: Callable[[BinaryIO], object], content_type: str | None
    ) -> BlobStat:
        """Stage in ``.tmp``, fsync, rename into place, fsync the directory.

        Readers see the old blob or the new one, never a half-written file, even across a crash.
        """
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            stored_type = _set_content_type(tmp_name, content_type)
            _make_dirs_durable(target.parent, self.root)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(target.parent)
        st = target.stat()
        return BlobStat(key=key, size=st.st_size, content_type=stored_type, modified=_mtime(st))

    async def delete(self, key: str) -> None:
        await self._run(self._delete, self._path(key))

    @staticmethod
    def _delete(target: Path) -> None:
        try:
            target.unlink()
        except _MISSING:
            return
        _fsync_dir(target.parent)

    # -- staging of resumable uploads ---------------------------------------

    def _staging(self, upload_id: str) -> Path:
        return self._uploads / check_upload_id(upload_id)

    async def stage_append(self, upload_id: str, offset: int, source: BinaryIO, size: int) -> None:
        await self._run(self._append, self._staging(upload_id), offset, source, size)

    def _append(self, path: Path, offset: int, source: BinaryIO, size: int) -> None:
        """Truncate to ``offset`` (dropping bytes no record counts), append, fsync."""
        if offset == 0:
            self._uploads.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if offset == 0 else 0), 0o600)
        except FileNotFoundError:
            raise StagingLost(path.name) from None
        with os.fdopen(fd, "r+b") as out:
            if os.fstat(fd).st_size < offset:
                raise StagingLost(path.name)
            out.truncate(offset)
            out.seek(offset)
            _copy_exactly(source, out, size)
            out.flush()
            os.fsync(fd)
        if offset == 0:
            _fsync_dir(self._uploads)

    async def stage_export(self, upload_id: str, length: int, target: Path) -> None:
        await self._run(self._export, self._staging(upload_id), length, target)

    @staticmethod
    def _export(path: Path, length: int, target: Path) -> None:
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below, after the size check
        except FileNotFoundError:
            raise StagingLost(path.name) from None
        with src, open(target, "wb") as out:
            if os.fstat(src.fileno()).st_size < length:
                raise StagingLost(path.name)
            _copy_exactly(src, out, length)

    async def stage_discard(self, upload_id: str) -> None:
        await self._run(self._delete, self._staging(upload_id))

    # -- reads -------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        target = self._path(key)
        try:
            return await self._run(target.read_bytes)
        except _MISSING:
            raise BlobNotFound(key) from None

    async def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        target = self._path(key)
        try:
            src: BinaryIO = await self._run(open, target, "rb")
        except _MISSING:
            raise BlobNotFound(key) from None
        try:
            while chunk := await self._run(src.read, chunk_size):
                yield chunk
        finally:
            await self._run(src.close)

    async def stat(self, key: str) -> BlobStat | None:
        return await self._run(self._stat, key, self._path(key))

    @staticmethod
    def _stat(key: str, target: Path) -> BlobStat | None:
        try:
            st = target.stat()
        except _MISSING:
            return None
        if not target.is_file():
            return None
        return BlobStat(key=key, size=st.st_size, content_type=_get_content_type(target), modified=_mtime(st))

    # -- URLs, health, lifecycle ------------------------------------------

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL for the API's blob route; ``filename`` is a hint, not covered by the signature."""
        check_key(key)
        expires = int(time.time()) + check_expires_in(expires_in)
        query = {"expires": str(expires), "signature": signing.sign(self._secret, key, expires)}
        if filename:
            query["filename"] = filename
        return f"{self._base_url}/api/v1/blobs/{key}?{urllib.parse.urlencode(query)}"

    def verify_signature(self, key: str, expires: int, signature: str) -> bool:
        """Whether a signed URL's parameters are genuine and unexpired (the API's blob route asks)."""
        return signing.verify(self._secret, key, expires, signature)

    async def check(self) -> None:
        """Prove the root is a writable directory by creating and removing a probe file."""
        try:
            await self._run(self._probe)
        except OSError as exc:
            raise BlobStoreUnavailable(f"local blob root {self.root} is not writable: {exc}") from exc

    def _probe(self) -> None:
        if not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.root))
        self._tmp.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="check-")
        os.close(fd)
        os.unlink(name)

    async def close(self) -> None:
        # shutdown(wait=True) blocks until in-flight writes finish; keep that off the loop.
        await asyncio.to_thread(self._executor.shutdown, True)


def _copy_exactly(source: BinaryIO, out: BinaryIO, size: int) -> None:
    remaining = size
    while remaining > 0:
        chunk = source.read(min(_COPY_BUFFER, remaining))
        if not chunk:
            raise ValueError(f"source ended {remaining} bytes early")
        out.write(chunk)
        remaining -= len(chunk)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename or unlink is only durable after this)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durable(directory: Path, root: Path) -> None:
    """``mkdir -p`` that also fsyncs each parent, so new folders survive a crash with their files."""
    missing: list[Path] = []
    current = directory
    while current != root and not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent writer may win the race
            path.mkdir()
        _fsync_dir(path.parent)


def _set_content_type(path: str, content_type: str | None) -> str | None:
    """Record the type if the filesystem supports user xattrs; otherwise it is simply unknown."""
    if content_type is None:
        return None
    try:
        os.setxattr(path, _CONTENT_TYPE_XATTR, content_type.encode())
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return None
        raise
    return content_type


def _get_content_type(path: Path) -> str | None:
    try:
        return os.getxattr(path, _CONTENT_TYPE_XATTR).decode()
    except OSError:
        return None
