"""The integrity checks a supervisor reads beside a visit's evidence: thresholds and the arithmetic.

Each check raises a flag for a person to judge, never a verdict: a household may have moved without the
record saying so, a neighbour's photo may honestly show the same stairwell. What they look for is evidence
that may not come from the visit it is filed with: a photo of another home (or of this one, years ago),
and a "visit" recorded from somewhere else. research.md asks for each photo with its time and GPS, and
for the visit's own GPS: these checks read them against each other.
"""

from __future__ import annotations

import datetime as dt
import math

from server.domain.calendar import CHINA_STANDARD_TIME

FAR_FROM_HOME_M = 150
"""How far beyond its own accuracy a fix taken in the home (the look step) may lie from the household's
recorded location: a block in a Chinese city, past the drift of a phone's GPS indoors."""

PHOTO_GPS_FAR_M = 500
"""How far the position a photo file claims (its EXIF GPS) may lie from the fix the app recorded with the
answer naming it, beyond that fix's accuracy: further means the file was taken somewhere else."""

NEAR_DUPLICATE_BITS = 10
"""Differing bits of the 64-bit dHash within which two files are taken for copies of one photo:
re-encoded or scaled copies differ by 0-4, a copy cropped by a twentieth at each side by about 12 at
most, unrelated photos by 20 or more (tests/media/test_pipeline.py)."""

TAKEN_BEFORE_VISIT = dt.timedelta(days=1)
"""How long before the visit was assigned a photo's shutter time may be: a day of clock skew and time
zones. Older, the photo was taken before anyone was sent to look."""

LOOK_STEP = "step.look"
"""The step done inside the home: its fixes are the ones that must be at the household."""

_EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine on the mean Earth radius: within 0.5% of the ellipsoid,
    far finer than any threshold here)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def beyond(distance: float, accuracy_m: float | None, threshold_m: float) -> bool:
    """Whether a fix `distance` metres from where it should be is further than `threshold_m` even at the
    near edge of its accuracy circle (a fix with no accuracy is taken as exact)."""
    return distance - (accuracy_m or 0.0) > threshold_m


def shutter_time(captured_at: str | None, has_offset: bool) -> dt.datetime | None:
    """A photo's EXIF shutter time as an aware datetime. Without an offset (most cameras write none) it is
    the device's local time, and these devices are in China Standard Time."""
    if captured_at is None:
        return None
    try:
        taken = dt.datetime.fromisoformat(captured_at)
    except ValueError:
        return None
    return taken if has_offset and taken.tzinfo is not None else taken.replace(tzinfo=CHINA_STANDARD_TIME)
