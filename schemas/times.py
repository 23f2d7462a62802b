"""Times a device sends: its clock when an edit or answer was made, the GPS time of a fix."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

DeviceTime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
"""A time with its zone (`2026-11-29T07:58:00Z`, `…+08:00`). A time without one names no instant: the
server would have to guess the tablet's zone, and its UTC columns refuse to. So it does not decode: a
zone-less `device_now` is a 422, a zone-less time inside a mutation makes that mutation malformed."""


def require_utc_instants(*times: dt.datetime | None) -> None:
    """For a struct's `__post_init__`: a time that is no instant of UTC's years 1-9999
    (`0001-01-01T00:00:00+01:00` is in year 0 in UTC) does not decode, as a time without a zone."""
    for time in times:
        if time is None:
            continue
        try:
            time.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(f"{time.isoformat()} is outside the years 1-9999 in UTC") from None
