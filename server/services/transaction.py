"""Who ends a service's transaction: the service itself (REST), or the sync push around it.

A REST call is one transaction, which the service commits before it answers. A sync push applies each
mutation inside a savepoint of the push's transaction, so that the mutation's effects, its log row and
the advance of the client's last_mutation_seq commit together or not at all. Services call `commit`
and `rollback` from here; inside a push they only flush, and the push decides.

On PostgreSQL two writes side by side can both find a client-made id free and insert it; the one that
commits second fails on the unique key. That is a race lost, not a refusal: a REST service rolls back,
reads what the other stored and answers as a request arriving after it would (`lost_race`); a push
applies the mutation again (sync_push._apply_one_safely).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

_IN_PUSH = "fivestep_in_push"


@contextmanager
def held_by_push(session: AsyncSession, client_id: str) -> Iterator[None]:
    session.info[_IN_PUSH] = client_id
    try:
        yield
    finally:
        session.info.pop(_IN_PUSH, None)


def in_push(session: AsyncSession) -> bool:
    return _IN_PUSH in session.info


def push_client(session: AsyncSession) -> str:
    """The sync client whose mutation is being applied (it tells a device's own edits from others')."""
    return str(session.info[_IN_PUSH])


async def commit(session: AsyncSession) -> None:
    if in_push(session):
        await session.flush()
    else:
        await session.commit()


async def rollback(session: AsyncSession) -> None:
    """Undo a failed write; inside a push, the push rolls back the mutation's savepoint instead."""
    if not in_push(session):
        await session.rollback()


def unique_key_taken(exc: BaseException) -> bool:
    """PostgreSQL refused an insert on a unique key (an id, a registry number), perhaps taken by a write
    running side by side; a service's refusal made of it (households' `duplicate`) carries it as its
    context. SQLite, with one writer at a time, never races: its refusals stand as they are."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, IntegrityError):
            cause = seen.orig
            sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
            return str(sqlstate) == "23505"  # unique_violation
        seen = seen.__cause__ or seen.__context__
    return False


def lost_connection(exc: BaseException) -> DBAPIError | None:
    """The error by which the database connection was lost under `exc` (the server restarting, the
    network between us cut), if it was: SQLAlchemy then raises other errors on the dead transaction, a
    failed rollback to a savepoint among them, with the loss as their context. Nothing of the transaction
    can be committed any more, nor another savepoint begun.

    Only a connection SQLAlchemy invalidated counts, unlike the SQLSTATEs errors.py also answers 503: on a
    connection still alive the push rolls back to its savepoint and stops as transient, keeping what came
    before in the batch."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def lost_race(session: AsyncSession, exc: IntegrityError) -> bool:
    """Whether a REST write that failed with `exc`, and was rolled back, may read what made it fail: a
    unique key taken by another transaction that committed since this one found it free. The service
    then answers as a request arriving after that one would (the same create converges), and raises
    otherwise. Never inside a push, whose savepoint stays aborted until the push rolls it back and
    applies the mutation again."""
    return not in_push(session) and unique_key_taken(exc)
