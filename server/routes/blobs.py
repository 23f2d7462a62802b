"""Serves the local store's signed read URLs (S3 serves its own presigned ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from media.stores import BlobNotFound, LocalBlobStore, check_key
from server.errors import Forbidden, NotFound


@get("/api/v1/blobs/{key:path}", tags=["blobs"], summary="A blob behind a signed, expiring URL")
async def signed_blob(
    state: State, key: FromPath[str], expires: FromQuery[int], signature: FromQuery[str]
) -> Stream:
    store = state.store
    key = key.lstrip("/")
    try:
        check_key(key)
    except ValueError:
        raise NotFound("No such blob.") from None
    if not isinstance(store, LocalBlobStore) or not store.verify_signature(key, expires, signature):
        raise Forbidden("The link is invalid or has expired.", code="bad_signature")
    stat = await store.stat(key)
    if stat is None:
        raise NotFound("No such blob.")
    chunks: AsyncIterator[bytes] = store.iter_chunks(key)
    headers = {"Cache-Control": "private, max-age=60", "Content-Length": str(stat.size)}
    try:
        return Stream(chunks, media_type=stat.content_type or "application/octet-stream", headers=headers)
    except BlobNotFound:  # removed between stat and read
        raise NotFound("No such blob.") from None
