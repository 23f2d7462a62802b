"""Run Alembic migrations from code (the CLI and the embedded server call this)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from server.db.engine import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    await _migrate(db, command.upgrade, revision)


async def downgrade(db: Database, revision: str) -> None:
    """Back to `revision`: for the tests of a migration, and for `bench visit-cpu` running older code on
    the schema of its own migrations."""
    await _migrate(db, command.downgrade, revision)


async def _migrate(db: Database, step: Callable[[Config, str], None], revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        step(cfg, revision)

    async with db.engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()


async def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
