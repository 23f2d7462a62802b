"""Raw-HTTP tus helpers for the tests (the tuspy client is used where a real client matters)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from schemas.config import Settings
from tests.apps import started
from tests.fixtures.s3 import S3Server
from tests.helpers import Client

TUS = {"Tus-Resumable": "1.0.0"}
UPLOADS = "/api/v1/uploads"
PATCH_TYPE = {"Content-Type": "application/offset+octet-stream"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata(data: bytes | None = None, *, sha: str | None = None, **extra: str) -> str:
    values = {
        "sha256": sha or sha256(data or b""),
        "filename": "photo.jpg",
        "content_type": "image/jpeg",
    } | extra
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(
    client: Client, auth: dict[str, str], data: bytes, *, sha: str | None = None, **headers: str
) -> httpx.Response:
    return client.post(
        UPLOADS,
        headers=TUS
        | auth
        | {"Upload-Length": str(len(data)), "Upload-Metadata": metadata(data, sha=sha)}
        | headers,
    )


def patch(
    client: Client, auth: dict[str, str], location: str, offset: int, chunk: bytes, **headers: str
) -> httpx.Response:
    return client.patch(
        location, content=chunk, headers=TUS | auth | PATCH_TYPE | {"Upload-Offset": str(offset)} | headers
    )


def offset_of(client: Client, auth: dict[str, str], location: str) -> int:
    response = client.head(location, headers=TUS | auth)
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


def upload(client: Client, auth: dict[str, str], data: bytes, chunk: int = 65_536) -> httpx.Response:
    """Create and send everything; the last response (the one that finishes it)."""
    created = create(client, auth, data)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    offset = int(created.headers["upload-offset"])
    response = created
    while offset < len(data):
        response = patch(client, auth, location, offset, data[offset : offset + chunk])
        if response.status_code != 204:
            return response
        offset = int(response.headers["upload-offset"])
    return response


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tus_settings(app_settings: Settings, store_kind: str, request: pytest.FixtureRequest) -> Settings:
    """The usual test settings, on the local store or on a fresh bucket of the moto S3 server."""
    if store_kind == "local":
        return app_settings
    server: S3Server = request.getfixturevalue("s3_server")
    return msgspec.structs.replace(app_settings, blob_store=server.url(f"t-{uuid.uuid4().hex[:20]}"))


@pytest.fixture
def tus_client(tus_settings: Settings) -> Iterator[Client]:
    with started(tus_settings) as test_client:
        yield test_client


def stored_keys(client: Client) -> list[str]:
    """Every blob key and staged piece in the app's store (local folder or S3 bucket)."""
    store = client.app.state.store
    if hasattr(store, "root"):
        root: Path = store.root
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
        )

    def listing() -> list[str]:
        return sorted(str(o.object_name) for o in store._client.list_objects(store.bucket, recursive=True))

    return listing()
