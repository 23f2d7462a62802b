"""Pick and prepare a blob store from one configuration string."""

from __future__ import annotations

from pathlib import Path

from media.stores.base import BlobStore
from media.stores.local import LocalBlobStore


async def open_store(
    spec: str,
    *,
    base_url: str,
    secret: bytes,
    public_endpoint: str = "",
    threads: int = 8,
    timeout: float = 30.0,  # noqa: ASYNC109 - per-request S3 socket timeout, not a deadline
) -> BlobStore:
    """``s3://...`` opens (and if needed creates) a bucket; anything else is a local folder path.

    ``base_url`` and ``secret`` only matter for the local store, whose signed URLs
    point back at our own API; S3 signs with its own credentials.
    """
    if spec.startswith("s3://"):
        # Imported here: the MinIO client and its HTTP stack are about 7 MB a process the local store never needs.
        from media.stores.s3 import S3BlobStore

        s3 = S3BlobStore.from_url(spec, public_endpoint=public_endpoint, threads=threads, timeout=timeout)
        try:
            await s3.ensure_bucket()
        except BaseException:
            await s3.close()
            raise
        return s3
    local = LocalBlobStore(Path(spec), base_url=base_url, secret=secret, threads=threads)
    try:
        await local.prepare()
    except BaseException:
        await local.close()
        raise
    return local
