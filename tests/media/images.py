"""Test images built on the fly with Pillow (no binary fixtures in the repository)."""

from __future__ import annotations

import io
import random
import struct
import zlib
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, ImageDraw, ImageFilter

RED = (220, 20, 30)
BLUE = (20, 40, 210)


def photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """An RGB image with photo-like structure: a gradient, overlapping shapes, soft edges, some grain.

    Drawn small and scaled up, so even 12 MP costs little; the grain keeps JPEG sizes realistic.
    """
    rng = random.Random(seed)
    small = (max(8, size[0] // 8), max(8, size[1] // 8))
    gradient = Image.linear_gradient("L").resize(small).rotate(rng.uniform(0, 360))
    base = Image.merge("RGB", [_dimmed(gradient, rng.uniform(0.3, 1)) for _ in range(3)])
    draw = ImageDraw.Draw(base)
    for _ in range(40):
        box = sorted(rng.sample(range(small[0]), 2)), sorted(rng.sample(range(small[1]), 2))
        shape = (box[0][0], box[1][0], box[0][1], box[1][1])
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)
    soft = base.filter(ImageFilter.GaussianBlur(1)).resize(size, Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", size, rng.randbytes(size[0] * size[1])).convert("RGB")
    return Image.blend(soft, grain, 0.06)


def _dimmed(channel: Image.Image, factor: float) -> Image.Image:
    return channel.point(lambda value: int(value * factor))


def mark_corners(im: Image.Image) -> Image.Image:
    """A copy of ``im`` with a red block at the top-left and a blue one at the bottom-right (15% of each side)."""
    marked = im.convert("RGB")
    block_w, block_h = im.width * 15 // 100, im.height * 15 // 100
    marked.paste(RED, (0, 0, block_w, block_h))
    marked.paste(BLUE, (im.width - block_w, im.height - block_h, im.width, im.height))
    return marked


def stored_for_orientation_6(upright: Image.Image) -> Image.Image:
    """The pixels a camera stores for an upright scene when it tags orientation 6 (rotate 90° CW to view)."""
    return upright.transpose(Image.Transpose.ROTATE_90)


def encode(im: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    """Decimal degrees (unsigned) as EXIF degrees, minutes, seconds rationals."""
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = Fraction(round((value - degrees - minutes / 60) * 3600 * 10_000), 10_000)
    return Fraction(degrees), Fraction(minutes), seconds


def evidence_exif(
    *,
    latitude: float = -33.856784,
    longitude: float = 151.215297,
    altitude: float = 42.5,
    orientation: int = 6,
    taken: str = "2026:03:14 09:26:53",
    offset: str | None = "+11:00",
) -> Image.Exif:
    """EXIF like a tablet camera writes: device, orientation, capture time with offset, GPS with refs."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Acme"
    exif[ExifTags.Base.Model] = "FieldTab 9"
    exif[ExifTags.Base.Software] = "FieldCam 2.1"
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.DateTime] = "2026:03:20 18:00:00"  # a later edit: must not be taken as capture time
    capture: dict[int, Any] = {ExifTags.Base.DateTimeOriginal: taken}
    if offset is not None:
        capture[ExifTags.Base.OffsetTimeOriginal] = offset
    exif[ExifTags.IFD.Exif] = capture
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(abs(latitude)),
        ExifTags.GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(abs(longitude)),
        ExifTags.GPS.GPSAltitudeRef: b"\x00" if altitude >= 0 else b"\x01",
        ExifTags.GPS.GPSAltitude: Fraction(round(abs(altitude) * 100), 100),
    }
    return exif


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels, built without holding the pixels.

    Pillow would need one byte per pixel to draw this (400 MB at 20,000²), so the rows are streamed
    through zlib; all-zero rows compress about 1000:1.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """An EXIF block written by hand, so it can be wrong in ways Pillow's writer would never produce.

    ``entries`` are (tag, TIFF type, count, value of at most 4 bytes, stored inline) in one big-endian IFD.
    """
    ifd = struct.pack(">H", len(entries))
    for tag, tiff_type, count, value in entries:
        ifd += struct.pack(">HHI", tag, tiff_type, count) + value.ljust(4, b"\x00")
    return b"Exif\x00\x00MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)
