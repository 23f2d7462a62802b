"""Who ends a service's transaction: the service itself (REST), or the sync push around it.

A REST call is one transaction, which the service commits before it answers. A sync push applies each
mutation inside a savepoint of the push's transaction, so that the mutation's effects, its log row and
the advance of the client's last_mutation_seq commit together or not at all. Services call `commit`
and `rollback` from here; inside a push they only flush, and the push decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
