"""Every write and every reveal leaves its audit row, naming who did it: each write route of the app and
each sync mutation op is driven once through the real app (on both databases, on S3 so that direct
uploads run too), and the rows it added are checked against the table below.

A write route or a mutation op the table does not list fails the test: a new one is added here with the
audit action it writes (and to the list in docs/architecture.md), or, if it truly changes nothing anyone
must answer for, with an empty list and the reason.
"""

from __future__ import annotations

import copy
import typing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import select

from schemas.sync import Mutation
from server.db.models import AuditEvent, Member
from server.services.actor import SYSTEM
from server.services.rules import today
from tests.helpers import Client, audit_rows, household_id, login, node_id, run_db
from tests.images import jpeg_with_gps
from tests.server.test_households import new_household, valid_id
from tests.tus import PATCH_TYPE, TUS, UPLOADS, sha256
from tests.visit_flow import (
    PLACEHOLDER_PHOTOS,
    TEAM,
    assign,
    complete_answers,
    completed_visit,
    observation,
    post_observations,
    seen,
    user_id,
)

WRITES = {"POST", "PUT", "PATCH", "DELETE"}

ROUTES: dict[tuple[str, str], list[str]] = {
    ("POST", "/api/v1/auth/login"): ["auth.login"],
    ("POST", "/api/v1/auth/logout"): ["auth.logout"],
    ("POST", "/api/v1/admin/users"): ["user.create"],
    ("PATCH", "/api/v1/admin/users/{user_id:uuid}"): ["user.deactivate"],  # or user.reactivate
    ("POST", "/api/v1/admin/users/{user_id:uuid}/password"): ["user.password_reset"],
    ("POST", "/api/v1/auth/password"): ["user.password_change"],
    ("POST", "/api/v1/admin/devices/{device_id:uuid}/revoke"): ["device.revoke"],
    ("POST", "/api/v1/households"): ["household.create"],
    ("PATCH", "/api/v1/households/{household_id:uuid}"): ["household.update"],
    ("POST", "/api/v1/households/{household_id:uuid}/members"): ["member.create"],
    ("PATCH", "/api/v1/members/{member_id:uuid}"): ["member.update"],
    ("POST", "/api/v1/members/{member_id:uuid}/reveal-id"): ["member.reveal_id"],
    ("POST", "/api/v1/visits"): ["visit.create"],
    ("POST", "/api/v1/visits/{visit_id:uuid}/observations"): ["visit.answer"],
    ("PUT", "/api/v1/visits/{visit_id:uuid}/proposal"): ["visit.propose"],
    ("PUT", "/api/v1/visits/{visit_id:uuid}/team"): ["visit.team"],
    ("POST", "/api/v1/visits/{visit_id:uuid}/submit"): ["visit.submit"],
    ("POST", "/api/v1/visits/{visit_id:uuid}/review"): ["visit.approve"],  # or visit.return, visit.reject
    ("POST", "/api/v1/visits/{visit_id:uuid}/amend"): ["visit.amend"],
    ("POST", "/api/v1/templates"): ["template.create"],
    ("PUT", "/api/v1/templates/{code:str}/{version:int}"): ["template.update"],
    ("POST", "/api/v1/templates/{code:str}/{version:int}/publish"): ["template.published"],
    ("POST", "/api/v1/templates/{code:str}/{version:int}/retire"): ["template.retired"],
    ("PUT", "/api/v1/calendar/days/{day:date}"): ["calendar.set"],
    ("DELETE", "/api/v1/calendar/days/{day:date}"): ["calendar.clear"],
    ("POST", "/api/v1/conflicts/{conflict_id:uuid}/resolve"): ["conflict.resolve"],
    ("POST", "/api/v1/sync/push"): [],  # each mutation's own row: OPS below
    ("POST", "/api/v1/sync/handover"): ["sync.handover", "mutation.quarantine"],
    ("POST", "/api/v1/sync/pull"): [],  # a read sent as POST (its body is the cursor); ID numbers masked
    ("POST", "/api/v1/uploads"): ["upload.create"],
    # A PATCH that brings the last byte stores the photo; one that only moves the offset writes no row
    # (bytes in transit, not a record: the upload's creation and its completion are the rows).
    ("PATCH", "/api/v1/uploads/{upload_id:uuid}"): ["photo.create", "upload.complete"],
    ("DELETE", "/api/v1/uploads/{upload_id:uuid}"): ["upload.terminate"],
    ("POST", "/api/v1/uploads/direct"): ["upload.create"],
    ("POST", "/api/v1/uploads/direct/{upload_id:uuid}/complete"): ["photo.create", "upload.complete"],
    # Reads that reveal what is otherwise kept back: audited with their reason (or their filters).
    ("GET", "/api/v1/photos/{sha256:str}/original"): ["photo.original"],
    ("GET", "/api/v1/exports/{name:str}"): ["export"],
}

OPS: dict[str, str] = {
    "household.create.v1": "household.create",
    "household.update.v1": "household.update",
    "household.archive.v1": "household.archive",
    "member.create.v1": "member.create",
    "member.update.v1": "member.update",
    "member.remove.v1": "member.remove",
    "visit.answer.v1": "visit.answer",
    "visit.propose.v1": "visit.propose",
    "visit.submit.v1": "visit.submit",
    "conflict.resolve.v1": "conflict.resolve",
}


@pytest.fixture
def store_kind() -> str:
    return "s3"  # direct uploads need a store that takes parts itself


def write_routes(client: Client) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in client.app.routes
        for method in getattr(route, "methods", set()) & WRITES
    }


def test_the_table_lists_every_write_route_and_every_mutation_op(client: Client) -> None:
    assert write_routes(client) == {key for key in ROUTES if key[0] in WRITES}
    tags = {cls.__struct_config__.tag for cls in typing.get_args(Mutation)}
    assert tags == set(OPS)


class Audit:
    """Drives one request at a time and checks the audit rows it added."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last = max((r.id for r in audit_rows(client)), default=0)
        self.routes: set[tuple[str, str]] = set()
        self.ops: set[str] = set()
        self.users = {u: uuid.UUID(user_id(client, u)) for u in USERS}
        self.headers = {u: login(client, u, device=f"audit-{u}") for u in USERS}
        self.seq: dict[str, int] = {}
        self.skip()

    def skip(self) -> list[AuditEvent]:
        rows = [r for r in audit_rows(self.client) if r.id > self.last]
        self.last = max((r.id for r in rows), default=self.last)
        return rows

    def route(
        self,
        method: str,
        path: str,
        username: str | None,
        send: Callable[[], httpx.Response],
        *,
        expect: list[str] | None = None,
        status: int | None = None,
    ) -> httpx.Response:
        response = send()
        assert response.status_code < 300 if status is None else response.status_code == status, (
            method,
            path,
            response.status_code,
            response.text,
        )
        self.check(f"{method} {path}", ROUTES[(method, path)] if expect is None else expect, username)
        self.routes.add((method, path))
        return response

    def push(
        self, username: str, op: str, body: dict[str, Any], *, status: str = "applied"
    ) -> dict[str, Any]:
        client_id = self.client_id(username)
        self.seq[client_id] += 1
        mutation = {"op": op, "seq": self.seq[client_id], "mutation_id": str(uuid.uuid4()), **body}
        payload = {"client_id": client_id, "schema_version": 1, "mutations": [mutation]}
        response = self.client.post("/api/v1/sync/push", json=payload, headers=self.headers[username])
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["status"] == status, (op, result)
        rows = self.check(op, [OPS[op]], username)
        assert all(r.changes.get("mutation_id") in (None, mutation["mutation_id"]) for r in rows)
        self.ops.add(op)
        self.routes.add(("POST", "/api/v1/sync/push"))
        return dict(result)

    def client_id(self, username: str) -> str:
        cid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"audit-coverage/{username}"))
        self.seq.setdefault(cid, 0)
        return cid

    def check(self, what: str, expected: list[str], username: str | None) -> list[AuditEvent]:
        rows = self.skip()
        actions = [r.action for r in rows]
        for action in expected:
            assert action in actions, f"{what} wrote {actions}, not {action}"
        mine = [r for r in rows if r.action in expected]
        actor = None if username is None else self.users[username]
        assert {r.actor_id for r in mine} <= {actor}, (what, [(r.action, r.actor_id) for r in mine])
        assert all(r.entity_id and r.entity_type for r in mine)
        return mine


USERS = (
    "demo-admin",
    "demo-worker-1",
    "demo-worker-2",
    "demo-reviewer-community",
    "demo-reviewer-subdistrict",
    "demo-approver-district",
)


def test_every_write_and_every_reveal_leaves_its_audit_row_naming_the_actor(tus_client: Client) -> None:
    client = tus_client
    audit = Audit(client)
    h = audit.headers
    admin, worker, reviewer = h["demo-admin"], h["demo-worker-1"], h["demo-reviewer-community"]

    # -- sessions and administration
    audit.route(
        "POST",
        "/api/v1/auth/login",
        "demo-worker-2",
        lambda: client.post(
            "/api/v1/auth/login",
            json={"username": "demo-worker-2", "password": "demo", "device_id": "audit-tablet"},
        ),
    )
    leaving = login(client, "demo-worker-2", device="audit-leaving")
    audit.skip()
    audit.route(
        "POST",
        "/api/v1/auth/logout",
        "demo-worker-2",
        lambda: client.post("/api/v1/auth/logout", headers=leaving),
    )
    new_user = {
        "username": "audit-new-worker",
        "display_name": "新社工",
        "role": "field_worker",
        "jurisdiction_id": str(node_id("C01")),
        "password": "a-long-password",
    }
    made = audit.route(
        "POST",
        "/api/v1/admin/users",
        "demo-admin",
        lambda: client.post("/api/v1/admin/users", json=new_user, headers=admin),
    ).json()
    account = f"/api/v1/admin/users/{made['id']}"
    for active, action in ((False, "user.deactivate"), (True, "user.reactivate")):
        audit.route(
            "PATCH",
            "/api/v1/admin/users/{user_id:uuid}",
            "demo-admin",
            lambda: client.patch(account, json={"active": active}, headers=admin),  # noqa: B023
            expect=[action],
        )
    audit.route(
        "POST",
        "/api/v1/admin/users/{user_id:uuid}/password",
        "demo-admin",
        lambda: client.post(f"{account}/password", json={"password": "another-long-one"}, headers=admin),
    )
    audit.users["audit-new-worker"] = uuid.UUID(made["id"])
    newcomer = login(client, "audit-new-worker", device="audit-newcomer", password="another-long-one")
    audit.skip()
    audit.route(
        "POST",
        "/api/v1/auth/password",
        "audit-new-worker",
        lambda: client.post(
            "/api/v1/auth/password",
            json={"old_password": "another-long-one", "new_password": "chosen-by-myself"},
            headers=newcomer,
        ),
    )
    # The newcomer leaves with an edit only their tablet holds; a colleague hands it in for a supervisor.
    left_behind = str(uuid.uuid4())
    pulled = {"client_id": left_behind, "cursor": None, "schema_version": 1, "limit": 1}
    assert client.post("/api/v1/sync/pull", json=pulled, headers=newcomer).status_code == 200
    assert client.patch(account, json={"active": False}, headers=admin).status_code == 200
    audit.skip()
    queue = [
        {
            "op": "household.update.v1",
            "seq": 1,
            "mutation_id": str(uuid.uuid4()),
            "household_id": str(household_id("DB-C01-0002")),
            "base_version": 1,
            "changes": {"address": {"old": None, "new": "离职前"}},
        }
    ]
    handover = {"client_id": left_behind, "schema_version": 1, "mutations": queue}
    audit.route(
        "POST",
        "/api/v1/sync/handover",
        "demo-worker-1",
        lambda: client.post("/api/v1/sync/handover", json=handover, headers=audit.headers["demo-worker-1"]),
    )
    assert (
        client.patch(account, json={"active": True}, headers=admin).status_code == 200
    )  # back, for the team
    audit.skip()
    devices = client.get(
        f"/api/v1/admin/devices?user_id={audit.users['demo-worker-2']}", headers=admin
    ).json()
    tablet = next(d for d in devices if d["device_id"] == "audit-tablet")
    audit.route(
        "POST",
        "/api/v1/admin/devices/{device_id:uuid}/revoke",
        "demo-admin",
        lambda: client.post(f"/api/v1/admin/devices/{tablet['id']}/revoke", headers=admin),
    )

    # Sign-ins that fail: someone tried an account (no actor: nobody is signed in), or the right password
    # came from a revoked tablet (its holder is trying that account); a username nobody has is only counted.
    def sign_in(username: str, password: str, device: str) -> Callable[[], httpx.Response]:
        body = {"username": username, "password": password, "device_id": device}
        return lambda: client.post("/api/v1/auth/login", json=body, headers={"X-Request-ID": "audit-probe"})

    login_route = ("POST", "/api/v1/auth/login")
    audit.route(
        *login_route,
        None,
        sign_in("demo-worker-2", "wrong-guess-1", "stolen"),
        expect=["auth.login_failed"],
        status=401,
    )
    [failed] = audit_rows(client, "auth.login_failed")
    assert (failed.entity_type, failed.entity_id) == ("user", str(audit.users["demo-worker-2"]))
    assert (failed.changes, failed.request_id) == (
        {"device_key": "stolen", "known_device": False, "failures": 1, "locked": False},
        "audit-probe",
    )
    audit.route(*login_route, None, sign_in("mypassword-typed-here", "demo", "x"), expect=[], status=401)
    audit.route(
        *login_route,
        "demo-worker-2",
        sign_in("demo-worker-2", "demo", "audit-tablet"),
        expect=["auth.login_refused"],
        status=403,
    )
    [refused] = audit_rows(client, "auth.login_refused")
    assert (refused.entity_id, refused.device_id) == (tablet["id"], uuid.UUID(tablet["id"]))
    assert not [
        r for r in audit_rows(client) if "mypassword" in str(r.changes) or "wrong-guess" in str(r.changes)
    ]

    # -- households and members
    created = audit.route(
        "POST",
        "/api/v1/households",
        "demo-worker-1",
        lambda: client.post("/api/v1/households", json=new_household("AUDIT-0001"), headers=worker),
    ).json()
    patched = audit.route(
        "PATCH",
        "/api/v1/households/{household_id:uuid}",
        "demo-worker-1",
        lambda: client.patch(
            f"/api/v1/households/{created['id']}",
            json={"version": created["version"], "address": "胜利街 2 号"},
            headers=worker,
        ),
    ).json()
    assert patched["version"] == created["version"] + 1
    member = audit.route(
        "POST",
        "/api/v1/households/{household_id:uuid}/members",
        "demo-worker-1",
        lambda: client.post(
            f"/api/v1/households/{created['id']}/members",
            json={"name": "测试子", "relation": "child", "id_number": valid_id("13010220100101123")},
            headers=worker,
        ),
    ).json()
    audit.route(
        "PATCH",
        "/api/v1/members/{member_id:uuid}",
        "demo-worker-1",
        lambda: client.patch(
            f"/api/v1/members/{member['id']}",
            json={"version": member["version"], "employment": "student"},
            headers=worker,
        ),
    )
    audit.route(
        "POST",
        "/api/v1/members/{member_id:uuid}/reveal-id",
        "demo-reviewer-community",
        lambda: client.post(
            f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "核对低保申请材料"}, headers=reviewer
        ),
    )
    [reveal] = audit_rows(client, "member.reveal_id")
    assert (reveal.entity_id, reveal.reason) == (member["id"], "核对低保申请材料")

    # -- a visit, from assignment to amendment
    body = {
        "household_id": str(household_id("DB-C01-0003")),
        "purpose": "new_application",
        "team": [str(audit.users[u]) for u in TEAM],
    }
    first = audit.route(
        "POST",
        "/api/v1/visits",
        "demo-reviewer-community",
        lambda: client.post("/api/v1/visits", json=body, headers=reviewer),
    ).json()
    audit.skip()
    team = {"team": [body["team"][0], made["id"]], "version": first["version"], "reason": "李强病假"}
    audit.route(
        "PUT",
        "/api/v1/visits/{visit_id:uuid}/team",
        "demo-reviewer-community",
        lambda: client.put(f"/api/v1/visits/{first['id']}/team", json=team, headers=reviewer),
    )
    visit = assign(client)  # backdated, so that its publicity is over when it is submitted
    answers = [observation(a) for a in complete_answers(client, visit, worker)]
    audit.skip()
    audit.route(
        "POST",
        "/api/v1/visits/{visit_id:uuid}/observations",
        "demo-worker-1",
        lambda: client.post(
            f"/api/v1/visits/{visit['id']}/observations", json={"observations": answers[:200]}, headers=worker
        ),
    )
    post_observations(client, visit, worker, answers[200:])
    audit.skip()
    audit.route(
        "PUT",
        "/api/v1/visits/{visit_id:uuid}/proposal",
        "demo-worker-1",
        lambda: client.put(
            f"/api/v1/visits/{visit['id']}/proposal",
            json={"outcome": "no_change", "reason": "家庭情况无变化"},
            headers=worker,
        ),
    )
    audit.route(
        "POST",
        "/api/v1/visits/{visit_id:uuid}/submit",
        "demo-worker-1",
        lambda: client.post(f"/api/v1/visits/{visit['id']}/submit", headers=worker),
    )
    approval = {"decision": "approve", "reason": PLACEHOLDER_PHOTOS, "accept_missing_evidence": True}
    county_visit = {"county_home_visit_on": today().isoformat()}  # the file holds an objection (Art 20)
    for username in ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district"):

        def review(username: str = username) -> httpx.Response:
            return client.post(
                f"/api/v1/visits/{visit['id']}/review",
                json=approval | seen(client, visit, h[username]) | county_visit,
                headers=h[username],
            )

        audit.route("POST", "/api/v1/visits/{visit_id:uuid}/review", username, review)
    audit.route(
        "POST",
        "/api/v1/visits/{visit_id:uuid}/amend",
        "demo-worker-1",
        lambda: client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker),
    )

    # -- every sync mutation op, one push each
    household = new_household("AUDIT-0002") | {"id": str(uuid.uuid4())}
    household["members"][0]["id"] = str(uuid.uuid4())
    audit.push("demo-worker-1", "household.create.v1", {"household": household})
    audit.push(
        "demo-worker-1",
        "household.update.v1",
        {
            "household_id": household["id"],
            "base_version": 1,
            "changes": {"address": {"old": None, "new": "新址"}},
        },
    )
    child = {
        "id": str(uuid.uuid4()),
        "name": "孩子",
        "relation": "child",
        "id_number": valid_id("13010220120101123"),
    }
    audit.push("demo-worker-1", "member.create.v1", {"household_id": household["id"], "member": child})
    audit.push(
        "demo-worker-1",
        "member.update.v1",
        {
            "member_id": child["id"],
            "base_version": 1,
            "changes": {"employment": {"old": None, "new": "student"}},
        },
    )
    audit.push(
        "demo-worker-1",
        "member.remove.v1",
        {"member_id": child["id"], "base_version": 2, "reason": "entered twice"},
    )
    audit.push(
        "demo-worker-1",
        "household.archive.v1",
        {"household_id": household["id"], "base_version": 2, "reason": "moved away"},
    )
    # A member added offline to a household archived meanwhile: not created, kept for a supervisor.
    held = []
    for n in (1, 2):
        late = {
            "id": str(uuid.uuid4()),
            "name": f"迟到{n}",
            "relation": "child",
            "id_number": valid_id(f"1301022013010{n}123"),
        }
        result = audit.push(
            "demo-worker-1",
            "member.create.v1",
            {"household_id": household["id"], "member": late},
            status="applied_with_conflict",
        )
        held += result["conflict_ids"]
    [row] = [r for r in audit_rows(client, "member.create") if r.entity_id == late["id"]]
    assert row.changes["conflicts"] == [held[-1]] and row.changes["applied"] == []

    audit.route(
        "POST",
        "/api/v1/conflicts/{conflict_id:uuid}/resolve",
        "demo-reviewer-community",
        lambda: client.post(
            f"/api/v1/conflicts/{held[0]}/resolve", json={"decision": "dismiss"}, headers=reviewer
        ),
    )
    audit.push(
        "demo-reviewer-community", "conflict.resolve.v1", {"conflict_id": held[1], "decision": "dismiss"}
    )
    resolved = audit_rows(client, "conflict.resolve")  # naming the record too, for a search by record
    assert [(r.entity_id, r.changes["entity"], r.changes["entity_id"]) for r in resolved] == [
        (c, "household", household["id"]) for c in held
    ]

    other, _ = completed_visit(client, "DB-C01-0002")
    again = [observation(a) for a in complete_answers(client, other, worker)][:1]
    audit.skip()
    audit.push("demo-worker-1", "visit.answer.v1", {"visit_id": other["id"], "observations": again})
    audit.push(
        "demo-worker-1",
        "visit.propose.v1",
        {"visit_id": other["id"], "proposal": {"outcome": "no_change", "reason": "家庭情况无变化"}},
    )
    audit.push("demo-worker-1", "visit.submit.v1", {"visit_id": other["id"]})

    # -- calendar
    day = "2031-03-05"
    audit.route(
        "PUT",
        "/api/v1/calendar/days/{day:date}",
        "demo-admin",
        lambda: client.put(
            f"/api/v1/calendar/days/{day}", json={"kind": "holiday", "name": "本地假日"}, headers=admin
        ),
    )
    audit.route(
        "DELETE",
        "/api/v1/calendar/days/{day:date}",
        "demo-admin",
        lambda: client.delete(f"/api/v1/calendar/days/{day}", headers=admin),
    )

    # -- uploads (tus and direct), then the audited read of an original
    photo = jpeg_with_gps(seed=41)
    meta = {"Upload-Length": str(len(photo)), "Upload-Metadata": metadata_of(photo)}
    made = audit.route(
        "POST", "/api/v1/uploads", "demo-admin", lambda: client.post(UPLOADS, headers=TUS | admin | meta)
    )
    location = made.headers["location"]
    audit.route(
        "PATCH",
        "/api/v1/uploads/{upload_id:uuid}",
        "demo-admin",
        lambda: client.patch(
            location, content=photo, headers=TUS | admin | PATCH_TYPE | {"Upload-Offset": "0"}
        ),
    )
    dropped = jpeg_with_gps(seed=42)
    meta = {"Upload-Length": str(len(dropped)), "Upload-Metadata": metadata_of(dropped)}
    made = client.post(UPLOADS, headers=TUS | admin | meta)
    audit.skip()
    audit.route(
        "DELETE",
        "/api/v1/uploads/{upload_id:uuid}",
        "demo-admin",
        lambda: client.delete(made.headers["location"], headers=TUS | admin),
    )
    direct = jpeg_with_gps(seed=43)
    started = audit.route(
        "POST",
        "/api/v1/uploads/direct",
        "demo-admin",
        lambda: client.post(
            f"{UPLOADS}/direct", json={"sha256": sha256(direct), "length": len(direct)}, headers=admin
        ),
    ).json()
    (part,) = started["parts"]
    assert httpx.put(part["url"], content=direct).status_code == 200
    audit.route(
        "POST",
        "/api/v1/uploads/direct/{upload_id:uuid}/complete",
        "demo-admin",
        lambda: client.post(f"{UPLOADS}/direct/{started['upload_id']}/complete", headers=admin),
    )
    audit.route(
        "GET",
        "/api/v1/photos/{sha256:str}/original",
        "demo-admin",
        lambda: client.get(f"/api/v1/photos/{sha256(photo)}/original?reason=核对拍摄地点", headers=admin),
    )
    [fetched] = audit_rows(client, "photo.original")
    assert (fetched.entity_id, fetched.reason) == (sha256(photo), "核对拍摄地点")
    audit.route(
        "GET",
        "/api/v1/exports/{name:str}",
        "demo-reviewer-community",
        lambda: client.get("/api/v1/exports/visits.csv", headers=reviewer),
    )

    # -- templates (last: a published version 2 would be pinned by the visits assigned above)
    draft = copy.deepcopy(client.get("/api/v1/templates/step.ask/1", headers=admin).json()["template"])
    draft["version"] = 2
    audit.route(
        "POST",
        "/api/v1/templates",
        "demo-admin",
        lambda: client.post("/api/v1/templates", json=draft, headers=admin),
    )
    draft["title"]["en"] = "Ask (v2)"
    audit.route(
        "PUT",
        "/api/v1/templates/{code:str}/{version:int}",
        "demo-admin",
        lambda: client.put("/api/v1/templates/step.ask/2", json=draft, headers=admin),
    )
    for step in ("publish", "retire"):

        def change(step: str = step) -> httpx.Response:
            return client.post(f"/api/v1/templates/step.ask/2/{step}", headers=admin)

        audit.route("POST", f"/api/v1/templates/{{code:str}}/{{version:int}}/{step}", "demo-admin", change)

    pull = {"client_id": audit.client_id("demo-worker-1"), "schema_version": 1}
    audit.route(
        "POST",
        "/api/v1/sync/pull",
        "demo-worker-1",
        lambda: client.post("/api/v1/sync/pull", json=pull, headers=worker),
    )
    assert audit.routes == set(ROUTES)
    assert audit.ops == set(OPS)
    assert_no_id_number_in_clear(client, extra=[valid_id("13010220100101123"), child["id_number"]])
    assert_documented({r.action for r in audit_rows(client)})


def metadata_of(data: bytes) -> str:
    from tests.tus import metadata

    return metadata(data)


def assert_no_id_number_in_clear(client: Client, extra: list[str]) -> None:
    async def numbers(session: Any) -> list[str]:
        return list((await session.execute(select(Member.id_number))).scalars())

    everyone = set(run_db(client, numbers)) | set(extra)
    leaks = [
        (r.action, n)
        for r in audit_rows(client)
        for n in everyone
        if n in msgspec.json.encode([r.changes, r.reason]).decode()
    ]
    assert leaks == []


def assert_documented(actions: set[str]) -> None:
    """Each action the log holds is named in the audit section of docs/architecture.md."""
    text = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    section = text[text.index("## Audit log") :]
    assert [a for a in sorted(actions) if f"`{a}`" not in section] == []


def test_the_data_changing_commands_leave_audit_rows_naming_the_system(
    client: Client, app_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fivestep create-user`, `sync-admin new-epoch | purge-tombstones` and `cleanup-uploads` write
    through the same services, as the system actor (user id 0)."""
    from server import cli

    for name, value in {
        "FIVESTEP_DATABASE_URL": app_settings.database_url,
        "FIVESTEP_BLOB_STORE": app_settings.blob_store,
        "FIVESTEP_VAR_DIR": app_settings.var_dir,
        "FIVESTEP_SECRET_KEY": app_settings.secret_key,
        "FIVESTEP_AUTO_MIGRATE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    admin = login(client, "demo-admin")
    photo = jpeg_with_gps(seed=44)
    made = client.post(
        UPLOADS,
        headers=TUS | admin | {"Upload-Length": str(len(photo)), "Upload-Metadata": metadata_of(photo)},
    )
    assert made.status_code == 201, made.text
    upload_id = made.headers["location"].rsplit("/", 1)[1]

    async def expire(session: Any) -> None:
        from sqlalchemy import update

        from server.db.models import Upload
        from server.db.types import utcnow

        await session.execute(
            update(Upload).where(Upload.id == uuid.UUID(upload_id)).values(expires_at=utcnow())
        )

    run_db(client, expire)
    commands = {
        (
            "create-user",
            "audit-cli-worker",
            "--role",
            "field_worker",
            "--jurisdiction",
            "C01",
            "--password",
            "a-long-password",
        ): "user.create",
        ("sync-admin", "new-epoch"): "sync.new_epoch",
        ("sync-admin", "purge-tombstones"): "sync.purge_tombstones",
        ("cleanup-uploads",): "upload.expire",
    }
    for args, action in commands.items():
        before = len(audit_rows(client, action))
        assert cli.main(list(args)) == 0, args
        rows = audit_rows(client, action)[before:]
        assert rows and {r.actor_id for r in rows} == {SYSTEM.user_id}, (args, rows)
    [expired] = audit_rows(client, "upload.expire")
    assert expired.entity_id == upload_id
    assert_documented(set(commands.values()))
