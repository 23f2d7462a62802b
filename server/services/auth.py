"""Sign-in, sessions, throttling of failed sign-ins, and device revocation.

Everything lives in the database (token hashes, failure counters), so any number of server
processes behind a load balancer agree on who is signed in and who is locked out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import anyio.to_thread
from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from server.config import resolve_secret
from server.db.engine import Database
from server.db.models import AuthToken, Device, Jurisdiction, LoginThrottle, User
from server.db.types import utcnow
from server.domain import passwords
from server.domain.usernames import read_username
from server.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from server.malloc import give_back_free_memory
from server.security.passwords import burn_equal_time, hash_password, verify_password
from server.security.throttle_keys import throttle_key
from server.security.tokens import new_token, token_digest
from server.services import audit
from server.services.actor import Actor

WRONG = "Wrong username or password."
MAX_LOCKOUT = dt.timedelta(hours=1)
NOBODY = uuid.UUID(int=0)
"""No account's id: what a sign-in under a name nobody has looks its device up under."""


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: dt.datetime
    actor: Actor


async def login(
    session: AsyncSession,
    settings: Settings,
    username: str,
    password: str,
    device_key: str,
    request_id: str | None = None,
) -> Session:
    """Check the password and open a session for this device. Commits (failures are counted too).

    Failures are counted per device the account has signed in on before (its "known" devices), and once
    for every other device together: a stranger's guesses lock out strangers' devices, never the worker's
    own tablet, and a made-up device id does not start a new count (`_known_device`).

    A wrong password for an existing account, and a right one from a revoked device, are audited too:
    someone tried that account. A username nobody has is only counted: it names no account, and it may be
    a password typed into the wrong field, which must never land in a log nobody can correct."""
    username = read_username(username)
    now = utcnow()
    row = (
        await session.execute(
            select(User, Jurisdiction.path)
            .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
            .where(User.username == username)
            # Shared with other sign-ins, but an admin's deactivation or password reset waits for this
            # one to commit, and this one for theirs: a session opened with the old password in between
            # would outlive the reset (PostgreSQL; SQLite's single writer takes turns anyway).
            .with_for_update(of=User, read=True)
        )
    ).one_or_none()
    # Asked for a name nobody has too (of an id no account has): skipped, it made the 429 answer for an
    # existing account measurably slower (about 0.7 ms in 4), and a locked-out name can be asked forever.
    known = await _known_device(session, row[0].id if row is not None else NOBODY, device_key)
    key = throttle_key(resolve_secret(settings).encode(), username, device_key if known else None)
    throttle = await _throttle_row(session, key, now)
    if throttle.locked_until and throttle.locked_until > now:
        await session.commit()
        raise TooManyRequests(
            "Too many failed sign-ins; try again later.", retry_after=_seconds(throttle, now)
        )
    if row is None:
        await _checked(password, None)  # same cost and same answer whether or not the user exists
        await _fail(session, settings, throttle, now)
    user, path = row
    if not await _checked(password, user.password_hash if user.active else None):
        await _fail(session, settings, throttle, now, _Attempt(user.id, device_key, known, request_id))
    await session.delete(throttle)
    device = await _device(session, user, path, device_key, now, request_id)
    token = new_token()
    expires_at = now + dt.timedelta(hours=settings.token_ttl_hours)
    record = AuthToken(
        id=uuid.uuid4(),
        token_hash=token_digest(token),
        user_id=user.id,
        device_id=device.id,
        expires_at=expires_at,
    )
    session.add(record)
    actor = actor_of(user, path, device.id, record.id, request_id)
    audit.record(session, actor, "auth.login", "device", device.id, {"device_key": device_key})
    await session.commit()
    return Session(token, expires_at, actor)


async def _checked(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (None: nobody's, at the same cost). In a worker thread:
    scrypt takes about 30 ms of CPU and releases the GIL, and on the event loop every sign-in, even one
    under a made-up name, held up every other request of the process that long."""
    return await anyio.to_thread.run_sync(_check_then_give_back, password, stored)


async def hashed(password: str) -> str:
    """A new password's stored form, made in a worker thread like a check (`_checked`)."""
    return await anyio.to_thread.run_sync(_hash_then_give_back, password)


def _hash_then_give_back(password: str) -> str:
    try:
        return hash_password(password)
    finally:
        give_back_free_memory()


def _check_then_give_back(password: str, stored: str | None) -> bool:
    """The check, then scrypt's 16 MB of scratch memory handed back: freed, glibc would keep it in the
    thread's arena, and the server's resident memory would stay that much higher after any sign-in."""
    try:
        if stored is None:
            burn_equal_time(password)
            return False
        return verify_password(password, stored)
    finally:
        give_back_free_memory()


async def _known_device(session: AsyncSession, user_id: uuid.UUID, device_key: str) -> bool:
    """Whether the account has signed in on this device before and it is not revoked: its failures are
    then its own. Every other device shares the account's count, so a guesser cannot lock the worker's
    tablet (unless they know its device id, an install's UUID only admins see, and even then only that
    tablet) nor escape the count by making up device ids. OWASP's "device cookie" scheme, with the
    device id a tablet already sends in place of the cookie."""
    query = select(Device.id).where(
        Device.user_id == user_id, Device.device_key == device_key, Device.revoked_at.is_(None)
    )
    return (await session.execute(query)).first() is not None


async def _throttle_row(session: AsyncSession, key: str, now: dt.datetime) -> LoginThrottle:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    while True:
        await session.execute(
            insert(LoginThrottle)
            .values(username_key=key, failures=0, window_started_at=now)
            .on_conflict_do_nothing(index_elements=["username_key"])
        )
        row = await session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
        if row is not None:
            return row
        # A sign-in under the same name succeeded while this one waited on the row's lock, and deleted
        # the row (PostgreSQL: the lock then yields no row). Make it again: the count starts from zero.


@dataclass(frozen=True)
class _Attempt:
    """A failed sign-in on an existing account, for its audit row."""

    user_id: uuid.UUID
    device_key: str
    known_device: bool
    request_id: str | None


async def _fail(
    session: AsyncSession,
    settings: Settings,
    throttle: LoginThrottle,
    now: dt.datetime,
    attempt: _Attempt | None = None,
) -> NoReturn:
    locked = _count_failure(settings, throttle, now)
    if attempt is not None:
        audit.record_unauthenticated(
            session,
            "auth.login_failed",
            "user",
            attempt.user_id,
            {
                "device_key": attempt.device_key,
                "known_device": attempt.known_device,
                "failures": throttle.failures,
                "locked": locked,
            },
            request_id=attempt.request_id,
        )
    await session.commit()
    raise Unauthorized(WRONG, code="invalid_credentials")


def _count_failure(settings: Settings, throttle: LoginThrottle, now: dt.datetime) -> bool:
    """Count one failure against ``throttle``; whether its count is now locked."""
    window = dt.timedelta(seconds=settings.login_lockout_seconds)
    # Counting starts over only after a quiet window, and a lockout's end starts that window: a lockout
    # lasts at least a window, so measured from the first failure alone, the first failure after every
    # lockout found the count reset and the wait never doubled (a guesser got 5 tries every 5 minutes).
    quiet_since = max(throttle.window_started_at, throttle.locked_until or throttle.window_started_at)
    if now - quiet_since > window:
        throttle.failures, throttle.window_started_at, throttle.locked_until = 0, now, None
    throttle.failures += 1
    over = throttle.failures - settings.login_max_failures
    if over >= 0:  # each further failure doubles the wait, up to an hour
        # Doubled at most 16 times (a window of even 1 s is then past the hour): doubled once per failure,
        # about 40 of a patient guesser's made a wait no date can hold, a 500 that counted nothing.
        throttle.locked_until = now + min(window * (2 ** min(over, 16)), MAX_LOCKOUT)
    return over >= 0


async def change_password(
    session: AsyncSession, settings: Settings, actor: Actor, old_password: str, new_password: str
) -> int:
    """A signed-in user's new password, given their current one; ends their other sessions (how many).

    A wrong current password counts against the device's own sign-in count, as a typo at sign-in on that
    tablet does: a stolen token must not guess the password any faster than a stolen tablet could."""
    passwords.require_strong(new_password, actor.username, "new_password")
    password_hash = await hashed(new_password)  # before the row lock: scrypt takes a while
    row = (
        await session.execute(
            select(User, Device.device_key)
            .join(Device, Device.user_id == User.id)
            .where(User.id == actor.user_id, Device.id == actor.device_id)
            .with_for_update(of=User, key_share=True)
        )
    ).one()
    user, device_key = row
    now = utcnow()
    key = throttle_key(resolve_secret(settings).encode(), user.username, device_key)
    throttle = await _throttle_row(session, key, now)
    if throttle.locked_until and throttle.locked_until > now:
        await session.commit()
        raise TooManyRequests(
            "Too many wrong passwords; try again later.", retry_after=_seconds(throttle, now)
        )
    if not await _checked(old_password, user.password_hash):
        locked = _count_failure(settings, throttle, now)
        failed = {"failures": throttle.failures, "locked": locked}
        audit.record(session, actor, "user.password_change_refused", "user", user.id, failed)
        await session.commit()
        raise Forbidden("The current password is wrong.", code="wrong_password")
    await session.delete(throttle)
    user.password_hash = password_hash
    ended = await end_sessions(session, user.id, keep=actor.token_id)
    audit.record(session, actor, "user.password_change", "user", user.id, {"sessions_ended": ended})
    await session.commit()
    return ended


async def forget_quiet_throttles(db: Database, settings: Settings, now: dt.datetime | None = None) -> int:
    """Delete the failure counters that a quiet window has made moot (the next failure would start over
    from zero, as with no row); how many. Names nobody has, tried once each, would otherwise pile up."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=settings.login_lockout_seconds)
    quiet = delete(LoginThrottle).where(
        LoginThrottle.window_started_at < cutoff,
        or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < cutoff),
    )
    async with db.write_session() as session:
        forgotten = cast(CursorResult[Any], await session.execute(quiet)).rowcount
        await session.commit()
    return forgotten


def _seconds(throttle: LoginThrottle, now: dt.datetime) -> int:
    assert throttle.locked_until is not None
    return max(1, int((throttle.locked_until - now).total_seconds() + 0.999))


async def _device(
    session: AsyncSession, user: User, path: str, device_key: str, now: dt.datetime, request_id: str | None
) -> Device:
    device = (
        await session.execute(
            select(Device).where(Device.user_id == user.id, Device.device_key == device_key)
        )
    ).scalar_one_or_none()
    if device is not None and device.revoked_at is not None:
        await _refuse_revoked(session, actor_of(user, path, device.id, None, request_id))
    # A device id is the install's, whoever signs in on it: revoked under one account, it is revoked
    # under every other too (a colleague's password on a lost tablet made it work again), even one that
    # had signed in on it before (a row revoked before `revoke_device` revoked the install's every row).
    if (elsewhere := await _revoked_elsewhere(session, device_key)) is not None:
        await _refuse_revoked(session, actor_of(user, path, elsewhere, None, request_id))
    if device is None:
        device = Device(id=uuid.uuid4(), user_id=user.id, device_key=device_key)
        session.add(device)
        await session.flush()  # the token row refers to it
    device.last_seen_at = now
    return device


async def _revoked_elsewhere(session: AsyncSession, device_key: str) -> uuid.UUID | None:
    """A revoked device row of any account under this device id, if there is one."""
    query = select(Device.id).where(Device.device_key == device_key, Device.revoked_at.is_not(None)).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def _refuse_revoked(session: AsyncSession, actor: Actor) -> NoReturn:
    """The right password on a tablet reported lost or stolen: whoever holds it is trying that account.
    Audited, then 403 `device_revoked`; the device stays revoked (no sign-in brings it back)."""
    await session.rollback()  # the failure counter's deletion with it: this was no success
    audit.record(
        session, actor, "auth.login_refused", "device", str(actor.device_id), {"code": "device_revoked"}
    )
    await session.commit()
    raise Forbidden("This device has been revoked; ask an administrator.", code="device_revoked")


def actor_of(
    user: User,
    path: str,
    device_id: uuid.UUID | None,
    token_id: uuid.UUID | None,
    request_id: str | None = None,
) -> Actor:
    """The user as the actor of a request (`path`: their node's path)."""
    return Actor(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        jurisdiction_id=user.jurisdiction_id,
        jurisdiction_path=path,
        device_id=device_id,
        token_id=token_id,
        request_id=request_id,
    )


async def authenticate(session: AsyncSession, token: str) -> Actor:
    """The actor behind a bearer token, or Unauthorized (expired, revoked, unknown: one answer)."""
    row = (
        await session.execute(
            select(AuthToken, User, Jurisdiction.path)
            .join(User, User.id == AuthToken.user_id)
            .join(Device, Device.id == AuthToken.device_id)
            .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
            .where(
                AuthToken.token_hash == token_digest(token),
                AuthToken.revoked_at.is_(None),
                AuthToken.expires_at > utcnow(),
                Device.revoked_at.is_(None),
                User.active.is_(True),
            )
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("Sign in again: the session is unknown, expired or revoked.", code="invalid_token")
    record, user, path = row
    return actor_of(user, path, record.device_id, record.id)


async def logout(session: AsyncSession, actor: Actor) -> None:
    await session.execute(update(AuthToken).where(AuthToken.id == actor.token_id).values(revoked_at=utcnow()))
    audit.record(session, actor, "auth.logout", "auth_token", str(actor.token_id))
    await session.commit()


async def end_sessions(session: AsyncSession, user_id: uuid.UUID, *, keep: uuid.UUID | None = None) -> int:
    """End every session of a user (but ``keep``, the caller's own); how many were open. Not committed."""
    query = update(AuthToken).where(
        AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None), AuthToken.expires_at > utcnow()
    )
    if keep is not None:
        query = query.where(AuthToken.id != keep)
    return cast(CursorResult[Any], await session.execute(query.values(revoked_at=utcnow()))).rowcount


async def revoke_device(session: AsyncSession, actor: Actor, device_id: uuid.UUID) -> Device:
    """End every session of a device and refuse its sign-ins from now on (a lost or stolen tablet)."""
    from server.services.users import user_in_scope

    device = await session.get(Device, device_id, with_for_update=True)
    if device is None or not await user_in_scope(session, actor, device.user_id):
        raise NotFound("No such device.")
    now = utcnow()
    if device.revoked_at is None:
        device.revoked_at = now
    # The install is lost, not one account's use of it: a colleague who had signed in on the same tablet
    # kept a working session there, whatever jurisdiction they are bound to.
    same_install = (
        (
            await session.execute(
                select(Device)
                .where(
                    Device.device_key == device.device_key,
                    Device.id != device.id,
                    Device.revoked_at.is_(None),
                )
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    for other in same_install:
        other.revoked_at = now
        audit.record(
            session,
            actor,
            "device.revoke",
            "device",
            other.id,
            {"user_id": other.user_id, "same_install_as": device_id},
        )
    await session.execute(
        update(AuthToken)
        .where(
            AuthToken.device_id.in_([device_id, *(other.id for other in same_install)]),
            AuthToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    audit.record(session, actor, "device.revoke", "device", device_id, {"user_id": device.user_id})
    await session.commit()
    return device
