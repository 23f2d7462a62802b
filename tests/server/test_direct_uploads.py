"""Direct uploads: the device PUTs the parts to S3 (moto, over real HTTP) through presigned URLs, then
the server joins, verifies and ingests them; on both databases."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest

from server.services import uploads
from tests.helpers import Client, audit_rows, login
from tests.images import jpeg_with_gps
from tests.tus import TUS, UPLOADS, create, sha256, stored_keys, upload

DIRECT = f"{UPLOADS}/direct"
PART = 5 << 20


@pytest.fixture
def store_kind() -> str:
    return "s3"  # the only store that takes parts itself; tests/tus.py builds the app on a fresh bucket


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    data = jpeg_with_gps(seed=3, size=(4000, 3000), quality=98)
    assert PART < len(data) < 2 * PART  # two parts: one whole, one short
    return data


def start(client: Client, auth: dict[str, str], data: bytes, **extra: Any) -> httpx.Response:
    body = {"sha256": sha256(data), "length": len(data), "filename": "look.jpg"} | extra
    return client.post(DIRECT, json=body, headers=auth)


def put_part(part: dict[str, Any], data: bytes) -> None:
    start = (part["number"] - 1) * PART
    response = httpx.put(part["url"], content=data[start : start + PART])
    assert response.status_code == 200, response.text


def staged(client: Client) -> list[str]:
    return [k for k in stored_keys(client) if k.startswith(".uploads")]


def test_parts_sent_straight_to_the_store_become_a_stored_photo(tus_client: Client, big_photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    started = start(tus_client, worker, big_photo)
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["state"] == "receiving"
    assert body["part_size"] == PART
    assert [p["number"] for p in body["parts"]] == [1, 2]
    # The link drops after the first part; days later the device asks what is missing.
    put_part(body["parts"][0], big_photo)
    progress = tus_client.get(f"{DIRECT}/{body['upload_id']}", headers=worker).json()
    assert progress["received"] == [1]
    assert [p["number"] for p in progress["parts"]] == [2]
    early = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "parts_missing"
    assert early.json()["error"]["details"] == {"missing": [2]}

    put_part(progress["parts"][0], big_photo)  # a fresh URL, from the progress answer
    done = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "complete"
    assert done.json()["parts"] == []

    photo = tus_client.get(f"/api/v1/photos/{sha256(big_photo)}", headers=worker)
    assert photo.status_code == 200, photo.text
    assert (photo.json()["width"], photo.json()["height"]) == (4000, 3000)
    assert staged(tus_client) == []  # parts joined, read, stored as the photo, then dropped
    # Completing again (the device lost the answer) changes nothing.
    again = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert again.status_code == 200
    assert again.json()["state"] == "complete"
    assert len(audit_rows(tus_client, "upload.create")) == 1


def test_a_file_already_stored_needs_no_parts(tus_client: Client) -> None:
    data = jpeg_with_gps(seed=8)
    worker = login(tus_client, "demo-worker-1")
    assert upload(tus_client, worker, data).status_code == 204  # through tus, from another device
    started = start(tus_client, login(tus_client, "demo-worker-2"), data)
    assert started.status_code == 201
    assert started.json()["state"] == "complete"
    assert started.json()["parts"] == []
    # The stored photo's SHA-256 with another length is no file the server holds: refused, as for tus.
    for length in (len(data) - 1, len(data) + 1):
        wrong = start(tus_client, login(tus_client, "demo-worker-2"), data, length=length)
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["error"]["code"] == "sha256_length_mismatch"


def test_a_part_of_the_wrong_size_is_asked_for_again(tus_client: Client, big_photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    body = start(tus_client, worker, big_photo).json()
    first, second = body["parts"]
    put_part(first, big_photo)
    assert httpx.put(second["url"], content=big_photo[PART : PART + 1000]).status_code == 200  # cut short
    response = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"missing": [2]}
    put_part(second, big_photo)  # the same URL again: a part re-sent replaces the short one
    assert tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker).status_code == 200


def test_bytes_that_do_not_match_the_announced_sha256_are_refused_and_dropped(tus_client: Client) -> None:
    data, other = jpeg_with_gps(seed=11), jpeg_with_gps(seed=12)
    worker = login(tus_client, "demo-worker-1")
    body = start(tus_client, worker, data, length=len(other)).json()
    put_part(body["parts"][0], other)
    response = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "sha256_mismatch"
    assert staged(tus_client) == []
    assert tus_client.get(f"/api/v1/photos/{sha256(other)}", headers=worker).status_code == 404
    gone = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "sha256_mismatch"


def test_terminating_or_expiring_a_direct_upload_drops_its_parts(
    tus_client: Client, big_photo: bytes
) -> None:
    worker = login(tus_client, "demo-worker-1")
    store = tus_client.app.state.store
    ended = start(tus_client, worker, big_photo).json()
    put_part(ended["parts"][0], big_photo)
    response = tus_client.delete(f"{UPLOADS}/{ended['upload_id']}", headers=TUS | worker)
    assert response.status_code == 204
    assert multipart_uploads(store) == []

    expiring = start(tus_client, worker, big_photo).json()
    put_part(expiring["parts"][0], big_photo)
    assert len(multipart_uploads(store)) == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    state = tus_client.app.state
    assert tus_client.blocking_portal.call(uploads.cleanup, state.db, state.store, later) == 1
    assert multipart_uploads(store) == []
    assert tus_client.get(f"{DIRECT}/{expiring['upload_id']}", headers=worker).status_code == 404


def test_bad_starts_are_clear_4xx(tus_client: Client) -> None:
    worker = login(tus_client, "demo-worker-1")
    too_big = tus_client.post(DIRECT, json={"sha256": "a" * 64, "length": 60 << 20}, headers=worker)
    assert too_big.status_code == 413
    no_sha = tus_client.post(DIRECT, json={"sha256": "nope", "length": 10}, headers=worker)
    assert no_sha.status_code == 422
    assert no_sha.json()["error"]["code"] == "sha256_required"
    negative = tus_client.post(DIRECT, json={"sha256": "a" * 64, "length": -1}, headers=worker)
    assert negative.status_code == 422
    assert negative.json()["error"]["code"] == "validation_error"
    empty = tus_client.post(DIRECT, json={"sha256": "a" * 64, "length": 0}, headers=worker)
    assert empty.json()["error"]["code"] == "empty_upload"
    no_field = tus_client.post(DIRECT, json={"length": 10}, headers=worker)
    assert no_field.status_code == 422
    assert no_field.json()["error"]["code"] == "validation_error"
    assert tus_client.post(DIRECT, json={"sha256": "a" * 64, "length": 10}).status_code == 401
    other = start(tus_client, login(tus_client, "demo-worker-2"), b"x" * 10).json()
    assert tus_client.get(f"{DIRECT}/{other['upload_id']}", headers=worker).status_code == 404
    tus_upload = create(tus_client, worker, b"y" * 10).headers["location"].rsplit("/", 1)[1]
    not_direct = tus_client.post(f"{DIRECT}/{tus_upload}/complete", headers=worker)
    assert not_direct.status_code == 409
    assert not_direct.json()["error"]["code"] == "not_a_direct_upload"


def test_the_local_store_points_to_tus(client: Client) -> None:
    response = client.post(
        DIRECT, json={"sha256": "a" * 64, "length": 10}, headers=login(client, "demo-worker-1")
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "direct_upload_unavailable"


def multipart_uploads(store: Any) -> list[str]:
    """Multipart uploads the bucket still holds (moto answers ListMultipartUploads)."""
    result = store._client._list_multipart_uploads(store.bucket)
    return [u.upload_id for u in result.uploads]


def test_the_image_check_applies_as_for_tus(tus_client: Client) -> None:
    worker = login(tus_client, "demo-worker-1")
    pdf = b"%PDF-1.4\n" + b"0" * 2000
    body = start(tus_client, worker, pdf).json()
    put_part(body["parts"][0], pdf)
    response = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert response.status_code == 422
    assert response.json()["error"]["code"] in {"not_an_image", "unsupported_format"}


def test_parts_the_store_dropped_on_its_own_end_the_upload_with_404_to_start_again(
    tus_client: Client,
) -> None:
    data = jpeg_with_gps(seed=14)
    worker = login(tus_client, "demo-worker-1")
    body = start(tus_client, worker, data).json()
    put_part(body["parts"][0], data)
    # A bucket lifecycle rule aborts incomplete multipart uploads behind the server's back.
    store = tus_client.app.state.store
    direct_id = multipart_uploads(store)[0]
    tus_client.blocking_portal.call(store.direct_abort, body["upload_id"].replace("-", ""), direct_id)
    response = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "staging_lost"
    assert tus_client.get(f"{DIRECT}/{body['upload_id']}", headers=worker).status_code == 404


def test_a_direct_upload_takes_no_tus_patch_and_asking_keeps_it_alive(tus_client: Client) -> None:
    data = jpeg_with_gps(seed=15)
    worker = login(tus_client, "demo-worker-1")
    body = start(tus_client, worker, data).json()
    location = f"{UPLOADS}/{body['upload_id']}"
    refused = tus_client.patch(
        location,
        content=data[:1000],
        headers=TUS | worker | {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_a_tus_upload"
    time.sleep(1.1)  # expiry times are kept to the second
    later = tus_client.get(f"{DIRECT}/{body['upload_id']}", headers=worker).json()
    assert later["expires_at"] > body["expires_at"]
    put_part(later["parts"][0], data)
    done = tus_client.post(f"{DIRECT}/{body['upload_id']}/complete", headers=worker)
    assert done.status_code == 200, done.text  # the refused PATCH left nothing in the way
