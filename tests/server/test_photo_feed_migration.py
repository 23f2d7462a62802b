"""Migration 0006 keys the feed's photo rows per community and stamps the communities missed (both databases)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import insert, select, update

from server.db.engine import Database
from server.db.models import Household, Observation, PhotoRef, SyncChange, Visit
from tests.helpers import node_id
from tests.migrations import downgrade_to, upgrade_counting_seqs


async def _feed_photos(db: Database) -> dict[str, tuple[str, int]]:
    async with db.engine.connect() as conn:
        query = select(SyncChange.entity_id, SyncChange.scope, SyncChange.seq).where(
            SyncChange.entity == "photo"
        )
        return {key: (scope, seq) for key, scope, seq in await conn.execute(query)}


async def _share_a_photo_with_another_community(db: Database) -> tuple[str, str, str]:
    """At 0005: a visit of a household moved to C03 names a photo a C01 visit already names."""
    async with db.engine.begin() as conn:
        sha, first_visit = (await conn.execute(select(PhotoRef.sha256, PhotoRef.visit_id).limit(1))).one()
        c01 = (
            await conn.execute(select(Household.community_id).join(Visit).where(Visit.id == first_visit))
        ).scalar_one()
        other, household = (
            await conn.execute(
                select(Observation.id, Visit.household_id)
                .join(Visit, Visit.id == Observation.visit_id)
                .where(
                    Visit.id != first_visit,
                    Visit.household_id.not_in(select(Visit.household_id).where(Visit.id == first_visit)),
                )
                .limit(1)
            )
        ).one()
        await conn.execute(
            update(Household).where(Household.id == household).values(community_id=node_id("C03"))
        )
        visit = (await conn.execute(select(Observation.visit_id).where(Observation.id == other))).scalar_one()
        await conn.execute(
            insert(PhotoRef).values(observation_id=other, sha256=sha, visit_id=visit, kind="photo")
        )
    return sha, str(c01), str(node_id("C03"))


async def _migrate(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        at_head = await _feed_photos(db)
        await downgrade_to(db, "0005")
        at_0005 = await _feed_photos(db)
        sha, c01, c03 = await _share_a_photo_with_another_community(db)
        seqs = await upgrade_counting_seqs(db, through="0006")
        return {
            "head": at_head,
            "0005": at_0005,
            "after": await _feed_photos(db),
            "shared": (sha, c01, c03),
            "seqs": seqs,
        }
    finally:
        await db.dispose()


def test_upgrading_to_0006_keys_photos_per_community_and_stamps_the_missed_ones(database_url: str) -> None:
    found = asyncio.run(_migrate(database_url))
    head, old, after = found["head"], found["0005"], found["after"]
    sha, c01, c03 = found["shared"]
    seq_before, seq_after = found["seqs"]
    assert head and all("/" in key for key in head)
    assert old and all("/" not in key for key in old)  # 0005: one row per photo, keyed by its SHA-256
    # Renamed in place, same community and sequence: devices already holding them get nothing new.
    assert {k: after[k] for k in head} == head
    # The community that was missed gets the photo under one new sequence number.
    assert after[f"{sha}/{c03}"] == (c03, seq_after)
    assert seq_after == seq_before + 1
    assert all(after[k] == (c03, seq_after) for k in after.keys() - head.keys())
    assert after[f"{sha}/{c01}"] == head[f"{sha}/{c01}"]
    assert uuid.UUID(c01) != uuid.UUID(c03)
