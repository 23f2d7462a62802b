"""Housekeeping removes what no row references: a photo's blobs stored by an ingest that failed before its
photo row was written, and a direct upload's multipart upload that no upload row records. Both databases,
both stores (the direct-upload cases on S3, the only store that takes them)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from media.stores import BlobStoreUnavailable
from server.db.models import Upload
from server.domain import photo_blobs
from server.services import photos
from tests.helpers import Client, login, run_db
from tests.images import jpeg_with_gps
from tests.server.test_direct_uploads import DIRECT, multipart_uploads, start
from tests.tus import create, patch, sha256, stored_keys, upload


class RowWriteFails:
    """The ingest dies after storing the three blobs, before its photo row is written (a crash, the
    database gone): what is left is blobs that no row names and an unfinished upload."""

    def __call__(self, *args: Any) -> None:
        raise ConnectionError("the server went away between the blobs and the photo row")


def blobs_of(client: Client, data: bytes) -> list[str]:
    return sorted(set(stored_keys(client)) & set(photo_blobs.keys(sha256(data))))


def expire(client: Client, data: bytes) -> None:
    async def back(session: Any) -> None:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        await session.execute(
            update(Upload)
            .where(Upload.sha256 == sha256(data), Upload.state == "receiving")
            .values(expires_at=past)
        )
        await session.commit()

    run_db(client, back)


def cleanup(client: Client, now: dt.datetime | None = None) -> int:
    state = client.app.state
    return int(client.blocking_portal.call(photos.cleanup, state.db, state.store, state.image_limiter, now))


def failed_ingest(
    client: Client, worker: dict[str, str], data: bytes, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Send ``data`` whole while the photo row cannot be written; the upload's location."""
    with monkeypatch.context() as m:
        m.setattr(photos, "_add_photo", RowWriteFails())
        location = create(client, worker, data).headers["location"]
        failed = patch(client, worker, location, 0, data)
    assert failed.status_code >= 500, failed.text
    assert len(blobs_of(client, data)) == 3  # stored, and no photo row names them
    return str(location)


def test_blobs_a_failed_ingest_left_go_with_its_expired_upload_unless_the_photo_is_on_its_way(
    tus_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = login(tus_client, "demo-worker-1")
    kept, lost, whole = jpeg_with_gps(seed=31), jpeg_with_gps(seed=32), jpeg_with_gps(seed=33)
    assert upload(tus_client, worker, whole).status_code == 204

    # The tablet never asks again: when the upload expires, its blobs go with it.
    failed_ingest(tus_client, worker, lost, monkeypatch)
    expire(tus_client, lost)
    assert cleanup(tus_client) == 1
    assert blobs_of(tus_client, lost) == []
    assert tus_client.get(f"/api/v1/photos/{sha256(lost)}", headers=worker).status_code == 404

    # The same photo sent again through another upload meanwhile: its blobs stay, and it is stored whole.
    failed_ingest(tus_client, worker, kept, monkeypatch)
    again = create(tus_client, worker, kept).headers["location"]
    half = len(kept) // 2
    assert patch(tus_client, worker, again, 0, kept[:half]).status_code == 204

    async def first_only(session: Any) -> None:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        first = select(Upload.id).where(Upload.sha256 == sha256(kept), Upload.upload_offset == 0)
        await session.execute(update(Upload).where(Upload.id.in_(first)).values(expires_at=past))
        await session.commit()

    run_db(tus_client, first_only)
    assert cleanup(tus_client) == 1
    assert len(blobs_of(tus_client, kept)) == 3
    assert patch(tus_client, worker, again, half, kept[half:]).status_code == 204
    shown = tus_client.get(f"/api/v1/photos/{sha256(kept)}", headers=worker)
    assert shown.status_code == 200, shown.text

    # A stored photo's blobs are never touched when its (complete) upload goes. (Its claim is let go
    # first, as five minutes would: a claim's lease keeps the cleanup away.)
    async def leases_over(session: Any) -> None:
        await session.execute(update(Upload).values(processing_since=None))
        await session.commit()

    run_db(tus_client, leases_over)
    assert cleanup(tus_client, dt.datetime.now(dt.UTC) + dt.timedelta(days=3)) == 2
    assert len(blobs_of(tus_client, whole)) == len(blobs_of(tus_client, kept)) == 3


@pytest.fixture
def s3_only(store_kind: str) -> None:
    if store_kind != "s3":
        pytest.skip("direct uploads are an S3 store's")


def upload_rows(client: Client, data: bytes) -> int:
    async def count(session: Any) -> int:
        return int(
            (await session.execute(select(func.count()).where(Upload.sha256 == sha256(data)))).scalar_one()
        )

    return int(run_db(client, count))


@pytest.mark.usefixtures("s3_only")
def test_a_direct_upload_whose_start_fails_leaves_no_upload_behind(
    tus_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = login(tus_client, "demo-worker-1")
    data = jpeg_with_gps(seed=34)
    store = tus_client.app.state.store

    async def unreachable(upload_id: str) -> str:
        raise BlobStoreUnavailable("the store is down")

    with monkeypatch.context() as m:
        m.setattr(store, "direct_begin", unreachable)
        failed = start(tus_client, worker, data)
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "blob_store_unavailable"
    assert upload_rows(tus_client, data) == 0  # nothing the device could ever name, nothing to expire
    assert start(tus_client, worker, data).status_code == 201


@pytest.mark.usefixtures("s3_only")
def test_a_multipart_upload_no_upload_records_is_aborted_by_the_cleanup(tus_client: Client) -> None:
    """A server that died between opening the multipart upload and recording it left parts nobody can
    name; the cleanup aborts them (once older than an hour: moto reports every multipart upload as begun
    in 2010, so that wait is not exercised here) and leaves the recorded ones."""
    worker = login(tus_client, "demo-worker-1")
    store = tus_client.app.state.store
    live = start(tus_client, worker, jpeg_with_gps(seed=35)).json()
    orphan = tus_client.blocking_portal.call(store.direct_begin, uuid.uuid4().hex)
    (recorded,) = set(multipart_uploads(store)) - {orphan}

    assert cleanup(tus_client) == 0  # no upload expired
    assert multipart_uploads(store) == [recorded]
    assert tus_client.get(f"{DIRECT}/{live['upload_id']}", headers=worker).status_code == 200
