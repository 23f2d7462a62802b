"""Login, sessions, users and devices on the wire."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DeviceKey = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$(?!\n)")]
"""`(?!\n)`: msgspec matches with Python's `re`, whose `$` also matches before a final line break, and
`lost-tablet\n` was a new device beside the revoked `lost-tablet` that an admin's list showed alike."""
RoleName = Literal["field_worker", "reviewer", "approver", "admin"]
NewPassword = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
"""A password an account is given (created, reset or changed): one rule for all three."""


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    device_id: DeviceKey
    """A stable identifier the device makes up once (an install UUID); one device row per user and id."""


class UserOut(msgspec.Struct):
    id: uuid.UUID
    username: str
    display_name: str
    role: RoleName
    jurisdiction_id: uuid.UUID
    jurisdiction_path: str
    active: bool = True
    """False once an admin deactivated the account: it cannot sign in, and its sessions ended."""


class UserPage(msgspec.Struct):
    items: list[UserOut]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last page."""


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    active: bool
    """False ends every session of the user at once and refuses their sign-ins; true lets them sign in
    again (their old sessions stay ended)."""


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    password: NewPassword
    """The user's new password; every session of theirs ends."""


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    old_password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    new_password: NewPassword


class LoginResponse(msgspec.Struct):
    token: str
    expires_at: dt.datetime
    user: UserOut


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    role: RoleName
    jurisdiction_id: uuid.UUID
    password: NewPassword


class DeviceOut(msgspec.Struct):
    id: uuid.UUID
    user_id: uuid.UUID
    device_id: str
    created_at: dt.datetime
    last_seen_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_sync_at: dt.datetime | None = None
    """When its app last pushed or pulled (its most recently seen sync client)."""
    clock_offset_ms: int | None = None
    """Server time minus the device's clock at that sync: a tablet days off shows here. Never used to
    order anything."""
