"""Who sees a photo: the areas of the visits that name it; its uploader only until one does."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import Client, login


def test_an_uploader_moved_to_another_community_no_longer_sees_the_photo(tus_client: Client) -> None:
    """Its EXIF GPS is the household's location: once the visit naming it is out of the uploader's area,
    so is the photo."""
    from sqlalchemy import update

    from server.db.models import User
    from tests.helpers import node_id, run_db
    from tests.images import jpeg_with_gps
    from tests.server.test_photos import answer_with
    from tests.tus import sha256, upload
    from tests.visit_flow import completed_visit, user_id

    photo = jpeg_with_gps(seed=21)
    visit, worker = completed_visit(tus_client)
    assert upload(tus_client, worker, photo).status_code == 204
    before = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker)
    assert before.status_code == 200 and before.json()["visits"] == []  # its uploader, before any answer
    answer_with(tus_client, visit, worker, sha256(photo))
    me = uuid.UUID(user_id(tus_client, "demo-worker-1"))

    async def transfer(session: Any) -> None:
        await session.execute(update(User).where(User.id == me).values(jurisdiction_id=node_id("C03")))

    run_db(tus_client, transfer)
    now = login(tus_client, "demo-worker-1", device="new-tablet")
    assert tus_client.get(f"/api/v1/visits/{visit['id']}", headers=now).status_code == 404
    assert tus_client.get(f"/api/v1/households/{visit['household_id']}", headers=now).status_code == 404
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=now).status_code == 404
