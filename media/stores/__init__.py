"""Blob stores: one async protocol, a local-disk and an S3 implementation, and ``open_store``.

The S3 store is imported only when asked for (``open_store("s3://...")`` or ``media.stores.S3BlobStore``):
a server on the local folder never loads the MinIO client.
"""

from typing import TYPE_CHECKING, Any

from media.stores.base import (
    BlobNotFound,
    BlobStat,
    BlobStore,
    BlobStoreUnavailable,
    DirectUploads,
    PartsMissing,
    PendingDirect,
    StagingLost,
    check_key,
)
from media.stores.factory import open_store
from media.stores.local import LocalBlobStore

if TYPE_CHECKING:
    from media.stores.s3 import S3BlobStore


def __getattr__(name: str) -> Any:
    if name == "S3BlobStore":
        from media.stores.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BlobNotFound",
    "BlobStat",
    "BlobStore",
    "BlobStoreUnavailable",
    "DirectUploads",
    "LocalBlobStore",
    "PartsMissing",
    "PendingDirect",
    "S3BlobStore",
    "StagingLost",
    "check_key",
    "open_store",
]
