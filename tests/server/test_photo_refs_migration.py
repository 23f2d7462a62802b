"""Migration 0004 records the photo references of observations stored before it (both databases)."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from server.db.engine import Database
from server.db.migrate import upgrade
from server.db.models import Observation, PhotoRef
from server.domain.evidence import references
from tests.migrations import downgrade_to


async def _refs_before_and_after(url: str) -> tuple[int, int, int]:
    db = Database(url)
    try:
        async with db.read_session() as session:
            recorded = int((await session.execute(select(func.count()).select_from(PhotoRef))).scalar_one())
            values = list((await session.execute(select(Observation.value))).scalars())
        await downgrade_to(db, "0003")
        await upgrade(db)
        async with db.read_session() as session:
            backfilled = int((await session.execute(select(func.count()).select_from(PhotoRef))).scalar_one())
        return recorded, backfilled, sum(len(references(v)) for v in values)
    finally:
        await db.dispose()


def test_upgrading_to_0004_backfills_the_references_the_hook_records(database_url: str) -> None:
    recorded, backfilled, expected = asyncio.run(_refs_before_and_after(database_url))
    assert expected > 0  # the demo visits answered photo and signature items
    assert recorded == expected  # recorded by the before_flush hook as the demo seed stored them
    assert backfilled == expected
