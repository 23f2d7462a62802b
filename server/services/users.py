"""Users and their devices: creation, listing, deactivation and password resets within the caller's
jurisdiction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.auth import UserCreate, UserOut, UserPage
from server.db.models import Device, Jurisdiction, Level, User
from server.domain import passwords
from server.domain.usernames import MAX_LENGTH, lookalike_problem, read_username, size_problem
from server.errors import Conflict, Invalid, NotFound
from server.services import audit, auth, cursors
from server.services.actor import Actor, under

# Which level of the tree each role is bound to (reviewers may sit at a community or a subdistrict).
ROLE_LEVELS = {
    "field_worker": {Level.community},
    "reviewer": {Level.community, Level.subdistrict},
    "approver": {Level.district},
    "admin": {Level.district, Level.subdistrict, Level.community},
}


async def create_user(session: AsyncSession, actor: Actor, data: UserCreate) -> UserOut:
    node = (
        await session.execute(
            select(Jurisdiction).where(Jurisdiction.id == data.jurisdiction_id, under(actor))
        )
    ).scalar_one_or_none()
    if node is None:
        raise NotFound("No such jurisdiction.")
    username = read_username(data.username)
    if problem := size_problem(username):  # stored stripped, "  " would be an account named ""
        raise Invalid(
            f"A username needs more than spaces, and at most {MAX_LENGTH} characters: this one {problem}.",
            details=[{"field": "username", "message": problem}],
        )
    if problem := lookalike_problem(username):
        raise Invalid(
            f"A username is letters, digits and signs, each in its plain form: this one {problem}.",
            code="username_not_plain",
            details=[{"field": "username", "message": problem}],
        )
    if node.level not in ROLE_LEVELS[data.role]:
        raise Invalid(
            f"A {data.role} is bound to a {' or '.join(sorted(ROLE_LEVELS[data.role]))}, not a {node.level}.",
            code="role_level_mismatch",
            details=[{"field": "jurisdiction_id", "message": "wrong level for this role"}],
        )
    passwords.require_strong(data.password, username, "password")
    user = User(
        id=uuid.uuid4(),
        username=username,
        display_name=data.display_name,
        role=data.role,
        jurisdiction_id=node.id,
        password_hash=await auth.hashed(data.password),
    )
    session.add(user)
    audit.record(
        session,
        actor,
        "user.create",
        "user",
        user.id,
        {"username": user.username, "role": user.role, "jurisdiction_id": node.id},
    )
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"The username {user.username!r} is taken.", code="username_taken") from None
    return user_out(user, node.path)


def user_out(user: User, path: str) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,  # type: ignore[arg-type]
        jurisdiction_id=user.jurisdiction_id,
        jurisdiction_path=path,
        active=user.active,
    )


def actor_out(actor: Actor) -> UserOut:
    return UserOut(
        id=actor.user_id,
        username=actor.username,
        display_name=actor.display_name,
        role=actor.role,  # type: ignore[arg-type]
        jurisdiction_id=actor.jurisdiction_id,
        jurisdiction_path=actor.jurisdiction_path,
    )


async def user_in_scope(session: AsyncSession, actor: Actor, user_id: uuid.UUID) -> bool:
    found = await session.execute(
        select(User.id)
        .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
        .where(User.id == user_id, under(actor))
    )
    return found.first() is not None


async def list_devices(session: AsyncSession, actor: Actor, user_id: uuid.UUID | None) -> Sequence[Device]:
    query = (
        select(Device)
        .join(User, User.id == Device.user_id)
        .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
        .where(under(actor))
        .order_by(Device.created_at)
    )
    if user_id is not None:
        query = query.where(Device.user_id == user_id)
    return (await session.execute(query)).scalars().all()


async def list_page(
    session: AsyncSession,
    actor: Actor,
    *,
    jurisdiction_id: uuid.UUID | None,
    role: str | None,
    active: bool | None,
    cursor: str | None,
    limit: int,
) -> UserPage:
    """Users bound to nodes under the caller's, by username; ``jurisdiction_id`` narrows it to the users
    bound to that node or below it. Keyset pagination on (username, id)."""
    query = (
        select(User, Jurisdiction.path)
        .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
        .where(under(actor))
        .order_by(User.username, User.id)
        .limit(limit + 1)
    )
    if jurisdiction_id is not None:
        node = select(Jurisdiction.path).where(Jurisdiction.id == jurisdiction_id)
        path = (await session.execute(node)).scalar_one_or_none()
        if path is None:  # no such node: nobody is bound under it
            return UserPage(items=[], next_cursor=None)
        query = query.where(Jurisdiction.path.startswith(path, autoescape=True))
    if role is not None:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.active.is_(active))
    if cursor:
        query = query.where(tuple_(User.username, User.id) > tuple_(*cursors.decode(cursor)))
    rows = list((await session.execute(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = cursors.encode(rows[-1][0].username, rows[-1][0].id) if more else None
    return UserPage(items=[user_out(user, path) for user, path in rows], next_cursor=next_cursor)


async def set_active(session: AsyncSession, actor: Actor, user_id: uuid.UUID, active: bool) -> UserOut:
    """Deactivate a user (every session ends now, sign-ins are refused as a wrong password is) or let
    them sign in again. Setting what already holds changes nothing and writes no row: a retry is safe."""
    if user_id == actor.user_id and not active:
        # Checked before the user is read: one's own account is always in scope.
        raise Conflict("You cannot deactivate your own account; another admin can.", code="own_account")
    user, path = await _locked(session, actor, user_id)
    if user.active != active:
        user.active = active
        # Reactivation ends sessions too: none opened before the deactivation may come back with it.
        ended = await auth.end_sessions(session, user.id)
        action = "user.reactivate" if active else "user.deactivate"
        audit.record(session, actor, action, "user", user.id, {"sessions_ended": ended})
    await session.commit()
    return user_out(user, path)


async def reset_password(session: AsyncSession, actor: Actor, user_id: uuid.UUID, password: str) -> UserOut:
    """Give a user a new password and end every session of theirs. The password is in no row but the
    user's, and there only as its hash. One's own password is changed with the old one
    (`POST /api/v1/auth/password`): a stolen admin token must not lock its owner out."""
    if user_id == actor.user_id:
        raise Conflict(
            "Change your own password with your current one: POST /api/v1/auth/password.",
            code="own_account",
        )
    password_hash = await auth.hashed(password)  # before the row lock: scrypt takes a while
    user, path = await _locked(session, actor, user_id)
    passwords.require_strong(password, user.username, "password")
    user.password_hash = password_hash
    ended = await auth.end_sessions(session, user.id)
    audit.record(session, actor, "user.password_reset", "user", user.id, {"sessions_ended": ended})
    await session.commit()
    return user_out(user, path)


async def _locked(session: AsyncSession, actor: Actor, user_id: uuid.UUID) -> tuple[User, str]:
    """A user in the caller's scope and their node's path, the user's row locked against sign-ins that
    are checking the password meanwhile (`auth.login`); 404 for one out of scope, as for nobody."""
    row = (
        await session.execute(
            select(User, Jurisdiction.path)
            .join(Jurisdiction, Jurisdiction.id == User.jurisdiction_id)
            .where(User.id == user_id, under(actor))
            .with_for_update(of=User, key_share=True)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("No such user.")
    user, path = row
    return user, path
