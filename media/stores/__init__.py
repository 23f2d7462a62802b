"""Blob stores: one async protocol, a local-disk and an S3 implementation, and ``open_store``."""

from media.stores.base import (
    BlobNotFound,
    BlobStat,
    BlobStore,
    BlobStoreUnavailable,
    DirectUploads,
    PartsMissing,
    StagingLost,
    check_key,
)
from media.stores.factory import open_store
from media.stores.local import LocalBlobStore
from media.stores.s3 import S3BlobStore

__all__ = [
    "BlobNotFound",
    "BlobStat",
    "BlobStore",
    "BlobStoreUnavailable",
    "DirectUploads",
    "LocalBlobStore",
    "PartsMissing",
    "S3BlobStore",
    "StagingLost",
    "check_key",
    "open_store",
]
