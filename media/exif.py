"""What a photo's EXIF block claims about itself: when, where, with what device, which way up.

These are claims made by the device (or by whoever edited the file), not facts; the server decides how
far to trust them. Reading never raises: EXIF is untrusted input and Pillow's TIFF parser can fail in
many ways on a damaged block, so each field is read on its own and whatever fails is left as None.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import msgspec
from PIL import ExifTags, Image

T = TypeVar("T")

# Device strings are free text; cap them so a hostile file cannot put megabytes into a database column.
MAX_TEXT_LENGTH = 128

_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


class ExifClaims(msgspec.Struct, frozen=True, omit_defaults=True):
    """EXIF claims of one photo; every field is optional.

    ``captured_at`` is DateTimeOriginal (the shutter time; DateTime is the last edit, so it is not used).
    It is timezone-aware when OffsetTimeOriginal was present (``has_offset``), otherwise naive local
    time of the device. Latitude and longitude are signed decimal degrees and are only ever set together.
    """

    captured_at: datetime | None = None
    has_offset: bool = False
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    make: str | None = None
    model: str | None = None
    orientation: int | None = None
    software: str | None = None


def read_exif_claims(im: Image.Image) -> ExifClaims:
    """Read the claims from an opened image (call after ``load()`` for PNG, whose EXIF may follow the pixels)."""
    exif = _attempt(im.getexif)
    if exif is None:
        return ExifClaims()
    base = _attempt(lambda: dict(exif.items())) or {}
    exif_ifd = _attempt(lambda: dict(exif.get_ifd(ExifTags.IFD.Exif))) or {}
    gps_ifd = _attempt(lambda: dict(exif.get_ifd(ExifTags.IFD.GPSInfo))) or {}
    captured_at = _attempt(lambda: _capture_time(exif_ifd))
    position = _attempt(lambda: _position(gps_ifd))
    latitude, longitude = position if position else (None, None)
    return ExifClaims(
        captured_at=captured_at,
        has_offset=captured_at is not None and captured_at.tzinfo is not None,
        latitude=latitude,
        longitude=longitude,
        altitude=_attempt(lambda: _altitude(gps_ifd)) if position else None,
        make=_attempt(lambda: _text(base.get(ExifTags.Base.Make))),
        model=_attempt(lambda: _text(base.get(ExifTags.Base.Model))),
        orientation=_original_orientation(im) or _attempt(lambda: _orientation(base)),
        software=_attempt(lambda: _text(base.get(ExifTags.Base.Software))),
    )


def read_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation (1-8) still to be applied to ``im``'s pixels, or None if absent or invalid."""
    return _attempt(lambda: _orientation(dict(im.getexif().items())))


def _attempt(read: Callable[[], T]) -> T | None:
    try:
        return read()
    # Damaged EXIF raises anything from struct.error to ZeroDivisionError; the field stays unknown.
    except Exception:
        return None


def _original_orientation(im: Image.Image) -> int | None:
    # pillow-heif applies the orientation while decoding and resets the tag to 1, keeping the device's value here.
    value = im.info.get("original_orientation")
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _orientation(tags: dict[int, Any]) -> int | None:
    value = tags.get(ExifTags.Base.Orientation)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", " ").strip()
    return cleaned[:MAX_TEXT_LENGTH] or None


def _capture_time(exif_ifd: dict[int, Any]) -> datetime | None:
    stamp = _text(exif_ifd.get(ExifTags.Base.DateTimeOriginal))
    match = _DATETIME.fullmatch(stamp or "")
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    microsecond = _subseconds(exif_ifd.get(ExifTags.Base.SubsecTimeOriginal))
    naive = datetime(year, month, day, hour, minute, second, microsecond)  # ValueError for 0000:00:00 etc.
    offset = _utc_offset(exif_ifd.get(ExifTags.Base.OffsetTimeOriginal))
    return naive if offset is None else naive.replace(tzinfo=offset)


def _subseconds(value: object) -> int:
    digits = _text(value) or ""
    return int(digits[:6].ljust(6, "0")) if digits.isdigit() else 0


def _utc_offset(value: object) -> timezone | None:
    match = _OFFSET.fullmatch(_text(value) or "")
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):  # no real zone is further from UTC
        return None
    return timezone(-delta if sign == "-" else delta)


def _position(gps: dict[int, Any]) -> tuple[float, float] | None:
    latitude = _coordinate(
        gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "N", "S", 90
    )
    longitude = _coordinate(
        gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "E", "W", 180
    )
    if latitude is None or longitude is None:
        return None
    return latitude, longitude


def _coordinate(value: object, ref: object, positive: str, negative: str, limit: float) -> float | None:
    """Degrees/minutes/seconds rationals plus a hemisphere letter, as signed decimal degrees.

    Without a valid hemisphere the sign is unknown, and a mirrored position is worse than none.
    """
    hemisphere = (_text(ref) or "").upper()
    if hemisphere not in (positive, negative):
        return None
    parts = _floats(value)
    if parts is None or not 1 <= len(parts) <= 3 or any(part < 0 for part in parts):
        return None
    degrees = sum(part / 60.0**index for index, part in enumerate(parts))
    if degrees > limit:
        return None
    return -degrees if hemisphere == negative else degrees


def _altitude(gps: dict[int, Any]) -> float | None:
    values = _floats(gps.get(ExifTags.GPS.GPSAltitude))
    if values is None or len(values) != 1:
        return None
    ref = gps.get(ExifTags.GPS.GPSAltitudeRef, 0)
    if isinstance(ref, bytes):
        ref = ref[0] if len(ref) == 1 else None
    if ref not in (0, 1):
        return None
    return -values[0] if ref == 1 else values[0]


def _floats(value: object) -> list[float] | None:
    """A rational or a sequence of rationals as finite floats (Pillow reads a zero denominator as NaN)."""
    items = value if isinstance(value, tuple | list) else [value]
    floats: list[float] = []
    for item in items:
        if not isinstance(item, numbers.Real):
            return None
        floats.append(float(item))
    return floats if all(math.isfinite(item) for item in floats) else None
