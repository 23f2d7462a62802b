"""The sync protocol's promises, each replaying a failure known from other sync systems (on both databases)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy import text as sql
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.orm import Session

from schemas.sync import MalformedMutation
from server.db.engine import Database
from server.db.feed import EVERYONE, photo_key
from server.db.models import (
    Household,
    Member,
    MutationLog,
    PhotoRef,
    SyncChange,
    SyncClient,
    SyncConflict,
    SyncNumbering,
    SyncState,
    User,
    Visit,
)
from server.domain.evidence import references
from server.services import sync_admin, sync_apply, sync_pull, sync_push, transaction
from server.services.actor import SYSTEM
from server.services.auth import authenticate
from server.services.rules import load_rules, today
from sync.client import Device, RefusedEdit, httpx_transport
from sync.errors import DeviceOfAnotherUser, NetworkError, UnsendableEdit
from tests.helpers import (
    NEW_USER_PASSWORD,
    Client,
    audit_rows,
    household_id,
    login,
    new_user,
    node_id,
    posted_at_once,
    run_db,
    sent_in_turn,
    waiting_on_locks,
)
from tests.images import jpeg_with_gps
from tests.server.test_households import valid_id
from tests.server.test_photos import answer_with
from tests.sync.conftest import MakeDevice
from tests.tus import sha256, upload
from tests.visit_flow import (
    LEVELS,
    TEAM,
    assign,
    complete_answers,
    completed_visit,
    in_review_after_publicity,
    objection,
    observation,
    recheck_decided,
    review,
    user_id,
)

H1 = str(household_id("DB-C01-0001"))
H2 = str(household_id("DB-C01-0002"))


def push(client: Client, headers: dict[str, str], client_id: str, mutations: list[dict[str, Any]]) -> Any:
    body = {"client_id": client_id, "schema_version": 1, "mutations": mutations}
    response = client.post("/api/v1/sync/push", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def update_mutation(seq: int, household: str, base: int, **changes: Any) -> dict[str, Any]:
    return {
        "op": "household.update.v1",
        "seq": seq,
        "mutation_id": str(uuid.uuid4()),
        "household_id": household,
        "base_version": base,
        "changes": {f: {"old": None, "new": v} for f, v in changes.items()},
    }


def member_update_mutation(seq: int, member: dict[str, Any], **changes: tuple[Any, Any]) -> dict[str, Any]:
    """A member.update.v1 on a member as REST shows it; each change is (old, new)."""
    return {
        "op": "member.update.v1",
        "seq": seq,
        "mutation_id": str(uuid.uuid4()),
        "member_id": member["id"],
        "base_version": member["version"],
        "changes": {f: {"old": old, "new": new} for f, (old, new) in changes.items()},
    }


def conflicts(
    client: Client, entity_id: str, status: str = "open", reviewer: str = "demo-reviewer-community"
) -> list[dict[str, Any]]:
    desk = login(client, reviewer, device="desk")
    return list(client.get(f"/api/v1/conflicts?entity_id={entity_id}&status={status}", headers=desk).json())


def record_on(device: Device, entity: str, record_id: str | uuid.UUID) -> dict[str, Any]:
    """`device`'s confirmed copy of a record it must hold."""
    record = device.record(entity, record_id)
    assert record is not None, (entity, record_id)
    return record


@contextmanager
def _held_open(database_url: str, change: Callable[[Any], Awaitable[None]]) -> Iterator[None]:
    """`change(session)` flushed in a transaction of its own, on another thread, and committed only when
    the block ends: a slow writer that other requests run into meanwhile."""
    holding, release = threading.Event(), threading.Event()

    async def write() -> None:
        db = Database(database_url)
        async with db.write_session() as session:
            await change(session)
            await session.flush()  # stamped now; its sequence number comes at commit
            holding.set()
            await asyncio.to_thread(release.wait, 30)
            await session.commit()
        await db.dispose()

    writer = threading.Thread(target=asyncio.run, args=(write(),))
    writer.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()
        writer.join(10)


# -- pull ------------------------------------------------------------------------------------------


def test_first_sync_brings_the_workers_community_whole_and_nothing_else(make_device: MakeDevice) -> None:
    device = make_device("demo-worker-1")
    report = device.sync()
    households = device.confirmed("household")
    assert households and {h["community_id"] for h in households.values()} == {str(node_id("C01"))}
    members = device.confirmed("member")
    assert members and all("*" in m["id_number_masked"] and "id_number" not in m for m in members.values())
    assert {m["household_id"] for m in members.values()} <= set(households)
    assert device.confirmed("template") and device.confirmed("visit")
    photos = device.confirmed("photo")
    assert photos and all(
        p["state"] in ("expected", "present") and "gps_lat" not in p for p in photos.values()
    )
    assert report.pulled == sum(
        len(device.confirmed(e))
        for e in ("household", "member", "visit", "observation", "visit_event", "template", "photo")
    )


def test_small_pages_never_split_a_transaction(client: Client, make_device: MakeDevice) -> None:
    whole = make_device("demo-worker-1", "whole")
    whole.sync()
    paged = make_device("demo-worker-1", "paged", pull_limit=7)
    worker = login(client, "demo-worker-1")
    body = {"client_id": paged.client_id, "cursor": None, "schema_version": 1, "limit": 7}
    pages = 0
    while True:
        page = client.post("/api/v1/sync/pull", json=body, headers=worker).json()
        pages += 1
        seqs = [c["seq"] for c in page["changes"]]
        if page["has_more"]:
            nxt = client.post(
                "/api/v1/sync/pull", json={**body, "cursor": page["cursor"]}, headers=worker
            ).json()
            assert not set(seqs) & {c["seq"] for c in nxt["changes"]}, "a sequence group was split"
        if not page["has_more"]:
            break
        body["cursor"] = page["cursor"]
    paged.sync()
    assert pages > 3
    for entity in ("household", "member", "visit", "observation"):
        assert paged.confirmed(entity) == whole.confirmed(entity)


def test_bad_cursor_and_unknown_schema_are_refused_clearly(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    body = {"client_id": str(uuid.uuid4()), "cursor": "not-a-cursor", "schema_version": 1}
    answer = client.post("/api/v1/sync/pull", json=body, headers=worker)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "bad_cursor"
    answer = client.post(
        "/api/v1/sync/pull", json={**body, "cursor": None, "schema_version": 99}, headers=worker
    )
    assert answer.json()["error"]["code"] == "unsupported_schema_version"
    answer = client.post(
        "/api/v1/sync/push", json={"client_id": "x", "schema_version": 1, "mutations": []}, headers=worker
    )
    assert answer.status_code == 422 and "client_id" in answer.text


def test_another_users_client_id_is_refused(client: Client, make_device: MakeDevice) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    other = login(client, "demo-worker-2")
    answer = client.post(
        "/api/v1/sync/pull", json={"client_id": device.client_id, "schema_version": 1}, headers=other
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "client_of_another_user"


def test_signing_in_as_another_user_on_a_tablet_never_shows_the_previous_users_households(
    make_device: MakeDevice, client: Client
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    c01 = set(device.view("household"))
    assert c01

    device.login("demo-worker-3", "demo")
    assert device.view("household") == {} and device.cursor is None
    device.sync()  # a client id of its own: the first user's would be refused (client_of_another_user)
    households = device.view("household")
    assert households and not set(households) & c01
    assert {h["community_id"] for h in households.values()} == {str(node_id("C03"))}
    # The tablet keeps its name for administrators, whoever signs in on it.
    device.login("demo-worker-3", "demo")
    devices = client.get("/api/v1/admin/devices", headers=login(client, "demo-admin", device="desk")).json()
    tablets = {d["device_id"] for d in devices if d["device_id"].startswith("dev-")}
    assert len(tablets) == 1


def test_a_tablet_keeps_the_signed_in_users_unsent_edits_until_they_are_sent(make_device: MakeDevice) -> None:
    """Another user cannot sign in while the previous one's edits are only on the tablet: they would be
    lost, or sent in the other user's name."""
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H1, address="还没发送")
    with pytest.raises(DeviceOfAnotherUser, match="demo-worker-1"):
        device.login("demo-worker-3", "demo")
    assert device.view("household")[H1]["address"] == "还没发送"
    device.sync()  # still the first user's session
    assert device.pending() == [] and record_on(device, "household", H1)["address"] == "还没发送"
    device.login("demo-worker-3", "demo")
    device.sync()
    assert H1 not in device.view("household")


def test_a_tablet_from_before_user_ids_were_kept_knows_its_user_by_the_name_as_typed(
    make_device: MakeDevice,
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H1, address="旧版本的平板")
    with device._tx():  # as an older client left it: the name as typed, no user id
        device._set("user_id", None)
        device._set("username", " Demo-Worker-1")
    device.login("demo-worker-1", "demo")
    assert device.view("household")[H1]["address"] == "旧版本的平板" and len(device.pending()) == 1


def test_slow_transaction_never_falls_behind_a_cursor(
    client: Client, make_device: MakeDevice, database_url: str
) -> None:
    """The classic lost-row bug: a write stamped early commits after a pull moved on."""
    device = make_device("demo-worker-1")
    device.sync()
    worker = login(client, "demo-worker-2")  # before the slow writer takes SQLite's single write lock

    async def rename(session: Any) -> None:
        household = await session.get(Household, uuid.UUID(H1))
        household.address = "slow write"

    with _held_open(database_url, rename):
        device.sync()  # reads are not blocked; the slow write is not visible yet
        assert record_on(device, "household", H1)["address"] != "slow write"
        fast_result: dict[str, Any] = {}

        def fast_write() -> None:
            version = client.get(f"/api/v1/households/{H2}", headers=worker).json()["version"]
            fast_result["r"] = client.patch(
                f"/api/v1/households/{H2}", json={"version": version, "address": "fast write"}, headers=worker
            )

        fast = threading.Thread(target=fast_write)
        fast.start()
        fast.join(0.3)
    fast.join(30)
    assert fast_result["r"].status_code == 200
    device.sync()
    assert record_on(device, "household", H1)["address"] == "slow write"
    assert record_on(device, "household", H2)["address"] == "fast write"


def test_a_transactions_stamps_share_one_real_number_taken_at_commit(client: Client) -> None:
    """A transaction's stamps are written at commit with one real number, savepoints or not; none is ever
    committed without it."""
    worker = login(client, "demo-worker-1")
    batch = [
        update_mutation(1, H1, 1, address="甲"),
        update_mutation(2, H1, 1, lat=1000),  # refused: its savepoint is rolled back
        update_mutation(3, H2, 1, address="乙"),
    ]
    answer = push(client, worker, str(uuid.uuid4()), batch)
    assert [r["status"] for r in answer["results"]] == ["applied", "rejected", "applied"]
    quarantined = answer["results"][1]["conflict_ids"][0]
    pushed = _seqs(client, [H1, H2, quarantined])
    assert len(set(pushed.values())) == 1 and min(pushed.values()) > 0
    version = client.get(f"/api/v1/households/{H2}", headers=worker).json()["version"]
    patched = client.patch(
        f"/api/v1/households/{H2}", json={"version": version, "address": "丙"}, headers=worker
    )
    assert patched.status_code == 200
    assert _seqs(client, [H2])[H2] > pushed[H2]
    negative = run_db(client, lambda s: _count(s, SyncChange, SyncChange.seq <= 0))
    assert negative == 0
    # PostgreSQL numbers them inside the COMMIT, from one request row that the COMMIT also removes.
    assert run_db(client, lambda s: _count(s, SyncNumbering, SyncNumbering.placeholder < 0)) == 0


def test_a_create_refused_after_its_stamp_was_made_leaves_no_trace_in_the_feed(
    client: Client, make_device: MakeDevice
) -> None:
    """The database refuses a create in the middle of the batch once its row is being written (its stamp
    for the feed already made): the batch's pass is undone and the mutation quarantined, and no device is
    ever told of a record that does not exist; the creates around it reach devices."""
    worker = login(client, "demo-worker-1")
    before, refused, after = _new_member("前"), _new_member("拒"), _new_member("后")
    batch = [_member_create(i, H1, m) for i, m in enumerate([before, refused, after], start=1)]

    def refuse_the_second(session: Any, _context: Any) -> None:
        if any(isinstance(o, Member) and str(o.id) == refused["id"] for o in session.new):
            raise DataError("INSERT INTO members …", {}, _PgError("22001"))  # value too long

    event.listen(Session, "after_flush", refuse_the_second)
    try:
        answer = push(client, worker, str(uuid.uuid4()), batch)
    finally:
        event.remove(Session, "after_flush", refuse_the_second)
    assert [r["status"] for r in answer["results"]] == ["applied", "rejected", "applied"]
    assert answer["results"][1]["code"] == "unstorable_value"
    stamped = _seqs(client, [before["id"], refused["id"], after["id"]])
    assert sorted(stamped) == sorted([before["id"], after["id"]])
    device = make_device("demo-worker-1")
    device.sync()
    assert record_on(device, "member", before["id"])["name"] == "前"
    assert record_on(device, "member", after["id"])["name"] == "后"
    assert device.record("member", refused["id"]) is None


def _seqs(client: Client, entity_ids: list[str]) -> dict[str, int]:
    async def read(session: Any) -> dict[str, int]:
        query = select(SyncChange.entity_id, SyncChange.seq).where(SyncChange.entity_id.in_(entity_ids))
        return {entity_id: seq for entity_id, seq in await session.execute(query)}

    return dict(run_db(client, read))


# -- push ------------------------------------------------------------------------------------------


def test_replay_returns_the_stored_result_and_applies_nothing_twice(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [update_mutation(1, H1, 1, address="一号"), update_mutation(2, H1, 1, monthly_benefit_fen=1)]
    first = push(client, worker, cid, batch)
    assert [r["status"] for r in first["results"]] == ["applied", "applied_with_conflict"]
    again = push(client, worker, cid, batch)
    assert [r["status"] for r in again["results"]] == ["already_applied", "already_applied"]
    assert again["results"][1]["conflict_ids"] == first["results"][1]["conflict_ids"]
    household = client.get(f"/api/v1/households/{H1}", headers=worker).json()
    assert household["version"] == 2 and household["address"] == "一号"
    assert len(conflicts(client, H1)) == 1


def test_another_mutation_at_a_used_seq_is_kept_for_a_supervisor_and_the_seq_keeps_its_own(
    client: Client,
) -> None:
    """The device drops it once a pull passes that seq: answered seq_reused and kept nowhere, it was lost."""
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    assert (
        push(client, worker, cid, [update_mutation(1, H1, 1, address="甲")])["results"][0]["status"]
        == "applied"
    )
    other = update_mutation(1, H1, 1, address="乙")
    answers = [push(client, worker, cid, [other]) for _ in range(2)]
    for answer in answers:
        (result,) = answer["results"]
        assert result["status"] == "rejected" and result["code"] == "seq_reused"
        assert answer["last_mutation_seq"] == 1
    (kept,) = conflicts(client, H1)
    assert (
        answers[0]["results"][0]["conflict_ids"] == answers[1]["results"][0]["conflict_ids"] == [kept["id"]]
    )
    assert kept["kind"] == "quarantined" and kept["client_value"]["changes"]["address"]["new"] == "乙"
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "甲"


def test_one_mutation_sent_twice_in_one_batch_is_applied_once_and_then_replayed(client: Client) -> None:
    """Log rows are written at the batch's end: the second copy must still find the first."""
    worker = login(client, "demo-worker-1")
    edit = update_mutation(1, H1, 1, address="甲")
    resent = edit | {"seq": 2}  # the same edit at the next seq, as a re-registered device sends it
    answer = push(client, worker, str(uuid.uuid4()), [edit, edit, resent])
    assert [r["status"] for r in answer["results"]] == ["applied", "already_applied", "already_applied"]
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["version"] == 2
    assert conflicts(client, H1) == []


def test_a_mutation_id_reused_for_another_edit_is_quarantined_however_the_batch_is_cut(
    client: Client,
) -> None:
    """In one batch both edits applied; in two, the second was answered already_applied and lost."""
    worker = login(client, "demo-worker-1")

    def same_id_two_edits(household: str) -> list[dict[str, Any]]:
        mutation_id = str(uuid.uuid4())
        return [
            update_mutation(1, household, 1, address="第一") | {"mutation_id": mutation_id},
            update_mutation(2, household, 1, address="第二") | {"mutation_id": mutation_id},
        ]

    together = push(client, worker, str(uuid.uuid4()), same_id_two_edits(H1))["results"]
    cid, (first, second) = str(uuid.uuid4()), same_id_two_edits(H2)
    split = push(client, worker, cid, [first])["results"] + push(client, worker, cid, [second])["results"]
    for results, household in ((together, H1), (split, H2)):
        assert [(r["status"], r.get("code")) for r in results] == [
            ("applied", None),
            ("rejected", "mutation_id_reused"),
        ]
        assert client.get(f"/api/v1/households/{household}", headers=worker).json()["address"] == "第一"
        (kept,) = [c for c in conflicts(client, household) if c["kind"] == "quarantined"]
        assert kept["client_value"]["changes"]["address"]["new"] == "第二"
    # Another user's mutation_id names nothing of this user's: their edit is their own.
    colleague = login(client, "demo-worker-2")
    theirs = update_mutation(1, H2, 1, address="同事的") | {"mutation_id": first["mutation_id"]}
    (result,) = push(client, colleague, str(uuid.uuid4()), [theirs])["results"]
    assert result["status"] == "applied_with_conflict"  # a parallel_update: the first edit came before
    assert client.get(f"/api/v1/households/{H2}", headers=worker).json()["address"] == "同事的"


def test_a_gap_stops_the_batch_and_names_the_expected_seq(client: Client) -> None:
    """Out-of-order create and update from one device: the update waits for its create."""
    worker = login(client, "demo-worker-1")
    cid, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    create = {
        "op": "household.create.v1",
        "seq": 1,
        "mutation_id": str(uuid.uuid4()),
        "household": {
            "id": new_id,
            "registry_no": "DB-NEW-1",
            "community_id": str(node_id("C01")),
            "address": "新",
        },
    }
    later = update_mutation(2, new_id, 1, address="改")
    early = push(client, worker, cid, [later])
    assert early["results"] == [] and early["stopped"] == "out_of_order" and early["expected_seq"] == 1
    both = push(client, worker, cid, [create, later])
    assert [r["status"] for r in both["results"]] == ["applied", "applied"]
    assert client.get(f"/api/v1/households/{new_id}", headers=worker).json()["address"] == "改"


def test_a_create_sent_again_under_another_mutation_converges_only_if_it_carries_nothing_new(
    client: Client,
) -> None:
    """The same create queued twice (a new mutation_id each time) applies once, even after later edits;
    one naming the same id with other content is kept for a supervisor, never merged away."""
    worker, cid, new_id = login(client, "demo-worker-1"), str(uuid.uuid4()), str(uuid.uuid4())
    member = {"id": str(uuid.uuid4()), "name": "新户主", "relation": "head"}
    member["id_number"] = valid_id("13010219800101123")
    household = {
        "id": new_id,
        "registry_no": "DB-TWICE-1",
        "community_id": str(node_id("C01")),
        "address": "一号",
        "members": [member],
    }

    def create(seq: int, **changed: Any) -> dict[str, Any]:
        sent = household | changed
        return {"op": "household.create.v1", "seq": seq, "mutation_id": str(uuid.uuid4()), "household": sent}

    def add_member(seq: int, **changed: Any) -> dict[str, Any]:
        body = {"household_id": new_id, "member": member | changed}
        return {"op": "member.create.v1", "seq": seq, "mutation_id": str(uuid.uuid4()), **body}

    batch = [create(1), update_mutation(2, new_id, 1, address="二号"), create(3), add_member(4)]
    first = push(client, worker, cid, batch)["results"]
    assert [r["status"] for r in first] == ["applied"] * 4, first
    different = [create(5, address="三号"), add_member(6, name="别人"), create(7, members=[])]
    results = push(client, worker, cid, different)["results"]
    assert [(r["status"], r.get("code")) for r in results] == [("rejected", "created_otherwise")] * 2 + [
        ("applied", None)  # fewer members than created: nothing in it is new
    ]
    stored = client.get(f"/api/v1/households/{new_id}", headers=worker).json()
    assert stored["address"] == "二号" and [m["name"] for m in stored["members"]] == ["新户主"]
    kept = {c["mutation_id"] for c in conflicts(client, new_id) + conflicts(client, member["id"])}
    assert kept == {different[0]["mutation_id"], different[1]["mutation_id"]}


def _applied_by_another_push(
    headers: dict[str, str], mutation: dict[str, Any]
) -> Callable[[Any], Awaitable[None]]:
    """A `_held_open` change: `mutation` applied as a push by the user behind `headers` applies it (its
    op's handler, inside a push's transaction); flushed, not yet committed."""

    async def change(session: Any) -> None:
        actor = await authenticate(session, headers["Authorization"].removeprefix("Bearer "))
        body = {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": [mutation]}
        decoded = sync_push.decode(json.dumps(body).encode())[1][0]
        assert not isinstance(decoded, MalformedMutation), decoded
        with transaction.held_by_push(session, str(uuid.uuid4())):
            await sync_apply.apply(session, actor, decoded, load_rules())

    return change


def _push_waiting(
    client: Client, database_url: str, headers: dict[str, str], mutations: list[dict[str, Any]]
) -> Callable[[], Any]:
    """Start a push on another thread and return once it waits for a lock held by another transaction
    (on SQLite, whose one writer at a time makes it wait at its BEGIN, after half a second). Calling
    what is returned gives the push's answer."""
    pushed: dict[str, Any] = {}
    pusher = threading.Thread(
        target=lambda: pushed.update(r=push(client, headers, str(uuid.uuid4()), mutations))
    )
    pusher.start()
    if database_url.startswith("sqlite"):
        pusher.join(0.5)
    else:

        async def waiting(session: Any) -> int:
            query = sql("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return int((await session.execute(query)).scalar())

        for _ in range(300):
            if not pusher.is_alive() or run_db(client, waiting):
                break
            pusher.join(0.05)

    def answer() -> Any:
        pusher.join(30)
        return pushed["r"]

    return answer


def _create(household: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    return {"op": "household.create.v1", "seq": seq, "mutation_id": str(uuid.uuid4()), "household": household}


def _new_household(registry_no: str, **changed: Any) -> dict[str, Any]:
    member = {"id": str(uuid.uuid4()), "name": "新户主", "relation": "head"}
    member["id_number"] = valid_id("13010219800101123")
    return {
        "id": str(uuid.uuid4()),
        "registry_no": registry_no,
        "community_id": str(node_id("C01")),
        "address": "一号",
        "members": [member],
    } | changed


# The batch the second push sends: the create alone (applied in the push's single fast pass), or after
# a refused mutation (which sends the whole batch through the slow pass, one savepoint per mutation).
ALONE, AFTER_A_REFUSAL = "alone", "after_a_refusal"


def _second_batch(create: dict[str, Any], shape: str) -> list[dict[str, Any]]:
    if shape == ALONE:
        return [create]
    return [update_mutation(1, str(uuid.uuid4()), 1, address="无此户"), create | {"seq": 2}]


@pytest.mark.parametrize("shape", [ALONE, AFTER_A_REFUSAL])
def test_the_same_create_pushed_by_two_clients_at_once_converges(
    client: Client, database_url: str, shape: str
) -> None:
    """Two tablets of its creator push the same household create at the same moment: the second one
    runs into the first's insert of the id, and once the first commits gets what a create sent after it
    gets, `applied` (the same create converges), not a rejection about a duplicate. (Another user's
    create under the id is refused whatever it holds: see test_privacy_masking.)"""
    first, second = login(client, "demo-worker-1", device="tablet-a"), login(client, "demo-worker-1")
    household = _new_household("DB-RACE-1")
    with _held_open(database_url, _applied_by_another_push(first, _create(household))):
        answer = _push_waiting(client, database_url, second, _second_batch(_create(household), shape))
    results = answer()["results"]
    assert (results[-1]["status"], results[-1].get("code")) == ("applied", None), results
    stored = client.get(f"/api/v1/households/{household['id']}", headers=second).json()
    assert stored["version"] == 1 and [m["id"] for m in stored["members"]] == [household["members"][0]["id"]]
    assert conflicts(client, household["id"]) == []


@pytest.mark.parametrize("shape", [ALONE, AFTER_A_REFUSAL])
def test_another_create_of_the_same_id_pushed_at_once_gets_the_answer_it_gets_after_it(
    client: Client, database_url: str, shape: str
) -> None:
    """Same race, other content under the id: refused as `created_otherwise`, exactly as when it arrives
    after the first create, and kept for a supervisor."""
    first, second = login(client, "demo-worker-1", device="tablet-a"), login(client, "demo-worker-1")
    household = _new_household("DB-RACE-2")
    other = _create(household | {"address": "二号"})
    with _held_open(database_url, _applied_by_another_push(first, _create(household))):
        answer = _push_waiting(client, database_url, second, _second_batch(other, shape))
    results = answer()["results"]
    assert (results[-1]["status"], results[-1].get("code")) == ("rejected", "created_otherwise"), results
    assert [c["mutation_id"] for c in conflicts(client, household["id"])] == [other["mutation_id"]]
    stored = client.get(f"/api/v1/households/{household['id']}", headers=second).json()
    assert stored["address"] == "一号"
    # A registry number in use stays refused as before, once, however often the push tried it.
    taken = _create(_new_household("DB-RACE-2"))
    again = push(client, second, str(uuid.uuid4()), [taken])["results"]
    assert [(r["status"], r.get("code")) for r in again] == [("rejected", "duplicate")]
    quarantined = [
        e for e in audit_rows(client, "mutation.quarantine") if e.entity_id == again[0]["conflict_ids"][0]
    ]
    assert len(quarantined) == 1


def test_an_observation_id_stored_at_once_on_another_visit_gets_the_answer_it_gets_after_it(
    client: Client, database_url: str
) -> None:
    """An observation id another push is storing on another visit (whose lock does not make this push
    wait before it reads) is refused as `observation_conflict`, as after that push, not as a bare
    `integrity_error`."""
    first, second = login(client, "demo-worker-2"), login(client, "demo-worker-1")
    here, there = assign(client), assign(client, "DB-C01-0002")
    answer = next(observation(a) for a in complete_answers(client, here, first) if a.row_id is None)

    def answering(visit: dict[str, Any], seq: int = 1) -> dict[str, Any]:
        mutation = {"op": "visit.answer.v1", "seq": seq, "mutation_id": str(uuid.uuid4())}
        return mutation | {"visit_id": visit["id"], "observations": [answer]}

    batch = [update_mutation(1, str(uuid.uuid4()), 1, address="无此户"), answering(there, seq=2)]
    with _held_open(database_url, _applied_by_another_push(first, answering(here))):
        pushed = _push_waiting(client, database_url, second, batch)
    results = pushed()["results"]
    assert (results[-1]["status"], results[-1].get("code")) == ("rejected", "observation_conflict"), results
    stored = client.get(f"/api/v1/visits/{here['id']}/observations", headers=first).json()
    assert [o["id"] for o in stored] == [answer["id"]]
    assert client.get(f"/api/v1/visits/{there['id']}/observations", headers=first).json() == []


def test_two_pushes_editing_a_household_and_the_others_member_both_land(client: Client) -> None:
    """One tablet edits H1 and a member of H2, another H2 and a member of H1, at the same moment. Each
    push locks what it writes; had they locked a household, then a member, then the member's household,
    each would hold a household the other waits for: on PostgreSQL one push would die of a deadlock
    instead of landing. The test holds both members' rows until both pushes wait, so that they meet
    every time. On SQLite the pushes take turns."""
    one, two = login(client, "demo-worker-1", device="tablet-1"), login(client, "demo-worker-2", device="t2")
    member_of = {h: client.get(f"/api/v1/households/{h}", headers=one).json()["members"][0] for h in (H1, H2)}
    held = select(Member.id).where(Member.id.in_([uuid.UUID(m["id"]) for m in member_of.values()]))

    def batch(household: str, member: dict[str, Any]) -> dict[str, Any]:
        version = client.get(f"/api/v1/households/{household}", headers=one).json()["version"]
        edits = [
            update_mutation(1, household, version, address=f"{household[:4]} 新址"),
            member_update_mutation(2, member, relation=(member["relation"], "同住")),
        ]
        return {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": edits}

    posts = [
        ("/api/v1/sync/push", batch(H1, member_of[H2]), one),
        ("/api/v1/sync/push", batch(H2, member_of[H1]), two),
    ]
    answers = posted_at_once(client, posts, held)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    for answer in answers:
        assert [r["status"] for r in answer.json()["results"]] == ["applied", "applied"], answer.text
    for household in (H1, H2):
        stored = client.get(f"/api/v1/households/{household}", headers=one).json()
        assert stored["address"] == f"{household[:4]} 新址"
        assert stored["members"][0]["relation"] == "同住"


def test_a_member_patched_while_a_push_edits_its_household_and_it_both_land(client: Client) -> None:
    """A PATCH of a member locks the member and its household; a push editing the household and the
    member locks them too. Had the PATCH taken the member first and the push the household first, each
    would hold what the other waits for: on PostgreSQL one of them died of a deadlock (a 500). The test
    holds the member's row so that the PATCH waits for it before the push starts."""
    desk, tablet = login(client, "demo-reviewer-community", device="desk"), login(client, "demo-worker-1")
    household = client.get(f"/api/v1/households/{H1}", headers=desk).json()
    member = household["members"][0]
    edits = [
        update_mutation(1, H1, household["version"], address="推送改"),
        member_update_mutation(2, member, employment=(member["employment"], "灵活就业")),
    ]
    requests = [
        (
            "PATCH",
            f"/api/v1/members/{member['id']}",
            {"version": member["version"], "health": "慢性病"},
            desk,
        ),
        (
            "POST",
            "/api/v1/sync/push",
            {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": edits},
            tablet,
        ),
    ]
    patched, pushed = sent_in_turn(
        client, requests, select(Member.id).where(Member.id == uuid.UUID(member["id"]))
    )
    assert (patched.status_code, pushed.status_code) == (200, 200), (patched.text, pushed.text)
    assert [r["status"] for r in pushed.json()["results"]] == ["applied", "applied_with_conflict"], (
        pushed.text
    )
    stored = client.get(f"/api/v1/households/{H1}", headers=desk).json()
    assert stored["address"] == "推送改"
    assert (stored["members"][0]["health"], stored["members"][0]["employment"]) == ("慢性病", "灵活就业")


def test_a_malformed_mutation_is_quarantined_whole_and_the_queue_moves_on(client: Client) -> None:
    """A mutation that does not match its op's shape (an unknown field, an op this server does not know)
    is kept for a supervisor like any refused one; refusing the batch would block the device for good."""
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    odd_field = update_mutation(2, H1, 1, address="半路") | {"colour": "red"}
    future_op: dict[str, Any] = {
        "op": "household.teleport.v9",
        "seq": 3,
        "mutation_id": str(uuid.uuid4()),
        "to": "月球",
    }
    op_not_text: dict[str, Any] = {"op": 7, "seq": 4, "mutation_id": str(uuid.uuid4())}
    batch = [
        update_mutation(1, H1, 1, address="第一"),
        odd_field,
        future_op,
        op_not_text,
        update_mutation(5, H1, 1, address="最后"),
    ]
    answer = push(client, worker, cid, batch)
    assert [(r["status"], r.get("code")) for r in answer["results"]] == [
        ("applied", None),
        ("rejected", "malformed_mutation"),
        ("rejected", "malformed_mutation"),
        ("rejected", "malformed_mutation"),
        ("applied", None),
    ]
    assert answer["last_mutation_seq"] == 5
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "最后"
    for sent in (odd_field, future_op):
        (kept,) = conflicts(client, sent["mutation_id"])
        assert kept["kind"] == "quarantined" and kept["code"] == "malformed_mutation"
        assert kept["client_value"]["body"] == sent and kept["client_value"]["op"] == sent["op"]
    (kept,) = conflicts(client, op_not_text["mutation_id"])
    assert kept["client_value"]["body"] == op_not_text and kept["client_value"]["op"] == ""

    # Sent again (the answer was lost): the stored results, nothing applied or quarantined twice.
    again = push(client, worker, cid, batch)
    assert [r["status"] for r in again["results"]] == [
        "already_applied",
        "rejected",
        "rejected",
        "rejected",
        "already_applied",
    ]
    assert len(conflicts(client, future_op["mutation_id"])) == 1
    # Every quarantine is a write, and audited: once each, with what was refused and why.
    quarantined = audit_rows(client, "mutation.quarantine")
    assert sorted(r.changes["op"] for r in quarantined) == sorted(
        ["household.update.v1", future_op["op"], ""]
    )
    assert {r.changes["code"] for r in quarantined} == {"malformed_mutation"}


def test_a_mutation_without_a_readable_seq_refuses_the_batch_naming_it(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    batch = [update_mutation(1, H1, 1, address="甲"), {"op": "household.update.v1", "seq": "two"}]
    body = {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": batch}
    response = client.post("/api/v1/sync/push", json=body, headers=worker)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"][0]["field"] == "mutations[1].seq"
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] != "甲"
    not_json = client.post("/api/v1/sync/push", content=b"{", headers=worker)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "malformed_json"
    # Nested deeper than the JSON decoder goes: a 500 on both endpoints, now the same 400.
    deep = b"[" * 2000 + b"]" * 2000
    for endpoint, text in (
        ("push", json.dumps(body).replace('"seq": "two"', '"seq": 2, "x": DEEP')),
        ("pull", json.dumps({"client_id": body["client_id"], "schema_version": 1, "x": "DEEP"})),
    ):
        content = text.replace('"DEEP"', "DEEP").replace("DEEP", deep.decode()).encode()
        answer = client.post(f"/api/v1/sync/{endpoint}", content=content, headers=worker)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "malformed_json", answer.text


def test_a_time_without_a_zone_is_refused_where_it_is_read_and_never_blocks_the_queue(client: Client) -> None:
    """A zone-less time names no instant (the server would have to guess the tablet's zone). The push's
    `device_now` without one is a 422 naming it; inside a mutation it makes that mutation malformed."""
    worker = login(client, "demo-worker-1")
    cid, naive = str(uuid.uuid4()), "2026-11-29T07:58:00"
    envelope = {"client_id": cid, "schema_version": 1, "mutations": [], "device_now": naive}
    refused = client.post("/api/v1/sync/push", json=envelope, headers=worker)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "device_now"

    visit = assign(client)
    (answer,) = [observation(a) for a in complete_answers(client, visit, worker) if a.row_id is None][:1]

    def answering(seq: int, **changed: Any) -> dict[str, Any]:
        body = {"visit_id": visit["id"], "observations": [answer | changed]}
        return {"op": "visit.answer.v1", "seq": seq, "mutation_id": str(uuid.uuid4()), **body}

    batch = [
        update_mutation(1, H1, 1, address="甲") | {"device_time": naive},
        answering(2, device_time=naive),
        answering(3, gps=answer["gps"] | {"fix_time": naive}),
        update_mutation(4, H1, 1, address="乙") | {"device_time": naive + "+08:00"},
    ]
    pushed = push(client, worker, cid, batch)
    assert [(r["status"], r.get("code")) for r in pushed["results"]] == [
        ("rejected", "malformed_mutation"),
        ("rejected", "malformed_mutation"),
        ("rejected", "malformed_mutation"),
        ("applied", None),
    ]
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "乙"
    for kept in batch[:3]:
        assert [c["kind"] for c in conflicts(client, kept["mutation_id"])] == ["quarantined"]
    assert push(client, worker, cid, batch)["last_mutation_seq"] == 4  # sent again: the stored results


def test_a_number_or_time_beyond_what_its_column_holds_is_malformed_not_a_stuck_queue(client: Client) -> None:
    """A base_version past INTEGER made PostgreSQL refuse the conflict row, taken for a passing fault
    (the queue stuck for good); on SQLite a past-BIGINT one was a 500, as was a time in year 0 in UTC."""
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [
        update_mutation(1, H1, 2**40, monthly_benefit_fen=12345),  # guarded: opens a conflict
        update_mutation(2, H1, 2**70, address="甲"),
        update_mutation(3, H1, 1, address="乙") | {"device_time": "0001-01-01T00:00:00+01:00"},
        update_mutation(4, H1, 1, address="丙"),
    ]
    pushed = push(client, worker, cid, batch)
    assert pushed.get("stopped") is None and pushed["last_mutation_seq"] == 4
    assert [r.get("code") for r in pushed["results"]] == ["malformed_mutation"] * 3 + [None]
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "丙"
    beyond = {
        "client_id": cid,
        "schema_version": 1,
        "mutations": [update_mutation(2**63, H1, 1, address="丁")],
    }
    refused = client.post("/api/v1/sync/push", json=beyond, headers=worker)
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "mutations[0].seq"
    # A number past a float's range (JSON allows `1e400`) was a 500 when its mutation was kept whole.
    huge_lat = update_mutation(5, H1, 1, lat="LAT")
    huge_op = {"op": "OP", "seq": 6, "mutation_id": str(uuid.uuid4())}
    body = {"client_id": cid, "schema_version": 1, "mutations": [huge_lat, huge_op]}
    text = json.dumps(body).replace('"LAT"', "1e400").replace('"OP"', "-1e400")
    answer = client.post("/api/v1/sync/push", content=text, headers=worker)
    assert answer.status_code == 200, answer.text
    assert [r.get("code") for r in answer.json()["results"]] == ["malformed_mutation"] * 2
    (kept,) = conflicts(client, huge_lat["mutation_id"])
    assert kept["client_value"]["body"]["changes"]["lat"]["new"] == "1e400"  # kept as sent, as text


class _PgError(Exception):
    """What asyncpg raises, reduced to what the push reads of it."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("failure", "fate"),
    [
        (DBAPIError("UPDATE …", {}, _PgError("22003")), "rejected"),  # numeric value out of range
        (DBAPIError("INSERT …", {}, _PgError("54000")), "rejected"),  # index row too large
        (OverflowError("Python int too large to convert to SQLite INTEGER"), "rejected"),
        (OperationalError("UPDATE …", {}, _PgError("40001")), "transient"),  # serialisation failure
        (OperationalError("UPDATE …", {}, _PgError("08006")), "transient"),  # connection lost
    ],
)
def test_a_value_the_database_refuses_is_quarantined_and_only_a_passing_fault_stops_the_batch(
    client: Client, failure: Exception, fate: str
) -> None:
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [update_mutation(i, H1, 1, address=f"第{i}次") for i in range(1, 4)]

    def fail_second(mutation: Any) -> None:
        if mutation.seq == 2:
            raise failure

    sync_push.fault_hook = fail_second
    try:
        answer = push(client, worker, cid, batch)
    finally:
        sync_push.fault_hook = None
    if fate == "transient":
        assert answer["stopped"] == "transient" and answer["last_mutation_seq"] == 1
        return
    assert answer.get("stopped") is None and answer["last_mutation_seq"] == 3
    assert answer["results"][1]["status"] == "rejected"
    assert answer["results"][1]["code"] == "unstorable_value"
    (kept,) = [c for c in conflicts(client, H1) if c["mutation_id"] == batch[1]["mutation_id"]]
    assert kept["kind"] == "quarantined" and kept["code"] == "unstorable_value"


def test_one_invalid_mutation_in_the_middle_of_500_is_quarantined_and_the_queue_moves_on(
    client: Client,
) -> None:
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [update_mutation(i, H1, 1, address=f"地址{i}") for i in range(1, 501)]
    batch[249] = update_mutation(250, H1, 1, lat=1000)  # no such latitude
    answer = push(client, worker, cid, batch)
    statuses = [r["status"] for r in answer["results"]]
    assert answer["last_mutation_seq"] == 500 and len(statuses) == 500
    assert statuses[249] == "rejected" and answer["results"][249]["code"] == "validation_error"
    assert statuses.count("rejected") == 1
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "地址500"
    quarantined = [c for c in conflicts(client, H1) if c["kind"] == "quarantined"]
    assert len(quarantined) == 1 and quarantined[0]["client_value"]["changes"]["lat"]["new"] == 1000


def test_a_transaction_aborted_mid_batch_keeps_what_came_before_and_nothing_of_itself(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [update_mutation(i, H1, i, address=f"第{i}次") for i in range(1, 6)]

    def crash_on_third(mutation: Any) -> None:
        if mutation.seq == 3:
            raise sync_push.TransientFault

    sync_push.fault_hook = crash_on_third
    try:
        answer = push(client, worker, cid, batch)
    finally:
        sync_push.fault_hook = None
    assert answer["stopped"] == "transient" and answer["last_mutation_seq"] == 2
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "第2次"
    rest = push(client, worker, cid, batch)
    assert [r["status"] for r in rest["results"]] == ["already_applied"] * 2 + ["applied"] * 3
    logged = run_db(client, lambda s: _count(s, MutationLog, MutationLog.client_id == uuid.UUID(cid)))
    assert logged == 5


def test_a_connection_lost_mid_batch_answers_503_and_the_resent_batch_applies_once(client: Client) -> None:
    """PostgreSQL drops the connection while the batch is written (its backend terminated, as in a
    restart): the push's transaction is gone with it, so the device is told to retry (503), and the same batch sent
    again applies each mutation once, none quarantined."""
    if client.app.state.db.is_sqlite:
        pytest.skip("SQLite is a file in our own process: there is no connection to lose")
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    batch = [update_mutation(i, H1, i, address=f"第{i}次") for i in range(1, 6)]
    hang_up = [
        "CREATE FUNCTION hang_up() RETURNS trigger AS $$ BEGIN "
        "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER hang_up BEFORE UPDATE ON households FOR EACH ROW EXECUTE FUNCTION hang_up()",
    ]
    _execute(client, hang_up)
    body = {"client_id": cid, "schema_version": 1, "mutations": batch}
    lost = client.post("/api/v1/sync/push", json=body, headers=worker)
    assert lost.status_code == 503 and lost.json()["error"]["code"] == "unavailable", lost.text
    _execute(client, ["DROP TRIGGER hang_up ON households", "DROP FUNCTION hang_up()"])
    before = client.get(f"/api/v1/households/{H1}", headers=worker).json()
    assert before["address"] != "第1次" and before["version"] == 1
    again = push(client, worker, cid, batch)
    assert [r["status"] for r in again["results"]] == ["applied"] * 5 and again["last_mutation_seq"] == 5
    assert client.get(f"/api/v1/households/{H1}", headers=worker).json()["address"] == "第5次"
    logged = run_db(client, lambda s: _count(s, MutationLog, MutationLog.client_id == uuid.UUID(cid)))
    assert logged == 5


def _execute(client: Client, statements: list[str]) -> None:
    async def run(session: Any) -> None:
        for statement in statements:
            await session.execute(sql(statement))

    run_db(client, run)


async def _count(session: Any, model: Any, *where: Any) -> int:
    return len(list((await session.execute(select(model).where(*where))).scalars()))


def test_a_proxys_error_page_is_a_lost_answer_that_sync_retries(client: Client, tmp_path: Any) -> None:
    """A reverse proxy answers 502 with an HTML page while the server restarts (a captive portal answers
    200 with one): that is no answer of the server's, so the tablet retries as for a lost request."""
    proxy_errors = ["502"]
    bare: list[tuple[int, bytes]] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        if bare:
            status, content = bare.pop(0)
            return httpx.Response(status, content=content, headers={"location": "http://portal.test/"})
        if proxy_errors:
            page = b"<html><body><h1>Bad Gateway</h1></body></html>"
            return httpx.Response(
                int(proxy_errors.pop(0)), content=page, headers={"content-type": "text/html"}
            )
        answer = client.request(
            request.method, request.url.path, content=request.content, headers=request.headers
        )
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    http = httpx.Client(base_url="http://fivestep.test", transport=httpx.MockTransport(proxy))
    device = Device(tmp_path / "behind-a-proxy.sqlite", httpx_transport(http))
    with pytest.raises(NetworkError, match="502"):
        device.login("demo-worker-1", "demo")
    device.login("demo-worker-1", "demo")
    proxy_errors.extend(["502", "200", "504"])
    waits: list[float] = []
    report = device.sync_with_retry(sleep=waits.append)
    assert len(waits) == 3 and report.pulled and device.view("household")
    # A captive portal's redirect to its sign-in page, an empty answer: no answer of the server's either.
    # They used to end the sync at once ("HTTP 302: None"; a traceback for the empty 200).
    bare.extend([(302, b""), (200, b""), (404, b"")])
    waits.clear()
    device.update_household(H1, address="门户之后")
    report = device.sync_with_retry(sleep=waits.append)
    assert len(waits) == 3 and device.pending() == []
    assert record_on(device, "household", H1)["address"] == "门户之后"
    device.close()


def test_a_busy_server_is_given_the_time_it_asks_for_before_the_next_try(
    client: Client, tmp_path: Any
) -> None:
    """A server whose database is busy answers 503 with how long to wait (`details.retry_after_seconds`, as
    its Retry-After header). The tablet tried again after half a second, and again a second later, finding
    it as busy each time: eight tries spent in a few seconds of a restart."""
    busy = [2]

    def server(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if path.endswith("/pull") and busy:
            busy.pop()
            error = {"code": "unavailable", "message": "busy", "details": {"retry_after_seconds": 7}}
            return 503, {"error": error}
        return httpx_transport(client)(path, body, token)

    device = Device(tmp_path / "busy.sqlite", server)
    device.login("demo-worker-1", "demo")
    waits: list[float] = []
    report = device.sync_with_retry(sleep=waits.append)
    assert len(waits) == 1 and waits[0] >= 7 and report.pulled
    device.close()


def test_an_edit_the_server_refused_no_longer_shows_though_the_pull_after_it_was_lost(
    client: Client, tmp_path: Any
) -> None:
    """A push answered `rejected`; the network went before the pull. The tablet went on showing the
    refused edit as the household's value until a later sync, as if the server had taken it."""
    pulls_lost = [False]

    def network(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if path.endswith("/pull") and pulls_lost[0]:
            raise NetworkError("the network went away")
        return httpx_transport(client)(path, body, token)

    device = Device(tmp_path / "refused.sqlite", network)
    device.login("demo-worker-1", "demo")
    device.sync()
    before = record_on(device, "household", H1)["lat"]
    device.update_household(H1, lat=91.5, address="新地址")  # no such latitude: the whole edit is refused
    device.update_household(H2, address="另一户的新地址")
    pulls_lost[0] = True
    with pytest.raises(NetworkError):
        device.sync()
    shown = device.view("household")
    assert (shown[H1]["lat"], shown[H1]["address"]) == (before, record_on(device, "household", H1)["address"])
    assert shown[H2]["address"] == "另一户的新地址"  # taken: shown, as it will be once pulled
    device.close()


def test_a_push_too_large_for_the_way_to_the_server_is_sent_in_smaller_batches(
    client: Client, tmp_path: Any
) -> None:
    """A tablet back from days offline holds many edits; a batch of them is larger than what a proxy on
    the way takes (nginx answers `413 Request Entity Too Large` above its body limit, 1 MiB by default;
    the server itself, 413 `payload_too_large` above 10 MB). Every sync sent the same batch again: the
    tablet's queue never moved again."""
    limit = 128 * 1024

    def proxy(request: httpx.Request) -> httpx.Response:
        if len(request.content) > limit:
            page = b"<html><head><title>413 Request Entity Too Large</title></head></html>"
            return httpx.Response(413, content=page, headers={"content-type": "text/html"})
        answer = client.request(
            request.method, request.url.path, content=request.content, headers=request.headers
        )
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    http = httpx.Client(base_url="http://fivestep.test", transport=httpx.MockTransport(proxy))
    device = Device(tmp_path / "back-from-the-village.sqlite", httpx_transport(http))
    device.login("demo-worker-1", "demo")
    device.sync()
    for i in range(120):
        device.update_household(H1, address=f"第{i}次：" + "很长的地址" * 95)
    report = device.sync_with_retry(attempts=2, sleep=lambda _: None)
    assert report.pushed == 120 and device.pending() == []
    assert record_on(device, "household", H1)["address"].startswith("第119次")
    device.close()


def test_a_push_the_server_could_not_finish_is_tried_again_until_every_edit_is_in(
    make_device: MakeDevice, client: Client
) -> None:
    """A passing database fault stopped the push at seq 2 (`stopped: transient`). The sync used to end as
    if all went well: no retry, and the edits from seq 2 on stayed on the tablet without a word."""
    device = make_device("demo-worker-1")
    device.sync()
    for i in range(1, 4):
        device.update_household(H1, address=f"第{i}次")
    faulty = [True]

    def fault_on_second(mutation: Any) -> None:
        if faulty and mutation.seq == 2:
            raise sync_push.TransientFault

    def wait(seconds: float) -> None:
        waits.append(seconds)
        faulty.clear()  # the fault passes while the tablet waits

    waits: list[float] = []
    heard: list[Exception] = []
    sync_push.fault_hook = fault_on_second
    try:
        report = device.sync_with_retry(sleep=wait, on_retry=lambda problem, _: heard.append(problem))
    finally:
        sync_push.fault_hook = None
    assert len(waits) == 1 and "edit seq 2" in str(heard[0])
    assert report.held_back is None and device.pending() == []
    assert record_on(device, "household", H1)["address"] == "第3次"
    # A fault that does not pass: the last report says which edit waits, and the edits stay queued.
    device.update_household(H1, address="第4次")
    sync_push.fault_hook = lambda mutation: (_ for _ in ()).throw(sync_push.TransientFault())
    try:
        report = device.sync_with_retry(attempts=2, sleep=waits.append)
    finally:
        sync_push.fault_hook = None
    assert report.held_back == 4 and [m["seq"] for m in device.pending()] == [4]


def test_an_edit_holding_a_nul_character_is_refused_on_the_tablet_not_queued_to_stop_the_queue(
    make_device: MakeDevice,
) -> None:
    """The server refuses a whole push holding a NUL character (422 nul_character). Queued (typed as
    `address="a\\u0000b"` into `fivestep device edit`, pasted into a field), it stopped every later
    sync at that push: no edit of the tablet's reached the server again."""
    device = make_device("demo-worker-1")
    device.sync()
    with pytest.raises(UnsendableEdit, match="NUL"):
        device.update_household(H1, address="解放街\x003号")
    with pytest.raises(UnsendableEdit):
        device.answer(
            str(uuid.uuid4()),
            [{"id": str(uuid.uuid4()), "template": "step.look", "item": "x", "note": "\x00"}],
        )
    assert device.pending() == []
    device.update_household(H1, address="解放街3号")
    device.sync()
    assert device.pending() == [] and record_on(device, "household", H1)["address"] == "解放街3号"


def test_clock_offset_is_measured_and_orders_nothing(client: Client, make_device: MakeDevice) -> None:
    three_days_ms = 3 * 86400 * 1000
    device = make_device("demo-worker-1", clock_offset_s=-3 * 86400)
    device.sync()  # nothing to push: the pull measures the clock

    def shown() -> dict[str, Any]:
        admin = login(client, "demo-admin", device="desk")
        listed = client.get("/api/v1/admin/devices", headers=admin).json()
        return dict(next(d for d in listed if d["device_id"] == f"dev-{device.client_id}"))

    first = shown()
    assert three_days_ms - 120_000 < first["clock_offset_ms"] < three_days_ms + 120_000
    assert first["last_sync_at"] is not None
    device.update_household(H1, address="时钟慢三天")
    device.sync()
    offset = run_db(client, lambda s: s.get_one(SyncClient, uuid.UUID(device.client_id))).clock_offset_ms
    assert offset is not None and three_days_ms - 120_000 < offset < three_days_ms + 120_000
    assert record_on(device, "household", H1)["address"] == "时钟慢三天"
    # The tablet's clock is put right: the next sync, even with nothing to push, says so.
    device.clock_offset_s = 0
    device.sync()
    assert abs(shown()["clock_offset_ms"]) < 120_000


def test_a_slow_batch_does_not_count_as_clock_skew(client: Client) -> None:
    """The device's clock is compared with the server's as the batch arrives: the time the server then
    spends applying it is no error of the tablet's clock."""
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    body = {
        "client_id": cid,
        "schema_version": 1,
        "device_now": dt.datetime.now(dt.UTC).isoformat(),
        "mutations": [update_mutation(1, H1, 1, address="慢慢来")],
    }
    sync_push.fault_hook = lambda _: time.sleep(1.5)
    try:
        answer = client.post("/api/v1/sync/push", json=body, headers=worker)
    finally:
        sync_push.fault_hook = None
    assert answer.status_code == 200 and answer.json()["last_mutation_seq"] == 1, answer.text
    offset = run_db(client, lambda s: s.get_one(SyncClient, uuid.UUID(cid))).clock_offset_ms
    assert offset is not None and abs(offset) < 1_000


# -- merge -----------------------------------------------------------------------------------------


def test_concurrent_edits_of_different_fields_merge_with_a_soft_flag(
    make_device: MakeDevice, client: Client
) -> None:
    one, two = make_device("demo-worker-1"), make_device("demo-worker-2")
    one.sync(), two.sync()
    one.update_household(H1, address="一号院")
    two.update_household(H1, recheck_class="C")
    one.sync(), two.sync(), one.sync()
    for device in (one, two):
        record = device.record("household", H1)
        assert record is not None and (record["address"], record["recheck_class"]) == ("一号院", "C")
    found = conflicts(client, H1)
    assert [c["kind"] for c in found] == ["parallel_update"] and found[0]["level"] == "soft"


@pytest.mark.parametrize("order", ["one_first", "two_first"])
def test_same_field_edits_make_exactly_one_hard_conflict_whatever_the_order(
    make_device: MakeDevice, client: Client, order: str
) -> None:
    one, two = make_device("demo-worker-1"), make_device("demo-worker-2")
    one.sync(), two.sync()
    one.update_household(H1, address="甲")
    two.update_household(H1, address="乙")
    first, second = (one, two) if order == "one_first" else (two, one)
    first.sync(), second.sync(), first.sync()
    found = conflicts(client, H1)
    assert [c["kind"] for c in found] == ["field_conflict"]
    later_value = "乙" if order == "one_first" else "甲"
    earlier_value = "甲" if order == "one_first" else "乙"
    assert (found[0]["client_value"], found[0]["server_value"]) == (later_value, earlier_value)
    assert one.record("household", H1) == two.record("household", H1)  # both values kept: one here, one there


def test_a_supervisors_value_beats_a_concurrent_workers(make_device: MakeDevice, client: Client) -> None:
    worker, supervisor = make_device("demo-worker-1"), make_device("demo-reviewer-community")
    worker.sync(), supervisor.sync()
    supervisor.update_household(H1, address="主管定")
    worker.update_household(H1, address="工作人员改")
    supervisor.sync(), worker.sync()
    assert record_on(worker, "household", H1)["address"] == "主管定"
    (found,) = conflicts(client, H1)
    assert found["client_value"] == "工作人员改" and found["provisional"] == "server"


def test_a_base_version_the_server_never_issued_is_refused_not_merged_over_newer_changes(
    client: Client,
) -> None:
    """A base above the record's version would make every change since look older than the base, and
    the edit would silently overwrite them: no honest device holds such a version. The mutation is
    refused, kept for a supervisor, and the queue moves on."""
    worker, reviewer = login(client, "demo-worker-1"), login(client, "demo-reviewer-community", device="desk")
    url = f"/api/v1/households/{H1}"
    current = client.get(url, headers=reviewer).json()
    changed = client.patch(url, json={"version": current["version"], "address": "主管改"}, headers=reviewer)
    assert changed.status_code == 200, changed.text
    version = changed.json()["version"]
    member = current["members"][0]
    ahead = [
        update_mutation(1, H1, version + 5, address="覆盖"),
        {
            "op": "household.archive.v1",
            "seq": 2,
            "mutation_id": str(uuid.uuid4()),
            "household_id": H1,
            "base_version": version + 1,
            "reason": "duplicate registration",
        },
        member_update_mutation(3, member | {"version": member["version"] + 1}, relation=(None, "覆盖")),
        update_mutation(4, H1, version, recheck_class="C"),  # an honest edit behind them still lands
    ]
    results = push(client, worker, str(uuid.uuid4()), ahead)["results"]
    assert [(r["status"], r.get("code")) for r in results] == [("rejected", "unknown_base_version")] * 3 + [
        ("applied", None)
    ], results
    stored = client.get(url, headers=reviewer).json()
    assert (stored["address"], stored["recheck_class"]) == ("主管改", "C")
    assert stored["members"][0]["relation"] == member["relation"]
    kept = {c["mutation_id"] for c in conflicts(client, H1) + conflicts(client, member["id"])}
    assert kept >= {m["mutation_id"] for m in ahead[:3]}


def _benefit_raised_offline(
    make_device: MakeDevice, client: Client
) -> tuple[Device, dict[str, Any], dict[str, Any]]:
    """A field worker raises H1's benefit (a guarded field) and syncs: the worker's device, H1 as it was,
    and the one conflict the raise opened."""
    worker = make_device("demo-worker-1")
    worker.sync()
    before = worker.record("household", H1)
    assert before is not None
    worker.update_household(H1, monthly_benefit_fen=before["monthly_benefit_fen"] + 10000)
    worker.sync()
    (found,) = conflicts(client, H1)
    return worker, before, found


def test_a_guarded_field_waits_for_a_supervisor(make_device: MakeDevice, client: Client) -> None:
    worker, before, found = _benefit_raised_offline(make_device, client)
    assert record_on(worker, "household", H1)["monthly_benefit_fen"] == before["monthly_benefit_fen"]
    assert found["kind"] == "guarded_change"
    reviewer = login(client, "demo-reviewer-community", device="desk")
    blocked = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve",
        json={"decision": "take_client"},
        headers=login(client, "demo-worker-1"),
    )
    assert blocked.status_code == 403
    mixed_up = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve",
        json={"decision": "keep_server", "value": before["monthly_benefit_fen"] + 5000},
        headers=reviewer,
    )
    assert mixed_up.status_code == 422 and mixed_up.json()["error"]["code"] == "value_not_taken"
    done = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve", json={"decision": "take_client"}, headers=reviewer
    )
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    worker.sync()
    assert record_on(worker, "household", H1)["monthly_benefit_fen"] == before["monthly_benefit_fen"] + 10000
    assert worker.confirmed("conflict")[found["id"]]["status"] == "resolved"
    history = client.get(f"/api/v1/households/{H1}/history", headers=reviewer).json()
    assert history[-1]["changed"] == ["monthly_benefit_fen"]
    assert history[-1]["data"]["monthly_benefit_fen"] == before["monthly_benefit_fen"] + 10000
    assert found["server_value"] == before["monthly_benefit_fen"]  # the value it replaced is kept too


@pytest.mark.parametrize(
    ("on_form", "outcome", "more_fen", "status"),
    [("increase", "raise", 20000, None), ("stop", "stop", None, "exited")],
)
def test_an_approved_outcome_takes_effect_on_the_household(
    make_device: MakeDevice,
    client: Client,
    on_form: str,
    outcome: str,
    more_fen: int | None,
    status: str | None,
) -> None:
    """The county's approval of a raise (or a stop) is what sets the household's benefit (2021 办法 Art 21,
    31). The visit was approved and locked, and the household went on being paid the old amount: every
    device and the next re-check still showed it, and nothing said the decision had been carried out."""
    tablet = make_device("demo-worker-1")
    tablet.sync()
    before = tablet.record("household", H2)
    assert before is not None and before["monthly_benefit_fen"] > 0
    amount = before["monthly_benefit_fen"] + more_fen if more_fen else None
    visit = recheck_decided(client, "DB-C01-0002", on_form, outcome, amount)
    reviewer = login(client, "demo-reviewer-community", device="desk")
    assert client.get(f"/api/v1/households/{H2}", headers=reviewer).json()["version"] == before["version"]

    approved = review(client, visit, LEVELS[-1], "approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved", approved.text
    expected = {"monthly_benefit_fen": amount or 0, "status": status or before["status"]}
    household = client.get(f"/api/v1/households/{H2}", headers=reviewer).json()
    assert {f: household[f] for f in expected} == expected
    tablet.sync()
    assert {f: record_on(tablet, "household", H2)[f] for f in expected} == expected
    latest = client.get(f"/api/v1/households/{H2}/history", headers=reviewer).json()[-1]
    assert latest["changed"] == sorted(f for f in expected if expected[f] != before[f])
    assert f"visit {visit['id']} approved: {outcome}" in latest["note"]
    (row,) = [r for r in audit_rows(client, "household.update") if r.entity_id == H2]
    assert row.actor_id == uuid.UUID(user_id(client, LEVELS[-1]))
    assert row.changes["monthly_benefit_fen"] == {"old": before["monthly_benefit_fen"], "new": amount or 0}


def test_a_household_a_field_worker_creates_offline_is_an_applicant_until_a_supervisor_decides(
    client: Client,
) -> None:
    """A field worker's create setting a status and an amount is stored as an application (applicant, no
    amount), each guarded value kept in a guarded_change conflict for a supervisor, as an offline edit of
    them is. The same create queued again answers with the same conflicts; one proposing another value
    is another create, refused."""
    worker, cid = login(client, "demo-worker-1"), str(uuid.uuid4())
    household = _new_household("DB-APPLY-1", status="active", monthly_benefit_fen=45000)
    first = push(client, worker, cid, [_create(household)])["results"]
    assert first[0]["status"] == "applied_with_conflict" and len(first[0]["conflict_ids"]) == 2, first
    url = f"/api/v1/households/{household['id']}"
    stored = client.get(url, headers=worker).json()
    assert (stored["status"], stored["monthly_benefit_fen"]) == ("applicant", 0)
    found = {c["field"]: c for c in conflicts(client, household["id"])}
    assert {f: (c["kind"], c["server_value"], c["client_value"]) for f, c in found.items()} == {
        "status": ("guarded_change", "applicant", "active"),
        "monthly_benefit_fen": ("guarded_change", 0, 45000),
    }

    again = push(client, worker, cid, [_create(household, seq=2)])["results"]
    assert again[0]["status"] == "applied_with_conflict", again
    assert sorted(again[0]["conflict_ids"]) == sorted(first[0]["conflict_ids"])
    resent = client.post("/api/v1/households", json=household, headers=worker)  # the console's retry
    assert resent.status_code == 201 and resent.json()["status"] == "applicant", resent.text
    other = push(client, worker, cid, [_create(household | {"status": "suspended"}, seq=3)])["results"]
    assert (other[0]["status"], other[0].get("code")) == ("rejected", "created_otherwise"), other

    reviewer = login(client, "demo-reviewer-community", device="desk")
    for field in ("status", "monthly_benefit_fen"):
        taken = client.post(
            f"/api/v1/conflicts/{found[field]['id']}/resolve",
            json={"decision": "take_client"},
            headers=reviewer,
        )
        assert taken.status_code == 200, taken.text
    decided = client.get(url, headers=worker).json()
    assert (decided["status"], decided["monthly_benefit_fen"]) == ("active", 45000)


def test_a_conflict_decided_at_a_desk_while_a_push_edits_its_household_and_decides_it_both_land(
    make_device: MakeDevice, client: Client
) -> None:
    """A decision locks the conflict and the record it writes; a push editing that record and deciding
    the conflict locks them too. Had the desk taken the conflict first and the push the household first,
    on PostgreSQL one of them died of a deadlock (a 500). The test holds the conflict's row so that the
    desk's decision waits for it before the push starts."""
    _, before, found = _benefit_raised_offline(make_device, client)
    desk = login(client, "demo-reviewer-community", device="desk")
    tablet = login(client, "demo-reviewer-subdistrict", device="tablet")
    version = client.get(f"/api/v1/households/{H1}", headers=desk).json()["version"]
    decision = {"decision": "take_client"}
    resolve = {
        "op": "conflict.resolve.v1",
        "seq": 2,
        "mutation_id": str(uuid.uuid4()),
        "conflict_id": found["id"],
    }
    edits = [update_mutation(1, H1, version, address="推送改"), resolve | decision]
    requests = [
        ("POST", f"/api/v1/conflicts/{found['id']}/resolve", decision, desk),
        (
            "POST",
            "/api/v1/sync/push",
            {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": edits},
            tablet,
        ),
    ]
    held = select(SyncConflict.id).where(SyncConflict.id == uuid.UUID(found["id"]))
    decided, pushed = sent_in_turn(client, requests, held)
    assert (decided.status_code, pushed.status_code) == (200, 200), (decided.text, pushed.text)
    # The address was edited on the version before the desk's decision: merged, with a soft flag.
    assert [r["status"] for r in pushed.json()["results"]] == ["applied_with_conflict", "applied"], (
        pushed.text
    )
    stored = client.get(f"/api/v1/households/{H1}", headers=desk).json()
    assert (stored["address"], stored["monthly_benefit_fen"]) == (
        "推送改",
        before["monthly_benefit_fen"] + 10000,
    )


def test_the_countys_home_visit_reaches_the_devices_with_the_timeline(
    make_device: MakeDevice, client: Client
) -> None:
    """A tablet shows a visit's timeline from its visit events. The county's own home visit (2021 办法 Art
    20) was only in the approval's audit row: the team's tablets, like the timeline, never showed that
    the county had been to the household, nor when."""
    visit = recheck_decided(client, "DB-C01-0003", "no_change", "no_change", None)
    assert review(client, visit, LEVELS[-1], "approve").status_code == 200  # the filler's tip-off row
    tablet = make_device("demo-worker-1")
    tablet.sync()
    events = [e for e in tablet.confirmed("visit_event").values() if e["visit_id"] == visit["id"]]
    decided = {
        (e["action"], e["level"]): e["county_home_visit_on"] for e in events if e["action"] == "approve"
    }
    assert decided == {
        ("approve", 1): None,
        ("approve", 2): None,
        ("approve", 3): today().isoformat(),
    }


def test_another_value_set_on_a_resolved_conflict_is_refused_not_answered_as_done(
    make_device: MakeDevice, client: Client
) -> None:
    """The same decision sent again converges; another value under the same decision is a second
    decision on a conflict already decided: refused (and so, from a tablet, kept), never answered as done
    while the first value stays."""
    _, before, found = _benefit_raised_offline(make_device, client)
    url = f"/api/v1/conflicts/{found['id']}/resolve"
    first = {"decision": "set_value", "value": before["monthly_benefit_fen"] + 5000}
    community = login(client, "demo-reviewer-community", device="desk")
    assert client.post(url, json=first, headers=community).status_code == 200
    assert client.post(url, json=first, headers=community).status_code == 200  # a retry: converged
    subdistrict = login(client, "demo-reviewer-subdistrict", device="desk")
    other = {"decision": "set_value", "value": before["monthly_benefit_fen"] + 7000}
    refused = client.post(url, json=other, headers=subdistrict)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_resolved"
    sent = {"op": "conflict.resolve.v1", "seq": 1, "mutation_id": str(uuid.uuid4())}
    answer = push(client, subdistrict, str(uuid.uuid4()), [sent | {"conflict_id": found["id"]} | other])
    assert answer["results"][0]["code"] == "already_resolved"  # kept for a supervisor, not lost
    household = client.get(f"/api/v1/households/{H1}", headers=community).json()
    assert household["monthly_benefit_fen"] == before["monthly_benefit_fen"] + 5000


def test_resolution_by_sync_mutation_goes_through_the_same_path(
    make_device: MakeDevice, client: Client
) -> None:
    worker, supervisor = make_device("demo-worker-1"), make_device("demo-reviewer-subdistrict")
    worker.sync()
    worker.update_household(H1, status="suspended")
    worker.sync()
    supervisor.sync()
    (conflict_id,) = [i for i, c in supervisor.confirmed("conflict").items() if c["kind"] == "guarded_change"]
    supervisor.resolve(conflict_id, "set_value", "phase_out")
    supervisor.sync()
    worker.sync()
    assert record_on(worker, "household", H1)["status"] == "phase_out"
    assert worker.confirmed("conflict")[conflict_id]["resolution"]["decision"] == "set_value"


def _archived_against_a_newer_version(make_device: MakeDevice) -> tuple[Any, Any]:
    """Worker one changes H1's address and syncs; worker two, not having seen it, archives H1 and syncs."""
    one, two = make_device("demo-worker-1"), make_device("demo-worker-2")
    one.sync(), two.sync()
    one.update_household(H1, address="新地址")
    one.sync()
    two.archive_household(H1, "duplicate registration")
    two.sync()
    return one, two


def test_archive_against_a_newer_version_is_a_conflict_and_update_after_archive_never_resurrects(
    make_device: MakeDevice, client: Client
) -> None:
    one, two = _archived_against_a_newer_version(make_device)
    assert [c["kind"] for c in conflicts(client, H1)] == ["delete_after_update"]
    assert two.record("household", H1) is not None  # not archived
    one.sync()
    one.archive_household(H1, "moved away")
    two.update_household(H1, address="迟到的修改")
    one.sync(), two.sync(), one.sync()
    assert one.record("household", H1) is None and two.record("household", H1) is None
    kinds = sorted(c["kind"] for c in conflicts(client, H1))
    assert kinds == ["delete_after_update", "update_after_delete"]
    worker = login(client, "demo-worker-1")
    assert client.get(f"/api/v1/households/{H1}", headers=worker).status_code == 404
    # Nor can a visit be assigned to it any more.
    body = {"household_id": H1, "purpose": "tip", "team": [user_id(client, u) for u in TEAM]}
    refused = client.post("/api/v1/visits", json=body, headers=login(client, "demo-reviewer-community"))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "household_archived"


def test_a_value_set_on_an_archive_against_a_newer_version_is_refused_not_turned_into_the_archive(
    make_device: MakeDevice, client: Client
) -> None:
    """A delete_after_update conflict is decided by archiving (take_client) or keeping the record: a value
    a supervisor sets there has nowhere to go, and must not be answered as written while the household
    is archived instead."""
    _archived_against_a_newer_version(make_device)
    (found,) = conflicts(client, H1)
    assert found["kind"] == "delete_after_update"
    reviewer = login(client, "demo-reviewer-community", device="desk")
    refused = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve",
        json={"decision": "set_value", "value": "另一个地址"},
        headers=reviewer,
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "value_not_taken"
    household = client.get(f"/api/v1/households/{H1}", headers=reviewer)
    assert household.status_code == 200 and household.json()["address"] == "新地址"
    assert conflicts(client, H1)[0]["status"] == "open"


def _archive(seq: int, household: str, base: int) -> dict[str, Any]:
    return {
        "op": "household.archive.v1",
        "seq": seq,
        "mutation_id": str(uuid.uuid4()),
        "household_id": household,
        "base_version": base,
        "reason": "duplicate registration",
    }


def _member_create(seq: int, household: str, member: dict[str, Any]) -> dict[str, Any]:
    mutation = {"op": "member.create.v1", "seq": seq, "mutation_id": str(uuid.uuid4())}
    return mutation | {"household_id": household, "member": member}


def _new_member(name: str = "后加成员") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "relation": "child",
        "id_number": valid_id("13010220100101123"),
    }


def test_creates_sent_again_after_their_household_was_archived_answer_as_the_first_did(
    client: Client,
) -> None:
    """A create retried (a lost answer, a console resending, a tablet that queued it twice) after its
    household was archived is still the same create: it answers as the first did, with the record as it
    stands (archived), and writes nothing; it is not a 404 nor a refusal kept for a supervisor."""
    worker = login(client, "demo-worker-1")
    household, member = _new_household("DB-LATE-1"), _new_member()
    created = client.post("/api/v1/households", json=household, headers=worker)
    assert created.status_code == 201, created.text
    added = client.post(f"/api/v1/households/{household['id']}/members", json=member, headers=worker)
    assert added.status_code == 201, added.text
    archived = push(client, worker, str(uuid.uuid4()), [_archive(1, household["id"], 1)])["results"]
    assert [r["status"] for r in archived] == ["applied"], archived

    again = client.post("/api/v1/households", json=household, headers=worker)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == household["id"] and again.json()["archived_at"] is not None
    added_again = client.post(f"/api/v1/households/{household['id']}/members", json=member, headers=worker)
    assert added_again.status_code == 201, added_again.text
    assert added_again.json() == added.json()
    resent = [_create(household, seq=1), _member_create(2, household["id"], member)]
    results = push(client, worker, str(uuid.uuid4()), resent)["results"]
    assert [(r["status"], r.get("conflict_ids")) for r in results] == [("applied", None)] * 2, results
    assert client.get(f"/api/v1/households/{household['id']}", headers=worker).status_code == 404
    assert conflicts(client, household["id"]) == [] and conflicts(client, member["id"]) == []
    assert len(audit_rows(client, "household.create")) == 1 and len(audit_rows(client, "member.create")) == 1


def test_a_member_added_offline_to_an_archived_household_is_kept_once_however_often_it_is_queued(
    client: Client,
) -> None:
    """The member was never created (its household was archived first): its create waits for a
    supervisor. Queued again under another mutation_id, it is the same create: the same conflict."""
    worker = login(client, "demo-worker-1")
    household, member = _new_household("DB-LATE-2"), _new_member()
    first = [_create(household), _archive(2, household["id"], 1), _member_create(3, household["id"], member)]
    results = push(client, worker, str(uuid.uuid4()), first)["results"]
    assert [r["status"] for r in results] == ["applied", "applied", "applied_with_conflict"], results
    again = push(client, worker, str(uuid.uuid4()), [_member_create(1, household["id"], member)])["results"]
    assert again[0]["status"] == "applied_with_conflict", again
    assert again[0]["conflict_ids"] == results[2]["conflict_ids"]
    assert len(conflicts(client, household["id"])) == 1


def test_create_sync_archive_sync_then_a_fresh_install_never_sees_the_record(
    make_device: MakeDevice, client: Client
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    new_id = str(uuid.uuid4())
    household = {
        "id": new_id,
        "registry_no": "DB-GONE-1",
        "community_id": str(node_id("C01")),
        "address": "临时",
    }
    device.enqueue("household.create.v1", household=household)
    device.sync()
    assert device.record("household", new_id) is not None
    device.archive_household(new_id, "entered by mistake")
    device.sync()
    assert device.record("household", new_id) is None
    reinstalled = make_device("demo-worker-1", "reinstalled")
    reinstalled.sync()
    assert reinstalled.record("household", new_id) is None
    assert new_id not in reinstalled.view("household")


def test_an_archived_households_members_leave_the_tablets_and_come_back_with_a_restore(
    make_device: MakeDevice, client: Client
) -> None:
    """As for REST, an archived household's members are nobody's members any more: tablets forget them with
    it, a new tablet never receives them, and a supervisor's restore brings back those not removed."""
    one, two = make_device("demo-worker-1"), make_device("demo-worker-2")
    one.sync(), two.sync()
    members = sorted(m["id"] for m in one.confirmed("member").values() if m["household_id"] == H2)
    assert len(members) >= 2
    removed = one.record("member", members[0])
    one.remove_member(members[0], "moved out")
    one.sync()
    two.update_household(H2, address="归档后才到的修改")  # on the version before the archive
    one.archive_household(H2, "moved away")
    one.sync(), two.sync()
    fresh = make_device("demo-worker-1", "fresh", pull_limit=50)
    fresh.sync()
    for device in (one, two, fresh):
        assert device.record("household", H2) is None
        assert not [m for m in device.confirmed("member").values() if m["household_id"] == H2]

    (late,) = conflicts(client, H2)
    assert late["kind"] == "update_after_delete" and removed is not None
    reviewer = login(client, "demo-reviewer-community", device="desk")
    taken = client.post(
        f"/api/v1/conflicts/{late['id']}/resolve", json={"decision": "take_client"}, headers=reviewer
    )
    assert taken.status_code == 200, taken.text
    one.sync()
    again = make_device("demo-worker-1", "again")
    again.sync()
    for device in (one, again):
        assert record_on(device, "household", H2)["address"] == "归档后才到的修改"
        assert (
            sorted(m["id"] for m in device.confirmed("member").values() if m["household_id"] == H2)
            == (members[1:])
        )


# -- scope -----------------------------------------------------------------------------------------


def test_a_household_moving_community_leaves_one_device_and_arrives_whole_on_another(
    make_device: MakeDevice, client: Client
) -> None:
    c01, c03 = make_device("demo-worker-1"), make_device("demo-worker-3")
    c01.sync(), c03.sync()
    members = [m for m in c01.confirmed("member").values() if m["household_id"] == H1]
    assert members

    _move(client, "DB-C01-0001", "C03")
    c01.sync(), c03.sync()
    assert c01.record("household", H1) is None
    assert not [m for m in c01.confirmed("member").values() if m["household_id"] == H1]
    assert c03.record("household", H1) is not None
    assert {m["id"] for m in members} <= set(c03.confirmed("member"))


def test_an_edit_of_a_household_that_left_the_community_meanwhile_is_refused_saying_which_and_why(
    make_device: MakeDevice, client: Client
) -> None:
    """The worker edited a household offline; meanwhile it moved to another community. The household
    vanished from the tablet and the sync said only `rejected seqs [1]`: not which edit, nor why."""
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H1, address="搬走前改的")
    _move(client, "DB-C01-0001", "C03")
    report = device.sync()
    assert report.refused == [RefusedEdit(seq=1, op="household.update.v1", record=H1, code="not_found")]
    assert device.record("household", H1) is None and device.pending() == []


def test_a_moving_household_takes_its_conflicts_along(make_device: MakeDevice, client: Client) -> None:
    """Its conflicts are decided where the household now is: the old community's devices drop them, the
    new one's receive them, and the old community's reviewer can no longer decide them."""
    c01, c03 = make_device("demo-worker-1"), make_device("demo-worker-3")
    c01.sync()
    before = c01.record("household", H1)
    assert before is not None
    c01.update_household(H1, monthly_benefit_fen=before["monthly_benefit_fen"] + 100)  # guarded: a conflict
    c01.sync()
    (found,) = conflicts(client, H1)
    assert found["id"] in c01.confirmed("conflict")

    _move(client, "DB-C01-0001", "C03")
    c01.sync(), c03.sync()
    assert found["id"] not in c01.confirmed("conflict")
    assert found["id"] in c03.confirmed("conflict")
    old_reviewer = login(client, "demo-reviewer-community", device="desk")
    decided = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve", json={"decision": "take_client"}, headers=old_reviewer
    )
    assert decided.status_code == 404
    admin = login(client, "demo-admin", device="desk")
    assert (
        client.get(f"/api/v1/households/{H1}", headers=admin).json()["monthly_benefit_fen"]
        == (before["monthly_benefit_fen"])
    )
    listed = client.get(f"/api/v1/conflicts?entity_id={H1}", headers=admin).json()
    assert [c["id"] for c in listed] == [found["id"]]

    async def left_behind(session: Any) -> None:  # as a conflict moved before conflicts followed
        conflict = await session.get(SyncConflict, uuid.UUID(found["id"]))
        conflict.scope = str(node_id("C01"))

    run_db(client, left_behind)
    decided = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve", json={"decision": "take_client"}, headers=old_reviewer
    )
    assert decided.status_code == 404  # the household itself is checked when it is written
    assert (
        client.get(f"/api/v1/households/{H1}", headers=admin).json()["monthly_benefit_fen"]
        == (before["monthly_benefit_fen"])
    )


def test_a_moving_household_takes_the_malformed_mutations_aimed_at_it_along(
    make_device: MakeDevice, client: Client
) -> None:
    """A mutation kept whole (entity `mutation`) that names the household or one of its members holds
    their content (a proposed address, a member's name): it leaves the old community with the household,
    as its other conflicts do."""
    c01, c03 = make_device("demo-worker-1"), make_device("demo-worker-3")
    c01.sync()
    worker = login(client, "demo-worker-1")
    member = next(m for m in c01.confirmed("member").values() if m["household_id"] == H1)
    at_household = update_mutation(1, H1, 1, address="解放街3号") | {"colour": "red"}
    at_member = member_update_mutation(2, member, health=(None, "慢性病")) | {"colour": "red"}
    answer = push(client, worker, str(uuid.uuid4()), [at_household, at_member])
    assert [r.get("code") for r in answer["results"]] == ["malformed_mutation"] * 2
    kept = [m["mutation_id"] for m in (at_household, at_member)]
    assert [len(conflicts(client, k)) for k in kept] == [1, 1]
    c01.sync()
    ids = {c["id"] for c in c01.confirmed("conflict").values() if c["entity_id"] in kept}
    assert len(ids) == 2

    _move(client, "DB-C01-0001", "C03")
    c01.sync(), c03.sync()
    assert not ids & set(c01.confirmed("conflict"))
    assert ids <= set(c03.confirmed("conflict"))
    assert [conflicts(client, k) for k in kept] == [[], []]  # the old community's reviewer
    admin = login(client, "demo-admin", device="desk")
    for k in kept:
        (listed,) = client.get(f"/api/v1/conflicts?entity_id={k}", headers=admin).json()
        assert listed["id"] in ids


def test_a_subdistrict_reviewers_malformed_mutation_goes_to_the_community_it_names(client: Client) -> None:
    """Like any quarantined mutation, one kept whole is shown to the supervisors of the community of the
    record it aimed at, not only to those of the sender's node."""
    reviewer = login(client, "demo-reviewer-subdistrict")
    sent = update_mutation(1, H1, 1, address="解放街3号") | {"colour": "red"}
    answer = push(client, reviewer, str(uuid.uuid4()), [sent])
    assert answer["results"][0]["code"] == "malformed_mutation"
    (kept,) = conflicts(client, sent["mutation_id"])  # the community's reviewer
    assert kept["client_value"]["body"] == sent


def test_answers_pushed_while_their_household_moves_never_land_in_the_old_community(
    client: Client, database_url: str
) -> None:
    """A push reading a household while another transaction moves it waits for that move, so the
    answers never reach the devices of the community the household left."""
    worker = login(client, "demo-worker-1")
    visit = assign(client)
    answers = [observation(a) for a in complete_answers(client, visit, worker) if a.row_id is None][:3]

    async def move(session: Any) -> None:
        household = await session.get(Household, uuid.UUID(H1), with_for_update=True)
        household.community_id = node_id("C03")

    with _held_open(database_url, move):
        pushed: dict[str, Any] = {}
        mutation = {"op": "visit.answer.v1", "seq": 1, "mutation_id": str(uuid.uuid4())}
        body = {**mutation, "visit_id": visit["id"], "observations": answers}
        pusher = threading.Thread(
            target=lambda: pushed.update(r=push(client, worker, str(uuid.uuid4()), [body]))
        )
        pusher.start()
        pusher.join(0.5)  # the push is waiting for the move
    pusher.join(30)
    # The household is no longer the worker's: the answers are kept for a supervisor, not applied.
    assert [r["status"] for r in pushed["r"]["results"]] == ["rejected"]
    scopes = run_db(client, lambda s: _scopes_of(s, [visit["id"], *(a["id"] for a in answers)]))
    assert str(node_id("C01")) not in scopes.values()


async def _scopes_of(session: Any, entity_ids: list[str]) -> dict[str, str]:
    query = select(SyncChange.entity_id, SyncChange.scope).where(SyncChange.entity_id.in_(entity_ids))
    return {entity_id: scope for entity_id, scope in await session.execute(query)}


def test_a_user_moved_to_another_node_rebuilds_and_keeps_pending_edits(
    make_device: MakeDevice, client: Client
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H1, address="搬走前的修改")

    async def transfer(session: Any) -> None:
        c02 = node_id("C02")
        path = (await session.execute(select(User).where(User.username == "demo-worker-1"))).scalar_one()
        path.jurisdiction_id = c02

    run_db(client, transfer)
    device.login("demo-worker-1", "demo")
    report = device.sync()
    assert report.resets == 1
    assert {h["community_id"] for h in device.confirmed("household").values()} == {str(node_id("C02"))}
    # Authorisation at apply time: the edit made in C01 was quarantined, not applied, not lost.
    assert report.rejected == [1] and device.pending() == []


def test_edits_queued_before_a_move_never_reach_the_tablets_of_the_new_community(
    make_device: MakeDevice, client: Client, tmp_path: Any
) -> None:
    """A worker moved from C01 to C02 with an edit of a C01 member still queued: it is refused (the member
    is no longer theirs) and kept for a supervisor over both communities, not in C02, whose workers may
    not see C01's households: the edit holds the member's health as the tablet showed it."""
    device = make_device("demo-worker-1")
    device.sync()
    member = next(m for m in device.confirmed("member").values() if m["household_id"] == H1 and m["health"])
    device.update_member(member["id"], health="肺癌晚期，正在化疗")
    _moved_to(client, "demo-worker-1", "C02")
    device.login("demo-worker-1", "demo")
    assert device.sync().rejected == [1]

    seen = _conflicts_a_new_colleague_pulls(client, tmp_path, "C02")
    assert member["id"] not in seen and "化疗" not in seen
    (kept,) = conflicts(client, member["id"], reviewer="demo-reviewer-subdistrict")
    assert kept["client_value"]["changes"]["health"]["new"] == "肺癌晚期，正在化疗"


def test_an_edit_kept_over_two_communities_leaves_with_its_household(
    make_device: MakeDevice, client: Client
) -> None:
    """The edit a worker moved from C01 to C02 still had queued is kept at their subdistrict. When the
    household then moves to another subdistrict, the edit goes with it to the node over both: the old
    subdistrict's tablets drop it, as they drop the household."""
    device, reviewer = make_device("demo-worker-1"), make_device("demo-reviewer-subdistrict")
    device.sync()
    member = next(m for m in device.confirmed("member").values() if m["household_id"] == H1)
    device.update_member(member["id"], health="肺癌晚期，正在化疗")
    _moved_to(client, "demo-worker-1", "C02")
    device.login("demo-worker-1", "demo")
    assert device.sync().rejected == [1]
    reviewer.sync()
    (kept,) = [c for c in reviewer.confirmed("conflict").values() if c["entity_id"] == member["id"]]

    _move(client, "DB-C01-0001", "C03")
    reviewer.sync()
    assert reviewer.record("household", H1) is None and reviewer.record("conflict", kept["id"]) is None
    assert conflicts(client, member["id"], reviewer="demo-reviewer-subdistrict") == []
    (listed,) = conflicts(client, member["id"], reviewer="demo-approver-district")
    assert listed["id"] == kept["id"]


def test_a_decision_queued_before_a_supervisor_moved_never_reaches_the_tablets_of_the_new_community(
    make_device: MakeDevice, client: Client, tmp_path: Any
) -> None:
    """A community reviewer decided a C01 member's name on the tablet, then was moved to C02 before it
    synced: the decision is refused (the conflict is no longer theirs) and kept over both communities,
    not in C02, whose workers may not see C01's members."""
    worker, reviewer = make_device("demo-worker-1"), make_device("demo-reviewer-community")
    worker.sync()
    member = next(m for m in worker.confirmed("member").values() if m["household_id"] == H1)
    worker.update_member(member["id"], name="王秀英")  # guarded: a conflict for a supervisor
    worker.sync(), reviewer.sync()
    (conflict_id,) = [i for i, c in reviewer.confirmed("conflict").items() if c["entity_id"] == member["id"]]
    decision = reviewer.resolve(conflict_id, "set_value", "王秀英（户口本为王秀瑛）")
    _moved_to(client, "demo-reviewer-community", "C02")
    reviewer.login("demo-reviewer-community", "demo")
    assert reviewer.sync().rejected == [1]

    assert "王秀瑛" not in _conflicts_a_new_colleague_pulls(client, tmp_path, "C02")
    (kept,) = conflicts(client, decision["mutation_id"], reviewer="demo-reviewer-subdistrict")
    assert kept["client_value"]["value"] == "王秀英（户口本为王秀瑛）"


def _conflicts_a_new_colleague_pulls(client: Client, tmp_path: Any, community: str) -> str:
    """The conflicts, as JSON text, that a worker new to `community` gets on a fresh tablet."""
    colleague = Device(tmp_path / f"{community}.sqlite", httpx_transport(client))
    colleague.login(*_new_worker(client, community))
    colleague.sync()
    seen = json.dumps(colleague.confirmed("conflict"), ensure_ascii=False)
    colleague.close()
    return seen


def _moved_to(client: Client, username: str, community: str) -> None:
    async def transfer(session: Any) -> None:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one()
        user.jurisdiction_id = node_id(community)

    run_db(client, transfer)


def _new_worker(client: Client, community: str) -> tuple[str, str]:
    """A field worker of `community`, made by the admin: (username, password)."""
    username = f"worker-{community.lower()}"
    new_user(client, username, community)
    return username, NEW_USER_PASSWORD


def test_epoch_change_and_tombstone_horizon_send_devices_a_reset(
    make_device: MakeDevice, client: Client
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H2, address="重置后还在")
    run_db(client, lambda s: sync_admin.new_epoch(s, SYSTEM))
    report = device.sync()
    assert report.resets == 1 and record_on(device, "household", H2)["address"] == "重置后还在"
    other = make_device("demo-worker-2")
    other.sync()
    other.archive_household(H2, "a tombstone the first device has not seen")
    other.sync()
    run_db(client, lambda s: sync_admin.purge_tombstones(s, SYSTEM))
    assert device.sync().resets == 1
    assert device.record("household", H2) is None  # the purged deletion still reached it: no resurrection
    # A fresh sync paging through rows older than the floor is not sent back to the start forever.
    paged = make_device("demo-worker-1", "paged", pull_limit=50)
    assert paged.sync().resets == 0
    assert paged.confirmed("household") == device.confirmed("household")


def test_a_rebuild_cut_off_midway_leaves_the_tablet_showing_what_it_showed(
    make_device: MakeDevice, client: Client, tmp_path: Any
) -> None:
    """A reset's rebuild takes many pages; a tablet losing the network among them (out in a village) still
    shows every household with its members until a rebuild completes, never a random part of them."""
    allowed: list[int] = []

    def flaky(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if path.endswith("/pull") and allowed:
            allowed[0] -= 1
            if allowed[0] < 0:
                raise NetworkError("the network went away")
        return httpx_transport(client)(path, body, token)

    device = Device(tmp_path / "village.sqlite", flaky, pull_limit=50)
    device.login("demo-worker-1", "demo")
    device.sync()
    device.update_household(H2, address="重建中断也还在")
    shown = {e: device.view(e) for e in ("household", "member", "visit", "observation")}
    run_db(client, lambda s: sync_admin.new_epoch(s, SYSTEM))
    allowed.append(3)  # the reset answer and two pages of the rebuild
    with pytest.raises(NetworkError):
        device.sync()
    assert {e: device.view(e) for e in shown} == shown
    allowed.clear()
    assert device.sync().resets == 0  # the rebuild goes on where it stopped
    fresh = make_device("demo-worker-1", "fresh")
    fresh.sync()
    for entity in ("household", "member", "visit", "observation", "photo", "conflict"):
        assert device.confirmed(entity) == fresh.confirmed(entity), entity
    assert record_on(device, "household", H2)["address"] == "重建中断也还在"
    device.close()


def restore_a_backup_taken_after_seq_1(client: Client, cid: uuid.UUID) -> None:
    """As if the database were restored from a backup taken when client `cid` had delivered seq 1."""

    async def restore(session: Any) -> None:
        await session.execute(delete(MutationLog).where(MutationLog.client_id == cid, MutationLog.seq > 1))
        await session.execute(
            update(SyncClient).where(SyncClient.client_id == cid).values(last_mutation_seq=1)
        )

    run_db(client, restore)
    run_db(client, lambda s: sync_admin.new_epoch(s, SYSTEM))


def restore_a_backup_taken_before_its_first_sync(client: Client, cid: uuid.UUID) -> None:
    """As if the database were restored from a backup taken before client `cid` first synced."""

    async def restore(session: Any) -> None:
        await session.execute(delete(MutationLog).where(MutationLog.client_id == cid))
        await session.execute(delete(SyncClient).where(SyncClient.client_id == cid))

    run_db(client, restore)
    run_db(client, lambda s: sync_admin.new_epoch(s, SYSTEM))


def test_after_a_restore_the_queue_moves_on_and_the_edits_the_backup_lost_are_recorded(
    make_device: MakeDevice, client: Client
) -> None:
    """Edits confirmed after the backup was taken are gone from the server and from the device (it drops
    what a pull confirms). The queue must not wait for them forever: their seqs are recorded as lost for
    a supervisor, and the device's later edits apply."""
    device = make_device("demo-worker-1")
    device.sync()
    for i in range(3):
        device.update_household(H1, address=f"第{i}")
    device.sync()
    assert device.pending() == []
    cid = uuid.UUID(device.client_id)
    restore_a_backup_taken_after_seq_1(client, cid)
    # A client with nothing queued may push an empty batch: that must not use up the one push that
    # accepts the gap, or the next edit stopped out_of_order for good at a seq the device no longer holds.
    assert push(client, login(client, "demo-worker-1"), str(cid), [])["last_mutation_seq"] == 1
    device.update_household(H1, address="恢复之后的新修改")  # seq 4
    report = device.sync()
    assert report.resets == 1 and device.pending() == []
    assert record_on(device, "household", H1)["address"] == "恢复之后的新修改"
    reviewer = login(client, "demo-reviewer-community", device="desk")
    (lost,) = client.get(f"/api/v1/conflicts?entity_id={cid}", headers=reviewer).json()
    assert (lost["kind"], lost["entity"], lost["level"]) == ("lost_in_restore", "client", "hard")
    assert lost["client_value"]["from_seq"] == 2 and lost["client_value"]["to_seq"] == 3
    kept = client.post(
        f"/api/v1/conflicts/{lost['id']}/resolve", json={"decision": "take_client"}, headers=reviewer
    )
    assert kept.status_code == 422 and kept.json()["error"]["code"] == "nothing_to_take"
    # Within one epoch a gap is still a lost request: the batch stops and names the seq expected.
    answer = push(client, login(client, "demo-worker-1"), str(cid), [update_mutation(9, H1, 9, address="跳")])
    assert (answer["stopped"], answer["expected_seq"]) == ("out_of_order", 5)


def test_edits_pushed_but_not_yet_confirmed_by_a_pull_are_sent_again_after_a_restore(
    make_device: MakeDevice, client: Client
) -> None:
    """A device whose pull failed after its push still holds those edits. If the server is then restored
    from a backup taken before them, the device's next sync must give them back, not leave the server to
    record them as lost and the device to drop them when its pull reports its later edit applied."""
    device = make_device("demo-worker-1")
    device.sync()
    h3 = str(household_id("DB-C01-0003"))
    for n, household in enumerate((H1, H2, h3)):  # seqs 1, 2, 3: one edit per household
        device.update_household(household, address=f"备份之后的修改{n}")
    device.push()  # acknowledged; the pull that would confirm them never happened
    assert len(device.pending()) == 3
    cid = uuid.UUID(device.client_id)
    restore_a_backup_taken_after_seq_1(client, cid)
    device.update_household(H1, phone="13800000000")  # seq 4
    assert device.sync().resets == 1 and device.pending() == []
    reviewer = login(client, "demo-reviewer-community", device="desk")
    assert client.get(f"/api/v1/conflicts?entity_id={cid}", headers=reviewer).json() == []
    assert [record_on(device, "household", h)["address"] for h in (H1, H2, h3)] == [
        f"备份之后的修改{n}" for n in range(3)
    ]
    logged = run_db(
        client,
        lambda s: s.scalars(
            select(MutationLog.seq).where(MutationLog.client_id == cid).order_by(MutationLog.seq)
        ),
    )
    assert list(logged) == [1, 2, 3, 4]


@pytest.mark.parametrize("edits_waiting", [False, True], ids=["synced_first", "edits_waiting"])
def test_a_restore_from_before_a_devices_first_push_lets_its_queue_go_on(
    make_device: MakeDevice, client: Client, edits_waiting: bool
) -> None:
    """A tablet enrolled after the last backup: the restored database has never heard of its client, and
    the seqs the device saw confirmed (and dropped) are gone. Its queue resumes above seq 1, which must not
    wait for seq 1 forever: the gap is recorded as lost_in_restore, as for a client the backup knew. The
    server learns it from the device's old cursor, whether the device pulls first (nothing queued) or
    pushes first and is told it is behind."""
    device = make_device("demo-worker-1")
    device.sync()
    for i in range(2):  # seqs 1 and 2, confirmed and dropped
        device.update_household(H1, address=f"备份之前不存在的修改{i}")
    device.sync()
    assert device.pending() == []
    cid = uuid.UUID(device.client_id)
    restore_a_backup_taken_before_its_first_sync(client, cid)
    if not edits_waiting:
        assert device.sync().resets == 1
    device.update_household(H1, address="恢复之后的修改")  # seq 3
    device.sync()
    assert device.pending() == []
    assert record_on(device, "household", H1)["address"] == "恢复之后的修改"
    reviewer = login(client, "demo-reviewer-community", device="desk")
    (lost,) = client.get(f"/api/v1/conflicts?entity_id={cid}", headers=reviewer).json()
    assert lost["kind"] == "lost_in_restore"
    assert (lost["client_value"]["from_seq"], lost["client_value"]["to_seq"]) == (1, 2)


def test_a_refused_edit_naming_a_community_outside_the_workers_is_kept_over_both_not_in_either(
    client: Client,
) -> None:
    """Quarantined under the community the device named, a create naming none that exists was seen by no
    supervisor (lost), and one naming another community put the worker's content in its feed; kept in
    the worker's own, a record of another community reached the worker's colleagues. It is kept at the
    node over both (the district here), or the worker's own when the community named does not exist."""
    worker = login(client, "demo-worker-1")

    def create(seq: int, community: uuid.UUID) -> dict[str, Any]:
        household = {"id": str(uuid.uuid4()), "registry_no": f"X-{seq}", "community_id": str(community)}
        body = {"household": household | {"address": "某处"}}
        return {"op": "household.create.v1", "seq": seq, "mutation_id": str(uuid.uuid4()), **body}

    batch = [
        create(1, uuid.uuid4()),
        create(2, node_id("C03")),
        update_mutation(3, str(household_id("DB-C03-0001")), 1, address="别处"),
    ]
    answer = push(client, worker, str(uuid.uuid4()), batch)
    assert [r["status"] for r in answer["results"]] == ["rejected"] * 3
    targets = [m["household"]["id"] for m in batch[:2]] + [batch[2]["household_id"]]
    (kept,) = conflicts(client, targets[0])  # the worker's own supervisor
    assert kept["mutation_id"] == batch[0]["mutation_id"]
    for sent, target in zip(batch[1:], targets[1:], strict=True):
        assert conflicts(client, target) == []
        (kept,) = conflicts(client, target, reviewer="demo-approver-district")
        assert kept["mutation_id"] == sent["mutation_id"]
    scopes = run_db(client, lambda s: _conflict_scopes(s, [m["mutation_id"] for m in batch]))
    assert scopes == {str(node_id("C01")), str(node_id("D01"))}


async def _conflict_scopes(session: Any, mutation_ids: list[str]) -> set[str]:
    query = select(SyncConflict.scope).where(
        SyncConflict.mutation_id.in_([uuid.UUID(m) for m in mutation_ids])
    )
    return set((await session.execute(query)).scalars())


def test_a_member_added_offline_shows_in_its_household_before_it_is_sent(make_device: MakeDevice) -> None:
    """A member added on the tablet showed without its household until a sync brought the server's copy:
    a screen listing a household's members by `household_id` left the newcomer out."""
    device = make_device("demo-worker-1")
    device.sync()
    member = {
        "id": str(uuid.uuid4()),
        "name": "新成员",
        "relation": "child",
        "id_number": valid_id("13010220200501123"),
        "birth_date": "2020-05-01",
        "sex": "male",
    }
    device.enqueue("member.create.v1", household_id=H1, member=member)
    assert device.view("member")[member["id"]]["household_id"] == H1
    device.sync()
    assert device.view("member")[member["id"]]["household_id"] == H1


def test_a_quarantined_mutation_never_shows_a_full_id_number(client: Client, make_device: MakeDevice) -> None:
    """Its arguments are kept whole for the record, but whoever reads them sees the number masked."""
    full = valid_id("13010219800101123")
    device = make_device("demo-worker-1")
    device.sync()
    member = {"id": str(uuid.uuid4()), "name": "无此户", "relation": "self", "id_number": full}
    device.enqueue("member.create.v1", household_id=str(uuid.uuid4()), member=member)
    assert device.sync().rejected == [1]
    supervisor = make_device("demo-reviewer-community")
    supervisor.sync()
    for seen in (
        client.get("/api/v1/conflicts", headers=login(client, "demo-reviewer-community")).text,
        str(supervisor.confirmed("conflict")),
        str(device.confirmed("conflict")),
    ):
        assert "无此户" in seen and full not in seen


def test_a_member_edit_contradicting_the_id_number_is_kept_for_a_supervisor(client: Client) -> None:
    """As on REST: a birth date or sex the member's own ID number contradicts is refused, so quarantined
    whole, and the queue moves on."""
    worker = login(client, "demo-worker-1")
    member = client.get(f"/api/v1/households/{H1}", headers=worker).json()["members"][0]
    wrong = "1901-01-01" if member["birth_date"] != "1901-01-01" else "1902-02-02"
    edit = member_update_mutation(1, member, birth_date=(member["birth_date"], wrong))
    answer = push(client, worker, str(uuid.uuid4()), [edit, update_mutation(2, H1, 1, address="之后")])
    assert [(r["status"], r.get("code")) for r in answer["results"]] == [
        ("rejected", "id_number_mismatch"),
        ("applied", None),
    ]
    after = client.get(f"/api/v1/households/{H1}", headers=worker).json()["members"][0]
    assert after["birth_date"] == member["birth_date"]
    kept = [c for c in conflicts(client, member["id"]) if c["mutation_id"] == edit["mutation_id"]]
    assert [c["kind"] for c in kept] == ["quarantined"]


def test_member_edits_merge_guard_the_name_and_removal_is_a_tombstone(
    make_device: MakeDevice, client: Client
) -> None:
    device = make_device("demo-worker-1")
    device.sync()
    member_id, member = next((i, m) for i, m in device.confirmed("member").items() if m["household_id"] == H1)
    device.update_member(member_id, employment="flexible", name="改了名字")
    device.sync()
    after = device.record("member", member_id)
    assert after is not None and after["employment"] == "flexible" and after["name"] == member["name"]
    assert [c["kind"] for c in conflicts(client, member_id)] == ["guarded_change"]
    device.remove_member(member_id, "moved out")
    device.sync()
    assert device.record("member", member_id) is None
    household = client.get(f"/api/v1/households/{H1}", headers=login(client, "demo-worker-1")).json()
    assert member_id not in {m["id"] for m in household["members"]}


def test_a_member_edit_arriving_after_its_household_was_archived_waits_for_a_supervisor(
    make_device: MakeDevice, client: Client
) -> None:
    """An archived household's members are nobody's members any more (REST answers 404 for them): an
    offline edit of one is an update after delete, kept for a supervisor, not written unseen."""
    one, two = make_device("demo-worker-1"), make_device("demo-worker-2")
    one.sync(), two.sync()
    member_id = next(i for i, m in two.confirmed("member").items() if m["household_id"] == H2)
    one.archive_household(H2, "moved away")
    one.sync()
    two.update_member(member_id, employment="全职")
    two.sync()
    (late,) = conflicts(client, member_id)
    assert late["kind"] == "update_after_delete" and late["client_value"] == {"employment": "全职"}
    reviewer = login(client, "demo-reviewer-community", device="desk")
    history = client.get(f"/api/v1/members/{member_id}/history", headers=reviewer).json()
    assert [v["data"]["employment"] for v in history] == [history[0]["data"]["employment"]]
    taken = client.post(
        f"/api/v1/conflicts/{late['id']}/resolve", json={"decision": "take_client"}, headers=reviewer
    )
    assert taken.status_code == 200, taken.text
    history = client.get(f"/api/v1/members/{member_id}/history", headers=reviewer).json()
    assert history[-1]["changed"] == ["employment"] and history[-1]["data"]["employment"] == "全职"


def test_an_id_number_taken_by_a_supervisor_must_agree_with_the_members_sex_and_birth_date(
    client: Client,
) -> None:
    """A resolution is an edit like a PATCH: an ID number contradicting the stored sex and birth date is
    refused (422 id_number_mismatch) as it is over REST, never stored beside them."""
    worker = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0003')}/members"
    member = {"name": "新成员", "relation": "child", "id_number": valid_id(), "sex": "male"}
    added = client.post(url, json=member | {"birth_date": "1980-01-01"}, headers=worker)
    assert added.status_code == 201, added.text
    born_1995_female = valid_id("13010219950630124")
    change = {"id_number": (None, born_1995_female)}
    answer = push(client, worker, str(uuid.uuid4()), [member_update_mutation(1, added.json(), **change)])
    assert answer["results"][0]["status"] == "applied_with_conflict"
    (found,) = conflicts(client, added.json()["id"])
    reviewer = login(client, "demo-reviewer-community", device="desk")
    patched = client.patch(
        f"/api/v1/members/{added.json()['id']}",
        json={"version": 1, "id_number": born_1995_female},
        headers=reviewer,
    )
    assert patched.status_code == 422 and patched.json()["error"]["code"] == "id_number_mismatch"
    taken = client.post(
        f"/api/v1/conflicts/{found['id']}/resolve", json={"decision": "take_client"}, headers=reviewer
    )
    assert taken.status_code == 422 and taken.json()["error"]["code"] == "id_number_mismatch"
    # The device's number is shown masked: the refusal does not say the birth date it holds.
    assert "1995" not in taken.text and "female" not in taken.text
    assert conflicts(client, added.json()["id"])[0]["status"] == "open"
    history = client.get(f"/api/v1/members/{added.json()['id']}/history", headers=reviewer).json()
    assert len(history) == 1


def test_a_supervisors_offline_id_number_must_agree_with_the_members_sex_and_birth_date(
    client: Client,
) -> None:
    """A supervisor's ID number is written at once (it is not guarded for them): pushed, it is checked
    against the stored sex and birth date as their PATCH is, and refused the same way."""
    worker = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0003')}/members"
    member = {"name": "新成员", "relation": "child", "id_number": valid_id(), "sex": "male"}
    added = client.post(url, json=member | {"birth_date": "1980-01-01"}, headers=worker)
    assert added.status_code == 201, added.text
    change = {"id_number": (None, valid_id("13010219950630124"))}
    reviewer = login(client, "demo-reviewer-community")
    answer = push(client, reviewer, str(uuid.uuid4()), [member_update_mutation(1, added.json(), **change)])
    assert (answer["results"][0]["status"], answer["results"][0]["code"]) == (
        "rejected",
        "id_number_mismatch",
    )
    history = client.get(f"/api/v1/members/{added.json()['id']}/history", headers=reviewer).json()
    assert len(history) == 1


def test_one_batch_creating_editing_and_resending_lands_each_effect_once(client: Client) -> None:
    """A push applies its batch in one pass when nothing fails: records made earlier in the batch are
    seen by later mutations, and answers sent twice in one batch are stored once."""
    worker = login(client, "demo-worker-1")
    visit = assign(client)
    answers = [observation(a) for a in complete_answers(client, visit, worker) if a.row_id is None][:5]
    member_id = str(uuid.uuid4())
    member = {
        "id": member_id,
        "name": "新成员",
        "relation": "child",
        "id_number": valid_id("13010220100101123"),
    }

    def op(seq: int, name: str, **body: Any) -> dict[str, Any]:
        return {"op": name, "seq": seq, "mutation_id": str(uuid.uuid4()), **body}

    batch = [
        op(1, "member.create.v1", household_id=H1, member=member),
        op(
            2,
            "member.update.v1",
            member_id=member_id,
            base_version=1,
            changes={"employment": {"old": None, "new": "flexible"}},
        ),
        op(3, "visit.answer.v1", visit_id=visit["id"], observations=answers),
        op(4, "visit.answer.v1", visit_id=visit["id"], observations=answers),
        update_mutation(5, H1, 1, address="一号"),
        update_mutation(6, H1, 2, address="二号"),
    ]
    answer = push(client, worker, str(uuid.uuid4()), batch)
    assert [r["status"] for r in answer["results"]] == ["applied"] * 6
    household = client.get(f"/api/v1/households/{H1}", headers=worker).json()
    assert household["address"] == "二号" and household["version"] == 3
    created = next(m for m in household["members"] if m["id"] == member_id)
    assert created["employment"] == "flexible" and created["version"] == 2
    stored = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=worker).json()
    assert sorted(o["id"] for o in stored) == sorted(a["id"] for a in answers)


def test_a_push_of_answers_waits_for_its_household_without_holding_the_visit(client: Client) -> None:
    """A reviewer's decision locks the household, then its visit (lock_order.py). A tablet's push of
    answers locks both in one statement: had it locked the visit first and then waited for the household,
    the reviewer's next lock would wait for the push, and PostgreSQL would end one of them as a deadlock
    (a 503 to retry, after a second's wait). It must wait for the household holding nothing under it."""
    db: Database = client.app.state.db
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: a push and a decision cannot overlap")
    worker = login(client, "demo-worker-1")
    visit = assign(client)
    answers = [observation(a) for a in complete_answers(client, visit, worker)][:3]
    mutation = {"op": "visit.answer.v1", "seq": 1, "mutation_id": str(uuid.uuid4()), "visit_id": visit["id"]}
    body = {
        "client_id": str(uuid.uuid4()),
        "schema_version": 1,
        "mutations": [mutation | {"observations": answers}],
    }

    async def push_while_deciding() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            db.engine.connect() as reviewer,
        ):
            await reviewer.execute(
                select(Household.id).where(Household.id == uuid.UUID(H1)).with_for_update()
            )
            pushed = asyncio.ensure_future(http.post("/api/v1/sync/push", json=body, headers=worker))
            try:
                await waiting_on_locks(db, 1)
                held = select(Visit.id).where(Visit.id == uuid.UUID(visit["id"])).with_for_update()
                await reviewer.execute(held)  # the visit is free: the push holds nothing yet
            finally:
                await reviewer.commit()
            return await pushed

    answer = client.blocking_portal.call(push_while_deciding)
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["applied"]


def test_answers_of_a_pass_undone_by_a_refusal_later_in_the_batch_are_stored_once_with_all_they_bring(
    client: Client,
) -> None:
    """A refusal undoes the batch's one pass and applies it again mutation by mutation. The answers that
    pass had already handed over (written as plain rows at the flush, server/db/observation_rows.py)
    are undone with it: each is stored once, with its photo references, one feed stamp and one
    audit row, as answers stored by the ORM were."""
    worker = login(client, "demo-worker-1")
    visit = assign(client)
    answers = [observation(a) for a in complete_answers(client, visit, worker)]
    refs = {(a["id"], r.sha256) for a in answers for r in references(a["value"])}
    assert refs  # the checklist's photo and signature items name some
    batch = [
        {"op": "visit.answer.v1", "seq": 1, "mutation_id": str(uuid.uuid4()), "visit_id": visit["id"]}
        | {"observations": answers},
        update_mutation(2, H1, 1, lat=1000),  # refused: the one pass is undone
    ]
    answer = push(client, worker, str(uuid.uuid4()), batch)
    assert [r["status"] for r in answer["results"]] == ["applied", "rejected"]
    stored = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=worker).json()
    assert sorted(o["id"] for o in stored) == sorted(a["id"] for a in answers)
    assert [o["ordinal"] for o in stored] == list(range(1, len(answers) + 1))

    async def written(session: Any) -> tuple[set[tuple[str, str]], list[str]]:
        named = select(PhotoRef.observation_id, PhotoRef.sha256).where(
            PhotoRef.visit_id == uuid.UUID(visit["id"])
        )
        stamped = select(SyncChange.entity_id).where(SyncChange.entity.in_(("observation", "photo")))
        return {(str(o), sha) for o, sha in await session.execute(named)}, list(
            (await session.execute(stamped)).scalars()
        )

    named, stamped = run_db(client, written)
    assert named == refs
    community = str(node_id("C01"))
    for key in [a["id"] for a in answers] + [photo_key(sha, community) for _, sha in refs]:
        assert stamped.count(key) == 1, key
    assert min(_seqs(client, [a["id"] for a in answers]).values()) > 0
    audited = [row for row in audit_rows(client, "visit.answer") if row.entity_id == visit["id"]]
    assert len(audited) == 1 and len(audited[0].changes["observations"]) == len(answers)


def test_a_photo_named_in_two_communities_reaches_both_and_follows_its_households(
    make_device: MakeDevice, client: Client
) -> None:
    """The same photo as evidence in two communities (what the reused-photo check looks for): the devices
    of each receive it, see it arrive, and it follows a household that moves."""
    data = jpeg_with_gps()
    sha = sha256(data)
    for registry_no in ("DB-C01-0001", "DB-C01-0002"):
        visit, worker = completed_visit(client, registry_no)
        answer_with(client, visit, worker, sha)
    c01, c03 = make_device("demo-worker-1"), make_device("demo-worker-3")

    _move(client, "DB-C01-0002", "C03")  # one of the two visits naming it now belongs to C03
    c01.sync(), c03.sync()
    assert record_on(c01, "photo", sha)["state"] == record_on(c03, "photo", sha)["state"] == "expected"
    # Each community's devices learn only their own visits that name it.
    named = {
        registry_no: visits_naming(client, sha, registry_no) for registry_no in ("DB-C01-0001", "DB-C01-0002")
    }
    assert set(record_on(c01, "photo", sha)["visits"]) == named["DB-C01-0001"]
    assert set(record_on(c03, "photo", sha)["visits"]) == named["DB-C01-0002"]

    assert upload(client, login(client, "demo-worker-1"), data).status_code == 204
    c01.sync(), c03.sync()
    assert record_on(c01, "photo", sha)["state"] == record_on(c03, "photo", sha)["state"] == "present"

    _move(client, "DB-C01-0001", "C03")  # no visit in C01 names it any more
    c01.sync(), c03.sync()
    assert c01.record("photo", sha) is None
    assert record_on(c03, "photo", sha)["state"] == "present"
    fresh = make_device("demo-worker-1", name="fresh")
    fresh.sync()
    assert fresh.record("photo", sha) is None


def test_a_photo_leaving_one_of_a_supervisors_communities_stays_while_another_names_it(
    make_device: MakeDevice, client: Client
) -> None:
    """A subdistrict reviewer holds a photo through two of its communities: when one household naming it
    moves out of the subdistrict, the photo stays on the reviewer's tablet (and arrives on a new one
    whose first sync is cut into pages), naming only the visits still in the subdistrict."""
    sha = sha256(jpeg_with_gps())
    for registry_no in ("DB-C01-0001", "DB-C01-0002"):
        visit, worker = completed_visit(client, registry_no)
        answer_with(client, visit, worker, sha)
    _move(client, "DB-C01-0002", "C02")  # both communities are in S01
    reviewer = make_device("demo-reviewer-subdistrict")
    reviewer.sync()
    assert set(record_on(reviewer, "photo", sha)["visits"]) == (
        visits_naming(client, sha, "DB-C01-0001") | visits_naming(client, sha, "DB-C01-0002")
    )

    _move(client, "DB-C01-0001", "C03")  # leaves S01; DB-C01-0002 in C02 still names the photo
    reviewer.sync()
    fresh = make_device("demo-reviewer-subdistrict", "fresh", pull_limit=50)
    fresh.sync()
    for device in (fresh, reviewer):
        assert set(record_on(device, "photo", sha)["visits"]) == visits_naming(client, sha, "DB-C01-0002")


def test_a_photo_kept_by_a_community_after_one_of_its_households_left_names_only_the_visits_left(
    make_device: MakeDevice, client: Client
) -> None:
    """The same photo as evidence for two households of C01: when one moves to C03, C01's tablets keep the
    photo but no longer list the visit that left (it names a household of another community)."""
    sha = sha256(jpeg_with_gps())
    for registry_no in ("DB-C01-0001", "DB-C01-0002"):
        visit, worker = completed_visit(client, registry_no)
        answer_with(client, visit, worker, sha)
    c01 = make_device("demo-worker-1")
    c01.sync()
    _move(client, "DB-C01-0001", "C03")
    c01.sync()
    assert set(record_on(c01, "photo", sha)["visits"]) == visits_naming(client, sha, "DB-C01-0002")


def visits_naming(client: Client, sha: str, registry_no: str) -> set[str]:
    async def ids(session: Any) -> set[str]:
        query = (
            select(PhotoRef.visit_id)
            .join(Visit, Visit.id == PhotoRef.visit_id)
            .where(PhotoRef.sha256 == sha, Visit.household_id == household_id(registry_no))
        )
        return {str(i) for i in (await session.execute(query)).scalars()}

    return run_db(client, ids)


def _move(client: Client, registry_no: str, community: str) -> None:
    async def move(session: Any) -> None:
        household = await session.get(Household, household_id(registry_no))
        household.community_id = node_id(community)

    run_db(client, move)


def test_a_page_is_the_same_however_many_scopes_the_caller_has(client: Client) -> None:
    """Few scopes read a page as a union of per-scope reads, many as one sorted query: same rows."""
    few = [str(node_id("C01")), EVERYONE]
    many = few + [str(uuid.uuid4()) for _ in range(sync_pull.UNION_SCOPES)]

    async def pages(session: Any) -> list[Any]:
        found = []
        for scopes in (few, many):
            for since in (0, 5):
                rows, more = await sync_pull._change_rows(session, scopes, since, 7, fresh=since == 0)
                found.append(([tuple(r) for r in rows], more))
        return found

    union_fresh, union_since, single_fresh, single_since = run_db(client, pages)
    assert union_fresh == single_fresh and union_since == single_since
    assert union_fresh[0] and union_fresh[1]  # a real page, with more after it


def test_a_photo_no_visit_names_yet_takes_no_number_in_the_feed(client: Client) -> None:
    """Storing it changes nothing any device holds: it takes no sequence number, and so does not queue
    behind every other writer for the feed's counter. Named by a visit, it enters the feed."""

    async def feed_seq(session: Any) -> int:
        return int((await session.execute(select(SyncState.seq))).scalar_one())

    worker = login(client, "demo-worker-1")
    before = run_db(client, feed_seq)
    data = jpeg_with_gps(seed=7)
    assert upload(client, worker, data).status_code == 204
    assert run_db(client, feed_seq) == before

    visit, worker = completed_visit(client)
    answer_with(client, visit, worker, sha256(data))
    assert run_db(client, feed_seq) > before


def test_an_objection_pushed_during_the_publicity_is_applied_while_the_file_is_in_review(
    client: Client,
) -> None:
    """A tablet records an objection raised while the file is in review (the 7-day publicity runs during
    the lower levels' review): applied as through REST, and it holds the file back at district approval."""
    visit, worker = in_review_after_publicity(client)
    raised = objection(today() - dt.timedelta(days=1))
    answers = [observation(a) for a in raised]
    body = {"op": "visit.answer.v1", "seq": 1, "mutation_id": str(uuid.uuid4())}
    result = push(
        client, worker, str(uuid.uuid4()), [{**body, "visit_id": visit["id"], "observations": answers}]
    )
    assert [r["status"] for r in result["results"]] == ["applied"], result

    for level in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        assert review(client, visit, level, "approve").status_code == 200
    held = review(client, visit, "demo-approver-district", "approve")
    assert (held.status_code, held.json()["error"]["code"]) == (409, "objection_pending"), held.text
