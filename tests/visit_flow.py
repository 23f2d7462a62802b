"""Drive visits through the API the way a tablet and a reviewer would."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.checklists import Template
from server.db.models import Visit
from server.domain.answers import Context
from server.domain.filled import Filled, fill
from server.services.rules import today
from tests.helpers import Client, household_id, login, run_db

Headers = dict[str, str]
TEAM = ("demo-worker-1", "demo-worker-2")
LEVELS = ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district")
"""Who decides at each review level of the default rule pack, for the demo households."""
GPS: dict[str, Any] = {"lat": 38.041, "lon": 114.512, "accuracy_m": 6.5, "provider": "gps", "mock": False}


def user_id(client: Client, username: str) -> str:
    return str(
        client.get("/api/v1/auth/me", headers=login(client, username, device=f"whoami-{username}")).json()[
            "id"
        ]
    )


def assign(
    client: Client,
    registry_no: str = "DB-C01-0001",
    *,
    purpose: str = "new_application",
    by: str = "demo-reviewer-community",
    due_date: str | None = None,
    created_days_ago: int = 10,
    signed_in: Signed | None = None,
) -> dict[str, Any]:
    """A visit assigned to TEAM, as if `created_days_ago` days ago: a publicity notice must go up on or
    after the day its visit was assigned, and `complete_answers` posts it 10 days ago by default so that
    the 7 days are over. Backdating the row is quicker than waiting."""
    team = signed_in.team if signed_in else None
    body = assignment(client, registry_no, purpose=purpose, due_date=due_date, team=team)
    headers = signed_in.reviewer if signed_in else login(client, by)
    response = client.post("/api/v1/visits", json=body, headers=headers)
    assert response.status_code == 201, response.text
    if created_days_ago:
        backdate(client, uuid.UUID(response.json()["id"]), dt.timedelta(days=created_days_ago))
    return dict(response.json())


def assignment(
    client: Client,
    registry_no: str = "DB-C01-0001",
    *,
    purpose: str = "new_application",
    due_date: str | None = None,
    visit_id: str | None = None,
    team: list[str] | None = None,
) -> dict[str, Any]:
    """The body of `POST /api/v1/visits` assigning the household's visit to TEAM (`team`: their ids)."""
    body: dict[str, Any] = {
        "household_id": str(household_id(registry_no)),
        "purpose": purpose,
        "team": team or [user_id(client, u) for u in TEAM],
    }
    if due_date:
        body["due_date"] = due_date
    if visit_id:
        body["id"] = visit_id
    return body


def backdate(client: Client, visit_id: uuid.UUID, by: dt.timedelta) -> None:
    async def move(session: AsyncSession) -> None:
        # Read, then write: SQLite has no interval arithmetic.
        created = (await session.execute(select(Visit.created_at).where(Visit.id == visit_id))).scalar_one()
        await session.execute(update(Visit).where(Visit.id == visit_id).values(created_at=created - by))

    run_db(client, move)


def context(client: Client, visit: dict[str, Any], admin: Headers | None = None) -> Context:
    admin = admin or login(client, "demo-admin", device="ctx")
    members = client.get(f"/api/v1/households/{visit['household_id']}", headers=admin).json()["members"]
    return Context(
        investigators={m["user_id"]: m["display_name"] for m in visit["team"]},
        members={m["id"]: m["name"] for m in members},
    )


def template(client: Client, headers: Headers, code: str, version: int) -> Template:
    body = client.get(f"/api/v1/templates/{code}/{version}", headers=headers).json()
    return msgspec.convert(body["template"], Template)


class Signed:
    """The sign-ins, team ids and templates `assign` and `complete_answers` need, made once: without it
    they sign in anew on every call (four sign-ins a visit), which a real server's full-strength password
    hashing makes the dearest part of preparing hundreds of visits (bench/sync.py)."""

    def __init__(self, client: Any, by: str = "demo-reviewer-community") -> None:  # a TestClient or httpx
        self.client = client
        self.reviewer = login(client, by)
        self.admin = login(client, "demo-admin", device="ctx")
        self.team = [user_id(client, u) for u in TEAM]
        self._templates: dict[tuple[str, int], Template] = {}

    def template(self, code: str, version: int) -> Template:
        if (code, version) not in self._templates:
            self._templates[(code, version)] = template(self.client, self.admin, code, version)
        return self._templates[(code, version)]


def complete_answers(
    client: Client,
    visit: dict[str, Any],
    headers: Headers,
    *,
    day: dt.date | None = None,
    signed_in: Signed | None = None,
) -> list[Filled]:
    """Every item of every pinned template, with dates `day` (default: 10 days ago, so publicity is over)."""
    ctx = context(client, visit, signed_in.admin if signed_in else None)
    when = day or today() - dt.timedelta(days=10)
    read = signed_in.template if signed_in else partial(template, client, headers)
    return [
        answer
        for ref in visit["templates"]
        for answer in fill(
            read(ref["code"], ref["version"]),
            ctx,
            day=when,
            where=(GPS["lat"], GPS["lon"]),
            seed=visit["id"],
        )
    ]


def observation(answer: Filled) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "template": answer.template,
        "item": answer.item,
        "row_id": str(answer.row_id) if answer.row_id else None,
        "value": answer.value,
        "gps": GPS,
        "device_time": dt.datetime.now(dt.UTC).isoformat(),
    }


def post_answers(
    client: Client, visit: dict[str, Any], headers: Headers, answers: Iterable[Filled]
) -> list[Any]:
    return post_observations(client, visit, headers, [observation(a) for a in answers])


def post_observations(
    client: Client, visit: dict[str, Any], headers: Headers, batch: list[dict[str, Any]]
) -> list[Any]:
    """Observations as sent, in requests of at most 200."""
    stored: list[Any] = []
    for start in range(0, len(batch), 200):
        response = client.post(
            f"/api/v1/visits/{visit['id']}/observations",
            json={"observations": batch[start : start + 200]},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        stored += response.json()
    return stored


def propose(client: Client, visit: dict[str, Any], headers: Headers, outcome: str = "no_change") -> None:
    response = client.put(
        f"/api/v1/visits/{visit['id']}/proposal",
        json={"outcome": outcome, "reason": "家庭情况无变化"},
        headers=headers,
    )
    assert response.status_code == 200, response.text


def submit(client: Client, visit: dict[str, Any], headers: Headers) -> Any:
    return client.post(f"/api/v1/visits/{visit['id']}/submit", headers=headers)


PLACEHOLDER_PHOTOS = "test answers name made-up photos; their bytes never come"

Seen = dict[str, int]
"""What a reviewer decided on: the visit's ``version`` and how much of its evidence was ``evidence_present``."""


def seen(client: Client, visit: dict[str, Any], headers: Headers) -> Seen:
    """The visit and its evidence as a console signed in with `headers` shows them now: what a decision
    is made on. One that cannot read them (outside its area) sends what it has: nothing."""
    response = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=headers)
    if response.status_code != 200:
        return {"version": 0, "evidence_present": 0}
    return {"version": response.json()["version"], "evidence_present": response.json()["present"]}


def review(
    client: Client,
    visit: dict[str, Any],
    username: str,
    decision: str,
    reason: str | None = None,
    *,
    accept_missing_evidence: bool | None = None,
    on: Seen | None = None,
    county_visit: bool | None = None,
) -> Any:
    """Decide on the visit as `on` showed it (default: as it stands, read just before). An approval
    accepts the missing evidence (the filler's made-up photos, which never arrive) with a reason of its
    own unless told otherwise. An approval or a rejection states the county's own home visit (made today)
    unless told otherwise: the filler's files hold an objection and a tip-off (a row in every repeat
    group), which require it at the last level, and the levels below do not read it."""
    if accept_missing_evidence is None:
        accept_missing_evidence = decision == "approve"
    if county_visit is None:
        county_visit = decision != "return"
    if accept_missing_evidence and reason is None:
        reason = PLACEHOLDER_PHOTOS
    desk = login(client, username, device="desk")
    body = (
        {"decision": decision}
        | (on or seen(client, visit, desk))
        | ({"reason": reason} if reason else {})
        | ({"accept_missing_evidence": True} if accept_missing_evidence else {})
        | ({"county_home_visit_on": today().isoformat()} if county_visit else {})
    )
    return client.post(f"/api/v1/visits/{visit['id']}/review", json=body, headers=desk)


def completed_visit(
    client: Client, registry_no: str = "DB-C01-0001", *, drop: Callable[[Filled], bool] | None = None
) -> tuple[dict[str, Any], Headers]:
    """A visit assigned and answered in full by demo-worker-1, minus what `drop` selects."""
    visit = assign(client, registry_no)
    worker = login(client, TEAM[0])
    answers = [a for a in complete_answers(client, visit, worker) if not (drop and drop(a))]
    post_answers(client, visit, worker, answers)
    return visit, worker


def recheck_decided(client: Client, registry_no: str, on_form: str, outcome: str, amount: int | None) -> Any:
    """A re-check of `registry_no` whose signed form and proposal say `outcome` (`on_form` on the form),
    submitted and approved at every level below the last: the last level's approval, not yet sent."""
    visit = assign(client, registry_no, purpose="scheduled_recheck")
    worker = login(client, TEAM[0])
    form = [Filled("form.recheck", "outcome_proposed", None, on_form)]
    form += [Filled("form.recheck", "proposed_amount_fen", None, amount)] if amount is not None else []
    post_answers(client, visit, worker, [*complete_answers(client, visit, worker), *form])
    body = {"outcome": outcome, "reason": "家庭收入减少 (income fell)"} | (
        {"amount_fen": amount} if amount is not None else {}
    )
    proposed = client.put(f"/api/v1/visits/{visit['id']}/proposal", json=body, headers=worker)
    assert proposed.status_code == 200, proposed.text
    assert submit(client, visit, worker).status_code == 200
    for reviewer in LEVELS[:-1]:
        assert review(client, visit, reviewer, "approve").status_code == 200
    return visit


def in_review_after_publicity(client: Client) -> tuple[dict[str, Any], Headers]:
    """A visit of DB-C01-0001 answered in full with its notice posted 8 days ago (the 7-day publicity ended
    yesterday), proposed and submitted: waiting at the first review level."""
    visit = assign(client)
    worker = login(client, TEAM[0])
    posted = today() - dt.timedelta(days=8)
    post_answers(client, visit, worker, complete_answers(client, visit, worker, day=posted))
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    return visit, worker


def objection(received: dt.date, outcome: str = "pending") -> list[Filled]:
    """The answers of one objection row (a new row id) in the publicize step, received on `received`."""
    row = uuid.uuid4()
    values = {
        "received_on": received.isoformat(),
        "channel": "in_person",
        "real_name": False,
        "content": "邻居反映其子有稳定工作 (a neighbour says the son has a steady job)",
        "action": "reinvestigate",
        "outcome": outcome,
    }
    return [Filled("step.publicize", f"objections.{item}", row, v) for item, v in values.items()]
