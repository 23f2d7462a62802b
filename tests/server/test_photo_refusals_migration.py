"""Migration 0013 keeps the refusals still on record in `uploads` and has devices pull those photos again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert, select

from server.db.engine import Database
from server.db.models import PhotoRefusal, SyncChange, Upload, User
from server.db.types import utcnow
from tests.migrations import downgrade_to, upgrade_counting_seqs

CUT, DAMAGED = "a" * 64, "b" * 64


def _failed_upload(owner: uuid.UUID, sha: str, code: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "owner_id": owner,
        "length": 10,
        "upload_offset": 10,
        "sha256": sha,
        "metadata_header": "",
        "state": "failed",
        "failure_code": code,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + dt.timedelta(hours=1),
    }


async def _migrate(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        await downgrade_to(db, "0012")
        async with db.engine.begin() as conn:
            owner = (await conn.execute(select(User.id).limit(1))).scalar_one()
            await conn.execute(
                insert(Upload),
                [_failed_upload(owner, CUT, "truncated"), _failed_upload(owner, DAMAGED, "sha256_mismatch")],
            )
            await conn.execute(
                insert(SyncChange),
                [
                    {
                        "entity": "photo",
                        "entity_id": f"{sha}/{uuid.uuid4()}",
                        "scope": "x",
                        "seq": 1,
                        "deleted": False,
                    }
                    for sha in (CUT, DAMAGED)
                ],
            )
        seqs = await upgrade_counting_seqs(db, through="0013")
        async with db.engine.connect() as conn:
            refusals = dict((await conn.execute(select(PhotoRefusal.sha256, PhotoRefusal.code))).all())
            query = select(SyncChange.entity_id, SyncChange.seq).where(SyncChange.entity == "photo")
            stamps = {key.partition("/")[0]: seq for key, seq in await conn.execute(query)}
        return {"refusals": refusals, "stamps": stamps, "seqs": seqs}
    finally:
        await db.dispose()


def test_upgrading_to_0013_keeps_the_refusals_uploads_still_hold(database_url: str) -> None:
    found = asyncio.run(_migrate(database_url))
    seq_before, seq_after = found["seqs"]
    assert found["refusals"] == {CUT: "truncated"}  # a file that was not its SHA-256 says nothing of it
    assert seq_after == seq_before + 1
    assert found["stamps"][CUT] == seq_after  # devices pull it again, now refused
    assert found["stamps"][DAMAGED] == 1
