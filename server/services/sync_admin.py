"""Operator actions on the sync feed: purge tombstones, start a new epoch after a restore."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import ScopeExit, SyncChange, SyncState
from server.services import audit
from server.services.actor import Actor


async def purge_tombstones(session: AsyncSession, actor: Actor) -> tuple[int, int]:
    """Forget every tombstone and scope exit committed so far; raise the floor to the current sequence.

    A device whose cursor is behind the new floor (and was handed out before it) is told to reset, so it
    can never keep a record whose deletion it did not see. Returns (rows purged, new floor).
    """
    state = (await session.execute(select(SyncState).where(SyncState.id == 1).with_for_update())).scalar_one()
    floor = state.seq
    gone = await session.execute(
        delete(SyncChange).where(SyncChange.deleted.is_(True), SyncChange.seq <= floor)
    )
    exits = await session.execute(delete(ScopeExit).where(ScopeExit.seq <= floor))
    await session.execute(update(SyncState).where(SyncState.id == 1).values(tombstone_floor=floor))
    purged = int(getattr(gone, "rowcount", 0) or 0) + int(getattr(exits, "rowcount", 0) or 0)
    audit.record(
        session, actor, "sync.purge_tombstones", "sync_state", "1", {"floor": floor, "purged": purged}
    )
    await session.commit()
    return purged, floor


async def new_epoch(session: AsyncSession, actor: Actor) -> uuid.UUID:
    """After restoring a backup: every device's cursor may point past what this database holds."""
    epoch = uuid.uuid4()
    await session.execute(update(SyncState).where(SyncState.id == 1).values(epoch=epoch))
    audit.record(session, actor, "sync.new_epoch", "sync_state", "1", {"epoch": epoch})
    await session.commit()
    return epoch
