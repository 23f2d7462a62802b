"""Photos for the API tests, made with Pillow (shared with tests/media/images.py's builders)."""

from __future__ import annotations

from tests.media.images import encode, evidence_exif, mark_corners, photo_like, stored_for_orientation_6

SIZE = (640, 480)  # upright width x height


def jpeg_with_gps(seed: int = 1, size: tuple[int, int] = SIZE, quality: int = 90) -> bytes:
    """A camera-like JPEG: stored turned (orientation 6) with EXIF GPS, device and capture time.

    Upright it has a red block top-left and a blue one bottom-right.
    """
    upright = mark_corners(photo_like(size, seed))
    return encode(
        stored_for_orientation_6(upright), "JPEG", quality=quality, exif=evidence_exif(orientation=6)
    )
