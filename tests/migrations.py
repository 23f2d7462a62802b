"""Taking a test database back to an earlier migration, to check what a later one does to its rows."""

from __future__ import annotations

from alembic import command
from sqlalchemy.engine import Connection

from server.db.engine import Database
from server.db.migrate import alembic_config


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def downgrade_to(db: Database, revision: str) -> None:
    """The database's schema (and data migrations) as of ``revision``."""
    async with db.engine.connect() as conn:
        await conn.run_sync(_downgrade, revision)
        await conn.commit()
