"""Users, their devices, bearer tokens (stored as hashes only) and login throttling."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base, CreatedAt


class Role(enum.StrEnum):
    field_worker = "field_worker"
    reviewer = "reviewer"
    approver = "approver"
    admin = "admin"


class User(CreatedAt, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    jurisdiction_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(default=True)


class Device(CreatedAt, Base):
    """A tablet (or browser) a user signed in from; revoking it ends all of its sessions."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    device_key: Mapped[str] = mapped_column(String(128), index=True)  # revocation is per install
    last_seen_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class AuthToken(CreatedAt, Base):
    __tablename__ = "auth_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id"), index=True)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class LoginThrottle(Base):
    """Failed logins per username (existing or not) from devices it has not signed in on, and per known
    device of an account, so every server process slows the same guesser."""

    __tablename__ = "login_throttles"

    username_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """HMAC-SHA256 of the username (or of the username and a known device's id, under a key derived from
    it) under the server's secret (server/security/throttle_keys.py)."""
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[dt.datetime]
    locked_until: Mapped[dt.datetime | None]
