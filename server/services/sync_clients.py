"""Sync clients: one per app install, owned by one user, carrying its last applied mutation."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import SyncClient, SyncState
from server.errors import Forbidden
from server.services.actor import Actor


async def find(session: AsyncSession, actor: Actor, client_id: uuid.UUID) -> SyncClient | None:
    client = await session.get(SyncClient, client_id)
    _require_owner(client, actor)
    return client


async def claim(
    session: AsyncSession, actor: Actor, client_id: uuid.UUID, schema_version: int
) -> tuple[SyncClient, uuid.UUID]:
    """The client's row, created on first contact and locked until this transaction ends, and the
    database's current epoch (read with it; a client created now is of that epoch).

    INSERT .. ON CONFLICT DO NOTHING first, so two first pushes racing each other both succeed.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    current = select(SyncState.epoch).where(SyncState.id == 1)
    await session.execute(
        insert(SyncClient)
        .values(
            client_id=client_id,
            user_id=actor.user_id,
            device_id=actor.device_id,
            scope_path=actor.jurisdiction_path,
            last_mutation_seq=0,
            epoch=current.scalar_subquery(),
            schema_version=schema_version,
        )
        .on_conflict_do_nothing(index_elements=["client_id"])
    )
    query = (
        select(SyncClient, SyncState.epoch)
        .join(SyncState, SyncState.id == 1)
        .where(SyncClient.client_id == client_id)
        .with_for_update(of=SyncClient)
    )
    client, epoch = (await session.execute(query.execution_options(populate_existing=True))).one()
    _require_owner(client, actor)
    return client, epoch


def _require_owner(client: SyncClient | None, actor: Actor) -> None:
    # Replicache's warning: never let one user push (or pull) on behalf of another.
    if client is not None and client.user_id != actor.user_id:
        raise Forbidden("This client id belongs to another user.", code="client_of_another_user")
