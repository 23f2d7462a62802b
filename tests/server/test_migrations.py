"""Migrations build an empty database on both engines, and they match the models exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from server.db.engine import Database
from server.db.migrate import current_revision, upgrade
from server.db.models import Base
from tests.fixtures.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database(template=None)


async def _upgrade_and_diff(url: str) -> tuple[str | None, list[object], set[str]]:
    db = Database(url)
    try:
        await upgrade(db)
        await upgrade(db)  # a second run is a no-op
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        return await current_revision(db), diff, tables
    finally:
        await db.dispose()


def test_migrations_upgrade_an_empty_database_to_the_models(empty_url: str) -> None:
    revision, diff, tables = asyncio.run(_upgrade_and_diff(empty_url))
    assert revision is not None
    assert diff == [], f"models and migrations disagree: {diff}"
    assert set(Base.metadata.tables) <= tables
