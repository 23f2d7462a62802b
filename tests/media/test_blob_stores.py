"""One contract suite run against both blob stores: real files and a real S3 API over HTTP."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from media.stores import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    StagingLost,
    open_store,
    signing,
)
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.anyio

SECRET = b"test-signing-secret"
BASE_URL = "http://api.test"
KEY = "sha256/ab/cd/abcdef0123456789"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """A fresh store per test: a new folder, or a new bucket on the shared moto server."""
    if request.param == "local":
        spec = str(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        spec = server.url(f"test-{uuid.uuid4().hex[:20]}")
    opened = await open_store(spec, base_url=BASE_URL, secret=SECRET, threads=4, timeout=10.0)
    try:
        yield opened
    finally:
        await opened.close()


def payload(size: int) -> bytes:
    return os.urandom(size)


def xattrs_supported(directory: Path) -> bool:
    """The local store keeps content types in user xattrs, which some filesystems lack."""
    probe = directory / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def closed_port() -> int:
    """A port nothing listens on: bind to get a free one, then release it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100_000])
async def test_put_then_get_returns_same_bytes(store: BlobStore, size: int) -> None:
    data = payload(size)
    stat = await store.put(KEY, data)
    assert stat.key == KEY
    assert stat.size == size
    assert await store.get(KEY) == data


async def test_put_file_streams_large_file(store: BlobStore, tmp_path: Path) -> None:
    data = payload(6 * 1024 * 1024)  # above S3's 5 MiB part size, so minio goes multipart
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    stat = await store.put_file("staging/" + uuid.uuid4().hex, source, content_type="image/jpeg")
    assert stat.size == len(data)
    assert await store.get(stat.key) == data
    assert b"".join([chunk async for chunk in store.iter_chunks(stat.key)]) == data


async def test_stat_reports_size_type_and_utc_time(store: BlobStore, tmp_path: Path) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)  # S3 times have whole-second precision
    put_stat = await store.put(KEY, b"x" * 1234, content_type="image/png")
    stat = await store.stat(KEY)
    assert stat is not None
    assert stat == put_stat
    assert stat.size == 1234
    assert stat.modified.tzinfo is not None
    assert stat.modified.utcoffset() == timedelta(0)
    assert before <= stat.modified <= datetime.now(UTC) + timedelta(seconds=5)
    if isinstance(store, S3BlobStore) or xattrs_supported(tmp_path):
        assert stat.content_type == "image/png"


async def test_stat_of_missing_key_is_none(store: BlobStore) -> None:
    assert await store.stat(KEY) is None


async def test_get_of_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.get(KEY)
    with pytest.raises(BlobNotFound):
        async for _ in store.iter_chunks(KEY):
            pass


async def test_prefix_of_a_key_is_not_a_blob(store: BlobStore) -> None:
    await store.put(KEY, b"data")
    assert await store.stat("sha256/ab") is None
    with pytest.raises(BlobNotFound):
        await store.get("sha256/ab")


async def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    await store.put(KEY, b"data")
    await store.delete(KEY)
    assert await store.stat(KEY) is None
    await store.delete(KEY)
    await store.delete("never/written")


async def test_overwrite_replaces_content(store: BlobStore) -> None:
    await store.put(KEY, b"old content that is longer")
    stat = await store.put(KEY, b"new")
    assert stat.size == 3
    assert await store.get(KEY) == b"new"


async def test_readers_during_overwrite_see_old_or_new_never_a_mix(store: BlobStore) -> None:
    old, new = b"a" * 300_000, b"b" * 300_000
    await store.put(KEY, old)
    seen: set[bytes] = set()

    async def read_repeatedly() -> None:
        for _ in range(10):
            seen.add(await store.get(KEY))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_repeatedly)
        for _ in range(5):
            await store.put(KEY, new)
            await store.put(KEY, old)
    assert seen <= {old, new}


async def test_concurrent_puts_all_land(store: BlobStore) -> None:
    blobs = {f"staging/{uuid.uuid4()}": payload(10_000) for _ in range(24)}
    async with anyio.create_task_group() as tg:
        for key, data in blobs.items():
            tg.start_soon(store.put, key, data)
    for key, data in blobs.items():
        assert await store.get(key) == data


@pytest.mark.parametrize("chunk_size", [1000, 1 << 20])
async def test_iter_chunks_returns_exact_bytes(store: BlobStore, chunk_size: int) -> None:
    data = payload(10_001)
    await store.put(KEY, data)
    chunks = [chunk async for chunk in store.iter_chunks(KEY, chunk_size)]
    assert b"".join(chunks) == data
    assert all(len(chunk) <= chunk_size for chunk in chunks)


async def test_iter_chunks_can_stop_early(store: BlobStore) -> None:
    await store.put(KEY, payload(50_000))
    chunks = store.iter_chunks(KEY, 1000)
    assert isinstance(chunks, AsyncGenerator)  # the protocol promises AsyncIterator; both stores give more
    first = await chunks.__anext__()
    await chunks.aclose()  # must release the file / connection without reading on
    assert len(first) == 1000
    assert len(await store.get(KEY)) == 50_000


# -- key validation ---------------------------------------------------------------

BAD_KEYS = [
    "",
    "/abs/path",
    "a/../b",
    "..",
    "a/./b",
    ".tmp/x",
    "a//b",
    "trailing/",
    "back\\slash",
    "space in/key",
    "ünïcode",
    "a?b",
    "x" * 256,  # one segment beyond NAME_MAX
    "/".join(["x" * 200] * 3),  # 602 characters
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_rejected(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"data")
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.stat(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await store.signed_url(key, expires_in=60)
    with pytest.raises(ValueError):
        async for _ in store.iter_chunks(key):
            pass


async def test_longest_allowed_key_works(store: BlobStore) -> None:
    key = "/".join(["x" * 255, "y" * 254, "z"])
    assert len(key) == 512
    await store.put(key, b"data")
    assert await store.get(key) == b"data"


# -- signed URLs ------------------------------------------------------------------


async def test_signed_url(store: BlobStore) -> None:
    data = payload(4096)
    await store.put(KEY, data)
    url = await store.signed_url(KEY, expires_in=120)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if isinstance(store, S3BlobStore):
        # moto does not check signatures, so check the URL carries one as well as fetching it.
        assert query["X-Amz-Expires"] == "120"
        assert len(query["X-Amz-Signature"]) == 64
        assert await anyio.to_thread.run_sync(fetch, url) == data
    else:
        assert url.startswith(f"{BASE_URL}/api/v1/blobs/{KEY}?")
        expires, signature = int(query["expires"]), query["signature"]
        assert time.time() + 110 < expires <= time.time() + 120
        assert signing.verify(SECRET, KEY, expires, signature)
        tampered = ("0" if signature[0] != "0" else "1") + signature[1:]
        assert not signing.verify(SECRET, KEY, expires, tampered)
        assert not signing.verify(SECRET, "sha256/ab/cd/other", expires, signature)
        assert not signing.verify(SECRET, KEY, expires + 1, signature)
        assert not signing.verify(b"other-secret", KEY, expires, signature)
        assert not signing.verify(SECRET, KEY, expires, signature, now=expires + 1)


async def test_signed_url_with_download_filename(store: BlobStore) -> None:
    await store.put(KEY, b"photo")
    url = await store.signed_url(KEY, expires_in=60, filename="入户照片 1.jpg")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if isinstance(store, S3BlobStore):
        disposition = query["response-content-disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=UTF-8''" + urllib.parse.quote("入户照片 1.jpg", safe="") in disposition
    else:
        assert query["filename"] == "入户照片 1.jpg"


async def test_signed_url_refuses_bad_lifetimes(store: BlobStore) -> None:
    for expires_in in (0, -5, 8 * 24 * 3600):
        with pytest.raises(ValueError):
            await store.signed_url(KEY, expires_in=expires_in)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


def test_verify_rejects_non_hex_signature() -> None:
    expires = int(time.time()) + 60
    assert not signing.verify(SECRET, KEY, expires, "签名")
    assert not signing.verify(SECRET, KEY, expires, "")


# -- health -----------------------------------------------------------------------


async def test_check_passes_on_live_store(store: BlobStore) -> None:
    await store.check()


async def test_check_fails_fast_for_s3_on_closed_port() -> None:
    url = f"s3://testing:testing@127.0.0.1:{closed_port()}/bucket?secure=false&region=us-east-1"
    dead = S3BlobStore.from_url(url, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(BlobStoreUnavailable):
            await dead.check()
        with pytest.raises(BlobStoreUnavailable):
            await dead.get(KEY)
    finally:
        await dead.close()
    assert time.monotonic() - started < 3


async def test_check_fails_when_s3_bucket_is_missing(s3_server: S3Server) -> None:
    missing = S3BlobStore.from_url(s3_server.url("never-created-bucket"), timeout=5.0)
    try:
        with pytest.raises(BlobStoreUnavailable):
            await missing.check()
    finally:
        await missing.close()


async def test_writing_into_a_missing_s3_bucket_is_store_unavailable(s3_server: S3Server) -> None:
    missing = S3BlobStore.from_url(s3_server.url("never-created-bucket"), timeout=5.0)
    try:
        with pytest.raises(BlobStoreUnavailable):
            await missing.put(KEY, b"evidence")
    finally:
        await missing.close()


async def test_check_fails_when_local_root_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "not-a-dir"
    root.write_bytes(b"")
    broken = LocalBlobStore(root, base_url=BASE_URL, secret=SECRET)
    try:
        with pytest.raises(BlobStoreUnavailable):
            await broken.check()
    finally:
        await broken.close()


# -- local specifics --------------------------------------------------------------


async def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    local = await open_store(str(root), base_url=BASE_URL, secret=SECRET)
    source = tmp_path / "src.bin"
    source.write_bytes(payload(200_000))
    try:
        await local.put(KEY, b"one")
        await local.put(KEY, b"two")
        await local.put_file("staging/file", source)
        await local.check()
        with pytest.raises(FileNotFoundError):
            await local.put_file("staging/missing", tmp_path / "does-not-exist")
        await local.delete(KEY)
    finally:
        await local.close()
    assert list((root / ".tmp").iterdir()) == []
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == ["staging/file"]


async def test_open_store_creates_missing_local_folder(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "er" / "blobs"
    local = await open_store(str(root), base_url=BASE_URL, secret=SECRET)
    try:
        assert isinstance(local, LocalBlobStore)
        assert root.is_dir()
        await local.check()
    finally:
        await local.close()


async def test_open_store_creates_s3_bucket_once(s3_server: S3Server) -> None:
    spec = s3_server.url(f"test-{uuid.uuid4().hex[:20]}")
    first = await open_store(spec, base_url=BASE_URL, secret=SECRET)
    try:
        await first.put(KEY, b"kept")
        second = await open_store(spec, base_url=BASE_URL, secret=SECRET)  # bucket exists now
        try:
            assert await second.get(KEY) == b"kept"
        finally:
            await second.close()
    finally:
        await first.close()


def test_from_url_parses_credentials_and_options() -> None:
    store = S3BlobStore.from_url(
        "s3://AK:se%2Fcr%2Bet@minio.internal:9000/photos?secure=false&region=cn-north-1"
    )
    assert store.endpoint == "minio.internal:9000"
    assert store.bucket == "photos"
    anyio.run(store.close)


@pytest.mark.parametrize(
    "url",
    [
        "http://AK:SK@host/bucket",
        "s3://host/bucket",
        "s3://AK:SK@host/",
        "s3://AK:SK@host/a/b",
        "s3://AK:SK@host/bucket?secure=maybe",
    ],
)
def test_from_url_rejects_malformed(url: str) -> None:
    with pytest.raises(ValueError):
        S3BlobStore.from_url(url)


async def test_presigned_urls_use_public_endpoint_without_network() -> None:
    # The internal endpoint is unreachable on purpose: presigning must not touch it.
    url = f"s3://AK:SK@127.0.0.1:{closed_port()}/photos?secure=false"
    s3 = S3BlobStore.from_url(url, public_endpoint="https://files.example.org")
    try:
        signed = await s3.signed_url(KEY, expires_in=300)
    finally:
        await s3.close()
    assert signed.startswith(f"https://files.example.org/photos/{KEY}?")
    assert "X-Amz-Expires=300" in signed


# -- staging of resumable uploads ------------------------------------------------------


async def stage(store: BlobStore, upload_id: str, offset: int, data: bytes) -> None:
    await store.stage_append(upload_id, offset, io.BytesIO(data), len(data))


async def exported(store: BlobStore, upload_id: str, length: int, tmp_path: Path) -> bytes:
    target = tmp_path / f"export-{uuid.uuid4().hex}"
    await store.stage_export(upload_id, length, target)
    return target.read_bytes()


async def test_staged_pieces_export_as_one_file(store: BlobStore, tmp_path: Path) -> None:
    data = payload(300_000)
    upload_id = uuid.uuid4().hex
    for start in range(0, len(data), 65_536):
        await stage(store, upload_id, start, data[start : start + 65_536])
    assert await exported(store, upload_id, len(data), tmp_path) == data


async def test_staging_takes_only_the_given_size_from_where_the_source_stands(
    store: BlobStore, tmp_path: Path
) -> None:
    # A request body spooled to a file: the store must stop at `size`, not read on to the end.
    source = io.BytesIO(b"already-read" + b"body" * 1000 + b"trailing bytes of something else")
    source.seek(len(b"already-read"))
    upload_id = uuid.uuid4().hex
    await store.stage_append(upload_id, 0, source, 4000)
    assert await exported(store, upload_id, 4000, tmp_path) == b"body" * 1000


async def test_staging_again_at_an_offset_replaces_what_lay_beyond_it(
    store: BlobStore, tmp_path: Path
) -> None:
    upload_id = uuid.uuid4().hex
    await stage(store, upload_id, 0, b"a" * 100)
    await stage(store, upload_id, 100, b"stale bytes a failed attempt left")
    await stage(store, upload_id, 100, b"b" * 50)
    await stage(store, upload_id, 150, b"c" * 10)
    assert await exported(store, upload_id, 160, tmp_path) == b"a" * 100 + b"b" * 50 + b"c" * 10


async def test_exporting_more_than_was_staged_is_staging_lost(store: BlobStore, tmp_path: Path) -> None:
    upload_id = uuid.uuid4().hex
    await stage(store, upload_id, 0, b"x" * 10)
    with pytest.raises(StagingLost):
        await exported(store, upload_id, 11, tmp_path)
    with pytest.raises(StagingLost):
        await exported(store, uuid.uuid4().hex, 1, tmp_path)


async def test_discard_removes_staged_bytes_and_is_idempotent(store: BlobStore, tmp_path: Path) -> None:
    upload_id = uuid.uuid4().hex
    await stage(store, upload_id, 0, b"x" * 10)
    await store.put(KEY, b"a blob that is not staged")
    await store.stage_discard(upload_id)
    await store.stage_discard(upload_id)
    await store.stage_discard(uuid.uuid4().hex)
    with pytest.raises(StagingLost):
        await exported(store, upload_id, 10, tmp_path)
    assert await store.get(KEY) == b"a blob that is not staged"


async def test_staging_is_outside_the_key_space(store: BlobStore) -> None:
    upload_id = uuid.uuid4().hex
    await stage(store, upload_id, 0, b"x" * 10)
    for key in (upload_id, f"uploads/{upload_id}", f"uploads/{upload_id}/0000000000000000"):
        assert await store.stat(key) is None


@pytest.mark.parametrize("upload_id", ["", "../escape", "a/b", "x" * 65, ".hidden"])
async def test_bad_upload_ids_are_refused(store: BlobStore, upload_id: str) -> None:
    with pytest.raises(ValueError):
        await stage(store, upload_id, 0, b"x")


def test_a_server_on_the_local_folder_never_loads_the_s3_client(tmp_path: Path) -> None:
    """About 11 MB of every server process (the MinIO client, its HTTP stack) that the embedded default
    never uses: the photo ingest's memory budget is 200 MB. Checked in a fresh interpreter, since this
    one has loaded the S3 store for other tests."""
    script = f"""
import asyncio, sys
from media.stores import open_store
import server.app, server.cli
store = asyncio.run(open_store({str(tmp_path / "blobs")!r}, base_url="http://x", secret=b"k" * 32))
print(type(store).__name__, "minio" in sys.modules)
"""
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["LocalBlobStore", "False"], found.stderr
