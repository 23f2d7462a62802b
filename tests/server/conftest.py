"""Fixtures of the upload and photo tests: an app on the local store or on S3 (see tests/tus.py)."""

from tests.tus import store_kind, tus_client, tus_settings

__all__ = ["store_kind", "tus_client", "tus_settings"]
