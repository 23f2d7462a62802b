"""Migrations build an empty database on both engines, and they match the models exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from media.phash import bands, from_hex
from server.db.engine import Database
from server.db.migrate import current_revision, downgrade, upgrade
from server.db.models import Base, Photo, SyncChange, VisitTransition
from server.services.rules import today
from tests.fixtures.postgres import PostgresServer
from tests.helpers import Client, login, run_db
from tests.images import jpeg_with_gps
from tests.server.test_integrity import flags, photographed, reencoded
from tests.sync.test_handover import H1, deactivate, hand_over, one_edit_pushed
from tests.sync.test_sync_protocol import conflicts, push, update_mutation
from tests.visit_flow import TEAM, completed_visit, propose, review, submit, user_id


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


async def _migrate(url: str, revision: str) -> None:
    """Down to `revision`, then up to the head again."""
    db = Database(url)
    try:
        await downgrade(db, revision)
        await upgrade(db)
    finally:
        await db.dispose()


def test_0014_downgrades_and_upgrades_again_carrying_the_countys_home_visit_over(
    client: Client, database_url: str
) -> None:
    """0014 puts the county's home visit on the timeline. A database whose decisions held the day only in
    their audit rows (0013) shows it on the timeline once upgraded, and its devices pull it again."""
    visit, worker = completed_visit(client)  # the filler's objection and tip-off: the county goes itself
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for username in ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district"):
        assert review(client, visit, username, "approve").status_code == 200
    (event,) = [e for e in run_db(client, _events_of(visit["id"])) if e.level == 3]
    stamped = run_db(client, _feed_seq(str(event.id)))

    asyncio.run(_migrate(database_url, "0013"))
    client.blocking_portal.call(client.app.state.db.engine.dispose)  # cached statements knew the old table

    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=worker).json()
    assert [t["county_home_visit_on"] for t in timeline if t["action"] == "approve"] == [
        None,
        None,
        today().isoformat(),
    ]
    assert run_db(client, _feed_seq(str(event.id))) > stamped
    assert asyncio.run(_upgrade_and_diff(database_url))[1] == []


def _events_of(visit_id: str) -> Callable[[AsyncSession], Awaitable[list[VisitTransition]]]:
    async def fetch(session: AsyncSession) -> list[VisitTransition]:
        query = select(VisitTransition).where(VisitTransition.visit_id == uuid.UUID(visit_id))
        return list((await session.execute(query)).scalars())

    return fetch


def _feed_seq(event_id: str) -> Callable[[AsyncSession], Awaitable[int]]:
    async def fetch(session: AsyncSession) -> int:
        query = select(SyncChange.seq).where(
            SyncChange.entity == "visit_event", SyncChange.entity_id == event_id
        )
        return int((await session.execute(query)).scalar_one())

    return fetch


def test_0016_names_the_sender_of_each_edit_handed_in_before_it(client: Client, database_url: str) -> None:
    """Conflicts a handover kept before 0016 named their sender only in their `mutation.quarantine` audit
    rows: once upgraded, the conflict names them too, and the community's devices pull it again."""
    cid = one_edit_pushed(client)
    deactivate(client, "demo-worker-1")
    colleague = login(client, "demo-worker-2")
    assert hand_over(client, colleague, cid, [update_mutation(2, H1, 2, address="乙")]).status_code == 200
    own = update_mutation(1, str(uuid.uuid4()), 1, address="无此户")  # kept, sent by its own author
    push(client, colleague, str(uuid.uuid4()), [own])

    asyncio.run(_migrate(database_url, "0015"))
    client.blocking_portal.call(client.app.state.db.engine.dispose)  # cached statements knew the old table

    (kept,) = conflicts(client, H1)
    assert kept["handed_over_by"] == user_id(client, "demo-worker-2")
    assert [c["handed_over_by"] for c in conflicts(client, own["household_id"])] == [None]
    assert run_db(client, _conflict_feed_seq(kept["id"])) > run_db(client, _conflict_feed_seq(None))
    assert asyncio.run(_upgrade_and_diff(database_url))[1] == []


def _conflict_feed_seq(conflict_id: str | None) -> Callable[[AsyncSession], Awaitable[int]]:
    """The feed's number of a conflict, or (None) the highest of every other entity's."""

    async def fetch(session: AsyncSession) -> int:
        if conflict_id is None:
            query = select(func.max(SyncChange.seq)).where(SyncChange.entity != "conflict")
        else:
            query = select(SyncChange.seq).where(
                SyncChange.entity == "conflict", SyncChange.entity_id == conflict_id
            )
        return int((await session.execute(query)).scalar_one())

    return fetch


def test_0020_indexes_the_hashes_of_photos_stored_before_it(client: Client, database_url: str) -> None:
    """Photos stored before 0020 get their hash's bands from the migration: a copy stored before it is
    still found by the band search afterwards."""
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    kitchen = jpeg_with_gps(seed=31)
    first = photographed(client, "DB-C01-0001", worker, kitchen)
    photographed(client, "DB-C01-0003", worker, reencoded(kitchen))

    asyncio.run(_migrate(database_url, "0019"))
    client.blocking_portal.call(client.app.state.db.engine.dispose)  # cached statements knew the old table

    (copy,) = flags(client, first, reviewer, "photo_near_duplicate")
    assert copy["bits"] <= 10
    stored = run_db(client, _bands_stored)
    assert len(stored) == 2
    assert all(found == bands(from_hex(dhash)) for dhash, found in stored)
    assert asyncio.run(_upgrade_and_diff(database_url))[1] == []


async def _bands_stored(session: AsyncSession) -> list[tuple[str, tuple[int | None, ...]]]:
    query = select(Photo.dhash, Photo.dhash_b0, Photo.dhash_b1, Photo.dhash_b2, Photo.dhash_b3)
    return [(dhash, tuple(rest)) for dhash, *rest in await session.execute(query)]


def test_0021_keeps_the_mutation_log_readable_both_ways(client: Client, database_url: str) -> None:
    """0021 stores the log's JSON as text on PostgreSQL. Edits logged before it and after a downgrade
    still answer as they did: a resend replays its result, the same mutation_id on another edit (sent
    by another of the user's client ids, so only the log can tell) is refused."""
    worker = login(client, TEAM[0])
    edit = update_mutation(1, H1, 1, address="甲")
    assert push(client, worker, str(uuid.uuid4()), [edit])["results"][0]["status"] == "applied"

    for revision in ("0020", "0021"):
        db = Database(database_url)
        asyncio.run(downgrade(db, revision) if revision == "0020" else upgrade(db))
        asyncio.run(db.dispose())
        client.blocking_portal.call(client.app.state.db.engine.dispose)  # statements knew the old types
        resent = push(client, worker, str(uuid.uuid4()), [edit])["results"][0]
        assert (resent["status"], resent.get("code")) == ("already_applied", None)
        other = update_mutation(1, H1, 1, address="乙") | {"mutation_id": edit["mutation_id"]}
        refused = push(client, worker, str(uuid.uuid4()), [other])["results"][0]
        assert (refused["status"], refused["code"]) == ("rejected", "mutation_id_reused")
    assert asyncio.run(_upgrade_and_diff(database_url))[1] == []
