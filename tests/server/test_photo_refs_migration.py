"""Migration 0004 records the photo references of observations stored before it (both databases)."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from server.db.engine import Database
from server.db.migrate import alembic_config, upgrade
from server.db.models import Observation, PhotoRef
from server.domain.evidence import references


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def _refs_before_and_after(url: str) -> tuple[int, int, int]:
    db = Database(url)
    try:
        async with db.read_session() as session:
            recorded = int((await session.execute(select(func.count()).select_from(PhotoRef))).scalar_one())
            values = list((await session.execute(select(Observation.value))).scalars())
        async with db.engine.connect() as conn:
            await conn.run_sync(_downgrade, "0003")
            await conn.commit()
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
