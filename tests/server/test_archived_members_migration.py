"""Migration 0012 takes the members of households archived before it off the feed (both databases)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select, update

from server.db.engine import Database
from server.db.models import Household, Member, SyncChange
from server.db.types import utcnow
from tests.helpers import household_id
from tests.migrations import downgrade_to, upgrade_counting_seqs


async def _member_rows(db: Database) -> dict[str, tuple[bool, int]]:
    async with db.engine.connect() as conn:
        query = select(SyncChange.entity_id, SyncChange.deleted, SyncChange.seq).where(
            SyncChange.entity == "member"
        )
        return {key: (deleted, seq) for key, deleted, seq in await conn.execute(query)}


async def _migrate(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        await downgrade_to(db, "0011")
        archived = household_id("DB-C01-0002")
        async with db.engine.begin() as conn:  # archived as before 0012: its members' rows stay live
            await conn.execute(update(Household).where(Household.id == archived).values(deleted_at=utcnow()))
            members = [
                str(m)
                for m in (
                    await conn.execute(select(Member.id).where(Member.household_id == archived))
                ).scalars()
            ]
        before = await _member_rows(db)
        seqs = await upgrade_counting_seqs(db, through="0012")
        return {"members": members, "before": before, "after": await _member_rows(db), "seqs": seqs}
    finally:
        await db.dispose()


def test_upgrading_to_0012_turns_archived_households_members_into_tombstones(database_url: str) -> None:
    found = asyncio.run(_migrate(database_url))
    members, before, after = found["members"], found["before"], found["after"]
    seq_before, seq_after = found["seqs"]
    assert members and all(not before[m][0] for m in members)
    assert seq_after == seq_before + 1
    assert all(after[m] == (True, seq_after) for m in members)  # devices with a cursor delete them
    assert {k: v for k, v in after.items() if k not in members} == {
        k: v for k, v in before.items() if k not in members
    }
