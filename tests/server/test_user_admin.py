"""An admin's users: listed, deactivated and reactivated, their passwords reset; a user's own password
change. Through the real API, on both databases."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from schemas.auth import UserCreate
from server.db.models import Jurisdiction, Level, LoginThrottle
from server.services import users
from server.services.actor import SYSTEM
from tests.helpers import Client, audit_rows, login, node_id, run_db, sent_in_turn

LOGIN = "/api/v1/auth/login"
USERS = "/api/v1/admin/users"


def attempt(client: Client, username: str, password: str, device: str = "tablet-1") -> Any:
    return client.post(LOGIN, json={"username": username, "password": password, "device_id": device})


def me(client: Client, headers: dict[str, str]) -> Any:
    return client.get("/api/v1/auth/me", headers=headers)


def user_id(client: Client, username: str, admin: dict[str, str]) -> str:
    listed = client.get(USERS, params={"limit": 500}, headers=admin).json()["items"]
    return str(next(u["id"] for u in listed if u["username"] == username))


def other_district_admin(client: Client) -> dict[str, str]:
    """Signed in as the admin of a second district, D02, beside the demo's D01."""

    async def make(session: Any) -> None:
        district = Jurisdiction(
            id=uuid.uuid4(), parent_id=None, level=Level.district, code="D02", name="二区", path="/D02/"
        )
        session.add(district)
        await session.flush()
        body = UserCreate("admin-d02", "二区管理员", "admin", district.id, "d02-admin-password")
        await users.create_user(session, SYSTEM, body)

    run_db(client, make)
    return login(client, "admin-d02", device="desk-d02", password="d02-admin-password")


def test_an_admin_lists_the_users_of_their_jurisdiction_page_by_page_without_passwords(
    client: Client,
) -> None:
    admin = login(client, "demo-admin")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(USERS, params={"limit": 3} | ({"cursor": cursor} if cursor else {}), headers=admin)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    names = [u["username"] for u in seen]
    assert names == sorted(names) and "demo-worker-1" in names and "demo-admin" in names
    assert len(names) == len(set(names)) == 7
    assert all("password" not in key for u in seen for key in u)
    assert all(u["active"] for u in seen)

    workers = client.get(USERS, params={"role": "field_worker"}, headers=admin).json()["items"]
    assert sorted(u["username"] for u in workers) == ["demo-worker-1", "demo-worker-2", "demo-worker-3"]
    in_s01 = client.get(USERS, params={"jurisdiction_id": str(node_id("S01"))}, headers=admin).json()
    assert sorted(u["username"] for u in in_s01["items"]) == [
        "demo-reviewer-community",
        "demo-reviewer-subdistrict",
        "demo-worker-1",
        "demo-worker-2",
    ]
    nowhere = client.get(USERS, params={"jurisdiction_id": str(uuid.uuid4())}, headers=admin).json()
    assert nowhere == {"items": [], "next_cursor": None}
    bad = client.get(USERS, params={"cursor": "not-a-cursor"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_cursor"
    # The admin of another district sees only their own.
    assert [
        u["username"] for u in client.get(USERS, headers=other_district_admin(client)).json()["items"]
    ] == ["admin-d02"]


def test_a_deactivated_worker_is_signed_out_at_once_and_refused_like_a_wrong_password(client: Client) -> None:
    """A worker who left kept working sign-ins: nothing could set an account inactive."""
    worker = login(client, "demo-worker-1", device="worker-tablet")
    admin = login(client, "demo-admin", device="desk")
    target = user_id(client, "demo-worker-1", admin)

    off = client.patch(f"{USERS}/{target}", json={"active": False}, headers=admin)
    assert off.status_code == 200, off.text
    assert off.json()["active"] is False and off.json()["username"] == "demo-worker-1"
    gone = me(client, worker)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "invalid_token"
    right = attempt(client, "demo-worker-1", "demo", device="worker-tablet")
    wrong = attempt(client, "demo-worker-1", "not-the-password", device="worker-tablet")
    assert right.status_code == wrong.status_code == 401
    assert right.json() == wrong.json()
    assert attempt(client, "demo-worker-1", "demo", device="thiefs-phone").json() == wrong.json()
    listed = client.get(USERS, params={"active": "false"}, headers=admin).json()["items"]
    assert [u["username"] for u in listed] == ["demo-worker-1"]
    # Sent again: nothing more happens, and no second row.
    assert client.patch(f"{USERS}/{target}", json={"active": False}, headers=admin).status_code == 200
    [row] = audit_rows(client, "user.deactivate")
    assert (row.entity_id, row.changes) == (target, {"sessions_ended": 1})

    on = client.patch(f"{USERS}/{target}", json={"active": True}, headers=admin)
    assert on.status_code == 200 and on.json()["active"] is True
    assert me(client, worker).status_code == 401  # the old session does not come back
    again = login(client, "demo-worker-1", device="worker-tablet")
    assert me(client, again).status_code == 200
    assert len(audit_rows(client, "user.reactivate")) == 1


def test_an_admin_cannot_deactivate_themselves(client: Client) -> None:
    admin = login(client, "demo-admin")
    mine = me(client, admin).json()["id"]
    refused = client.patch(f"{USERS}/{mine}", json={"active": False}, headers=admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "own_account"
    assert me(client, admin).status_code == 200
    assert audit_rows(client, "user.deactivate") == []


def test_a_reset_password_works_the_old_one_does_not_and_every_session_ends(client: Client) -> None:
    """A worker who lost their password had nobody who could give them a new one."""
    tablet = login(client, "demo-worker-2", device="tablet")
    phone = login(client, "demo-worker-2", device="phone")
    admin = login(client, "demo-admin", device="desk")
    target = user_id(client, "demo-worker-2", admin)
    url = f"{USERS}/{target}/password"

    short = client.post(url, json={"password": "short"}, headers=admin)
    assert short.status_code == 422 and short.json()["error"]["details"][0]["field"] == "password", short.text
    assert me(client, tablet).status_code == 200  # a refused reset changes nothing

    reset = client.post(url, json={"password": "a-new-long-password"}, headers=admin)
    assert reset.status_code == 200, reset.text
    assert "password" not in reset.text
    assert me(client, tablet).status_code == 401 and me(client, phone).status_code == 401
    assert attempt(client, "demo-worker-2", "demo", device="tablet").status_code == 401
    assert attempt(client, "demo-worker-2", "a-new-long-password", device="tablet").status_code == 200
    [row] = audit_rows(client, "user.password_reset")
    assert (row.entity_id, row.changes) == (target, {"sessions_ended": 2})
    assert not any("a-new-long-password" in repr((r.changes, r.reason)) for r in audit_rows(client))

    mine = me(client, admin).json()["id"]
    own = client.post(f"{USERS}/{mine}/password", json={"password": "taken-over-admin"}, headers=admin)
    assert own.status_code == 409 and own.json()["error"]["code"] == "own_account"


def test_users_out_of_reach_are_404_and_non_admins_403(client: Client) -> None:
    elsewhere = other_district_admin(client)
    admin = login(client, "demo-admin", device="desk")
    target = user_id(client, "demo-worker-1", admin)
    for method, url, body in [
        ("PATCH", f"{USERS}/{target}", {"active": False}),
        ("POST", f"{USERS}/{target}/password", {"password": "someone-elses-password"}),
        ("PATCH", f"{USERS}/{uuid.uuid4()}", {"active": False}),
    ]:
        refused = client.request(method, url, json=body, headers=elsewhere)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "not_found"
    worker = login(client, "demo-worker-1")
    assert me(client, worker).status_code == 200  # untouched
    reviewer = login(client, "demo-reviewer-subdistrict")
    for method, url, body in [
        ("GET", USERS, None),
        ("PATCH", f"{USERS}/{target}", {"active": False}),
        ("POST", f"{USERS}/{target}/password", {"password": "someone-elses-password"}),
    ]:
        assert client.request(method, url, json=body, headers=reviewer).status_code == 403
    assert audit_rows(client, "user.deactivate") == audit_rows(client, "user.password_reset") == []


def test_a_user_changes_their_own_password_with_the_old_one(client: Client) -> None:
    here = login(client, "demo-worker-1", device="tablet")
    there = login(client, "demo-worker-1", device="phone")
    url = "/api/v1/auth/password"
    wrong = client.post(url, json={"old_password": "guess", "new_password": "my-new-password"}, headers=here)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password", wrong.text
    assert me(client, here).status_code == me(client, there).status_code == 200

    changed = client.post(url, json={"old_password": "demo", "new_password": "my-new-password"}, headers=here)
    assert changed.status_code == 204, changed.text
    assert me(client, here).status_code == 200
    assert me(client, there).status_code == 401
    assert attempt(client, "demo-worker-1", "demo").status_code == 401
    assert attempt(client, "demo-worker-1", "my-new-password").status_code == 200
    [row] = audit_rows(client, "user.password_change")
    assert row.changes == {"sessions_ended": 1}
    [refused] = audit_rows(client, "user.password_change_refused")
    assert refused.changes == {"failures": 1, "locked": False}


def test_a_stolen_token_cannot_guess_the_password_faster_than_a_sign_in(client: Client) -> None:
    stolen = login(client, "demo-worker-1", device="tablet")
    url = "/api/v1/auth/password"
    for n in range(5):
        guess = {"old_password": f"guess-{n}", "new_password": "taken-over-now"}
        assert client.post(url, json=guess, headers=stolen).status_code == 403
    right = {"old_password": "demo", "new_password": "taken-over-now"}
    locked = client.post(url, json=right, headers=stolen)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0, locked.text
    # The same count as the tablet's sign-ins: it is locked there too, and nowhere else.
    assert attempt(client, "demo-worker-1", "demo", device="tablet").status_code == 429
    assert attempt(client, "demo-worker-1", "demo", device="desk").status_code == 200


def test_a_sign_in_checking_the_old_password_during_a_reset_gets_no_session_that_outlives_it(
    client: Client,
) -> None:
    """On PostgreSQL a sign-in that had read the old password's hash before a reset committed could store
    its token after the reset had ended the sessions: the old password opened one that stayed. Now the
    reset waits for that sign-in and ends its session too (SQLite takes the two in turns anyway)."""
    admin = login(client, "demo-admin", device="desk")
    target = user_id(client, "demo-worker-2", admin)
    assert attempt(client, "demo-worker-2", "typo", device="new-tablet").status_code == 401  # a counter row
    old_password: tuple[str, str, dict[str, str], dict[str, str]] = (
        "POST",
        LOGIN,
        {"username": "demo-worker-2", "password": "demo", "device_id": "new-tablet"},
        {},
    )
    reset = ("POST", f"{USERS}/{target}/password", {"password": "a-new-long-password"}, admin)
    signed_in, was_reset = sent_in_turn(client, [old_password, reset], held=select(LoginThrottle))
    assert was_reset.status_code == 200, was_reset.text
    if signed_in.status_code == 200:
        assert me(client, {"Authorization": f"Bearer {signed_in.json()['token']}"}).status_code == 401
    assert attempt(client, "demo-worker-2", "demo", device="desk-2").status_code == 401
    assert attempt(client, "demo-worker-2", "a-new-long-password", device="desk-2").status_code == 200


def test_the_account_operations_are_in_the_openapi_document(client: Client) -> None:
    document = client.get("/schema/openapi.json").json()
    paths = document["paths"]
    for path, method in [
        ("/api/v1/admin/users", "get"),
        ("/api/v1/admin/users/{user_id}", "patch"),
        ("/api/v1/admin/users/{user_id}/password", "post"),
        ("/api/v1/auth/password", "post"),
    ]:
        operation = paths[path][method]
        assert {"4XX", "5XX"} <= set(operation["responses"]), (path, method)
    listed = paths["/api/v1/admin/users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = document["components"]["schemas"][listed["$ref"].rsplit("/", 1)[1]]
    user = document["components"]["schemas"][page["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert "active" in user["properties"] and not any("password" in p for p in user["properties"])


def test_a_password_among_the_most_common_or_made_of_the_username_is_refused(client: Client) -> None:
    """Length alone let an admin give a new worker 12345678, and a worker change theirs to 88888888 or to
    their own name: the first guesses of anyone holding a lost tablet, within its few tries."""
    admin = login(client, "demo-admin")
    body = {
        "username": "wang-fang-2",
        "display_name": "王芳",
        "role": "field_worker",
        "jurisdiction_id": str(node_id("C01")),
    }
    for password, why in [("12345678", "common"), ("Wang-Fang-2024", "username"), ("zzzzzzzzzz", "repeated")]:
        refused = client.post(USERS, json=body | {"password": password}, headers=admin)
        assert refused.status_code == 422, (password, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "weak_password" and error["details"][0]["field"] == "password"
        assert why in error["details"][0]["message"] and password not in refused.text
    made = client.post(USERS, json=body | {"password": "柳树下那扇红色的木门"}, headers=admin)
    assert made.status_code == 201, made.text
    reset = client.post(
        f"{USERS}/{made.json()['id']}/password", json={"password": "Password1"}, headers=admin
    )
    assert (reset.status_code, reset.json()["error"]["code"]) == (422, "weak_password")

    worker = login(client, "demo-worker-1")
    change = {"old_password": "demo", "new_password": "demo-worker-1!"}
    refused = client.post("/api/v1/auth/password", json=change, headers=worker)
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "new_password"
    assert attempt(client, "demo-worker-1", "demo").status_code == 200  # the old password still stands
    assert (
        audit_rows(client, "user.password_reset") == [] and audit_rows(client, "user.password_change") == []
    )
