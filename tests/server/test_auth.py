"""Sign-in, sessions, throttling and revocation, on both databases."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update

from server.db.models import AuthToken, LoginThrottle
from tests.helpers import Client, audit_rows, login, node_id, posted_at_once, run_db

LOGIN = "/api/v1/auth/login"


def attempt(client: Client, username: str, password: str, device: str = "tablet-1") -> Any:
    return client.post(LOGIN, json={"username": username, "password": password, "device_id": device})


def test_demo_worker_signs_in_and_sees_who_they_are(client: Client) -> None:
    response = attempt(client, "demo-worker-1", "demo")
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith("fs_")
    assert body["user"]["role"] == "field_worker"
    assert body["user"]["jurisdiction_path"] == "/D01/S01/C01/"
    assert dt.datetime.fromisoformat(body["expires_at"]).tzinfo is not None
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["username"] == "demo-worker-1"


def test_wrong_password_and_unknown_user_get_the_same_401(client: Client) -> None:
    wrong = attempt(client, "demo-worker-1", "nope")
    unknown = attempt(client, "nobody-at-all", "nope")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


def test_repeated_failures_lock_the_username_even_for_the_right_password(client: Client) -> None:
    for _ in range(5):
        assert attempt(client, "demo-worker-2", "guess").status_code == 401
    locked = attempt(client, "demo-worker-2", "demo")
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert locked.json()["error"]["code"] == "too_many_requests"
    # Another user is not affected, and guessing at unknown names is slowed down the same way.
    assert attempt(client, "demo-worker-1", "demo").status_code == 200
    for _ in range(5):
        attempt(client, "ghost", "guess")
    assert attempt(client, "ghost", "guess").status_code == 429


def test_a_stranger_guessing_cannot_lock_the_worker_out_of_their_own_tablet(client: Client) -> None:
    """Failures were counted per username: anyone who knew a worker's username could keep them locked out,
    on a home visit, by sending a wrong password every few minutes. Now a tablet the worker has signed in
    on before counts its own failures; every other device (a made-up device id, the guesser's) shares
    one count for the account, which locks as before, so guessing stays as slow, whichever id it uses."""
    assert attempt(client, "demo-worker-2", "demo", device="worker-2-tablet").status_code == 200
    for n in range(5):
        assert attempt(client, "demo-worker-2", f"guess-{n}", device=f"stranger-{n}").status_code == 401
    for device in ("stranger-0", "stranger-new"):  # a new device id does not start a new count
        locked = attempt(client, "demo-worker-2", "demo", device=device)
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0, locked.text
    assert attempt(client, "demo-worker-2", "demo", device="worker-2-tablet").status_code == 200
    # The worker's own tablet still locks after its own failures, and only that tablet.
    for _ in range(5):
        assert attempt(client, "demo-worker-2", "typo", device="worker-2-tablet").status_code == 401
    assert attempt(client, "demo-worker-2", "demo", device="worker-2-tablet").status_code == 429
    assert attempt(client, "demo-worker-1", "demo", device="worker-2-tablet").status_code == 200
    failed = audit_rows(client, "auth.login_failed")
    assert [r.changes["known_device"] for r in failed] == [False] * 5 + [True] * 5


def moved_back(client: Client, seconds: int) -> None:
    """Every sign-in counter as it will be `seconds` from now (its times that much earlier)."""

    async def move(session: Any) -> None:
        for row in (await session.execute(select(LoginThrottle))).scalars():
            row.window_started_at -= dt.timedelta(seconds=seconds)
            if row.locked_until is not None:
                row.locked_until -= dt.timedelta(seconds=seconds)

    run_db(client, move)


def test_a_failure_after_a_lockout_doubles_the_wait_until_a_quiet_window_passes(client: Client) -> None:
    """The first lockout lasts the whole window (300 s): the count used to start over at the first
    failure after it, so a guesser got 5 tries every 5 minutes for ever and the wait never grew."""
    for _ in range(5):
        assert attempt(client, "demo-worker-2", "guess").status_code == 401
    moved_back(client, 301)  # the first lockout is over
    again = attempt(client, "demo-worker-2", "guess")
    assert again.status_code == 401
    locked = attempt(client, "demo-worker-2", "demo")
    assert locked.status_code == 429
    assert 590 <= int(locked.headers["retry-after"]) <= 600  # doubled
    moved_back(client, 601)
    attempt(client, "demo-worker-2", "guess")
    assert 1190 <= int(attempt(client, "demo-worker-2", "demo").headers["retry-after"]) <= 1200
    moved_back(client, 1201 + 301)  # a quiet window after the lockout ended: counting starts over
    for _ in range(4):
        assert attempt(client, "demo-worker-2", "guess").status_code == 401
    assert attempt(client, "demo-worker-2", "demo").status_code == 200


def test_a_guesser_who_keeps_at_it_for_days_stays_locked_out_an_hour_at_a_time(client: Client) -> None:
    """One wrong password as each lockout ended doubled a wait that the hour caps, but the doubling was
    computed before the cap: after about 40 of them (under two days) it no longer fit in a date, every
    wrong password was a 500 that counted nothing, and guessing went on unthrottled."""
    for _ in range(5):
        assert attempt(client, "demo-worker-2", "guess").status_code == 401
    for n in range(45):
        locked = attempt(client, "demo-worker-2", "demo")
        assert locked.status_code == 429, (n, locked.text)
        wait = int(locked.headers["retry-after"])
        assert wait <= 3600
        moved_back(client, wait + 1)  # the lockout is just over: the next failure still counts
        wrong = attempt(client, "demo-worker-2", f"guess-{n}")
        assert wrong.status_code == 401, (n, wrong.text)
    assert attempt(client, "demo-worker-2", "demo").status_code == 429


def test_a_password_typed_as_the_username_is_counted_but_never_stored(client: Client) -> None:
    """A failed sign-in under a name nobody has is counted (guessing at names is slowed down too), and
    such a name is often a password typed into the wrong field: the counter keeps no trace of it."""
    typed = "Wang-Fang-1987!"
    for _ in range(5):
        assert attempt(client, typed, "demo").status_code == 401
    assert attempt(client, typed, "demo").status_code == 429

    async def stored(session: Any) -> list[str]:
        rows = (await session.execute(select(LoginThrottle))).scalars()
        return [str(value) for row in rows for value in vars(row).values()]

    kept = run_db(client, stored)
    assert kept and not [v for v in kept if typed.lower() in v.lower()], kept


def test_the_hourly_housekeeping_forgets_only_the_counters_a_quiet_window_made_moot(client: Client) -> None:
    """A guesser trying a new name each time left a row per name for good. Rows that can no longer change
    an answer go; a lockout in force, and a count still inside its window, stay."""
    from server.services.auth import forget_quiet_throttles

    for n in range(3):
        attempt(client, f"made-up-{n}", "guess")  # one failure each
    moved_back(client, 301)  # their window is over: the next failure would count from zero anyway
    for _ in range(5):
        attempt(client, "demo-worker-2", "guess")  # locked now, for 300 s
    attempt(client, "demo-worker-1", "guess")  # one failure, inside its window

    async def rows(session: Any) -> int:
        return len((await session.execute(select(LoginThrottle))).scalars().all())

    assert run_db(client, rows) == 5
    forgotten = client.blocking_portal.call(
        forget_quiet_throttles, client.app.state.db, client.app.state.settings
    )
    assert (forgotten, run_db(client, rows)) == (3, 2)
    assert attempt(client, "demo-worker-2", "demo").status_code == 429  # the lockout still holds
    for _ in range(3):
        attempt(client, "demo-worker-1", "guess")
    assert attempt(client, "demo-worker-1", "guess").status_code == 401  # the fifth failure: still counted
    assert attempt(client, "demo-worker-1", "demo").status_code == 429


def test_a_successful_sign_in_clears_earlier_failures(client: Client) -> None:
    for _ in range(4):
        attempt(client, "demo-worker-1", "guess")
    assert attempt(client, "demo-worker-1", "demo").status_code == 200
    for _ in range(4):
        attempt(client, "demo-worker-1", "guess")
    assert attempt(client, "demo-worker-1", "demo").status_code == 200


def test_requests_without_a_valid_token_are_refused(client: Client) -> None:
    assert client.get("/api/v1/households").json()["error"]["code"] == "missing_token"
    bad = client.get("/api/v1/households", headers={"Authorization": "Bearer fs_made_up"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_token"


def test_expired_token_is_refused(client: Client) -> None:
    headers = login(client, "demo-worker-1")
    assert client.get("/api/v1/households", headers=headers).status_code == 200

    async def expire(session: Any) -> None:
        await session.execute(
            update(AuthToken).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    from tests.helpers import run_db

    run_db(client, expire)
    assert client.get("/api/v1/households", headers=headers).status_code == 401


def test_logout_revokes_only_that_session(client: Client) -> None:
    first = login(client, "demo-worker-1", device="tablet-1")
    second = login(client, "demo-worker-1", device="tablet-2")
    assert client.post("/api/v1/auth/logout", headers=first).status_code == 204
    assert client.get("/api/v1/households", headers=first).status_code == 401
    assert client.get("/api/v1/households", headers=second).status_code == 200


def test_admin_revokes_a_device_ending_its_sessions_and_sign_ins(client: Client) -> None:
    lost = login(client, "demo-worker-1", device="lost-tablet")
    other = login(client, "demo-worker-1", device="desk")
    admin = login(client, "demo-admin")
    devices = client.get("/api/v1/admin/devices", headers=admin).json()
    target = next(d for d in devices if d["device_id"] == "lost-tablet")
    revoked = client.post(f"/api/v1/admin/devices/{target['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/api/v1/households", headers=lost).status_code == 401
    assert client.get("/api/v1/households", headers=other).status_code == 200
    again = attempt(client, "demo-worker-1", "demo", device="lost-tablet")
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "device_revoked"
    assert [row.entity_id for row in audit_rows(client, "device.revoke")] == [target["id"]]


def test_a_revoked_device_stays_revoked_whoever_signs_in_on_it(client: Client) -> None:
    """Revoking a lost tablet refused its owner's sign-ins only: a colleague's password on the same
    device id gave it a working token again, and so did the same id with a line break after it, which
    the admin's device list shows just like the revoked one."""
    login(client, "demo-worker-1", device="lost-tablet")
    admin = login(client, "demo-admin", device="desk")
    target = next(
        d
        for d in client.get("/api/v1/admin/devices", headers=admin).json()
        if d["device_id"] == "lost-tablet"
    )
    assert client.post(f"/api/v1/admin/devices/{target['id']}/revoke", headers=admin).status_code == 200

    colleague = attempt(client, "demo-worker-2", "demo", device="lost-tablet")
    assert colleague.status_code == 403, colleague.text
    assert colleague.json()["error"]["code"] == "device_revoked"
    padded = attempt(client, "demo-worker-1", "demo", device="lost-tablet\n")
    assert padded.status_code == 422, padded.text
    assert "token" not in padded.json()
    listed = [d["device_id"] for d in client.get("/api/v1/admin/devices", headers=admin).json()]
    assert sorted(listed) == ["desk", "lost-tablet"]
    refused = audit_rows(client, "auth.login_refused")
    assert [(r.entity_id, r.changes) for r in refused] == [(target["id"], {"code": "device_revoked"})]


def test_revoking_a_shared_tablet_ends_every_account_on_it(client: Client) -> None:
    """A tablet two workers had signed in on, revoked from the owner's row in the admin's list: the
    colleague's session on it kept working, and their password signed it in again, since only a
    colleague with no row of their own for that device id was refused."""
    owner = client.get("/api/v1/auth/me", headers=login(client, "demo-worker-1", device="shared-tablet"))
    colleague = login(client, "demo-worker-2", device="shared-tablet")
    admin = login(client, "demo-admin", device="desk")
    target = next(
        d
        for d in client.get("/api/v1/admin/devices", headers=admin).json()
        if d["device_id"] == "shared-tablet" and d["user_id"] == owner.json()["id"]
    )
    assert client.post(f"/api/v1/admin/devices/{target['id']}/revoke", headers=admin).status_code == 200

    assert client.get("/api/v1/auth/me", headers=colleague).status_code == 401
    again = attempt(client, "demo-worker-2", "demo", device="shared-tablet")
    assert again.status_code == 403, again.text
    assert again.json()["error"]["code"] == "device_revoked"
    listed = client.get("/api/v1/admin/devices", headers=admin).json()
    assert all(d["revoked_at"] for d in listed if d["device_id"] == "shared-tablet")
    assert len(audit_rows(client, "device.revoke")) == 2


def test_only_admins_reach_admin_routes(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    assert client.get("/api/v1/admin/devices", headers=worker).status_code == 403


def test_sign_in_is_audited_without_the_password(client: Client) -> None:
    login(client, "demo-worker-1", device="tab-audit")
    rows = audit_rows(client, "auth.login")
    assert len(rows) == 1
    assert rows[0].changes == {"device_key": "tab-audit"}
    assert rows[0].device_id is not None


def _new_user(display_name: str, role: str) -> dict[str, str]:
    """A user to create in C01 (the username is the test's to add)."""
    return {
        "display_name": display_name,
        "role": role,
        "jurisdiction_id": str(node_id("C01")),
        "password": "long-enough-password",
    }


def test_admin_creates_a_user_and_a_blank_username_is_refused(client: Client) -> None:
    admin = login(client, "demo-admin")
    body = _new_user("测试", "field_worker")
    blank = client.post("/api/v1/admin/users", json=body | {"username": "   "}, headers=admin)
    assert blank.status_code == 422, blank.text  # stored stripped, it was an account named ""
    assert blank.json()["error"]["details"][0]["field"] == "username"
    made = client.post("/api/v1/admin/users", json=body | {"username": " New-Worker "}, headers=admin)
    assert made.status_code == 201 and made.json()["username"] == "new-worker"
    assert attempt(client, "new-worker", "long-enough-password").status_code == 200
    assert len(audit_rows(client, "user.create")) == 1


def test_a_username_that_could_pass_for_another_is_refused(client: Client) -> None:
    """Each of these was stored as a second account that lists, audit rows and screens show as
    "demo-admin" (or as a name split over two lines)."""
    admin = login(client, "demo-admin")
    body = _new_user("冒名", "admin")
    for lookalike in ["ｄｅｍｏ-admin", "demo-admin\u200b", "demo\u202e-admin", "demo\nadmin", "demo  admin"]:
        refused = client.post("/api/v1/admin/users", json=body | {"username": lookalike}, headers=admin)
        assert refused.status_code == 422, (lookalike, refused.text)
        assert refused.json()["error"]["code"] == "username_not_plain"
        assert refused.json()["error"]["details"][0]["field"] == "username"
    assert audit_rows(client, "user.create") == []
    made = client.post("/api/v1/admin/users", json=body | {"username": " 王芳-C01 "}, headers=admin)
    assert made.status_code == 201 and made.json()["username"] == "王芳-c01"


def test_two_sign_ins_at_once_after_a_failure_both_succeed(client: Client) -> None:
    """A tablet's retry, or one user on two tablets, right after a mistyped password: on PostgreSQL the
    second waited on the failure counter's row lock while the first deleted the row, found no row, and
    answered 500."""
    assert attempt(client, "demo-worker-1", "typo").status_code == 401
    body = {"username": "demo-worker-1", "password": "demo"}
    answers = posted_at_once(
        client,
        [(LOGIN, body | {"device_id": "tablet-1"}, {}), (LOGIN, body | {"device_id": "tablet-2"}, {})],
        held=select(LoginThrottle),
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]


def test_a_username_longer_than_its_column_once_in_lower_case_is_refused(client: Client) -> None:
    """64 characters typed, 128 in lower case: PostgreSQL answered 500, SQLite stored the 128."""
    admin = login(client, "demo-admin")
    body = _new_user("长名", "field_worker")
    refused = client.post("/api/v1/admin/users", json=body | {"username": "İ" * 64}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "username"
    assert refused.json()["error"]["code"] == "validation_error"  # too long, not a lookalike
    made = client.post("/api/v1/admin/users", json=body | {"username": "İ" * 32}, headers=admin)
    assert made.status_code == 201, made.text
    assert attempt(client, "İ" * 32, "long-enough-password").status_code == 200
