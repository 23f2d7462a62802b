"""A reviewer changes the team of an open visit: someone fell ill, went on leave or left."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update

from server.db.models import Visit
from tests.helpers import NEW_USER_PASSWORD, Client, audit_rows, login, new_user, run_db
from tests.visit_flow import TEAM, assign, assignment, complete_answers, observation, user_id

REVIEWER = "demo-reviewer-community"
PASSWORD = NEW_USER_PASSWORD


def _new_worker(client: Client, username: str, community: str = "C01") -> str:
    return new_user(client, username, community)


def _put_team(
    client: Client, visit: dict[str, Any], team: list[str], *, by: str = REVIEWER, **extra: Any
) -> Any:
    body = {"team": team, "version": visit["version"], "reason": "李强病假 on sick leave"} | extra
    return client.put(f"/api/v1/visits/{visit['id']}/team", json=body, headers=login(client, by))


def _observation(client: Client, visit: dict[str, Any]) -> dict[str, Any]:
    """One answer a device would send: the first item of the visit's checklists, filled in."""
    headers = login(client, REVIEWER)
    return observation(next(a for a in complete_answers(client, visit, headers) if a.row_id is None))


def _answer(client: Client, visit: dict[str, Any], username: str, password: str = "demo") -> Any:
    return client.post(
        f"/api/v1/visits/{visit['id']}/observations",
        json={"observations": [_observation(client, visit)]},
        headers=login(client, username, device=f"tablet-{username}", password=password),
    )


def test_a_new_investigator_answers_the_visit_and_the_one_replaced_no_longer_can(client: Client) -> None:
    visit = assign(client)
    newcomer = _new_worker(client, "demo-worker-9")
    stays = user_id(client, TEAM[0])
    changed = _put_team(client, visit, [stays, newcomer])
    assert changed.status_code == 200, changed.text
    assert [m["user_id"] for m in changed.json()["team"]] == [stays, newcomer]
    assert changed.json()["version"] == visit["version"] + 1

    assert _answer(client, visit, "demo-worker-9", PASSWORD).status_code == 200
    refused = _answer(client, visit, TEAM[1])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_on_team"

    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=login(client, REVIEWER)).json()
    team_rows = [e for e in timeline if e["action"] == "team"]
    assert len(team_rows) == 1 and "sick leave" in team_rows[0]["reason"]
    (audited,) = audit_rows(client, "visit.team")
    assert audited.changes == {"from": [stays, user_id(client, TEAM[1])], "to": [stays, newcomer]}


def test_the_same_change_sent_again_answers_as_is_and_a_stale_one_is_refused(client: Client) -> None:
    visit = assign(client)
    newcomer = _new_worker(client, "demo-worker-9")
    team = [user_id(client, TEAM[0]), newcomer]
    first = _put_team(client, visit, team)
    again = _put_team(client, visit, list(reversed(team)))  # a console that lost the answer, same people
    assert again.status_code == 200 and again.json() == first.json()
    assert len(audit_rows(client, "visit.team")) == 1

    stale = _put_team(client, visit, [user_id(client, TEAM[1]), newcomer])
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "visit_changed"
    assert stale.json()["error"]["details"]["version"] == {
        "seen": visit["version"],
        "now": visit["version"] + 1,
    }


def test_the_assignment_resent_after_a_change_of_team_still_answers_the_visit(client: Client) -> None:
    body = assignment(client, visit_id=str(uuid.uuid4()))
    reviewer = login(client, REVIEWER)
    visit = client.post("/api/v1/visits", json=body, headers=reviewer).json()
    assert (
        _put_team(client, visit, [body["team"][0], _new_worker(client, "demo-worker-9")]).status_code == 200
    )
    resent = client.post("/api/v1/visits", json=body, headers=reviewer)
    assert resent.status_code == 201, resent.text
    assert resent.json()["id"] == visit["id"] and resent.json()["version"] == visit["version"] + 1


def test_a_team_must_be_two_active_workers_of_the_community_and_only_reviewers_change_it(
    client: Client,
) -> None:
    visit = assign(client)
    one = user_id(client, TEAM[0])
    elsewhere = _new_worker(client, "demo-worker-9", community="C03")
    for team, code in [([one, one], "team_invalid"), ([one, elsewhere], "team_invalid")]:
        refused = _put_team(client, visit, team)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == code, refused.text
    newcomer = _new_worker(client, "demo-worker-8")
    blank = _put_team(client, visit, [one, newcomer], reason="  ")
    assert blank.status_code == 422
    by_worker = _put_team(client, visit, [one, newcomer], by=TEAM[0])
    assert by_worker.status_code == 403
    assert audit_rows(client, "visit.team") == []


def test_a_locked_visit_keeps_its_team(client: Client) -> None:
    visit = assign(client)

    async def approve(session: Any) -> None:
        await session.execute(
            update(Visit).where(Visit.id == uuid.UUID(visit["id"])).values(status="approved")
        )
        await session.commit()

    run_db(client, approve)
    refused = _put_team(client, visit, [user_id(client, TEAM[0]), _new_worker(client, "demo-worker-9")])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "visit_locked"


def test_the_devices_get_the_new_team_and_answers_queued_by_the_one_replaced_wait_for_a_supervisor(
    client: Client,
) -> None:
    visit = assign(client)
    leaving = login(client, TEAM[1], device="tablet-leaving")
    client_id = str(uuid.uuid4())
    pull = {"client_id": client_id, "cursor": None, "schema_version": 1, "limit": 5000}
    cursor = client.post("/api/v1/sync/pull", json=pull, headers=leaving).json()["cursor"]
    newcomer = _new_worker(client, "demo-worker-9")
    assert _put_team(client, visit, [user_id(client, TEAM[0]), newcomer]).status_code == 200

    page = client.post("/api/v1/sync/pull", json=pull | {"cursor": cursor}, headers=leaving).json()
    (pulled,) = [c for c in page["changes"] if c["entity"] == "visit" and c["id"] == visit["id"]]
    assert pulled["data"]["team"] == [user_id(client, TEAM[0]), newcomer]

    queued = {
        "op": "visit.answer.v1",
        "seq": 1,
        "mutation_id": str(uuid.uuid4()),
        "visit_id": visit["id"],
        "observations": [_observation(client, visit)],
    }
    body = {"client_id": client_id, "schema_version": 1, "mutations": [queued]}
    (result,) = client.post("/api/v1/sync/push", json=body, headers=leaving).json()["results"]
    assert (result["status"], result["code"]) == ("rejected", "not_on_team")
