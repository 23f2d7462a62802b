"""Which photo formats we accept, and telling them apart by their bytes (never by the filename).

Rejection codes are decided by how far a file gets:

- ``not_an_image``: the bytes start like no image format we know (random data, a PDF, a video, text).
  A PDF is deliberately here rather than under ``unsupported_format``: it is a document, Pillow cannot
  read it, and "send a photo instead" is the useful answer.
- ``unsupported_format``: a recognisable image format we do not accept (GIF, BMP, TIFF, AVIF, SVG...).
- ``truncated``: the file starts like an accepted format but cannot be decoded completely. In practice
  that is an interrupted upload; a damaged file gets the same code because the remedy (send it again
  from the device) is the same.
- ``too_many_pixels``: the header announces more pixels than we are willing to decode.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import pillow_heif

# Registering mutates Pillow's global plugin table; doing it at import happens once, under the import lock.
pillow_heif.register_heif_opener()

RejectCode = Literal["not_an_image", "unsupported_format", "truncated", "too_many_pixels"]


class ImageRejected(Exception):
    """An upload that is not an acceptable photo; ``code`` is stable and meant for API clients."""

    def __init__(self, code: RejectCode, message: str) -> None:
        # Both go to Exception.__init__ so the error pickles across a process pool.
        super().__init__(code, message)
        self.code: RejectCode = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ImageFormat(StrEnum):
    """An accepted photo format. The value is what we store; ``pillow_name`` restricts decoding to one plugin."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    HEIF = "heif"

    @property
    def pillow_name(self) -> str:
        return _PILLOW_NAMES[self]

    @property
    def mime_type(self) -> str:
        return _MIME_TYPES[self]


_PILLOW_NAMES = {
    ImageFormat.JPEG: "JPEG",
    ImageFormat.PNG: "PNG",
    ImageFormat.WEBP: "WEBP",
    ImageFormat.HEIF: "HEIF",
}
_MIME_TYPES = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.HEIF: "image/heic",
}
ACCEPTED_MIME_TYPES = frozenset([*_MIME_TYPES.values(), "image/heif"])

# ISO-BMFF brands: HEVC-coded HEIF (what phones write) versus AV1 (AVIF). A bare "mif1"/"msf1" says only
# "some HEIF", so it is decided by the other compatible brands.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})

# Image formats people may plausibly upload that we refuse by name. Matched as prefixes.
_OTHER_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"qoif", "QOI"),
)


SNIFF_BYTES = 4096
"""`detect_format` needs no more of a file than this."""


def detect_format(data: bytes) -> ImageFormat:
    """Return the accepted format ``data`` is in, judged by its leading bytes.

    Raises ImageRejected with ``not_an_image`` or ``unsupported_format``. This only sniffs: the file may
    still turn out truncated or oversized when Pillow reads it.
    """
    accepted = _accepted_format(data)
    if accepted is not None:
        return accepted
    other = _other_image_format(data)
    if other is not None:
        raise ImageRejected(
            "unsupported_format", f"{other} images are not accepted; send JPEG, PNG, WebP or HEIC"
        )
    raise ImageRejected("not_an_image", "the file is not an image")


def _accepted_format(data: bytes) -> ImageFormat | None:
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if _heif_brands(data) & _HEVC_BRANDS:
        return ImageFormat.HEIF
    return None


def _other_image_format(data: bytes) -> str | None:
    for signature, name in _OTHER_IMAGE_SIGNATURES:
        if data.startswith(signature):
            return name
    brands = _heif_brands(data)
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _GENERIC_HEIF_BRANDS:
        return "HEIF (not HEVC-coded)"
    if _looks_like_svg(data):
        return "SVG"
    return None


def _heif_brands(data: bytes) -> frozenset[bytes]:
    """Major and compatible brands of a leading ISO-BMFF ``ftyp`` box, or nothing."""
    if data[4:8] != b"ftyp":
        return frozenset()
    box_size = int.from_bytes(data[:4], "big")
    if not 16 <= box_size <= min(len(data), 4096):
        return frozenset()
    compatible = (data[i : i + 4] for i in range(16, box_size - 3, 4))
    return frozenset([data[8:12], *compatible])


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<svg", b"<?xml")) and b"<svg" in head
