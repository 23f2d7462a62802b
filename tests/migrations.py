"""Taking a test database back to an earlier migration, to check what a later one does to its rows."""

from __future__ import annotations

from alembic import command
from sqlalchemy import select
from sqlalchemy.engine import Connection

from server.db.engine import Database
from server.db.migrate import alembic_config, upgrade
from server.db.models import SyncState


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def downgrade_to(db: Database, revision: str) -> None:
    """The database's schema (and data migrations) as of ``revision``."""
    async with db.engine.connect() as conn:
        await conn.run_sync(_downgrade, revision)
        await conn.commit()


async def upgrade_counting_seqs(db: Database, *, through: str) -> tuple[int, int]:
    """Upgrade to head; the change feed's sequence before and right after revision ``through`` (a data
    migration that stamps rows for devices takes numbers of its own, and later ones may too)."""
    before = await _feed_seq(db)
    await upgrade(db, through)
    after = await _feed_seq(db)
    await upgrade(db)
    return before, after


async def _feed_seq(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(SyncState.seq))).scalar_one())
