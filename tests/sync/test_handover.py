"""A tablet handed to another worker while it holds the queue of one who can no longer sign in
(docs/sync-protocol.md, "Handing a tablet over"): the queue reaches a supervisor, never applied, never lost,
never twice."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import AuthToken, User
from sync.client import Device
from sync.device_cli import _act
from sync.errors import DeviceOfAnotherUser, ServerError
from tests.helpers import Client, audit_rows, household_id, login, node_id, run_db
from tests.sync.conftest import MakeDevice
from tests.sync.test_sync_protocol import (
    conflicts,
    push,
    restore_a_backup_taken_after_seq_1,
    restore_a_backup_taken_before_its_first_sync,
    update_mutation,
)
from tests.visit_flow import user_id

H1 = str(household_id("DB-C01-0001"))
HANDOVER = "/api/v1/sync/handover"


def deactivate(client: Client, username: str) -> str:
    """The user's id, their account set inactive (their sign-ins end)."""
    admin, user = login(client, "demo-admin", device="desk"), user_id(client, username)
    answer = client.patch(f"/api/v1/admin/users/{user}", json={"active": False}, headers=admin)
    assert answer.status_code == 200, answer.text
    return user


def one_edit_pushed(client: Client) -> str:
    """A new client of demo-worker-1 that pushed one edit of H1 (now at version 2): its id."""
    cid = str(uuid.uuid4())
    push(client, login(client, "demo-worker-1"), cid, [update_mutation(1, H1, 1, address="甲")])
    return cid


def tablet_with_an_unsent_edit(make_device: MakeDevice, address: str) -> Device:
    """demo-worker-1's tablet, synced, then H1's address edited offline."""
    device = make_device("demo-worker-1")
    device.sync()
    device.update_household(H1, address=address)
    return device


def hand_over(
    client: Client, headers: dict[str, str], client_id: str, mutations: list[dict[str, Any]]
) -> Any:
    body = {"client_id": client_id, "schema_version": 1, "mutations": mutations}
    return client.post(HANDOVER, json=body, headers=headers)


def test_a_deactivated_workers_queue_is_kept_for_a_supervisor_once_and_applies_nothing(
    client: Client,
) -> None:
    worker = login(client, "demo-worker-1")
    cid = str(uuid.uuid4())
    sent = update_mutation(1, H1, 1, address="已发送")
    assert push(client, worker, cid, [sent])["results"][0]["status"] == "applied"
    queue = [
        sent,
        update_mutation(2, H1, 2, address="未发送一"),
        update_mutation(3, H1, 2, address="未发送二"),
    ]
    author = deactivate(client, "demo-worker-1")
    colleague = login(client, "demo-worker-2")

    answers = [
        hand_over(client, colleague, cid, queue) for _ in range(2)
    ]  # the second: a lost answer's retry
    for answer in answers:
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results] == ["already_applied", "rejected", "rejected"]
        assert [r.get("code") for r in results[1:]] == ["author_inactive", "author_inactive"]
        assert answer.json()["last_mutation_seq"] == 3
    assert answers[0].json()["results"] == answers[1].json()["results"]

    kept = conflicts(client, H1)
    assert len(kept) == 2  # once, however often handed over
    assert {c["client_value"]["changes"]["address"]["new"] for c in kept} == {"未发送一", "未发送二"}
    assert {c["kind"] for c in kept} == {"quarantined"} and {c["code"] for c in kept} == {"author_inactive"}
    assert {c["author_id"] for c in kept} == {author}
    assert client.get(f"/api/v1/households/{H1}", headers=colleague).json()["address"] == "已发送"
    (row,) = audit_rows(client, "sync.handover")
    assert str(row.actor_id) == user_id(client, "demo-worker-2") and row.entity_id == cid
    assert row.changes == {"author_id": author, "quarantined_seqs": [2, 3]}


def test_a_handover_is_refused_while_its_author_can_sign_in_or_from_outside_their_area(
    client: Client,
) -> None:
    cid = one_edit_pushed(client)
    queue = [update_mutation(2, H1, 2, address="乙")]

    active = hand_over(client, login(client, "demo-worker-2"), cid, queue)
    assert active.status_code == 409 and active.json()["error"]["code"] == "author_active"
    deactivate(client, "demo-worker-1")
    elsewhere = hand_over(client, login(client, "demo-worker-3"), cid, queue)  # community C03
    assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "beyond_jurisdiction"
    unknown = hand_over(client, login(client, "demo-worker-2"), str(uuid.uuid4()), queue)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "client_unknown"
    own_cid = str(uuid.uuid4())
    colleague = login(client, "demo-worker-2")
    push(client, colleague, own_cid, [])
    own = hand_over(client, colleague, own_cid, queue)
    assert own.status_code == 409 and own.json()["error"]["code"] == "client_is_yours"
    assert conflicts(client, H1) == [] and audit_rows(client, "sync.handover") == []
    # The reviewer over the community may take it, as its colleague may.
    taken = hand_over(client, login(client, "demo-reviewer-subdistrict"), cid, queue)
    assert taken.status_code == 200 and taken.json()["results"][0]["code"] == "author_inactive"


def test_a_handover_from_outside_the_area_learns_nothing_of_the_author(client: Client) -> None:
    # Outside the area, whether the author can still sign in, and who they are, are none of the sender's
    # business: the refusal is the same either way, and names nobody.
    cid = one_edit_pushed(client)
    queue = [update_mutation(2, H1, 2, address="乙")]
    answers = [hand_over(client, login(client, "demo-worker-3"), cid, queue)]
    deactivate(client, "demo-worker-1")
    answers.append(hand_over(client, login(client, "demo-worker-3"), cid, queue))
    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "beyond_jurisdiction"
        assert "demo-worker-1" not in answer.text and "王芳" not in answer.text


def test_a_handover_sent_again_with_other_edits_names_its_sender_for_each_one_it_keeps(
    client: Client,
) -> None:
    # Edits at seqs the client already used, or under mutation ids already used for other edits, are kept
    # for a supervisor as a push keeps them: in the author's name, so the audit log must say who sent
    # them. They were recorded as done by the deactivated author, with no `sync.handover` row at all.
    cid = one_edit_pushed(client)
    first = update_mutation(2, H1, 2, address="乙")
    deactivate(client, "demo-worker-1")
    colleague = login(client, "demo-worker-2")
    assert hand_over(client, colleague, cid, [first]).status_code == 200
    audited_before = {row.entity_id for row in audit_rows(client, "mutation.quarantine")}

    other_at_2 = update_mutation(2, H1, 2, address="丙")
    reused_id = update_mutation(3, H1, 2, address="丁") | {"mutation_id": first["mutation_id"]}
    again = hand_over(client, colleague, cid, [other_at_2, reused_id])
    assert again.status_code == 200, again.text
    assert [r["code"] for r in again.json()["results"]] == ["seq_reused", "mutation_id_reused"]

    planted = [r for r in audit_rows(client, "mutation.quarantine") if r.entity_id not in audited_before]
    assert len(planted) == 2
    assert {str(r.actor_id) for r in planted} == {user_id(client, "demo-worker-2")}
    rows = audit_rows(client, "sync.handover")
    assert [row.changes["quarantined_seqs"] for row in rows] == [[2], [2, 3]]
    assert {str(row.actor_id) for row in rows} == {user_id(client, "demo-worker-2")}


def move(client: Client, username: str, node: str) -> None:
    """The user bound to another node (an administrator's change made in the database)."""

    async def bind(session: AsyncSession) -> None:
        await session.execute(
            update(User).where(User.username == username).values(jurisdiction_id=node_id(node))
        )

    run_db(client, bind)


def test_a_worker_moved_elsewhere_before_leaving_is_handed_in_where_their_tablet_worked(
    client: Client,
) -> None:
    # The tablet holds C01's households and edits of them: the C01 colleague it is handed to hands it in
    # (they were refused: the author's node had become C03), a C03 worker may not, and the quarantined
    # edits land where C01's supervisors see them (they went to the district, over both nodes).
    cid = one_edit_pushed(client)
    queue = [update_mutation(2, H1, 2, address="乙")]
    move(client, "demo-worker-1", "C03")
    deactivate(client, "demo-worker-1")

    elsewhere = hand_over(client, login(client, "demo-worker-3"), cid, queue)
    assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "beyond_jurisdiction"
    taken = hand_over(client, login(client, "demo-worker-2"), cid, queue)
    assert taken.status_code == 200, taken.text
    assert taken.json()["results"][0]["code"] == "author_inactive"
    (kept,) = conflicts(client, H1)
    assert kept["client_value"]["changes"]["address"]["new"] == "乙"


def test_the_next_worker_signs_in_on_a_tablet_a_deactivated_worker_left_edits_on(
    client: Client, make_device: MakeDevice
) -> None:
    device = tablet_with_an_unsent_edit(make_device, "离职前的修改")
    deactivate(client, "demo-worker-1")

    device.login("demo-worker-2", "demo")
    assert device.pending() == [] and device.photo_queue() == []
    device.sync()
    assert device.view("household")[H1]["address"] != "离职前的修改"  # not applied: a supervisor decides
    (kept,) = conflicts(client, H1)
    assert (
        kept["code"] == "author_inactive"
        and kept["client_value"]["changes"]["address"]["new"] == "离职前的修改"
    )


def test_a_tablet_stays_its_users_while_they_can_sign_in_or_the_next_one_works_elsewhere(
    client: Client, make_device: MakeDevice
) -> None:
    device = tablet_with_an_unsent_edit(make_device, "还在职")
    with pytest.raises(DeviceOfAnotherUser, match="sign in as demo-worker-1"):
        device.login("demo-worker-2", "demo")
    deactivate(client, "demo-worker-1")
    with pytest.raises(DeviceOfAnotherUser, match="demo-worker-1"):
        device.login("demo-worker-3", "demo")  # community C03: not theirs to hand in
    assert len(device.pending()) == 1 and device.view("household")[H1]["address"] == "还在职"
    assert conflicts(client, H1) == []


@pytest.mark.parametrize(
    ("confirmed", "restore", "lost"),
    [
        (3, restore_a_backup_taken_after_seq_1, (2, 3)),
        (2, restore_a_backup_taken_before_its_first_sync, (1, 2)),
    ],
    ids=["backup-after-seq-1", "backup-before-the-first-sync"],
)
def test_a_tablet_handed_over_after_the_server_was_restored_from_a_backup(
    client: Client,
    make_device: MakeDevice,
    confirmed: int,
    restore: Callable[[Client, uuid.UUID], None],
    lost: tuple[int, int],
) -> None:
    """Edits confirmed after the backup was taken are gone from the server and from the tablet: as a push
    does, the handover records their seqs as lost and takes the queue from where the tablet holds it.
    It stopped out_of_order at a seq the tablet no longer holds, and every sign-in failed for good; so
    too when the backup predates the tablet's first sync and the restored server has no record of its
    client (the handover registers it, and sends no cursor to tell of the restore)."""
    device = make_device("demo-worker-1")
    device.sync()
    for i in range(confirmed):  # seqs 1 onwards, confirmed and dropped
        device.update_household(H1, address=f"第{i}")
    device.sync()
    device.update_household(H1, address="备份之后离职前")  # never sent
    cid = uuid.UUID(device.client_id)
    restore(client, cid)
    deactivate(client, "demo-worker-1")

    device.login("demo-worker-2", "demo")
    assert device.pending() == [] and device.username == "demo-worker-2"
    (kept,) = conflicts(client, H1)
    assert kept["code"] == "author_inactive"
    assert kept["client_value"]["changes"]["address"]["new"] == "备份之后离职前"
    (recorded,) = conflicts(client, str(cid))
    assert recorded["kind"] == "lost_in_restore"
    assert (recorded["client_value"]["from_seq"], recorded["client_value"]["to_seq"]) == lost


def live_sessions(client: Client, username: str) -> int:
    async def count(session: AsyncSession) -> int:
        query = (
            select(func.count())
            .select_from(AuthToken)
            .join(User, User.id == AuthToken.user_id)
            .where(User.username == username, AuthToken.revoked_at.is_(None))
        )
        return int((await session.execute(query)).scalar_one())

    return run_db(client, count)


def test_the_sign_in_says_what_it_handed_over_or_who_may_hand_it_in(
    client: Client, make_device: MakeDevice, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tablet_with_an_unsent_edit(make_device, "离职前")
    deactivate(client, "demo-worker-1")
    # From outside the area, "sign in as demo-worker-1 and sync first" was a dead end: they cannot.
    with pytest.raises(DeviceOfAnotherUser, match="a colleague of their area or a supervisor over it"):
        device.login("demo-worker-3", "demo")
    assert live_sessions(client, "demo-worker-3") == 0

    # A sign-in failing half way (the server busy) ends the session the tablet will not keep; it was left
    # open until it expired.
    real = device.transport

    def busy(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if path == "/api/v1/sync/handover":
            return 503, {"error": {"code": "try_later", "message": "busy"}}
        return real(path, body, token)

    device.transport = busy
    with pytest.raises(ServerError):
        device.login("demo-worker-2", "demo")
    assert live_sessions(client, "demo-worker-2") == 0 and device.username == "demo-worker-1"
    device.transport = real

    # `fivestep device login` says what it handed over: it only said who signed in.
    args = argparse.Namespace(
        action="login", username="demo-worker-2", password="demo", db=str(tmp_path / "d")
    )
    assert _act(device, args, "http://testserver") == 0
    said = capsys.readouterr().out
    assert "handed over 1 edit(s) not yet confirmed of demo-worker-1 for a supervisor" in said
    assert device.username == "demo-worker-2" and device.handed_over is not None


def test_a_supervisor_sees_who_handed_in_each_edit_kept_from_a_tablet(
    client: Client, make_device: MakeDevice
) -> None:
    """Only the `sync.handover` audit row named the colleague who sent the queue: a supervisor reviewing
    the conflict saw its author, who can no longer be asked, and not who brought the tablet in."""
    device = tablet_with_an_unsent_edit(make_device, "交接前")
    author = deactivate(client, "demo-worker-1")
    device.login("demo-worker-2", "demo")
    device.sync()

    (kept,) = conflicts(client, H1)
    colleague = user_id(client, "demo-worker-2")
    assert kept["handed_over_by"] == colleague and kept["author_id"] == author
    pulled = device.record("conflict", kept["id"])  # the community's tablets pull it as the desk shows it
    assert pulled is not None and pulled["handed_over_by"] == colleague
    # An edit its author sent themselves names nobody.
    cid = str(uuid.uuid4())
    refused = update_mutation(1, str(uuid.uuid4()), 1, address="无此户")
    push(client, login(client, "demo-worker-2"), cid, [refused])
    (own,) = conflicts(client, refused["household_id"])
    assert own["kind"] == "quarantined" and own["handed_over_by"] is None


def hand_over_naming(
    client: Client, headers: dict[str, str], client_id: str, author: str, mutations: list[dict[str, Any]]
) -> Any:
    body = {"client_id": client_id, "schema_version": 1, "mutations": mutations, "author_id": author}
    return client.post(HANDOVER, json=body, headers=headers)


def test_a_tablet_that_never_synced_is_handed_in_naming_its_user(client: Client) -> None:
    """Its user worked offline from their first sign-in, then left: the server never saw the client id,
    answered `404 client_unknown`, and the tablet stayed locked for good (its user cannot sign in). The
    handover names the previous user, whom the server checks as it checks a known client's."""
    cid, author = str(uuid.uuid4()), user_id(client, "demo-worker-1")
    queue = [update_mutation(1, H1, 1, address="从未同步")]
    colleague = login(client, "demo-worker-2")

    active = hand_over_naming(client, colleague, cid, author, queue)
    assert active.status_code == 409 and active.json()["error"]["code"] == "author_active"
    deactivate(client, "demo-worker-1")
    for stranger in (author, str(uuid.uuid4())):  # outside the area, or nobody: the same, naming nobody
        refused = hand_over_naming(client, login(client, "demo-worker-3"), cid, stranger, queue)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "beyond_jurisdiction"
        assert "demo-worker-1" not in refused.text
    nobody = hand_over_naming(client, colleague, cid, str(uuid.uuid4()), queue)
    assert nobody.status_code == 403 and nobody.json()["error"]["code"] == "beyond_jurisdiction"
    assert hand_over(client, colleague, cid, queue).status_code == 404  # naming nobody: as before
    assert conflicts(client, H1) == []

    for _ in range(2):  # the second: a lost answer's retry
        taken = hand_over_naming(client, colleague, cid, author, queue)
        assert taken.status_code == 200, taken.text
        assert [r.get("code") for r in taken.json()["results"]] == ["author_inactive"]
    (kept,) = conflicts(client, H1)
    assert kept["author_id"] == author and kept["handed_over_by"] == user_id(client, "demo-worker-2")
    (row,) = audit_rows(client, "sync.handover")
    assert row.changes == {"author_id": author, "quarantined_seqs": [1], "client_registered": True}
    # The client is the author's now: nobody else's push or handover takes it.
    theirs = client.post(
        "/api/v1/sync/push", json={"client_id": cid, "schema_version": 1, "mutations": []}, headers=colleague
    )
    assert theirs.status_code == 403 and theirs.json()["error"]["code"] == "client_of_another_user"


def test_the_next_worker_signs_in_on_a_tablet_that_never_synced(
    client: Client, make_device: MakeDevice
) -> None:
    device = make_device("demo-worker-1")  # signed in, then offline for good
    device.update_household(H1, address="离线离职")
    deactivate(client, "demo-worker-1")

    device.login("demo-worker-2", "demo")
    assert device.pending() == [] and device.username == "demo-worker-2"
    assert device.handed_over == "1 edit(s) not yet confirmed of demo-worker-1"
    (kept,) = conflicts(client, H1)
    assert (
        kept["code"] == "author_inactive" and kept["client_value"]["changes"]["address"]["new"] == "离线离职"
    )
