"""Sync clients: one per app install, owned by one user, carrying its last applied mutation."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Select, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from server.db.models import SyncClient, SyncState
from server.db.types import utcnow
from server.errors import Forbidden
from server.services.actor import Actor
from sync.cursor import Cursor


async def find(session: AsyncSession, actor: Actor, client_id: uuid.UUID) -> SyncClient | None:
    client = await session.get(SyncClient, client_id)
    _require_owner(client, actor)
    return client


async def claim(
    session: AsyncSession, actor: Actor, client_id: uuid.UUID, schema_version: int
) -> tuple[SyncClient, uuid.UUID]:
    """The client's row, created on first contact and locked until this transaction ends, and the
    database's current epoch (read with it; a client created now is of that epoch).

    A known client is one locked read (every push but a device's first). A new one is inserted with
    INSERT .. ON CONFLICT DO NOTHING, so two first pushes racing each other both succeed, and read again.
    """
    found = (await session.execute(_locked_with_epoch(client_id))).one_or_none()
    if found is None:
        await session.execute(_insert_new(session, actor, client_id, schema_version))
        found = (await session.execute(_locked_with_epoch(client_id))).one()
    client, epoch = found
    _require_owner(client, actor)
    return client, epoch


def _locked_with_epoch(client_id: uuid.UUID) -> Select[SyncClient, uuid.UUID]:
    query = (
        select(SyncClient, SyncState.epoch)
        .join(SyncState, SyncState.id == 1)
        .where(SyncClient.client_id == client_id)
        .with_for_update(of=SyncClient)
    )
    return query.execution_options(populate_existing=True)


def _insert_new(session: AsyncSession, actor: Actor, client_id: uuid.UUID, schema_version: int) -> Executable:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    current = select(SyncState.epoch).where(SyncState.id == 1)
    return (
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


async def note_past_epoch(
    session: AsyncSession, actor: Actor, client_id: uuid.UUID, schema_version: int, cursor: Cursor
) -> None:
    """A client showing a cursor of another epoch synced with this database before it was restored. If
    none of its mutations is on record here (the backup was taken before its first push), its queue may
    resume above seq 1: the seqs the device saw confirmed and dropped are gone with the backup. Marking
    it of the cursor's epoch lets its next push be taken as the first since the restore (sync_push
    records those seqs as lost_in_restore) instead of waiting for seq 1 forever. A client with no such
    cursor stays of the current epoch: for it a first push above seq 1 is a reordered one, and waits."""
    client, epoch = await claim(session, actor, client_id, schema_version)
    if client.last_mutation_seq == 0 and client.epoch == epoch:
        client.epoch = cursor.epoch


def _require_owner(client: SyncClient | None, actor: Actor) -> None:
    # Replicache's warning: never let one user push (or pull) on behalf of another.
    if client is not None and client.user_id != actor.user_id:
        raise Forbidden("This client id belongs to another user.", code="client_of_another_user")


CLOCK_NEWS = dt.timedelta(seconds=60)
"""A pull notes the device's clock when the last note is older than this, or the clock moved by more:
once a sync, not once a page of a first sync's fifty."""


def measure_clock(client: SyncClient, device_now: dt.datetime | None, at: dt.datetime | None = None) -> None:
    """The client was seen now (or `at`, when its request arrived); with the device's clock, how far off
    it is (server minus device). Measured and shown to administrators (the devices list); never used to
    order anything."""
    for name, value in _clock_reading(device_now, at).items():
        setattr(client, name, value)


def clock_is_news(client: SyncClient, device_now: dt.datetime) -> bool:
    now = utcnow()
    if client.clock_offset_ms is None or now - client.last_seen_at > CLOCK_NEWS:
        return True
    return abs(_offset_ms(now, device_now) - client.clock_offset_ms) > CLOCK_NEWS.total_seconds() * 1000


async def note_clock(session: AsyncSession, client_id: uuid.UUID, device_now: dt.datetime) -> None:
    """``measure_clock`` for a client read in another (read-only) session."""
    await session.execute(
        update(SyncClient).where(SyncClient.client_id == client_id).values(**_clock_reading(device_now))
    )


async def latest_by_device(session: AsyncSession, device_ids: list[uuid.UUID]) -> dict[uuid.UUID, SyncClient]:
    """Each device's most recently seen sync client (a reinstalled app makes a new one)."""
    if not device_ids:
        return {}
    found = await session.execute(
        select(SyncClient).where(SyncClient.device_id.in_(device_ids)).order_by(SyncClient.last_seen_at)
    )
    return {c.device_id: c for c in found.scalars() if c.device_id is not None}


def _clock_reading(device_now: dt.datetime | None, at: dt.datetime | None = None) -> dict[str, object]:
    now = at or utcnow()
    reading: dict[str, object] = {"last_seen_at": now}
    if device_now is not None:
        reading["clock_offset_ms"] = _offset_ms(now, device_now)
    return reading


def _offset_ms(now: dt.datetime, device_now: dt.datetime) -> int:
    return int((now - device_now).total_seconds() * 1000)
