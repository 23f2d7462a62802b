"""Where a photo's blobs live in the store: content-addressed by its SHA-256, so a retry rewrites the same
keys and the cleanup can name what an ingest that died half-way may have left."""

from __future__ import annotations


def keys(sha256: str) -> tuple[str, str, str]:
    """Content-addressed keys of the original and the display and thumbnail copies."""
    fan = f"{sha256[:2]}/{sha256[2:4]}/{sha256}"
    return f"photos/original/{fan}", f"photos/display/{fan}.jpg", f"photos/thumb/{fan}.jpg"
