"""tus 1.0 over raw HTTP, on both databases and both blob stores (`tus_client`); checks that touch no
stored bytes run on the local store only (`client`)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import os
import random
import subprocess
import sys
import threading
import uuid
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from server import tus_edge
from server.db.models import Upload
from server.services import photos, uploads
from tests.helpers import Client, audit_rows, login, run_db
from tests.images import jpeg_with_gps
from tests.tus import (
    TUS,
    UPLOADS,
    create,
    metadata,
    offset_of,
    patch,
    sha256,
    stored_keys,
    upload,
)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return jpeg_with_gps(seed=5)


def staged(client: Client) -> list[str]:
    return [k for k in stored_keys(client) if k.startswith(".uploads")]


def test_discovery_needs_no_sign_in_and_names_the_extensions(client: Client) -> None:
    response = client.options(UPLOADS)
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert response.headers["tus-resumable"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    }
    assert response.headers["tus-checksum-algorithm"] == "sha1,sha256"
    assert response.headers["tus-max-size"] == str(50 * 1024 * 1024)


def test_an_upload_interrupted_at_random_points_resumes_to_a_stored_photo(
    tus_client: Client, photo: bytes
) -> None:
    worker = login(tus_client, "demo-worker-1")
    created = create(tus_client, worker, photo)
    assert created.status_code == 201, created.text
    assert created.headers["tus-resumable"] == "1.0.0"
    assert created.headers["upload-offset"] == "0"
    assert "upload-expires" in created.headers
    location = created.headers["location"]
    rng = random.Random(7)
    offset = 0
    while offset < len(photo):
        # The link drops after a random number of bytes; the device asks where to resume.
        end = min(len(photo), offset + rng.randint(1, 90_000))
        response = patch(tus_client, worker, location, offset, photo[offset:end])
        assert response.status_code == 204, response.text
        offset = offset_of(tus_client, worker, location)
        assert offset == end
    head = tus_client.head(location, headers=TUS | worker)
    assert head.headers["upload-length"] == str(len(photo))
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["upload-metadata"] == metadata(photo)
    got = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker)
    assert got.status_code == 200, got.text
    assert staged(tus_client) == []


def test_upload_expires_is_sent_while_an_upload_can_expire_and_never_once_it_is_stored(
    tus_client: Client, photo: bytes
) -> None:
    # tus expiration: Upload-Expires says when an unfinished upload will expire. A stored one will not, so
    # no answer about it carries one: not the PATCH that completes it (staged or sent whole), not a
    # creation-with-upload of the whole file, not a HEAD, not the HEAD that finishes an upload whose
    # last piece was staged before the server stopped.
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    half = len(photo) // 2
    first = patch(tus_client, worker, location, 0, photo[:half])
    assert "upload-expires" in first.headers
    assert "upload-expires" in tus_client.head(location, headers=TUS | worker).headers
    last = patch(tus_client, worker, location, half, photo[half:])
    assert (last.status_code, last.headers["upload-offset"]) == (204, str(len(photo))), last.text
    assert "upload-expires" not in last.headers
    assert "upload-expires" not in tus_client.head(location, headers=TUS | worker).headers
    whole = jpeg_with_gps(seed=6)
    at_once = create(tus_client, worker, whole).headers["location"]
    sent = patch(tus_client, worker, at_once, 0, whole)
    assert (sent.status_code, sent.headers["upload-offset"]) == (204, str(len(whole))), sent.text
    assert "upload-expires" not in sent.headers
    with_body = jpeg_with_gps(seed=7)
    posted = tus_client.post(
        UPLOADS,
        content=with_body,
        headers=TUS
        | worker
        | {
            "Upload-Length": str(len(with_body)),
            "Upload-Metadata": metadata(with_body),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert (posted.status_code, posted.headers["upload-offset"]) == (201, str(len(with_body))), posted.text
    assert "upload-expires" not in posted.headers
    # The server stopped after staging an upload's last piece, before processing it: the HEAD that
    # processes it answers the stored upload.
    stopped = jpeg_with_gps(seed=8)
    stopped_at = create(tus_client, worker, stopped).headers["location"]
    assert patch(tus_client, worker, stopped_at, 0, stopped[:half]).status_code == 204
    upload_id = uuid.UUID(stopped_at.rsplit("/", 1)[1])
    rest = stopped[half:]
    store = tus_client.app.state.store
    tus_client.blocking_portal.call(store.stage_append, upload_id.hex, half, io.BytesIO(rest), len(rest))

    async def all_received(session: Any) -> None:
        await session.execute(update(Upload).where(Upload.id == upload_id).values(upload_offset=len(stopped)))

    run_db(tus_client, all_received)
    finished = tus_client.head(stopped_at, headers=TUS | worker)
    assert (finished.status_code, finished.headers["upload-offset"]) == (200, str(len(stopped)))
    assert "upload-expires" not in finished.headers
    assert tus_client.get(f"/api/v1/photos/{sha256(stopped)}", headers=worker).status_code == 200


def test_offset_mismatch_is_409_and_changes_nothing(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:1000]).status_code == 204
    for wrong in (0, 999, 1001):
        response = patch(tus_client, worker, location, wrong, photo[wrong : wrong + 10])
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "offset_mismatch"
        assert response.json()["error"]["details"] == {"upload_offset": 1000}
        assert response.headers["tus-resumable"] == "1.0.0"
    assert offset_of(tus_client, worker, location) == 1000


def test_per_request_checksum_is_verified_and_a_bad_chunk_discarded(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    offset = 0
    for algorithm in ("sha1", "sha256"):
        chunk = photo[offset : offset + 5000]

        def checksum(data: bytes, algorithm: str = algorithm) -> str:
            return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"

        wrong = patch(tus_client, worker, location, offset, chunk, **{"Upload-Checksum": checksum(b"other")})
        assert wrong.status_code == 460, wrong.text
        assert wrong.json()["error"]["code"] == "checksum_mismatch"
        assert offset_of(tus_client, worker, location) == offset
        right = patch(tus_client, worker, location, offset, chunk, **{"Upload-Checksum": checksum(chunk)})
        assert right.status_code == 204, right.text
        offset += 5000
        assert offset_of(tus_client, worker, location) == offset
    odd = patch(tus_client, worker, location, offset, b"x", **{"Upload-Checksum": "md5 AAAA"})
    assert odd.status_code == 400  # the checksum extension's answer
    assert odd.json()["error"]["code"] == "checksum_algorithm_unsupported"
    for header in ("sha1 !!", "sha1", "sha256 " + base64.b64encode(b"short").decode()):
        garbled = patch(tus_client, worker, location, offset, b"x", **{"Upload-Checksum": header})
        assert garbled.status_code == 400, (header, garbled.text)  # a malformed header, not a bad chunk
        assert garbled.json()["error"]["code"] == "bad_checksum"


def test_a_wrong_whole_file_sha256_is_refused_and_discarded(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    claimed = sha256(b"some other file")
    created = create(tus_client, worker, photo, sha=claimed)
    location = created.headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:10_000]).status_code == 204
    last = patch(tus_client, worker, location, 10_000, photo[10_000:])
    assert last.status_code == 422, last.text
    error = last.json()["error"]
    assert error["code"] == "sha256_mismatch"
    assert error["details"] == {"announced": claimed, "received": sha256(photo)}
    gone = tus_client.head(location, headers=TUS | worker)
    assert gone.status_code == 410
    again = patch(tus_client, worker, location, len(photo), b"")
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "sha256_mismatch"
    assert stored_keys(tus_client) == []
    for sha in (claimed, sha256(photo)):
        assert tus_client.get(f"/api/v1/photos/{sha}", headers=worker).status_code == 404


def test_over_the_size_cap_is_413(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    response = client.post(
        UPLOADS,
        headers=TUS
        | worker
        | {"Upload-Length": str(50 * 1024 * 1024 + 1), "Upload-Metadata": metadata(b"x")},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "upload_too_large"
    assert response.headers["tus-resumable"] == "1.0.0"


def test_a_body_past_upload_length_is_413_and_keeps_nothing(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo[:100]).headers["location"]
    response = patch(tus_client, worker, location, 0, photo[:101])
    assert response.status_code == 413
    assert offset_of(tus_client, worker, location) == 0


def test_the_same_file_from_a_second_device_completes_without_bytes(tus_client: Client, photo: bytes) -> None:
    first = login(tus_client, "demo-worker-1", device="tablet-a")
    assert upload(tus_client, first, photo).status_code == 204
    for auth in (login(tus_client, "demo-worker-1", device="tablet-b"), login(tus_client, "demo-worker-2")):
        created = create(tus_client, auth, photo)
        assert created.status_code == 201, created.text
        assert created.headers["upload-offset"] == str(len(photo))
        assert offset_of(tus_client, auth, created.headers["location"]) == len(photo)
    assert sum(1 for row in audit_rows(tus_client, "photo.create")) == 1


def test_a_stored_sha256_announced_with_another_length_is_refused_and_creates_nothing(
    tus_client: Client, photo: bytes
) -> None:
    # Content addressing answers "complete" without a byte. A file of another length cannot have the
    # stored photo's SHA-256: the device's metadata is wrong, and "complete" would tell its tus client
    # (which compares Upload-Offset with its own file's size) that its file is stored when it is not.
    assert upload(tus_client, login(tus_client, "demo-worker-1"), photo).status_code == 204
    other = login(tus_client, "demo-worker-2")
    before = upload_count(tus_client)
    longer, shorter = photo + b"\0", photo[:-1]
    asked = [create(tus_client, other, data, sha=sha256(photo)) for data in (longer, shorter)]
    asked.append(  # a creation-with-upload: refused before a byte of its body is kept
        tus_client.post(
            UPLOADS,
            content=longer,
            headers=TUS
            | other
            | {
                "Upload-Length": str(len(longer)),
                "Upload-Metadata": metadata(sha=sha256(photo)),
                "Content-Type": "application/offset+octet-stream",
            },
        )
    )
    for answer in asked:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "sha256_length_mismatch"
        assert answer.headers["tus-resumable"] == "1.0.0"
        assert "location" not in answer.headers
    assert upload_count(tus_client) == before
    assert staged(tus_client) == []
    assert create(tus_client, other, photo).headers["upload-offset"] == str(len(photo))  # the true length


def test_a_patch_to_a_complete_upload_is_answered_with_its_length(tus_client: Client, photo: bytes) -> None:
    # A client that ignores the creation's Upload-Offset (tuspy, tus-java-client: both PATCH at 0 after a
    # plain creation) must hear "done", not a 409 it gives up on.
    assert upload(tus_client, login(tus_client, "demo-worker-1", device="tablet-a"), photo).status_code == 204
    second = login(tus_client, "demo-worker-1", device="tablet-b")
    location = create(tus_client, second, photo).headers["location"]
    for offset, body in ((0, photo), (0, photo[:1000]), (len(photo), b""), (len(photo) + 5, b"")):
        response = patch(tus_client, second, location, offset, body)
        assert response.status_code == 204, response.text
        assert response.headers["upload-offset"] == str(len(photo))
        assert response.headers["tus-resumable"] == "1.0.0"
    too_long = patch(tus_client, second, location, 0, photo + b"x")
    assert too_long.status_code == 413, too_long.text
    assert staged(tus_client) == []
    assert len(audit_rows(tus_client, "photo.create")) == 1


def test_creation_with_upload_sends_the_first_bytes_with_the_post(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    with_body = {
        "Upload-Length": str(len(photo)),
        "Upload-Metadata": metadata(photo),
        "Content-Type": "application/offset+octet-stream",
    }
    created = tus_client.post(UPLOADS, content=photo[:20_000], headers=TUS | worker | with_body)
    assert created.status_code == 201, created.text
    assert created.headers["upload-offset"] == "20000"
    other = login(tus_client, "demo-worker-2")
    whole = tus_client.post(UPLOADS, content=photo, headers=TUS | other | with_body)
    assert whole.status_code == 201, whole.text
    assert whole.headers["upload-offset"] == str(len(photo))


def test_a_post_with_x_http_method_override_is_taken_as_that_method(tus_client: Client, photo: bytes) -> None:
    # tus core: clients behind proxies that only pass GET and POST (tus-js-client's overridePatchMethod)
    # send POST with the real method in X-HTTP-Method-Override, which the server MUST honour.
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]

    def post_as(method: str, **headers: str) -> Any:
        override = {"X-HTTP-Method-Override": method}
        return tus_client.post(location, content=photo[:1000], headers=TUS | worker | override | headers)

    sent = post_as("PATCH", **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert sent.status_code == 204, sent.text
    assert sent.headers["upload-offset"] == "1000"
    asked = post_as("HEAD")
    assert asked.status_code == 200, asked.text
    assert asked.headers["upload-offset"] == "1000"
    assert post_as("DELETE").status_code == 204
    assert tus_client.head(location, headers=TUS | worker).status_code == 404
    assert tus_client.post(location, headers=TUS | worker).status_code == 405  # no override: no POST here


@pytest.mark.parametrize(
    ("path", "is_tus"),
    [
        ("/api/v1/uploads", True),
        ("/api/v1/uploads/", True),
        ("/api/v1/uploads/0b0e7a4c-2f43-4c1a-9d44-5f3f1a3c9e11", True),
        ("/api/v1/uploads/direct", False),
        ("/api/v1/uploads/direct/x/complete", False),
        ("/api/v1/uploadsx", False),
        ("/api/v1/visits/x", False),
    ],
)
def test_the_method_override_applies_to_the_tus_paths_only(path: str, is_tus: bool) -> None:
    assert tus_edge.is_tus_path(path) is is_tus


def upload_count(client: Client) -> int:
    async def count(session: Any) -> int:
        return int((await session.execute(select(func.count()).select_from(Upload))).scalar_one())

    return int(run_db(client, count))


def test_a_failed_creation_with_upload_leaves_no_upload_behind(tus_client: Client, photo: bytes) -> None:
    # The error answer carries no Location, and a tus client retries with a new POST: whatever this
    # creation made must not stay behind, one unreachable upload per retry.
    worker = login(tus_client, "demo-worker-1")
    with_body = {
        "Upload-Length": str(len(photo)),
        "Upload-Metadata": metadata(photo),
        "Content-Type": "application/offset+octet-stream",
    }

    def sha1(data: bytes) -> str:
        return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()

    def chunked(data: bytes) -> Any:
        yield from (data[i : i + 50_000] for i in range(0, len(data), 50_000))

    cases = [
        (photo[:1000], {"Upload-Checksum": "md5 AAAA"}, 400, "checksum_algorithm_unsupported"),
        (photo + b"x", {}, 413, "past_upload_length"),  # Content-Length says so before a byte is read
        (chunked(photo + b"x"), {}, 413, "past_upload_length"),  # no Content-Length: found while reading
        (photo[:1000], {"Upload-Checksum": sha1(b"other")}, 460, "checksum_mismatch"),
    ]
    for body, headers, status, code in cases:
        response = tus_client.post(UPLOADS, content=body, headers=TUS | worker | with_body | headers)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert "location" not in response.headers
        assert upload_count(tus_client) == 0, code
    assert staged(tus_client) == []


def test_termination_removes_the_upload_and_its_bytes(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:3000]).status_code == 204
    assert staged(tus_client)
    response = tus_client.delete(location, headers=TUS | worker)
    assert response.status_code == 204
    assert tus_client.head(location, headers=TUS | worker).status_code == 404
    assert staged(tus_client) == []


def test_an_upload_belongs_to_its_creator(client: Client, photo: bytes) -> None:
    owner = login(client, "demo-worker-1")
    other = login(client, "demo-worker-2")
    location = create(client, owner, photo).headers["location"]
    assert client.head(location, headers=TUS | other).status_code == 404
    assert patch(client, other, location, 0, photo[:10]).status_code == 404
    assert client.delete(location, headers=TUS | other).status_code == 404
    assert client.post(UPLOADS, headers=TUS).status_code == 401


def test_protocol_errors_are_json_with_codes(client: Client, photo: bytes) -> None:
    worker = login(client, "demo-worker-1")
    no_version = client.post(UPLOADS, headers=worker | {"Upload-Length": "10"})
    assert no_version.status_code == 412
    assert no_version.headers["tus-version"] == "1.0.0"
    assert no_version.json()["error"]["code"] == "tus_version_unsupported"
    cases = [
        ({"Upload-Length": "10"}, 422, "sha256_required"),
        ({"Upload-Length": "ten", "Upload-Metadata": metadata(b"x")}, 422, "bad_upload_length"),
        ({"Upload-Metadata": metadata(b"x")}, 422, "upload_length_required"),
        ({"Upload-Length": "10", "Upload-Metadata": "sha256 !!!"}, 422, "bad_metadata"),
        ({"Upload-Length": "0", "Upload-Metadata": metadata(b"")}, 422, "empty_upload"),
    ]
    for headers, status, code in cases:
        response = client.post(UPLOADS, headers=TUS | worker | headers)
        assert response.status_code == status, (headers, response.text)
        assert response.json()["error"]["code"] == code
    location = create(client, worker, photo).headers["location"]
    wrong_type = client.patch(location, content=b"x", headers=TUS | worker | {"Upload-Offset": "0"})
    assert wrong_type.status_code == 415
    no_offset = client.patch(
        location, content=b"x", headers=TUS | worker | {"Content-Type": "application/offset+octet-stream"}
    )
    assert no_offset.status_code == 422
    assert no_offset.json()["error"]["code"] == "bad_upload_offset"


def test_every_tus_answer_carries_tus_resumable(client: Client, photo: bytes) -> None:
    # Also the answers Litestar gives before the controller runs: a path that is no upload id, a method
    # the path does not take.
    worker = login(client, "demo-worker-1")
    nobody = f"{UPLOADS}/00000000-0000-0000-0000-000000000000"
    answers = [
        client.head(f"{UPLOADS}/not-a-uuid", headers=TUS | worker),
        client.patch(f"{UPLOADS}/not-a-uuid", headers=TUS | worker),
        client.get(nobody, headers=TUS | worker),
        client.put(UPLOADS, headers=TUS | worker),
        client.head(nobody, headers=TUS),
        client.head(nobody, headers=worker),
        client.head(nobody, headers=TUS | worker),
        client.options(nobody),
    ]
    assert [a.status_code for a in answers] == [404, 404, 405, 405, 401, 412, 404, 204]
    for answer in answers:
        assert answer.headers.get("tus-resumable") == "1.0.0", (answer.request.method, answer.request.url)


def test_created_and_head_answers_have_no_body(client: Client, photo: bytes) -> None:
    worker = login(client, "demo-worker-1")
    created = create(client, worker, photo)
    head = client.head(created.headers["location"], headers=TUS | worker)
    for answer in (created, head):
        assert answer.headers["content-length"] == "0"
        assert "content-type" not in answer.headers
    assert created.content == b""


def test_options_on_an_upload_lists_the_methods_it_takes(client: Client, photo: bytes) -> None:
    worker = login(client, "demo-worker-1")
    location = create(client, worker, photo).headers["location"]
    answer = client.options(location)
    assert answer.status_code == 204
    assert answer.headers["allow"] == "DELETE, HEAD, OPTIONS, PATCH"
    assert answer.headers["tus-resumable"] == "1.0.0"


def test_expired_uploads_are_refused_and_cleaned_up(tus_client: Client, photo: bytes) -> None:
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:4000]).status_code == 204
    assert staged(tus_client)
    state = tus_client.app.state
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    removed = tus_client.blocking_portal.call(uploads.cleanup, state.db, state.store, later)
    assert removed == 1
    assert staged(tus_client) == []
    assert tus_client.head(location, headers=TUS | worker).status_code == 404
    assert [r.entity_id for r in audit_rows(tus_client, "upload.expire")] == [location.rsplit("/", 1)[1]]


def test_an_upload_that_can_no_longer_go_on_answers_404_so_every_tus_client_starts_again(
    tus_client: Client, photo: bytes
) -> None:
    """Expired (before the cleanup removed it) or its staged bytes lost: 404 with the reason's code, not 410,
    which tus-java-client (under tus-android-client) takes as final instead of starting a new upload."""
    worker = login(tus_client, "demo-worker-1")
    expiring = create(tus_client, worker, photo).headers["location"]
    losing = create(tus_client, worker, photo).headers["location"]
    for location in (expiring, losing):
        assert patch(tus_client, worker, location, 0, photo[:4000]).status_code == 204

    async def expire(session: Any) -> None:
        upload_id = uuid.UUID(expiring.rsplit("/", 1)[1])
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await session.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=past))

    run_db(tus_client, expire)
    staging_id = uuid.UUID(losing.rsplit("/", 1)[1]).hex
    tus_client.blocking_portal.call(tus_client.app.state.store.stage_discard, staging_id)
    lost = patch(tus_client, worker, losing, 4000, photo[4000:])  # found on appending, or on joining (S3)
    assert (lost.status_code, lost.json()["error"]["code"]) == (404, "staging_lost")
    for location, code in ((expiring, "upload_expired"), (losing, "staging_lost")):
        assert tus_client.head(location, headers=TUS | worker).status_code == 404
        again = patch(tus_client, worker, location, 4000, photo[4000:8000])
        assert (again.status_code, again.json()["error"]["code"]) == (404, code)
        assert again.headers["tus-resumable"] == "1.0.0"
    fresh = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, fresh, 0, photo).status_code == 204


def test_a_patch_that_commits_as_its_upload_expires_keeps_its_bytes(tus_client: Client, photo: bytes) -> None:
    # The cleanup lists the expired uploads, then removes them one by one; a PATCH that commits in
    # between moves its upload's expiry, and the upload must then keep its staged bytes, not only its row.
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    upload_id = uuid.UUID(location.rsplit("/", 1)[1])
    assert patch(tus_client, worker, location, 0, photo[:4000]).status_code == 204

    async def expiry(session: AsyncSession) -> dt.datetime:
        return (await session.get_one(Upload, upload_id)).expires_at

    cutoff = run_db(tus_client, expiry)  # the moment this upload expires
    state = tus_client.app.state
    assert tus_client.blocking_portal.call(uploads.expired, state.db, cutoff) == [upload_id]
    assert patch(tus_client, worker, location, 4000, photo[4000:8000]).status_code == 204  # just in time
    removed = tus_client.blocking_portal.call(
        uploads.remove_if_expired, state.db, state.store, upload_id, cutoff
    )
    assert removed is False
    assert patch(tus_client, worker, location, 8000, photo[8000:]).status_code == 204
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200


def test_the_cleanup_command_removes_expired_uploads(
    client: Client, app_settings: Settings, photo: bytes
) -> None:
    worker = login(client, "demo-worker-1")
    location = create(client, worker, photo).headers["location"]
    assert patch(client, worker, location, 0, photo[:4000]).status_code == 204

    async def expire(session: Any) -> None:
        await session.execute(
            update(Upload).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    run_db(client, expire)
    env = {**os.environ} | {
        "FIVESTEP_DATABASE_URL": app_settings.database_url,
        "FIVESTEP_BLOB_STORE": app_settings.blob_store,
        "FIVESTEP_SECRET_KEY": app_settings.secret_key,
        "FIVESTEP_VAR_DIR": app_settings.var_dir,
    }
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "cleanup-uploads"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "removed 1 expired uploads"
    assert staged(client) == []
    assert client.head(location, headers=TUS | worker).status_code == 404


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite serialises the writes
@pytest.mark.parametrize("store_kind", ["local"])
def test_the_same_photo_finished_through_two_uploads_at_once_stores_it_once(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two tablets send the same photo and both finish together: each finds no photo row, adds one, and
    # the second's insert conflicts. The loser must keep the winner's photo and answer 204, not 500.
    real = photos._complete
    arrived: list[anyio.Event] = []

    async def after_both(session: Any, actor: Any, upload_id: uuid.UUID) -> bool:
        arrived.append(anyio.Event())
        if len(arrived) == 2:
            arrived[0].set()
        else:
            with anyio.move_on_after(5):
                await arrived[0].wait()
        return await real(session, actor, upload_id)

    monkeypatch.setattr(photos, "_complete", after_both)
    first, second = login(tus_client, "demo-worker-1"), login(tus_client, "demo-worker-2")
    sent = [(auth, create(tus_client, auth, photo).headers["location"]) for auth in (first, second)]
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda a=auth, loc=loc: answers.append(patch(tus_client, a, loc, 0, photo)))
        for auth, loc in sent
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(arrived) >= 2  # both got past the check for a stored photo before either wrote one
    assert [a.status_code for a in answers] == [204, 204], [a.text for a in answers]
    assert [a.headers["upload-offset"] for a in answers] == [str(len(photo))] * 2
    assert len(audit_rows(tus_client, "photo.create")) == 1
    assert len(audit_rows(tus_client, "upload.complete")) == 2
