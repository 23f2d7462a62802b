"""One request processes a fully received upload at a time: a HEAD that arrives while the last PATCH's
photo is still being processed (a tus client whose PATCH timed out) waits for it instead of decoding the
photo again; a claim left by a failed or dead request does not block the upload. Both databases, both
stores, paired."""

from __future__ import annotations

import datetime as dt
import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from sqlalchemy import update

from media.formats import ImageRejected
from media.pipeline import DEFAULT_MAX_PIXELS, ProcessedImage
from media.stores import BlobStoreUnavailable
from server.db.models import Upload
from server.services import photos, uploads
from tests.helpers import Client, login, run_db
from tests.images import jpeg_with_gps
from tests.tus import TUS, create, offset_of, patch, sha256, stored_keys


@pytest.fixture
def store_kind(database_url: str) -> str:
    """Pairwise (SQLite with the local folder, PostgreSQL with S3): claims are database rows; staging on
    every store against every database is crossed in test_uploads.py."""
    return "local" if database_url.startswith("sqlite") else "s3"


class SlowIngest:
    """The real ingest, counted, and held for a while so that other requests arrive meanwhile."""

    def __init__(self, hold: float, failing: int = 0, error: Exception | None = None) -> None:
        self.calls, self.hold, self.failing = 0, hold, failing
        self.started = threading.Event()  # set once a request is past its claim and processing
        self.error = error or BlobStoreUnavailable("the store went away mid-ingest")
        self.real = photos.ingest_file

    def __call__(
        self, path: Path, expected_sha256: str, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> ProcessedImage:
        self.calls += 1
        self.started.set()
        time.sleep(self.hold)
        if self.calls <= self.failing:
            raise self.error
        return self.real(path, expected_sha256, max_pixels)


@pytest.fixture
def photo() -> bytes:
    return jpeg_with_gps(seed=21)


class Stalled(NamedTuple):
    """An upload whose last PATCH failed while processing: every byte staged, no photo yet."""

    ingest: SlowIngest
    worker: dict[str, str]
    location: str


@pytest.fixture
def stalled(tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch) -> Stalled:
    ingest = SlowIngest(hold=0, failing=1)
    monkeypatch.setattr(photos, "ingest_file", ingest)
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    half = len(photo) // 2  # in two pieces: the first is staged, so the last completes a staged upload
    assert patch(tus_client, worker, location, 0, photo[:half]).status_code == 204
    failed = patch(tus_client, worker, location, half, photo[half:])
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "blob_store_unavailable"
    return Stalled(ingest, worker, location)


class InFlight(NamedTuple):
    """A PATCH of the whole photo, sent from a thread, whose ingest is under way (held for 0.8 s)."""

    ingest: SlowIngest
    worker: dict[str, str]
    location: str
    answers: list[Any]
    thread: threading.Thread


@pytest.fixture
def in_flight(tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch) -> InFlight:
    ingest = SlowIngest(hold=0.8)
    monkeypatch.setattr(photos, "ingest_file", ingest)
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(patch(tus_client, worker, location, 0, photo)))
    thread.start()
    # The PATCH is being processed now (a fixed wait was not always enough on a loaded CI machine: the
    # upload then expired before its PATCH claimed it); its client gives up.
    assert ingest.started.wait(30)
    return InFlight(ingest, worker, location, answers, thread)


def test_a_head_during_processing_waits_for_it_and_the_photo_is_decoded_once(
    tus_client: Client, photo: bytes, in_flight: InFlight
) -> None:
    ingest, worker, location, answers, thread = in_flight
    head = tus_client.head(location, headers=TUS | worker)  # where do things stand?
    stored_when_head_answered = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code
    thread.join()
    assert head.status_code == 200
    assert head.headers["upload-offset"] == str(len(photo))
    assert stored_when_head_answered == 200
    assert answers[0].status_code == 204
    assert ingest.calls == 1


def test_a_failed_ingest_releases_the_upload_for_the_next_request(
    tus_client: Client, photo: bytes, stalled: Stalled
) -> None:
    ingest, worker, location = stalled
    started = time.monotonic()
    assert offset_of(tus_client, worker, location) == len(photo)  # HEAD finishes it at once, no waiting
    assert time.monotonic() - started < photos.WAIT_POLL_SECONDS * 10
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert ingest.calls == 2


def test_a_head_that_finishes_a_refused_file_answers_410_like_the_heads_after_it(
    tus_client: Client, stalled: Stalled, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tus-js-client takes any 4xx to a HEAD for "start a new upload"; the sync client asks a 410's code
    # with an empty PATCH. The HEAD that happens to run the deferred ingest answers as every later one.
    def refuse(*args: Any, **kwargs: Any) -> ProcessedImage:
        raise ImageRejected("too_many_pixels", "The image announces too many pixels.")

    monkeypatch.setattr(photos, "ingest_file", refuse)
    _, worker, location = stalled
    for _ in range(2):
        head = tus_client.head(location, headers=TUS | worker)
        assert head.status_code == 410, head.status_code
        assert head.headers["tus-resumable"] == "1.0.0"
    why = patch(tus_client, worker, location, 0, b"")
    assert why.status_code == 410
    assert why.json()["error"]["code"] == "too_many_pixels"


def test_a_claim_left_by_a_dead_process_expires(
    tus_client: Client, photo: bytes, stalled: Stalled, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, worker, location = stalled

    def claimed_at(since: dt.datetime) -> Any:
        async def write(session: Any) -> None:
            await session.execute(update(Upload).values(processing_since=since))

        return write

    # A process claimed it and died: within the lease, a HEAD waits (here: for a short lease to pass).
    monkeypatch.setattr(uploads, "PROCESSING_LEASE", dt.timedelta(seconds=1))
    run_db(tus_client, claimed_at(dt.datetime.now(dt.UTC)))
    started = time.monotonic()
    assert offset_of(tus_client, worker, location) == len(photo)
    assert time.monotonic() - started >= 0.5
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert ingest.calls == 2


def test_a_failure_after_processing_also_releases_the_upload(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = photos._add_photo
    failures: list[int] = []

    def add_once_failing(*args: Any) -> None:
        if not failures:
            failures.append(1)
            raise BlobStoreUnavailable("went away while the photo row was written")
        real_add(*args)

    monkeypatch.setattr(photos, "_add_photo", add_once_failing)
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:1000]).status_code == 204
    assert patch(tus_client, worker, location, 1000, photo[1000:]).status_code == 503
    started = time.monotonic()
    assert offset_of(tus_client, worker, location) == len(photo)
    assert time.monotonic() - started < 5  # no lease to wait out
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200


def test_a_whole_file_whose_ingest_fails_is_not_acknowledged_and_is_sent_again(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo sent whole in one PATCH is ingested from that body, never staged: when the ingest fails,
    the server has acknowledged none of it, and the client sends the file again."""
    ingest = SlowIngest(hold=0, failing=1)
    monkeypatch.setattr(photos, "ingest_file", ingest)
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo).status_code == 503
    assert offset_of(tus_client, worker, location) == 0
    assert not [k for k in stored_keys(tus_client) if k.startswith(".uploads")]
    again = patch(tus_client, worker, location, 0, photo)
    assert again.status_code == 204 and again.headers["upload-offset"] == str(len(photo))
    assert offset_of(tus_client, worker, location) == len(photo)
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert not [k for k in stored_keys(tus_client) if k.startswith(".uploads")]
    assert ingest.calls == 2


def test_a_whole_file_sent_again_while_the_first_is_processed_is_decoded_once(
    tus_client: Client, photo: bytes, in_flight: InFlight
) -> None:
    ingest, worker, location, answers, thread = in_flight
    second = patch(tus_client, worker, location, 0, photo)  # the client sends the file again
    thread.join()
    assert [a.status_code for a in answers] == [204] and second.status_code == 204
    assert second.headers["upload-offset"] == str(len(photo))
    assert ingest.calls == 1
    assert not [k for k in stored_keys(tus_client) if k.startswith(".uploads")]  # the second copy is gone


def test_waiting_for_another_request_is_bounded(
    tus_client: Client, stalled: Stalled, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, worker, location = stalled

    async def held_by_another_request(session: Any) -> None:
        await session.execute(update(Upload).values(processing_since=dt.datetime.now(dt.UTC)))

    run_db(tus_client, held_by_another_request)
    monkeypatch.setattr(photos, "WAIT_LIMIT_SECONDS", 0.6)
    busy = tus_client.head(location, headers=TUS | worker)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "5"
    assert busy.headers["tus-resumable"] == "1.0.0"
    assert ingest.calls == 1  # it did not process the file behind the other request's back


def test_a_head_never_reports_a_whole_file_nobody_stores(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole-file PATCH fails while a HEAD waits on it and the file, sent again, is staged and fails
    too: the waiting HEAD processes the staged bytes rather than answer "all received" for nothing."""
    monkeypatch.setattr(photos, "ingest_file", SlowIngest(hold=0.6, failing=2))
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    answers: dict[str, httpx.Response] = {}

    def later(name: str, delay: float, send: Callable[[], httpx.Response]) -> threading.Thread:
        def after_delay() -> None:
            time.sleep(delay)
            answers[name] = send()

        thread = threading.Thread(target=after_delay)
        thread.start()
        return thread

    threads = [
        later("patch", 0, lambda: patch(tus_client, worker, location, 0, photo)),
        later("head", 0.3, lambda: tus_client.head(location, headers=TUS | worker)),
        later("again", 0.5, lambda: patch(tus_client, worker, location, 0, photo)),
    ]
    for thread in threads:
        thread.join()
    head = answers["head"]
    stored = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert head.status_code != 200 or head.headers["upload-offset"] == "0" or stored
    offset_of(tus_client, worker, location)  # and whatever happened, a HEAD now finishes the upload
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200


def test_an_upload_being_ingested_is_not_expired_under_it(
    tus_client: Client, photo: bytes, in_flight: InFlight
) -> None:
    _, worker, _, answers, thread = in_flight

    async def run_out(session: Any) -> None:
        await session.execute(
            update(Upload).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    run_db(tus_client, run_out)  # its last minutes ran out while the body arrived
    state = tus_client.app.state
    assert tus_client.blocking_portal.call(uploads.cleanup, state.db, state.store) == 0
    thread.join()
    assert answers[0].status_code == 204
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200


def test_a_second_copy_that_gave_up_waiting_is_not_left_staged(
    tus_client: Client, photo: bytes, in_flight: InFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, worker, location, answers, thread = in_flight
    monkeypatch.setattr(photos, "WAIT_LIMIT_SECONDS", 0.2)
    gave_up = patch(tus_client, worker, location, 0, photo)
    thread.join()
    assert gave_up.status_code == 503 and answers[0].status_code == 204
    assert not [k for k in stored_keys(tus_client) if k.startswith(".uploads")]


@pytest.mark.parametrize("whole", [True, False], ids=["sent whole", "staged"])
def test_a_disk_error_while_processing_keeps_the_upload(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """The server cannot read its own temporary copy back (EIO): a 503 to ask again, never a refusal that
    discards a good photo, and never a 500."""
    ingest = SlowIngest(hold=0, failing=1, error=OSError(errno.EIO, "Input/output error"))
    monkeypatch.setattr(photos, "ingest_file", ingest)
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    first = 0 if whole else 1000
    if not whole:
        assert patch(tus_client, worker, location, 0, photo[:first]).status_code == 204
    failed = patch(tus_client, worker, location, first, photo[first:])
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "ingest_unavailable" and failed.headers["retry-after"] == "5"
    if whole:  # nothing of it was acknowledged: the client sends it again
        assert offset_of(tus_client, worker, location) == 0
        assert patch(tus_client, worker, location, 0, photo).status_code == 204
    else:  # every byte stays staged: asking for the offset finishes it
        assert offset_of(tus_client, worker, location) == len(photo)
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert ingest.calls == 2


def test_an_upload_whose_bytes_all_arrived_is_processed_not_discarded_when_it_expires(
    tus_client: Client, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every byte staged, but storage was down when the last one came (503), and the tablet never asked
    # again (lost, broken, wiped). The bytes are the household's evidence: the cleanup processes them
    # instead of throwing them away with the upload.
    worker = login(tus_client, "demo-worker-1")
    location = create(tus_client, worker, photo).headers["location"]
    assert patch(tus_client, worker, location, 0, photo[:5000]).status_code == 204
    real_store_blobs = photos._store_blobs

    async def storage_down(*args: Any) -> None:
        raise BlobStoreUnavailable("S3 is down")

    monkeypatch.setattr(photos, "_store_blobs", storage_down)
    assert patch(tus_client, worker, location, 5000, photo[5000:]).status_code == 503
    monkeypatch.setattr(photos, "_store_blobs", real_store_blobs)

    state = tus_client.app.state
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    tus_client.blocking_portal.call(photos.cleanup, state.db, state.store, state.image_limiter, later)
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker).status_code == 200
    assert not [k for k in stored_keys(tus_client) if k.startswith(".uploads")]
