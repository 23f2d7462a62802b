"""A real server on a loopback port, driven by tuspy (a tus client we did not write) and by a raw socket
that drops the connection in the middle of a request body. Both databases, both blob stores."""

from __future__ import annotations

import io
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from tusclient.client import TusClient

from schemas.config import Settings
from server.app import create_app
from tests.images import jpeg_with_gps
from tests.tus import TUS, metadata, sha256


@pytest.fixture
def live(tus_settings: Settings) -> Iterator[str]:
    """The app served by uvicorn in a thread; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(tus_settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return jpeg_with_gps(seed=21, size=(800, 600))


def bearer(base: str, username: str, device: str = "tablet-1") -> dict[str, str]:
    response = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": username, "password": "demo", "device_id": device}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def tus_metadata(data: bytes) -> dict[str, str]:
    return {"sha256": sha256(data), "filename": "photo.jpg", "content_type": "image/jpeg"}


def test_tuspy_upload_dropped_at_random_points_resumes_until_complete(
    live: str, photo: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo)
    auth = bearer(live, "demo-worker-1")
    client = TusClient(f"{live}/api/v1/uploads", headers=auth)
    url = client.uploader(str(path), metadata=tus_metadata(photo)).create_url()
    rng = random.Random(3)
    resumes = 0
    while True:
        # Each pass is a new app session after the link dropped: a fresh uploader asks the server (HEAD)
        # where to resume, sends one randomly sized chunk with a checksum, and is thrown away.
        uploader = client.uploader(
            str(path), url=url, chunk_size=rng.randint(1, 40_000), upload_checksum=True
        )
        if uploader.offset >= len(photo):
            break
        uploader.upload_chunk()  # type: ignore[no-untyped-call]  # tuspy leaves it unannotated
        resumes += 1
    assert resumes >= 5
    got = httpx.get(f"{live}/api/v1/photos/{sha256(photo)}", headers=auth)
    assert got.status_code == 200, got.text
    assert (got.json()["width"], got.json()["height"]) == (800, 600)


def test_tuspy_from_a_second_device_finds_the_photo_already_stored(live: str, photo: bytes) -> None:
    # What an app does, with tuspy's defaults: create and send in one call. tuspy ignores the creation's
    # Upload-Offset and PATCHes the whole file at 0; the server answers that it has it all.
    uploaders = []
    for device in ("tablet-a", "tablet-b"):
        client = TusClient(f"{live}/api/v1/uploads", headers=bearer(live, "demo-worker-1", device))
        uploader = client.uploader(file_stream=io.BytesIO(photo), metadata=tus_metadata(photo))
        uploader.upload()
        assert uploader.offset == len(photo)
        uploaders.append(uploader)
    auth = bearer(live, "demo-worker-1")
    second = httpx.head(uploaders[1].url, headers=TUS | auth)  # type: ignore[arg-type]  # tuspy: `url = None`
    assert second.headers["upload-offset"] == str(len(photo))
    assert "upload-expires" not in second.headers  # created complete: no byte was ever awaited
    assert httpx.get(f"{live}/api/v1/photos/{sha256(photo)}", headers=auth).status_code == 200


def send_cut_short(
    base: str, location: str, auth: dict[str, str], offset: int, body: bytes, announced: int, **extra: str
) -> None:
    """A PATCH announcing ``announced`` bytes that sends only ``body`` and then loses the connection."""
    parts = urllib.parse.urlsplit(base)
    headers = (
        TUS
        | auth
        | extra
        | {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Content-Length": str(announced),
            "Host": parts.netloc,
        }
    )
    head = f"PATCH {location} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + body)
        # Give a busy server time to start the request and read what arrived: a connection that dies
        # before the app has read a byte leaves nothing to keep, which is right but not what this tests.
        time.sleep(1.0)


def offset_after(base: str, location: str, auth: dict[str, str], expected: int) -> int:
    deadline = time.monotonic() + 15
    while True:
        offset = int(httpx.head(f"{base}{location}", headers=TUS | auth).headers["upload-offset"])
        if offset == expected or time.monotonic() > deadline:
            return offset
        time.sleep(0.05)


def test_a_connection_lost_mid_body_keeps_the_bytes_that_arrived(live: str, photo: bytes) -> None:
    auth = bearer(live, "demo-worker-1")
    created = httpx.post(
        f"{live}/api/v1/uploads",
        headers=TUS | auth | {"Upload-Length": str(len(photo)), "Upload-Metadata": metadata(photo)},
    )
    location = created.headers["location"]
    send_cut_short(live, location, auth, 0, photo[:30_000], announced=len(photo))
    assert offset_after(live, location, auth, 30_000) == 30_000
    # With a checksum the cut-short body cannot be verified, so none of it counts.
    send_cut_short(
        live,
        location,
        auth,
        30_000,
        photo[30_000:40_000],
        announced=50_000,
        **{"Upload-Checksum": "sha1 " + "A" * 27 + "="},
    )
    time.sleep(0.3)
    assert offset_after(live, location, auth, 30_000) == 30_000
    rest = httpx.patch(
        f"{live}{location}",
        content=photo[30_000:],
        headers=TUS | auth | {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "30000"},
    )
    assert rest.status_code == 204, rest.text
    assert httpx.get(f"{live}/api/v1/photos/{sha256(photo)}", headers=auth).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("store_kind", ["local"])
def test_a_post_taken_as_head_gets_a_whole_answer(live: str, photo: bytes) -> None:
    # X-HTTP-Method-Override: HEAD on a POST. The server must not treat the exchange as a HEAD itself: a
    # 404's headers announce its JSON body, and a client that sent POST waits for that body.
    auth = bearer(live, "demo-worker-1")
    as_head = TUS | auth | {"X-HTTP-Method-Override": "HEAD"}
    with httpx.Client(base_url=live, timeout=5) as client:
        created = client.post(
            "/api/v1/uploads",
            headers=TUS | auth | {"Upload-Length": str(len(photo)), "Upload-Metadata": metadata(photo)},
        )
        found = client.post(created.headers["location"], headers=as_head)
        assert (found.status_code, found.headers["upload-offset"]) == (200, "0")
        gone = client.post(f"/api/v1/uploads/{'0' * 32}", headers=as_head)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert gone.headers["tus-resumable"] == "1.0.0"
