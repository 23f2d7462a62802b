"""Times a device sends: its clock when an edit or answer was made, the GPS time of a fix."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

DeviceTime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
"""A time with its zone (`2026-11-29T07:58:00Z`, `…+08:00`). A time without one names no instant: the
server would have to guess the tablet's zone, and its UTC columns refuse to. So it does not decode: a
zone-less `device_now` is a 422, a zone-less time inside a mutation makes that mutation malformed."""
