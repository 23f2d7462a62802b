"""Users and their devices: creation, listing within the caller's jurisdiction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.auth import UserCreate, UserOut
from server.db.models import Device, Jurisdiction, Level, User
from server.domain.usernames import MAX_LENGTH, lookalike_problem, read_username, size_problem
from server.errors import Conflict, Invalid, NotFound
from server.security.passwords import hash_password
from server.services import audit
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
    user = User(
        id=uuid.uuid4(),
        username=username,
        display_name=data.display_name,
        role=data.role,
        jurisdiction_id=node.id,
        password_hash=hash_password(data.password),
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
