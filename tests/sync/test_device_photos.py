"""The reference device's photos: taken offline, queued with the answer that names them, sent through tus
on sync, resumed after drops, refused files reported. Both databases and both blob stores."""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

import msgspec
import pytest

from schemas.config import Settings
from sync.client import Device, httpx_transport
from sync.device_cli import _act
from sync.errors import DeviceOfAnotherUser, NetworkError, SyncBusy, UnsendableEdit
from sync.tus_client import RawTransport, Reply, httpx_raw_transport
from tests.apps import started
from tests.helpers import Client, audit_rows, login
from tests.images import jpeg_with_gps
from tests.sync.test_handover import deactivate
from tests.sync.test_sync_protocol import conflicts
from tests.tus import sha256, tus_client, tus_settings, upload
from tests.visit_flow import GPS, assign, post_observations, user_id

__all__ = ["tus_client", "tus_settings"]  # fixtures


@pytest.fixture
def store_kind(database_url: str) -> str:
    """Pairwise, not every pair: these tests are about the device, and the stores and databases are each
    tested against one another in tests/server. SQLite with the local folder, PostgreSQL with S3."""
    return "local" if database_url.startswith("sqlite") else "s3"


LOOK = ("step.look", "home_photos")


class CountingNetwork:
    """A raw transport that counts the requests it delivers, and loses some: at random (``loss``, the
    request or its answer), every request of the ``blocked`` methods, or the answers ``lose_answer`` picks."""

    def __init__(self, inner: RawTransport, *, seed: int = 0, loss: float = 0.0) -> None:
        self.inner, self.loss, self.random = inner, loss, random.Random(seed)
        self.sent: dict[str, int] = {}
        self.blocked: set[str] = set()
        self.lose_answer: Callable[[str, Reply], bool] = lambda method, reply: False

    def __call__(self, method: str, path: str, headers: dict[str, str], content: bytes = b"") -> Reply:
        if method in self.blocked or self.random.random() < self.loss:
            raise NetworkError("request lost")
        reply = self.inner(method, path, headers, content)
        self.sent[method] = self.sent.get(method, 0) + 1
        if self.lose_answer(method, reply) or self.random.random() < self.loss:
            raise NetworkError("answer lost")
        return reply


class NetworkOptions(TypedDict, total=False):
    """The keyword arguments of `CountingNetwork` after the transport it wraps."""

    seed: int
    loss: float


class MakeDevices(Protocol):
    def __call__(
        self, username: str = "demo-worker-1", **options: Unpack[NetworkOptions]
    ) -> tuple[Device, CountingNetwork]: ...


Synced = tuple[dict[str, Any], Device, CountingNetwork]
"""A visit, the device that synced it and the network its uploads go through."""


@pytest.fixture
def devices(tus_client: Client, tmp_path: Path) -> Iterator[MakeDevices]:
    made: list[Device] = []

    def make(
        username: str = "demo-worker-1", **options: Unpack[NetworkOptions]
    ) -> tuple[Device, CountingNetwork]:
        network = CountingNetwork(httpx_raw_transport(tus_client), **options)
        device = Device(
            tmp_path / f"{username}-{len(made)}.sqlite",
            httpx_transport(tus_client),
            uploads=network,
            upload_chunk=16_384,
        )
        device.login(username, "demo")
        made.append(device)
        return device, network

    yield make
    for device in made:
        device.close()


@pytest.fixture
def synced(tus_client: Client, devices: MakeDevices) -> Synced:
    """A visit assigned to demo-worker-1's team, and that worker's device after its first sync."""
    visit = assign(tus_client)
    device, network = devices()
    device.sync()
    return visit, device, network


def photo_file(tmp_path: Path, seed: int, data: bytes | None = None) -> Path:
    path = tmp_path / f"photo-{seed}.jpg"
    path.write_bytes(data if data is not None else jpeg_with_gps(seed=seed))
    return path


def evidence_of(client: Client, visit_id: str) -> dict[str, str]:
    response = client.get(f"/api/v1/visits/{visit_id}/evidence", headers=login(client, "demo-worker-1"))
    assert response.status_code == 200, response.text
    return {item["sha256"]: item["status"] for item in response.json()["items"]}


def sync_until_done(device: Device, attempts: int = 80) -> None:
    for _ in range(attempts):
        try:
            device.sync()
            if all(p["state"] != "waiting" for p in device.photo_queue()):
                return
        except NetworkError:
            continue
    raise AssertionError(f"photos still waiting after {attempts} syncs: {device.photo_queue()}")


def test_photos_taken_offline_reach_the_server_with_the_answer_that_names_them(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    visit, device, network = synced
    kitchen, bedroom = photo_file(tmp_path, 1), photo_file(tmp_path, 2)
    device.attach_photo(visit["id"], *LOOK, kitchen, view="kitchen", gps=GPS)
    device.attach_photo(visit["id"], *LOOK, bedroom, view="bedroom")
    kitchen.unlink()  # the user tidies the gallery before the tablet is back online: the device kept a copy

    # Offline, the item's answer already holds both photos, in the order taken.
    answer = device.answer_value(visit["id"], *LOOK)
    assert [p["view"] for p in answer["photos"]] == ["kitchen", "bedroom"]
    assert [p["state"] for p in device.photo_queue()] == ["waiting", "waiting"]

    report = device.sync()
    assert report.photos.sent == 2 and report.photos.refused == []
    assert network.sent["PATCH"] > 2  # 16 KB chunks
    shas = [p["sha256"] for p in device.photo_queue()]
    assert shas == [sha256(photo_file(tmp_path, 1).read_bytes()), sha256(bedroom.read_bytes())]
    assert [(p["state"], p["server_state"]) for p in device.photo_queue()] == [("stored", "present")] * 2
    statuses = evidence_of(tus_client, visit["id"])
    assert [statuses[sha] for sha in shas] == ["present", "present"]
    assert not any(device.photos.folder.iterdir())  # the server holds the originals now
    # A crash between marking a photo stored and deleting its copy leaves the copy: the next sync sweeps it.
    (device.photos.folder / shas[1]).write_bytes(bedroom.read_bytes())
    device.sync()
    assert not any(device.photos.folder.iterdir())

    # Nothing left to send: the next sync sends no photo bytes.
    patches = network.sent["PATCH"]
    assert device.sync().photos.sent == 0 and network.sent["PATCH"] == patches


def test_two_tablets_photographing_the_same_item_offline_both_count(
    tus_client: Client, synced: Synced, devices: MakeDevices, tmp_path: Path
) -> None:
    """The team of two works side by side, each tablet offline: every photo either takes is evidence."""
    visit, first, _ = synced
    first.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 1), view="exterior_door_number")
    first.sync()
    second, _ = devices("demo-worker-2")
    second.sync()  # both tablets now show the exterior photo; then both go offline
    first.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 2), view="kitchen")
    second.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 3), view="bedroom")
    second.sync()
    first.sync()
    second.sync()

    views = ["exterior_door_number", "bedroom", "kitchen"]
    for device in (first, second):
        assert [p["view"] for p in device.answer_value(visit["id"], *LOOK)["photos"]] == views
    shas = [sha256(photo_file(tmp_path, seed).read_bytes()) for seed in (1, 3, 2)]
    assert evidence_of(tus_client, visit["id"]) == dict.fromkeys(shas, "present")


def test_a_photo_whose_answers_push_result_was_lost_is_sent_after_a_pull_on_its_own(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """The push of the photo's answer reached the server and its answer was lost; then the app pulled on
    its own (a refresh). The pull confirmed the answer, so it left the queue without the device ever
    hearing its result: the photo waited for good, and the visit's evidence stayed `expected`."""
    visit, device, _ = synced
    file = photo_file(tmp_path, 31)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    plain = device.transport

    def answer_lost(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        answer = plain(path, body, token)
        if path.endswith("/push"):
            raise NetworkError("the answer was lost")
        return answer

    device.transport = answer_lost
    with pytest.raises(NetworkError):
        device.sync()
    device.transport = plain
    device.pull()
    assert device.sync().photos.sent == 1
    assert evidence_of(tus_client, visit["id"])[sha256(file.read_bytes())] == "present"
    assert device.pending() == [] and [p["state"] for p in device.photo_queue()] == ["stored"]


def test_a_second_sync_of_the_same_device_is_refused_while_one_runs(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """A scheduled sync and the user's own, or two CLI runs: never two at once (the photo would go twice)."""
    visit, device, _ = synced
    device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 1), view="kitchen")
    inside, release = threading.Event(), threading.Event()
    plain = httpx_transport(tus_client)

    def stalling(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        inside.set()
        release.wait(30)
        return plain(path, body, token)

    device.transport = stalling
    first = concurrent.futures.ThreadPoolExecutor(1).submit(device.sync)
    assert inside.wait(30)
    again = Device(tmp_path / "demo-worker-1-0.sqlite", plain, uploads=httpx_raw_transport(tus_client))
    with pytest.raises(SyncBusy):
        again.sync()
    with pytest.raises(SyncBusy):
        again.pull()  # its parts on their own too
    release.set()
    assert first.result(30).photos.sent == 1
    assert again.sync().photos.sent == 0  # the lock went with the first sync
    again.close()


def test_uploads_survive_lost_requests_and_answers(
    tus_client: Client, devices: MakeDevices, tmp_path: Path
) -> None:
    visit = assign(tus_client)
    device, network = devices(seed=7, loss=0.2)
    for attempt in range(40):
        try:
            device.sync()
            break
        except NetworkError:
            assert attempt < 39
    files = [photo_file(tmp_path, seed) for seed in (3, 4, 5)]
    for view, file in zip(("kitchen", "bedroom", "living_room"), files, strict=True):
        device.attach_photo(visit["id"], *LOOK, file, view=view)

    sync_until_done(device)
    network.loss = 0.0
    device.sync()

    shas = [sha256(f.read_bytes()) for f in files]
    assert [(p["sha256"], p["state"], p["server_state"]) for p in device.photo_queue()] == [
        (sha, "stored", "present") for sha in shas
    ]
    answer = device.answer_value(visit["id"], *LOOK)
    assert [p["sha256"] for p in answer["photos"]] == shas  # three answers, each appended once
    statuses = evidence_of(tus_client, visit["id"])
    assert all(statuses[sha] == "present" for sha in shas)


def test_a_photo_the_server_holds_is_not_sent_again(
    tus_client: Client, devices: MakeDevices, tmp_path: Path
) -> None:
    visit = assign(tus_client)
    first, _ = devices("demo-worker-1")
    second, second_network = devices("demo-worker-2")
    first.sync()
    second.sync()
    shared = photo_file(tmp_path, 6)
    first.attach_photo(visit["id"], *LOOK, shared, view="kitchen")
    assert first.sync().photos.sent == 1

    second.attach_photo(visit["id"], *LOOK, shared, view="kitchen")
    assert second.sync().photos.sent == 1
    assert "PATCH" not in second_network.sent  # created complete: content addressing
    assert second.photo_queue()[0]["server_state"] == "present"


def test_a_refused_file_is_reported_once_and_its_answer_still_arrives(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    visit, device, network = synced
    text = photo_file(tmp_path, 8, b"not a photo at all " * 2000)
    device.attach_photo(visit["id"], *LOOK, text, view="kitchen")
    # The refusal's answer is lost: the next sync's HEAD gets a bodiless 410 and must learn why.
    network.lose_answer = lambda method, reply: reply.status == 422

    with pytest.raises(NetworkError):
        device.sync()
    report = device.sync()
    assert report.photos.refused == [sha256(text.read_bytes())]
    assert network.sent["POST"] == 1  # learnt from the old upload, not by sending the file again
    (queued,) = device.photo_queue()
    # The pull that followed says so too, so a colleague's tablet (which never held the file) learns it.
    assert (queued["state"], queued["code"], queued["server_state"]) == (
        "refused",
        "not_an_image",
        "refused",
    )
    assert (
        device.confirmed("photo")[queued["sha256"]]["refusal"] == queued["server_refusal"] == "not_an_image"
    )
    assert evidence_of(tus_client, visit["id"])[queued["sha256"]] == "refused"
    assert device.sync().photos.refused == []  # not tried again


@pytest.mark.parametrize("status", [413, 404, 400])
def test_a_proxys_error_page_leaves_the_photo_to_send_again_not_refused(
    status: int, tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """A reverse proxy in front of the server answers with its own HTML page (nginx's `413 Request Entity
    Too Large` while its body limit is too small, a `404` while it is misrouted): no answer of the
    server's. The device marked the photo refused for good (`http_413`), and never sent it again, even
    once the proxy was fixed; the visit's evidence stayed `expected`."""
    visit, device, network = synced
    file = photo_file(tmp_path, 32)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    server = network.inner

    def proxy(method: str, path: str, headers: dict[str, str], content: bytes = b"") -> Reply:
        if method in ("POST", "PATCH"):
            page = f"<html><body><h1>{status} from nginx</h1></body></html>".encode()
            return Reply(status, {"content-type": "text/html"}, page)
        return server(method, path, headers, content)

    network.inner = proxy
    device.update_household(visit["household_id"], address="代理之后")
    report = device.sync()
    assert (report.photos.waiting, report.photos.refused, report.confirmed) == (1, [], 2)  # the pull ran
    assert [p["state"] for p in device.photo_queue()] == ["waiting"]
    network.inner = server  # the proxy is fixed
    assert device.sync().photos.sent == 1
    assert evidence_of(tus_client, visit["id"])[sha256(file.read_bytes())] == "present"


def test_a_proxy_taking_smaller_bodies_than_a_chunk_gets_smaller_chunks(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """A proxy whose body limit is below the chunk size answers each chunk with its own 413 page: the
    photo could never pass it, and each sync tried the same chunk again."""
    visit, device, network = synced  # 16 KB chunks
    file = photo_file(tmp_path, 33)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    server = network.inner

    def proxy(method: str, path: str, headers: dict[str, str], content: bytes = b"") -> Reply:
        if len(content) > 10_000:
            return Reply(413, {"content-type": "text/html"}, b"<html>413 Request Entity Too Large</html>")
        return server(method, path, headers, content)

    network.inner = proxy
    assert device.sync().photos.sent == 1
    assert evidence_of(tus_client, visit["id"])[sha256(file.read_bytes())] == "present"


def test_an_upload_that_vanished_starts_again(tus_client: Client, synced: Synced, tmp_path: Path) -> None:
    visit, device, network = synced
    device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 9), view="kitchen")
    network.blocked = {"PATCH"}  # created, then the link drops
    with pytest.raises(NetworkError):
        device.sync()
    (url,) = device.db.execute("SELECT url FROM photos").fetchone()
    # Meanwhile the server dropped the upload (termination here; expiry and cleanup end the same way).
    headers = login(tus_client, "demo-worker-1") | {"Tus-Resumable": "1.0.0"}
    assert tus_client.delete(url, headers=headers).status_code == 204

    network.blocked = set()
    assert device.sync().photos.sent == 1
    assert network.sent["POST"] == 2
    assert device.photo_queue()[0]["server_state"] == "present"


def test_a_file_the_server_will_never_take_does_not_stop_the_sync(
    tus_settings: Settings, tmp_path: Path
) -> None:
    """413 upload_too_large is the file's fault: marked refused, and the pull still runs."""
    small = msgspec.structs.replace(tus_settings, max_upload_bytes=10_000)
    with started(small) as client:
        visit = assign(client)
        device = Device(
            tmp_path / "small.sqlite", httpx_transport(client), uploads=httpx_raw_transport(client)
        )
        device.login("demo-worker-1", "demo")
        device.sync()
        big = photo_file(tmp_path, 10)
        device.attach_photo(visit["id"], *LOOK, big, view="kitchen")
        report = device.sync()
        assert report.photos.refused == [sha256(big.read_bytes())] and report.confirmed == 1
        assert [(p["state"], p["code"]) for p in device.photo_queue()] == [("refused", "upload_too_large")]
        device.close()


def test_a_photo_whose_answer_was_rejected_is_held_not_sent(synced: Synced, tmp_path: Path) -> None:
    _, device, network = synced
    elsewhere = str(uuid.uuid4())  # no such visit: the answer is rejected (quarantined for a supervisor)
    device.attach_photo(elsewhere, *LOOK, photo_file(tmp_path, 11), view="kitchen")
    report = device.sync()
    assert len(report.photos.held) == 1 and "POST" not in network.sent
    assert [(p["state"], p["code"]) for p in device.photo_queue()] == [("held", "not_found")]


def test_another_user_signing_in_on_the_tablet_finds_none_of_the_previous_users_photos(
    synced: Synced, tmp_path: Path
) -> None:
    """The replica is emptied for the next user, but the photo files the previous user took and the
    server never took (held, refused, lost) stayed in the tablet's folder, listed by `device photos`:
    pictures inside a household's home, of a community the next user may not see."""
    _, device, _ = synced
    device.attach_photo(str(uuid.uuid4()), *LOOK, photo_file(tmp_path, 21), view="kitchen")
    device.sync()
    assert [p["state"] for p in device.photo_queue()] == ["held"]
    # The copy a photo taken as the process was killed left: kept, its answer never queued.
    orphan = photo_file(tmp_path, 22)
    (device.photos.folder / sha256(orphan.read_bytes())).write_bytes(orphan.read_bytes())
    device.login("demo-worker-3", "demo")
    assert device.photo_queue() == []
    assert not [kept.name for kept in device.photos.folder.iterdir()]


def test_the_tablets_database_and_photo_copies_are_its_users_alone(synced: Any, tmp_path: Path) -> None:
    """Households' names, addresses and health, and pictures inside their homes: on a machine shared
    with other accounts (the CLI), files made with the usual umask would be readable by all of them."""
    visit, device, _ = synced
    device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 41), view="kitchen")
    (copy,) = list(device.photos.folder.iterdir())
    database = Path(device.db.execute("PRAGMA database_list").fetchone()[2])
    made = [database, Path(f"{database}-wal"), device.photos.folder, copy]
    assert {str(path): oct(path.stat().st_mode & 0o077) for path in made} == {
        str(path): "0o0" for path in made
    }


def test_a_deactivated_workers_photos_reach_the_server_when_the_tablet_is_handed_over(
    tus_client: Client, synced: Any, tmp_path: Path
) -> None:
    """Their answers wait for a supervisor (tests/sync/test_handover.py); the files, pictures of a visit
    nobody can take again, are stored on the way, not deleted with the previous user's replica."""
    visit, device, _ = synced
    taken_offline = photo_file(tmp_path, 31)
    device.attach_photo(visit["id"], *LOOK, taken_offline, view="kitchen")
    deactivate(tus_client, "demo-worker-1")
    device.login("demo-worker-2", "demo")
    assert device.photo_queue() == [] and not list(device.photos.folder.iterdir())
    sha = sha256(taken_offline.read_bytes())
    stored = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, "demo-worker-2"))
    assert stored.status_code == 200, stored.text
    (kept,) = conflicts(tus_client, visit["id"])
    assert kept["code"] == "author_inactive" and sha in msgspec.json.encode(kept["client_value"]).decode()
    # The supervisors who see the kept answer see its pictures: only the colleague who happened to send
    # them could (no visit names them), so the answer was judged blind. Nobody outside the area sees them.
    for supervisor in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        shown = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, supervisor, device="desk"))
        assert shown.status_code == 200, (supervisor, shown.text)
    elsewhere = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, "demo-worker-3"))
    assert elsewhere.status_code == 404


def _sent_and_present(tus_client: Client, device: Any, visit: dict[str, Any], file: Path) -> None:
    """The next sync sends the file, and the visit's evidence has it."""
    assert device.sync().photos.sent == 1
    assert [(p["state"], p["server_state"]) for p in device.photo_queue()] == [("stored", "present")]
    assert evidence_of(tus_client, visit["id"])[sha256(file.read_bytes())] == "present"


def test_a_photo_one_answer_names_is_sent_though_another_answer_naming_it_was_rejected(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    # The same picture attached twice: to the visit, and to a visit the server turns down (or an item that
    # does not take it). The accepted answer still needs the file; holding it left that visit's evidence
    # "expected" for good, and the device never said why.
    visit, device, _ = synced
    file = photo_file(tmp_path, 14)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    device.attach_photo(str(uuid.uuid4()), *LOOK, file, view="kitchen")
    _sent_and_present(tus_client, device, visit, file)


def test_a_photo_is_held_once_every_answer_naming_it_was_rejected(synced: Synced, tmp_path: Path) -> None:
    _, device, network = synced
    file = photo_file(tmp_path, 15)
    device.attach_photo(str(uuid.uuid4()), *LOOK, file, view="kitchen")
    device.attach_photo(str(uuid.uuid4()), *LOOK, file, view="bedroom")
    report = device.sync()
    assert len(report.photos.held) == 1 and "POST" not in network.sent
    assert [(p["state"], p["code"]) for p in device.photo_queue()] == [("held", "not_found")]


def test_a_photo_whose_answer_the_device_refuses_to_queue_leaves_no_copy(
    synced: Synced, tmp_path: Path
) -> None:
    """The copy is kept before the answer is queued; an answer refused there (a NUL character in the
    view) left the copy in the tablet's folder for good: nothing sends it, nothing deletes it."""
    visit, device, _ = synced
    with pytest.raises(UnsendableEdit):
        device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 23), view="kitchen\x00")
    assert device.photo_queue() == [] and device.pending() == []
    assert not [kept.name for kept in device.photos.folder.iterdir()]


def test_a_damaged_copy_is_marked_lost_and_taking_the_photo_again_sends_it(
    synced: Synced, tmp_path: Path
) -> None:
    visit, device, network = synced
    file = photo_file(tmp_path, 12)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    (kept,) = device.photos.folder.iterdir()
    kept.write_bytes(kept.read_bytes()[:1000])  # a power loss half-way through the copy, say
    device.sync()
    assert [(p["state"], p["code"]) for p in device.photo_queue()] == [("lost", "file_damaged")]
    assert "PATCH" not in network.sent

    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")  # the original is still in the gallery
    assert device.sync().photos.sent == 1
    assert [(p["state"], p["server_state"]) for p in device.photo_queue()] == [("stored", "present")]


def test_a_copy_damaged_in_place_is_marked_lost_and_taking_the_photo_again_sends_it(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    # Same length, other bytes (a flash cell gone bad): the server answers sha256_mismatch. That is the
    # device's copy at fault, not the photo: marked refused, taking the photo again never sent it, and the
    # visit's evidence said "expected" for good.
    visit, device, _ = synced
    file = photo_file(tmp_path, 16)
    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")
    (kept,) = device.photos.folder.iterdir()
    damaged = bytearray(kept.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    kept.write_bytes(bytes(damaged))
    report = device.sync()
    assert report.photos.refused == []
    assert [(p["state"], p["code"]) for p in device.photo_queue()] == [("lost", "file_damaged")]

    device.attach_photo(visit["id"], *LOOK, file, view="kitchen")  # the original is still in the gallery
    _sent_and_present(tus_client, device, visit, file)


def test_the_device_says_when_a_photo_cannot_go_to_an_item(synced: Synced) -> None:
    visit, device, _ = synced
    assert device.photo_item_problem(visit["id"], *LOOK) is None
    unknown = device.photo_item_problem(str(uuid.uuid4()), *LOOK)
    assert unknown is not None and "no visit" in unknown
    not_photo = device.photo_item_problem(visit["id"], "step.look", "housing_ownership")
    assert not_photo == "step.look housing_ownership is a single_choice item, not a photo item"
    missing = device.photo_item_problem(visit["id"], "step.look", "no_such_item")
    assert missing == "step.look has no item 'no_such_item'"
    elsewhere = device.photo_item_problem(visit["id"], "form.nothing", "home_photos")
    assert elsewhere is not None and "step.look" in elsewhere


def test_the_device_says_a_photo_cannot_go_to_a_locked_visit(synced: Synced) -> None:
    """A photo for an approved (or rejected) visit was queued, refused by the server (`visit_locked`)
    and quarantined for a supervisor; the tablet already knew the visit was locked."""
    _, device, _ = synced
    locked = [v for v in device.view("visit").values() if v["status"] in ("approved", "rejected")]
    assert locked, "the demo community has an approved visit"
    for visit in locked:
        assert device.photo_item_problem(visit["id"], *LOOK) == (
            f"the visit is {visit['status']} and locked: it takes no more answers"
        )


def test_photo_files_alone_are_handed_over_only_as_a_queue_would_be(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """The answer is confirmed, its file not sent yet: the queue is empty and the file is all the tablet
    holds of its user. Another user's sign-in sent it and emptied the tablet without asking the server,
    while its user could still sign in, or for a worker of another community."""
    visit, device, network = synced
    device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 51), view="kitchen")
    network.blocked = {"POST", "PATCH", "HEAD"}
    with pytest.raises(NetworkError):
        device.sync()  # the answer is pushed; its file is not
    device.pull()  # the answer confirmed: the queue is empty
    network.blocked = set()
    assert device.pending() == [] and [p["state"] for p in device.photo_queue()] == ["waiting"]
    before = network.sent.get("POST", 0)

    with pytest.raises(DeviceOfAnotherUser, match="sign in as demo-worker-1"):
        device.login("demo-worker-2", "demo")
    deactivate(tus_client, "demo-worker-1")
    with pytest.raises(DeviceOfAnotherUser):
        device.login("demo-worker-3", "demo")  # community C03
    assert [p["state"] for p in device.photo_queue()] == ["waiting"]
    assert network.sent.get("POST", 0) == before and device.username == "demo-worker-1"

    device.login("demo-worker-2", "demo")
    assert device.photo_queue() == [] and network.sent["POST"] == before + 1


def test_a_handover_without_a_connection_for_photos_leaves_the_tablet_as_it_was(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """A device made without a photo connection cannot send the previous user's files: it refuses the
    sign-in before handing anything over. It deleted files waiting to be sent (only held ones stopped it)."""
    visit, device, _ = synced
    device.attach_photo(visit["id"], *LOOK, photo_file(tmp_path, 52), view="kitchen")
    deactivate(tus_client, "demo-worker-1")
    device.uploads = None
    with pytest.raises(DeviceOfAnotherUser, match="photo"):
        device.login("demo-worker-2", "demo")
    assert [p["state"] for p in device.photo_queue()] == ["waiting"] and len(device.pending()) == 1
    assert list(device.photos.folder.iterdir()) and conflicts(tus_client, visit["id"]) == []


def test_a_handover_cut_off_while_sending_photos_is_finished_by_signing_in_again(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """The queue is handed over, then the link drops mid-file: the tablet keeps everything, and the next
    sign-in hands over nothing twice and sends the file."""
    visit, device, network = synced
    taken = photo_file(tmp_path, 53)
    device.attach_photo(visit["id"], *LOOK, taken, view="kitchen")
    deactivate(tus_client, "demo-worker-1")
    network.blocked = {"PATCH"}
    with pytest.raises(NetworkError):
        device.login("demo-worker-2", "demo")
    assert device.username == "demo-worker-1" and len(device.pending()) == 1
    assert [p["state"] for p in device.photo_queue()] == ["waiting"]

    network.blocked = set()
    device.login("demo-worker-2", "demo")
    assert device.pending() == [] and device.photo_queue() == []
    (kept,) = conflicts(tus_client, visit["id"])
    assert kept["code"] == "author_inactive"
    stored = tus_client.get(
        f"/api/v1/photos/{sha256(taken.read_bytes())}", headers=login(tus_client, "demo-worker-2")
    )
    assert stored.status_code == 200, stored.text


def test_a_handover_another_user_finishes_still_shows_its_photos_to_the_supervisors(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """A colleague's sign-in handed the queue over, then the link dropped mid-file; the supervisor signed
    in on the tablet later and sent the file. The kept answer names the colleague as handed_over_by, the
    file's uploader is the supervisor: the other supervisors over the area got 404 for its picture."""
    visit, device, network = synced
    taken, also_elsewhere = photo_file(tmp_path, 54), photo_file(tmp_path, 55)
    device.attach_photo(visit["id"], *LOOK, taken, view="kitchen")
    device.attach_photo(visit["id"], *LOOK, also_elsewhere, view="door")
    deactivate(tus_client, "demo-worker-1")
    network.blocked = {"PATCH"}
    with pytest.raises(NetworkError):
        device.login("demo-worker-2", "demo")
    network.blocked = set()
    # The same file sent first by a worker of another community: not the tablet's upload, not shown so.
    outsider = upload(tus_client, login(tus_client, "demo-worker-3"), also_elsewhere.read_bytes())
    assert outsider.status_code == 204, outsider.text
    device.login("demo-reviewer-community", "demo")
    assert device.pending() == [] and device.photo_queue() == []

    sha, outsiders = sha256(taken.read_bytes()), sha256(also_elsewhere.read_bytes())
    for supervisor in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        headers = login(tus_client, supervisor, device="desk")
        shown = tus_client.get(f"/api/v1/photos/{sha}", headers=headers)
        assert shown.status_code == 200, (supervisor, shown.text)
        assert tus_client.get(f"/api/v1/photos/{outsiders}", headers=headers).status_code == 404
    elsewhere = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, "demo-worker-3"))
    assert elsewhere.status_code == 404


def test_a_deactivated_workers_held_photo_is_handed_over_not_deleted(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """The answer was refused and quarantined (its visit unknown here), so its photo was held; then its
    worker left, the tablet holding nothing else. The next user's sign-in handed nothing over and deleted
    the file: a picture inside a household's home that a supervisor weighing the answer may still need."""
    _, device, _ = synced
    taken, elsewhere = photo_file(tmp_path, 61), str(uuid.uuid4())
    device.attach_photo(elsewhere, *LOOK, taken, view="kitchen")
    device.sync()
    assert [p["state"] for p in device.photo_queue()] == ["held"] and device.pending() == []
    deactivate(tus_client, "demo-worker-1")

    device.login("demo-worker-2", "demo")
    assert device.photo_queue() == [] and not list(device.photos.folder.iterdir())
    assert device.handed_over == "1 photo file(s) of refused answers of demo-worker-1"
    (kept,) = conflicts(tus_client, elsewhere)
    sha = sha256(taken.read_bytes())
    assert kept["code"] == "not_found" and sha in msgspec.json.encode(kept["client_value"]).decode()
    assert kept["handed_over_by"] == user_id(tus_client, "demo-worker-2")
    (row,) = audit_rows(tus_client, "sync.handover")
    assert row.changes["quarantined_seqs"] == [] and row.changes["earlier_conflict_ids"] == [kept["id"]]
    # Beside the answer that names it, for the supervisors over the tablet's area; nobody outside it.
    for supervisor in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        shown = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, supervisor, device="desk"))
        assert shown.status_code == 200, (supervisor, shown.text)
    elsewhere_user = tus_client.get(f"/api/v1/photos/{sha}", headers=login(tus_client, "demo-worker-3"))
    assert elsewhere_user.status_code == 404


def test_a_held_photo_is_sent_once_its_answer_is_re_entered(
    tus_client: Client, synced: Synced, tmp_path: Path
) -> None:
    """The worker attached the photo to the wrong visit: the answer was refused and quarantined, the file
    held. The supervisor keeps the answer (re-entered on the visit it was meant for, naming the same file):
    the server now expects the photo, and the tablet, its user still signed in, never sent it."""
    visit, device, _ = synced
    taken = photo_file(tmp_path, 62)
    device.attach_photo(str(uuid.uuid4()), *LOOK, taken, view="kitchen")
    device.sync()
    assert [p["state"] for p in device.photo_queue()] == ["held"]
    sha = sha256(taken.read_bytes())
    re_entered = {
        "id": str(uuid.uuid4()),
        "template": LOOK[0],
        "item": LOOK[1],
        "value": {"photos": [{"sha256": sha, "view": "kitchen"}]},
        "gps": GPS,
        "device_time": "2026-11-29T08:00:00Z",
    }
    post_observations(tus_client, visit, login(tus_client, "demo-worker-2"), [re_entered])
    assert evidence_of(tus_client, visit["id"])[sha] == "expected"

    report = device.sync()  # the pull shows the photo expected: the file goes in the same sync
    assert report.photos.sent == 1
    assert evidence_of(tus_client, visit["id"])[sha] == "present"
    assert [(p["state"], p["server_state"]) for p in device.photo_queue()] == [("stored", "present")]
    assert not list(device.photos.folder.iterdir())


def test_a_held_photo_does_not_keep_the_tablet_from_its_next_user_while_its_author_can_sign_in(
    synced: Synced, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its author cannot send it either (the server took no answer naming it): refusing the sign-in
    would lock the tablet for good. It goes with the replica, as before, nothing is sent, and the new
    user is told."""
    _, device, network = synced
    device.attach_photo(str(uuid.uuid4()), *LOOK, photo_file(tmp_path, 63), view="kitchen")
    device.sync()
    sent = dict(network.sent)
    args = argparse.Namespace(
        action="login", username="demo-worker-2", password="demo", db=str(tmp_path / "d")
    )
    assert _act(device, args, "http://testserver") == 0
    assert "deleted 1 photo file(s) of refused answers of demo-worker-1" in capsys.readouterr().out
    assert device.username == "demo-worker-2" and device.handed_over is None
    assert device.photo_queue() == [] and not list(device.photos.folder.iterdir())
    assert network.sent == sent
