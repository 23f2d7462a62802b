"""A visit from assignment to a locked decision, the submission guards, and who may do what."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from server.db.engine import Database
from server.db.models import Household, Member, Observation, User, Visit, VisitTransition
from server.domain.filled import Filled, fake_sha256
from server.services.rules import today
from tests.apps import started
from tests.helpers import (
    Client,
    audit_rows,
    household_id,
    login,
    node_id,
    posted_at_once,
    run_db,
    waiting_on_locks,
)
from tests.visit_flow import (
    PLACEHOLDER_PHOTOS,
    TEAM,
    assign,
    assignment,
    backdate,
    complete_answers,
    completed_visit,
    context,
    in_review_after_publicity,
    objection,
    observation,
    post_answers,
    propose,
    recheck_decided,
    review,
    seen,
    submit,
    user_id,
)


def test_a_whole_visit_from_assignment_to_locked_approval(client: Client) -> None:
    visit, worker = completed_visit(client)
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["status"] == "in_progress"
    propose(client, visit, worker)
    submitted = submit(client, visit, worker)
    assert submitted.status_code == 200, submitted.text
    assert (submitted.json()["status"], submitted.json()["review_level_code"]) == (
        "in_review",
        "community_evaluation",
    )

    returned = review(
        client, visit, "demo-reviewer-community", "return", "邻居访谈记录不清楚，请补充 (clarify neighbours)"
    )
    assert returned.json()["status"] == "returned"
    # The second investigator fixes an answer; the returned visit is editable again, then resubmitted.
    partner = login(client, TEAM[1])
    fix = next(a for a in complete_answers(client, visit, partner) if a.item == "neighbours.who_lives_here")
    post_answers(
        client, visit, partner, [Filled(fix.template, fix.item, fix.row_id, "户主与配偶二人 (the couple)")]
    )
    assert submit(client, visit, partner).json()["review_level"] == 1

    for username, expect in [
        ("demo-reviewer-community", ("in_review", 2)),
        ("demo-reviewer-subdistrict", ("in_review", 3)),
        ("demo-approver-district", ("approved", 0)),
    ]:
        decided = review(client, visit, username, "approve")
        assert decided.status_code == 200, decided.text
        assert (decided.json()["status"], decided.json()["review_level"]) == expect
    final = client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()
    assert final["locked_at"] is not None

    late = post_answers_status(client, visit, worker)
    assert late == (409, "visit_locked")

    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=worker).json()
    assert [(t["action"], t["level_code"]) for t in timeline] == [
        ("assign", None),
        ("start", None),
        ("propose", None),
        ("submit", "community_evaluation"),
        ("return", "community_evaluation"),
        ("submit", "community_evaluation"),
        ("approve", "community_evaluation"),
        ("approve", "subdistrict_review"),
        ("approve", "district_approval"),
    ]
    assert timeline[4]["reason"].startswith("邻居访谈记录不清楚")
    assert {t["rules"] for t in timeline} == {"default@1"}
    assert [r.action for r in audit_rows(client) if r.entity_id == visit["id"]][-3:] == ["visit.approve"] * 3


def post_answers_status(client: Client, visit: dict[str, object], headers: dict[str, str]) -> tuple[int, str]:
    answer = Filled("step.check", "no_such_item", None, True)
    response = client.post(
        f"/api/v1/visits/{visit['id']}/observations",
        json={"observations": [observation(answer)]},
        headers=headers,
    )
    return response.status_code, response.json()["error"]["code"]


def test_an_approved_visit_is_amended_as_a_new_revision(client: Client) -> None:
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    submit(client, visit, worker)
    for username in ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district"):
        assert review(client, visit, username, "approve").status_code == 200
    amended = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker)
    assert amended.status_code == 201, amended.text
    new = amended.json()
    assert (new["revision"], new["previous_id"], new["status"]) == (2, visit["id"], "in_progress")
    old_answers = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=worker).json()
    new_answers = client.get(f"/api/v1/visits/{new['id']}/observations", headers=worker).json()
    assert [(o["item"], o["value"]) for o in new_answers] == [(o["item"], o["value"]) for o in old_answers]
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["status"] == "approved"
    again = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_amended"


def test_submission_lists_every_missing_piece_with_its_guard(client: Client) -> None:
    visit, worker = completed_visit(client, drop=lambda a: a.item == "income.difference_explanation")
    answers = complete_answers(client, visit, worker)
    neighbour_rows = sorted({a.row_id for a in answers if a.item.startswith("neighbours.")}, key=str)
    assert len(neighbour_rows) == 3
    removed_row = neighbour_rows[0]
    photos = next(a for a in answers if a.item == "home_photos")
    no_kitchen = {"photos": [p for p in photos.value["photos"] if p["view"] != "kitchen"]}
    signatures = next(a for a in answers if a.item == "investigator_signatures")
    one_signer = {"signatures": signatures.value["signatures"][:1]}
    income = [a for a in answers if a.item.startswith("income.")]
    income_row = income[0].row_id
    post_answers(
        client,
        visit,
        worker,
        [
            Filled("step.ask", "neighbours", removed_row, {"removed": True}),
            Filled("step.look", "home_photos", None, no_kitchen),
            Filled("step.look", "investigator_signatures", None, one_signer),
            Filled("form.home_visit", "income.declared_fen", income_row, 100_000),
            Filled("form.home_visit", "income.verified_fen", income_row, 180_000),
        ],
    )

    refused = submit(client, visit, worker)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "submission_incomplete"
    found = {(p["guard"], p["item"]) for p in error["details"]}
    assert found == {
        ("too_few_neighbours", "step.ask:neighbours"),
        ("photo_view_missing", "step.look:home_photos"),
        ("signature_missing", "step.look:investigator_signatures"),
        ("income_unexplained", "form.home_visit:income.difference_explanation"),
        ("outcome_missing", "visit:proposal"),
    }
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["status"] == "in_progress"


def test_an_empty_visit_lists_every_required_item(client: Client) -> None:
    visit = assign(client)
    refused = submit(client, visit, login(client, TEAM[0]))
    details = refused.json()["error"]["details"]
    assert refused.status_code == 422
    unanswered = {p["item"] for p in details if p["guard"] == "unanswered"}
    assert "step.look:home_location" in unanswered and "step.publicize:notice_posted_on" in unanswered
    assert len(details) > 20


def test_answers_are_checked_against_the_item_and_a_retry_adds_nothing(client: Client) -> None:
    visit = assign(client)
    worker = login(client, TEAM[0])
    url = f"/api/v1/visits/{visit['id']}/observations"
    bad = [
        observation(Filled("step.look", "home_location", None, {"lat": 200, "lon": 1})),
        observation(Filled("step.look", "nonexistent", None, 1)),
        observation(Filled("step.ask", "neighbours.position", None, "upstairs")),
        observation(Filled("step.look", "housing_ownership", None, ["owned"])),
        observation(Filled("step.look", "luxury_items", None, [["car"]])),
    ]
    refused = client.post(url, json={"observations": bad}, headers=worker)
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["error"]["details"]] == [
        "observations[0].value",
        "observations[1].item",
        "observations[2].row_id",
        "observations[3].value",
        "observations[4].value",
    ]
    assert client.get(url, headers=worker).json() == []  # all or nothing

    good = {
        "observations": [
            observation(
                Filled("step.look", "home_location", None, {"lat": 38.0, "lon": 114.5, "accuracy_m": 9})
            )
        ]
    }
    first = client.post(url, json=good, headers=worker).json()
    second = client.post(url, json=good, headers=worker).json()
    assert first == second and len(client.get(url, headers=worker).json()) == 1
    good["observations"][0]["value"] = {"lat": 1.0, "lon": 2.0, "accuracy_m": 9}
    clash = client.post(url, json=good, headers=worker)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "observation_conflict"


def test_an_observation_id_stored_at_once_on_another_visit_is_a_409_and_never_a_500(client: Client) -> None:
    """One worker's two tablets send the same observation id to two visits at the same moment. On
    PostgreSQL both find the id free (the visits' locks are not shared) and insert; the loser's commit
    fails on the primary key and must answer as when it arrives second, `409 observation_conflict`, storing
    none of its batch, never a 500. The test holds the worker's user row, which each observation refers to,
    until both wait on a lock. (Two batches for one visit cannot race: they take turns on its lock.)"""
    worker = user_id(client, TEAM[0])
    tablets = [login(client, TEAM[0], device=f"tablet-{i}") for i in (1, 2)]
    visits = [assign(client), assign(client, "DB-C01-0002")]
    single = [a for a in complete_answers(client, visits[0], tablets[0]) if a.row_id is None]
    shared = observation(single[0])
    batches = [[shared, observation(single[1])], [shared, observation(single[2])]]
    posts = [
        (f"/api/v1/visits/{visit['id']}/observations", {"observations": batch}, tablet)
        for visit, batch, tablet in zip(visits, batches, tablets, strict=True)
    ]
    answers = posted_at_once(client, posts, select(User.id).where(User.id == uuid.UUID(worker)))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    won = next(i for i, a in enumerate(answers) if a.status_code == 200)
    assert answers[1 - won].json()["error"]["code"] == "observation_conflict"
    stored = [
        client.get(f"/api/v1/visits/{visit['id']}/observations", headers=tablets[0]).json()
        for visit in visits
    ]
    assert [o["id"] for o in stored[won]] == [o["id"] for o in batches[won]]
    assert stored[1 - won] == []


def test_answers_made_side_by_side_on_a_base_merge_instead_of_replacing(client: Client) -> None:
    """Both team members photograph the home from the same (empty) start: the evidence holds both sets,
    and the observations keep each answer exactly as sent."""
    visit = assign(client)
    url = f"/api/v1/visits/{visit['id']}/observations"
    exterior, kitchen = (
        {"sha256": "e" * 64, "view": "exterior_door_number"},
        {"sha256": "c" * 64, "view": "kitchen"},
    )
    sent = []
    for username, photo in zip(TEAM, (exterior, kitchen), strict=True):
        answer = observation(Filled("step.look", "home_photos", None, {"photos": [photo]}))
        sent.append(answer | {"base": {"photos": []}})
        response = client.post(url, json={"observations": [sent[-1]]}, headers=login(client, username))
        assert response.status_code == 200, response.text

    worker = login(client, TEAM[0])
    evidence = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=worker).json()
    assert [(i["view"], i["status"]) for i in evidence["items"]] == [
        ("kitchen", "expected"),
        ("exterior_door_number", "expected"),
    ]
    stored = client.get(url, headers=worker).json()
    assert [(o["value"], o["base"]) for o in stored] == [(a["value"], a["base"]) for a in sent]

    # Without a base the later answer replaces the item, as before.
    replacing = observation(Filled("step.look", "home_photos", None, {"photos": [exterior]}))
    assert client.post(url, json={"observations": [replacing]}, headers=worker).status_code == 200
    evidence = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=worker).json()
    assert [i["view"] for i in evidence["items"]] == ["exterior_door_number"]

    # The same observation sent again with another base is not a retry.
    clash = client.post(url, json={"observations": [sent[0] | {"base": None}]}, headers=worker)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "observation_conflict"

    # A base is checked like a value.
    bad = observation(Filled("step.look", "home_photos", None, {"photos": [kitchen]})) | {
        "base": {"photo": 1}
    }
    refused = client.post(url, json={"observations": [bad]}, headers=worker)
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["error"]["details"]] == ["observations[0].base"]


def visit_team(visit: dict[str, Any]) -> list[str]:
    return [member["user_id"] for member in visit["team"]]


def test_roles_and_jurisdictions_bound_who_acts(client: Client) -> None:
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    submit(client, visit, worker)
    # A worker cannot approve; the subdistrict reviewer cannot act at the community level.
    assert (
        review(client, visit, "demo-worker-1", "approve").json()["error"]["code"] == "not_your_review_level"
    )
    assert review(client, visit, "demo-reviewer-subdistrict", "approve").status_code == 403
    # Outside their jurisdiction, reviewers and workers do not even see it.
    assert review(client, visit, "demo-worker-3", "approve").status_code == 404
    assert (
        client.get(f"/api/v1/visits/{visit['id']}", headers=login(client, "demo-worker-3")).status_code == 404
    )
    # A worker cannot assign; a team must be two field workers of the household's community.
    body = {
        "household_id": str(household_id("DB-C01-0002")),
        "purpose": "tip",
        "team": [str(uuid.uuid4())] * 2,
    }
    assert client.post("/api/v1/visits", json=body, headers=worker).status_code == 403
    team_from_c03 = client.post(
        "/api/v1/visits",
        json=body | {"team": [visit["team"][0]["user_id"], str(uuid.uuid4())]},
        headers=login(client, "demo-reviewer-community"),
    )
    assert team_from_c03.status_code == 422 and team_from_c03.json()["error"]["code"] == "team_invalid"
    # A due date years off is a typo: it would sit overdue (or never due) forever.
    for years in (-2, 2):
        far = (today() + dt.timedelta(days=365 * years)).isoformat()
        typo = client.post(
            "/api/v1/visits",
            json=body | {"team": visit_team(visit), "due_date": far},
            headers=login(client, "demo-reviewer-community"),
        )
        assert typo.status_code == 422 and typo.json()["error"]["details"][0]["field"] == "due_date", (
            typo.text
        )
    # Rejecting needs a reason.
    assert review(client, visit, "demo-reviewer-community", "reject").status_code == 422


def test_district_approval_waits_for_the_seven_day_publicity(client: Client) -> None:
    visit = assign(client)
    worker = login(client, TEAM[0])
    post_answers(
        client,
        visit,
        worker,
        complete_answers(client, visit, worker, day=today() - dt.timedelta(days=2)),
    )
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    review(client, visit, "demo-reviewer-community", "approve")
    review(client, visit, "demo-reviewer-subdistrict", "approve")
    early = review(client, visit, "demo-approver-district", "approve")
    assert early.status_code == 409
    error = early.json()["error"]
    assert error["code"] == "publicity_not_over"
    assert error["details"]["publicity_ends_on"] == (today() + dt.timedelta(days=5)).isoformat()


def test_overdue_list_per_jurisdiction(client: Client) -> None:
    late = assign(client, "DB-C01-0003", due_date=(today() - dt.timedelta(days=4)).isoformat())
    future = assign(client, "DB-C01-0005", due_date=(today() + dt.timedelta(days=4)).isoformat())
    rows = client.get("/api/v1/visits/overdue", headers=login(client, "demo-reviewer-subdistrict")).json()
    by_id = {r["visit_id"]: (r["what"], r["days_overdue"]) for r in rows}
    assert by_id[late["id"]] == ("visit", 4)
    assert future["id"] not in by_id
    assert all(days > 0 for _, days in by_id.values())
    assert client.get("/api/v1/visits/overdue", headers=login(client, "demo-worker-3")).json() == []


def test_a_pending_objection_holds_the_file_back_at_district_approval(client: Client) -> None:
    visit, worker = completed_visit(client)
    outcome = next(a for a in complete_answers(client, visit, worker) if a.item == "objections.outcome")
    post_answers(client, visit, worker, [Filled(outcome.template, outcome.item, outcome.row_id, "pending")])
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    review(client, visit, "demo-reviewer-community", "approve")
    review(client, visit, "demo-reviewer-subdistrict", "approve")
    held = review(client, visit, "demo-approver-district", "approve")
    assert held.status_code == 409, held.text
    error = held.json()["error"]
    assert error["code"] == "objection_pending"
    assert error["details"] == {"item": "step.publicize:objections.outcome", "rows": [str(outcome.row_id)]}
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["status"] == "in_review"


def test_an_objection_during_the_publicity_is_recorded_while_the_file_is_in_review(client: Client) -> None:
    """The 7-day publicity (公示) runs while the community and the subdistrict review the file, and an
    objection raised during it forces re-investigation or 民主评议 before the county confirms (2021 办法
    Art 19; research.md §2 step 4a). The team could not record it: the file under review refused every
    answer, so the county approved a file whose objection was nowhere on record."""
    visit, worker = in_review_after_publicity(client)
    posted = today() - dt.timedelta(days=8)  # the publicity ended yesterday
    assert review(client, visit, "demo-reviewer-community", "approve").status_code == 200

    url = f"/api/v1/visits/{visit['id']}/observations"

    def sent(answers: list[Filled]) -> Any:
        return client.post(url, json={"observations": [observation(a) for a in answers]}, headers=worker)

    raised = objection(today() - dt.timedelta(days=1))
    assert sent(raised).status_code == 200, sent(raised).text
    late = sent(objection(today()))
    assert (late.status_code, late.json()["error"]["code"]) == (409, "objection_outside_publicity"), late.text
    settled_in_review = sent(objection(today() - dt.timedelta(days=2), outcome="not_upheld"))
    assert (settled_in_review.status_code, settled_in_review.json()["error"]["code"]) == (
        409,
        "visit_in_review",
    )
    on_file = next(
        a for a in complete_answers(client, visit, worker, day=posted) if a.item == "objections.outcome"
    )
    reopened = sent([Filled(on_file.template, on_file.item, on_file.row_id, "pending")])
    assert (reopened.status_code, reopened.json()["error"]["code"]) == (409, "visit_in_review"), reopened.text
    elsewhere = sent([Filled("step.ask", "asked_on", None, today().isoformat())])
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (409, "visit_in_review")

    assert review(client, visit, "demo-reviewer-subdistrict", "approve").status_code == 200
    held = review(client, visit, "demo-approver-district", "approve")
    assert held.status_code == 409, held.text
    assert held.json()["error"]["code"] == "objection_pending"
    assert held.json()["error"]["details"]["rows"] == [str(raised[0].row_id)]


SUBDISTRICT_WAITS_FOR_PUBLICITY = (
    (Path(__file__).parents[2] / "server/data/rules/default.yaml")
    .read_text()
    .replace("code: default", "code: publicity_at_subdistrict")
    .replace("    deadline_working_days: 5\n", "    deadline_working_days: 5\n    after_publicity: true\n")
    .replace("    after_publicity: true       # 初审公示 must have run its 7 days first\n", "")
)


def test_an_objection_entered_above_the_level_that_waited_for_the_publicity_still_holds_the_file(
    app_settings: Settings, tmp_path: Path
) -> None:
    """A pack whose subdistrict level waits for the publicity, below the district's. An objection received
    during the publicity and entered once the file had passed the subdistrict was on file, pending, and the
    district approved over it: only the level that waits for the publicity looked for one."""
    rules = tmp_path / "publicity-at-subdistrict.yaml"
    rules.write_text(SUBDISTRICT_WAITS_FOR_PUBLICITY)
    with started(msgspec.structs.replace(app_settings, rules_file=str(rules))) as client:
        visit, worker = in_review_after_publicity(client)
        assert review(client, visit, "demo-reviewer-community", "approve").status_code == 200
        assert review(client, visit, "demo-reviewer-subdistrict", "approve").status_code == 200
        raised = objection(today() - dt.timedelta(days=2))
        row = raised[0].row_id
        answers = [observation(a) for a in raised]
        recorded = client.post(
            f"/api/v1/visits/{visit['id']}/observations", json={"observations": answers}, headers=worker
        )
        assert recorded.status_code == 200, recorded.text
        held = review(client, visit, "demo-approver-district", "approve")
        assert held.status_code == 409, held.text
        assert (held.json()["error"]["code"], held.json()["error"]["details"]["rows"]) == (
            "objection_pending",
            [str(row)],
        )


def test_a_mistyped_objection_on_a_file_in_review_is_named_as_mistyped(client: Client) -> None:
    """An objection recorded while the file is in review with a date that is no date, or an outcome that
    is none of the options, is a typing slip the team corrects: it was answered 409 (outside the
    publicity, or visit_in_review), which sent the team to argue about the dates instead of the value."""
    visit, worker = in_review_after_publicity(client)
    row = uuid.uuid4()
    url = f"/api/v1/visits/{visit['id']}/observations"
    for item, value in (("received_on", "2026-02-30"), ("outcome", "maybe")):
        slip = [Filled("step.publicize", f"objections.{item}", row, value)]
        sent = client.post(url, json={"observations": [observation(a) for a in slip]}, headers=worker)
        assert (sent.status_code, sent.json()["error"]["code"]) == (422, "validation_error"), sent.text
        assert f"objections.{item}" in sent.json()["error"]["message"]


def test_an_objection_settled_by_democratic_appraisal_needs_the_appraisal_on_record(client: Client) -> None:
    """An objection during publicity is settled by re-investigation or by democratic appraisal (民主评议;
    2021 办法 Art 19, research.md §2 step 4a). An objection recorded as settled by an appraisal, in a
    file whose appraisal section says none was held, went to the county with the procedure it claimed
    nowhere on record."""
    visit, worker = completed_visit(client)  # one objection, re-investigated, not upheld; no appraisal
    action = next(a for a in complete_answers(client, visit, worker) if a.item == "objections.action")
    by_appraisal = Filled(action.template, action.item, action.row_id, "democratic_appraisal")
    post_answers(client, visit, worker, [by_appraisal])
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"], p["row"]) for p in refused.json()["error"]["details"]] == [
        ("appraisal_missing", "step.publicize:objections.action", str(action.row_id))
    ]
    held = Filled("step.publicize", "appraisal_held", None, True)  # its record: date, participants, ...
    post_answers(client, visit, worker, [held])
    assert submit(client, visit, worker).status_code == 200


def test_one_photo_counts_once_however_many_views_it_claims(client: Client) -> None:
    visit, worker = completed_visit(client)
    url = f"/api/v1/visits/{visit['id']}/observations"
    one = fake_sha256("the-only-photo")
    every_view = {"photos": [{"sha256": one, "view": v} for v in ("exterior_door_number", "kitchen")]}
    refused = client.post(
        url,
        json={"observations": [observation(Filled("step.look", "home_photos", None, every_view))]},
        headers=worker,
    )
    assert refused.status_code == 422, refused.text
    assert [d["field"] for d in refused.json()["error"]["details"]] == ["observations[0].value"]

    # Two tablets merging side by side can still bring one image in twice: it counts once at submission.
    three = [(one, "exterior_door_number"), (fake_sha256("b"), "living_room"), (fake_sha256("c"), "kitchen")]
    mine = {"photos": [{"sha256": sha, "view": view} for sha, view in three]}
    post_answers(client, visit, worker, [Filled("step.look", "home_photos", None, mine)])
    theirs = observation(
        Filled("step.look", "home_photos", None, {"photos": [{"sha256": one, "view": "bedroom"}]})
    )
    other = login(client, TEAM[1])
    merged = client.post(url, json={"observations": [theirs | {"base": {"photos": []}}]}, headers=other)
    assert merged.status_code == 200, merged.text
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    problems = {(p["guard"], p["item"]) for p in refused.json()["error"]["details"]}
    assert problems == {
        ("photo_view_missing", "step.look:home_photos"),
        ("too_few_photos", "step.look:home_photos"),
    }


def test_blank_reasons_excuse_no_photo_and_no_signature(client: Client) -> None:
    """A photo "not taken" and a member who "could not sign" each need the reason (research.md §7: photos
    allow "not taken (reason)"; Form A: "or a reason a member could not sign"). A reason of spaces passed
    as one: the home's photos and every member's signature were waived with nothing a reviewer could read."""
    visit, worker = completed_visit(client)
    blank = Filled("step.look", "home_photos", None, {"photos": [], "not_taken_reason": "   "})
    post_answers(client, visit, worker, [blank])
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]] == [
        ("unanswered", "step.look:home_photos")
    ]

    members = context(client, visit).members
    unsigned = {
        "signatures": [
            {"signer_name": name, "member_id": mid, "not_signed_reason": " \t"}
            for mid, name in members.items()
        ]
    }
    response = client.post(
        f"/api/v1/visits/{visit['id']}/observations",
        json={"observations": [observation(Filled("step.look", "member_signatures", None, unsigned))]},
        headers=worker,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "observations[0].value"

    reason = Filled("step.look", "home_photos", None, {"photos": [], "not_taken_reason": "户主拒绝拍照"})
    post_answers(client, visit, worker, [reason])
    assert submit(client, visit, worker).status_code == 200


def test_a_location_coarser_than_the_items_max_accuracy_is_refused(client: Client) -> None:
    visit = assign(client)
    url = f"/api/v1/visits/{visit['id']}/observations"
    worker = login(client, TEAM[0])
    fixes = [
        {"lat": 38.0, "lon": 114.5, "accuracy_m": 5000.0},  # step.look home_location: max_accuracy_m 100
        {"lat": 38.0, "lon": 114.5},  # no accuracy: nothing shows it is within the limit
    ]
    batch = [observation(Filled("step.look", "home_location", None, fix)) for fix in fixes]
    refused = client.post(url, json={"observations": batch}, headers=worker)
    assert refused.status_code == 422, refused.text
    details = refused.json()["error"]["details"]
    assert [d["field"] for d in details] == ["observations[0].value", "observations[1].value"]
    assert all(d["message"].startswith("home_location: ") for d in details)
    assert "100 m" in details[0]["message"]
    exact = observation(
        Filled("step.look", "home_location", None, {"lat": 38.0, "lon": 114.5, "accuracy_m": 100})
    )
    assert client.post(url, json={"observations": [exact]}, headers=worker).status_code == 200


def test_a_removed_member_is_not_asked_to_sign(client: Client) -> None:
    admin = login(client, "demo-admin", device="adm")

    def members(registry_no: str) -> list[dict[str, str]]:
        found = client.get(f"/api/v1/households/{household_id(registry_no)}", headers=admin).json()
        return list(found["members"])

    registry_no = next(f"DB-C01-{n:04d}" for n in range(1, 40) if len(members(f"DB-C01-{n:04d}")) >= 2)
    gone = uuid.UUID(members(registry_no)[-1]["id"])

    async def remove(session: AsyncSession) -> None:  # what a sync member.remove.v1 does to the row
        await session.execute(
            update(Member).where(Member.id == gone).values(deleted_at=dt.datetime.now(dt.UTC))
        )

    visit = assign(client, registry_no)
    run_db(client, remove)
    worker = login(client, TEAM[0])
    post_answers(
        client, visit, worker, complete_answers(client, visit, worker)
    )  # the members still there sign
    propose(client, visit, worker)
    submitted = submit(client, visit, worker)
    assert submitted.status_code == 200, submitted.text


def test_a_date_answer_is_written_yyyy_mm_dd(client: Client) -> None:
    visit = assign(client)
    url = f"/api/v1/visits/{visit['id']}/observations"
    odd = ["2025W015", "20250105", "2025-01-05T00:00", "２０２５-01-05", "2025-02-30"]
    batch = [observation(Filled("step.publicize", "notice_posted_on", None, v)) for v in odd]
    refused = client.post(url, json={"observations": batch}, headers=login(client, TEAM[0]))
    assert refused.status_code == 422, refused.text
    assert len(refused.json()["error"]["details"]) == len(odd)
    good = observation(Filled("step.publicize", "notice_posted_on", None, today().isoformat()))
    assert client.post(url, json={"observations": [good]}, headers=login(client, TEAM[0])).status_code == 200


def test_a_blank_reason_does_not_return_or_reject_a_visit(client: Client) -> None:
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for decision in ("reject", "return"):
        refused = review(client, visit, "demo-reviewer-community", decision, "  \t ")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "reason_required"
    returned = review(client, visit, "demo-reviewer-community", "return", "  补拍厨房照片  ")
    assert returned.status_code == 200, returned.text
    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=worker).json()
    assert timeline[-1]["reason"] == "补拍厨房照片"


def test_an_amended_revision_is_due_as_if_assigned_today(client: Client) -> None:
    visit = assign(client, due_date=(today() - dt.timedelta(days=30)).isoformat())
    worker = login(client, TEAM[0])
    post_answers(client, visit, worker, complete_answers(client, visit, worker))
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for username in ("demo-reviewer-community", "demo-reviewer-subdistrict", "demo-approver-district"):
        assert review(client, visit, username, "approve").status_code == 200
    revision = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker).json()
    fresh = assign(client, "DB-C01-0002", purpose=visit["purpose"])
    assert (revision["due_date"], revision["overdue"]) == (fresh["due_date"], False)


def test_a_publicity_notice_cannot_predate_the_visit(client: Client) -> None:
    visit = assign(client, created_days_ago=0)
    worker = login(client, TEAM[0])
    post_answers(client, visit, worker, complete_answers(client, visit, worker))  # notice 10 days ago
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]] == [
        ("notice_before_visit", "step.publicize:notice_posted_on")
    ]
    on_the_day = Filled("step.publicize", "notice_posted_on", None, today().isoformat())
    still_up = Filled("step.publicize", "notice_removed_on", None, None)  # not yet taken down
    post_answers(client, visit, worker, [on_the_day, still_up])
    assert submit(client, visit, worker).status_code == 200


def test_a_publicity_notice_cannot_be_posted_in_the_future(client: Client) -> None:
    """The notice's date is when it went up, with a photo of it posted: a date to come is a slip (a year
    typed wrong), and it pushed the end of the publicity, and with it the county's decision, that far
    out, unseen until district approval refused the file."""
    visit, worker = completed_visit(client)
    ahead = Filled("step.publicize", "notice_posted_on", None, (today() + dt.timedelta(days=1)).isoformat())
    still_up = Filled("step.publicize", "notice_removed_on", None, None)
    post_answers(client, visit, worker, [ahead, still_up])
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]] == [
        ("notice_in_future", "step.publicize:notice_posted_on")
    ]
    on_the_day = Filled("step.publicize", "notice_posted_on", None, today().isoformat())  # China's today
    post_answers(client, visit, worker, [on_the_day])
    assert submit(client, visit, worker).status_code == 200


def test_district_approval_refuses_a_notice_older_than_the_visit(client: Client) -> None:
    """A visit submitted before submission checked the notice date is caught at district approval."""
    visit, worker = completed_visit(client)  # assigned and noticed 10 days ago
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    backdate(client, uuid.UUID(visit["id"]), -dt.timedelta(days=5))  # as if assigned after the notice
    review(client, visit, "demo-reviewer-community", "approve")
    review(client, visit, "demo-reviewer-subdistrict", "approve")
    refused = review(client, visit, "demo-approver-district", "approve")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "notice_before_visit"


def test_a_notice_taken_down_before_its_seven_days_is_no_publicity(client: Client) -> None:
    """公示 runs 7 calendar days (2021 办法 Art 19; research.md §2 step 4): a notice taken down after two
    days gave the neighbours two days to object, yet the file went to the county as if it had run its
    course, the period being counted from the posting date alone."""
    visit, worker = completed_visit(client)  # noticed 10 days ago
    posted = today() - dt.timedelta(days=10)

    def taken_down(days_after: int) -> Filled:
        return Filled(
            "step.publicize", "notice_removed_on", None, (posted + dt.timedelta(days=days_after)).isoformat()
        )

    post_answers(client, visit, worker, [taken_down(2)])
    propose(client, visit, worker)
    refused = submit(client, visit, worker)
    assert refused.status_code == 422, refused.text
    assert [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]] == [
        ("publicity_cut_short", "step.publicize:notice_removed_on")
    ]
    post_answers(client, visit, worker, [taken_down(7)])  # the 7th day after the posting: its last
    assert submit(client, visit, worker).status_code == 200


def test_district_approval_refuses_a_notice_taken_down_early(client: Client) -> None:
    """A visit submitted before submission checked the take-down date is caught at district approval."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    early = (today() - dt.timedelta(days=9)).isoformat()  # a day after the posting

    async def as_if_taken_down_early(session: AsyncSession) -> None:
        await session.execute(
            update(Observation)
            .where(Observation.visit_id == uuid.UUID(visit["id"]), Observation.item == "notice_removed_on")
            .values(value=early)
        )

    run_db(client, as_if_taken_down_early)
    review(client, visit, "demo-reviewer-community", "approve")
    review(client, visit, "demo-reviewer-subdistrict", "approve")
    refused = review(client, visit, "demo-approver-district", "approve")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "publicity_cut_short"


def _pays_monthly(client: Client, registry_no: str, fen: int) -> None:
    """The household is paid ``fen`` a month (the demo seed pays each household its own amount)."""

    async def pays(session: AsyncSession) -> None:
        await session.execute(
            update(Household).where(Household.id == household_id(registry_no)).values(monthly_benefit_fen=fen)
        )

    run_db(client, pays)


def test_a_proposed_amount_must_agree_with_its_outcome(client: Client) -> None:
    """A raise that is no raise, a reduction to nothing or above the current amount, an admission of
    nothing: refused where they are typed, naming the field."""

    _pays_monthly(client, "DB-C01-0002", 60000)
    visit, worker = assign(client, "DB-C01-0002"), login(client, TEAM[0])

    def proposed(outcome: str, amount: int) -> Any:
        body = {"outcome": outcome, "amount_fen": amount, "reason": "家庭收入变化"}
        return client.put(f"/api/v1/visits/{visit['id']}/proposal", json=body, headers=worker)

    for outcome, amount in [("raise", 60000), ("raise", 500), ("reduce", 60000), ("reduce", 0), ("admit", 0)]:
        refused = proposed(outcome, amount)
        assert refused.status_code == 422, (outcome, amount, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "amount_contradicts_outcome" and error["details"][0]["field"] == "amount_fen"
    for outcome, amount in [("raise", 60001), ("reduce", 1), ("admit", 30000)]:
        assert proposed(outcome, amount).status_code == 200, (outcome, amount)


def test_no_change_and_stop_proposals_carry_no_other_amount(client: Client) -> None:
    """ "No change" keeps the amount the household is paid, and a stop pays nothing (2021 办法 Art 31-32). A
    "no change" of 600 yuan to 1 fen, or a stop that keeps paying 500 yuan, went to review as typed; a
    reviewer approving "no change" would not read the amount under it."""

    _pays_monthly(client, "DB-C01-0002", 60000)
    visit, worker = assign(client, "DB-C01-0002"), login(client, TEAM[0])

    def proposed(outcome: str, amount: int | None) -> Any:
        body = {"outcome": outcome, "reason": "家庭收入变化"} | (
            {"amount_fen": amount} if amount is not None else {}
        )
        return client.put(f"/api/v1/visits/{visit['id']}/proposal", json=body, headers=worker)

    amount: int | None
    for outcome, amount in [("no_change", 1), ("no_change", 0), ("stop", 50000), ("stop", 60000)]:
        refused = proposed(outcome, amount)
        assert refused.status_code == 422, (outcome, amount, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "amount_contradicts_outcome" and error["details"][0]["field"] == "amount_fen"
    for outcome, amount in [("no_change", 60000), ("no_change", None), ("stop", 0), ("stop", None)]:
        assert proposed(outcome, amount).status_code == 200, (outcome, amount)


def test_a_blank_reason_proposes_nothing(client: Client) -> None:
    """A reduction or a stop is notified with its reasons (2021 办法 Art 32), and reviewers read the reason
    to judge the proposal: three spaces passed the schema's two-character minimum and went to review."""
    visit, worker = assign(client), login(client, TEAM[0])
    url = f"/api/v1/visits/{visit['id']}/proposal"
    refused = client.put(url, json={"outcome": "stop", "reason": "  \t "}, headers=worker)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "reason_required"), refused.text
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["proposal"] is None

    proposed = client.put(url, json={"outcome": "stop", "reason": "  户主已去世 "}, headers=worker)
    assert proposed.status_code == 200, proposed.text
    assert proposed.json()["proposal"]["reason"] == "户主已去世"


def test_a_re_check_proposal_must_say_what_the_signed_form_says(client: Client) -> None:
    """The re-check form (复核表) the household signs states the proposed outcome and amount, and so does
    the visit's proposal that the reviewers approve. A form saying "stop" under a proposal of "no change"
    went up for approval: the decision would not be what the household signed (Art 32: a stop is notified
    with its reasons)."""
    visit = assign(client, "DB-C01-0002", purpose="scheduled_recheck")
    worker = login(client, TEAM[0])
    post_answers(client, visit, worker, complete_answers(client, visit, worker))

    def on_form(outcome: str, amount: int | None = None) -> None:
        answers = [Filled("form.recheck", "outcome_proposed", None, outcome)]
        answers += [Filled("form.recheck", "proposed_amount_fen", None, amount)] if amount else []
        post_answers(client, visit, worker, answers)

    def proposed(outcome: str, amount: int | None = None) -> None:
        body = {"outcome": outcome, "reason": "家庭收入变化"} | ({"amount_fen": amount} if amount else {})
        response = client.put(f"/api/v1/visits/{visit['id']}/proposal", json=body, headers=worker)
        assert response.status_code == 200, response.text

    def guards() -> list[tuple[str, str]]:
        refused = submit(client, visit, worker)
        assert refused.status_code == 422, refused.text
        return [(p["guard"], p["item"]) for p in refused.json()["error"]["details"]]

    on_form("stop")
    proposed("no_change")
    assert guards() == [("outcome_contradicts_form", "form.recheck:outcome_proposed")]
    on_form("increase", 500000)
    proposed("raise", 600000)  # 增发 on the form is a raise, but not of this amount
    assert guards() == [("outcome_contradicts_form", "form.recheck:outcome_proposed")]
    proposed("raise", 500000)
    assert submit(client, visit, worker).status_code == 200


def test_an_assignment_sent_again_with_its_id_answers_the_visit_and_writes_nothing(client: Client) -> None:
    """A supervisor's console that lost the answer sends the same assignment again: it gets the visit it
    made, however far that visit has moved on since, and nothing is written twice."""
    reviewer = login(client, "demo-reviewer-community")
    body = assignment(client, visit_id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9b01")
    first = client.post("/api/v1/visits", json=body, headers=reviewer)
    again = client.post("/api/v1/visits", json=body, headers=reviewer)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()

    visit = first.json()
    backdate(client, uuid.UUID(visit["id"]), dt.timedelta(days=10))  # the notice went up 10 days ago
    worker = login(client, TEAM[0])
    post_answers(client, visit, worker, complete_answers(client, visit, worker))
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200

    async def archive(session: AsyncSession) -> None:  # what a sync household.archive.v1 does to the row
        await session.execute(
            update(Household)
            .where(Household.id == uuid.UUID(visit["household_id"]))
            .values(deleted_at=dt.datetime.now(dt.UTC))
        )

    run_db(client, archive)
    now = client.get(f"/api/v1/visits/{visit['id']}", headers=reviewer).json()
    assert now["status"] == "in_review"
    # The same create: as sent, with the team in another order, or naming the due date it was given.
    for retry in (body, body | {"team": body["team"][::-1]}, body | {"due_date": visit["due_date"]}):
        answered = client.post("/api/v1/visits", json=retry, headers=reviewer)
        assert answered.status_code == 201, answered.text
        assert answered.json() == now  # the team in its stored order
    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=reviewer).json()
    assert [t["action"] for t in timeline] == ["assign", "start", "propose", "submit"]
    assert [r.entity_id for r in audit_rows(client, "visit.create")].count(visit["id"]) == 1


def test_an_assignment_id_reused_for_other_content_is_refused(client: Client) -> None:
    reviewer = login(client, "demo-reviewer-community")
    due = today() + dt.timedelta(days=5)
    body = assignment(client, due_date=due.isoformat(), visit_id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9b02")
    first = client.post("/api/v1/visits", json=body, headers=reviewer)
    assert first.status_code == 201, first.text

    reused = [
        # another household's visit under the same id
        (assignment(client, "DB-C01-0002", due_date=due.isoformat(), visit_id=body["id"]), "duplicate_id"),
        (body | {"purpose": "tip"}, "created_otherwise"),
        (body | {"team": [body["team"][0], user_id(client, "demo-worker-3")]}, "created_otherwise"),
        (body | {"due_date": (due + dt.timedelta(days=1)).isoformat()}, "created_otherwise"),
    ]
    for retry, code in reused:
        refused = client.post("/api/v1/visits", json=retry, headers=reviewer)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == code
    assert client.get(f"/api/v1/visits/{body['id']}", headers=reviewer).json() == first.json()
    assert [r.entity_id for r in audit_rows(client, "visit.create")].count(body["id"]) == 1


def test_the_same_assignment_sent_twice_at_once_makes_one_visit_and_never_a_500(client: Client) -> None:
    """Two consoles (or a retry overtaking its first try) assign under one id at the same moment. For one
    household they take turns on its row, and the second finds the first's visit at its check: the same
    assignment converges, other content is 409. Under one id for two households they do not: on
    PostgreSQL both find the id free and insert, the loser's commit fails on the primary key, and it must
    answer as when it arrives second (409 duplicate_id), never a 500. The test holds the reviewer's user
    row, which each visit refers to as its creator, until both requests wait on a lock, so the race
    happens every time. SQLite has one writer (BEGIN IMMEDIATE): there the requests take turns."""
    consoles = [login(client, "demo-reviewer-community", device=f"console-{i}") for i in (1, 2)]
    same = assignment(client, visit_id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9b03")
    other = assignment(client, visit_id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9b04")
    across = assignment(client, visit_id="5f0c1b7e-2f4e-4c55-9a55-3f2d1c0b9b05")
    reviewer_id = uuid.UUID(user_id(client, "demo-reviewer-community"))
    held = select(User.id).where(User.id == reviewer_id)

    def race(*bodies: dict[str, Any]) -> list[httpx.Response]:
        posts = [("/api/v1/visits", body, console) for body, console in zip(bodies, consoles, strict=True)]
        return posted_at_once(client, posts, held)

    twins = race(same, same)
    assert [t.status_code for t in twins] == [201, 201], [t.text for t in twins]
    assert twins[0].json() == twins[1].json()

    made: dict[str, Any] = {}
    for first, second, code in [
        (other, other | {"purpose": "tip"}, "created_otherwise"),
        (across, across | {"household_id": str(household_id("DB-C01-0002"))}, "duplicate_id"),
    ]:
        rivals = race(first, second)
        assert sorted(r.status_code for r in rivals) == [201, 409], [r.text for r in rivals]
        won, refused = sorted(rivals, key=lambda r: r.status_code)
        assert refused.json()["error"]["code"] == code
        made[first["id"]] = won.json()

    reviewer = consoles[0]
    assert client.get(f"/api/v1/visits/{same['id']}", headers=reviewer).json() == twins[0].json()
    for visit_id, visit in made.items():
        assert client.get(f"/api/v1/visits/{visit_id}", headers=reviewer).json() == visit
    for visit_id in (same["id"], other["id"], across["id"]):
        timeline = client.get(f"/api/v1/visits/{visit_id}/timeline", headers=reviewer).json()
        assert [t["action"] for t in timeline] == ["assign"]
        assert [r.entity_id for r in audit_rows(client, "visit.create")].count(visit_id) == 1


def test_an_assignment_takes_turns_with_its_household_moving_community(client: Client) -> None:
    """A household moving to another community holds its row until it commits; an assignment made
    meanwhile must wait and then see the move, or the visit would be stamped for the old community's
    tablets (and its team checked against it) while the household lives in the new one. PostgreSQL only:
    SQLite has one writer, so the two cannot overlap there."""
    db: Database = client.app.state.db
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: an assignment and a move cannot overlap")
    reviewer = login(client, "demo-reviewer-community")  # of C01
    household = household_id("DB-C01-0002")
    body = assignment(client, "DB-C01-0002", visit_id="0d5c3a51-7b0e-4d8e-9b59-2b6f0c6f1a11")

    async def assign_while_moving() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            db.engine.connect() as move,
        ):
            await move.execute(select(Household.id).where(Household.id == household).with_for_update())
            await move.execute(
                update(Household).where(Household.id == household).values(community_id=node_id("C02"))
            )
            post = asyncio.ensure_future(http.post("/api/v1/visits", json=body, headers=reviewer))
            try:
                await waiting_on_locks(db, 1)
            finally:
                await move.commit()
            return await post

    answer = client.blocking_portal.call(assign_while_moving)
    assert answer.status_code == 404, answer.text  # the household is no longer in this reviewer's area
    admin = login(client, "demo-admin")
    assert client.get(f"/api/v1/visits/{body['id']}", headers=admin).status_code == 404


def test_a_review_decision_sent_again_answers_the_visit_as_decided(client: Client) -> None:
    """A reviewer's console that lost the answer sends the decision again. An approval has moved the visit
    to the next level, where this reviewer has no say: the retry must hear "done", not 403, and decide
    nothing twice. Another decision, or another reason, is no retry and is refused as before."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    reason = "邻居访谈记录不清楚，请补充"
    desk = login(client, "demo-reviewer-community", device="desk")
    on_screen = seen(client, visit, desk)
    returned = review(client, visit, "demo-reviewer-community", "return", reason, on=on_screen)
    again = review(client, visit, "demo-reviewer-community", "return", f"  {reason} ", on=on_screen)
    assert (returned.status_code, again.status_code) == (200, 200), again.text
    assert again.json() == returned.json()
    other_reason = review(client, visit, "demo-reviewer-community", "return", "另一个理由")
    assert (other_reason.status_code, other_reason.json()["error"]["code"]) == (409, "not_in_review")

    assert submit(client, visit, worker).status_code == 200
    on_screen = seen(client, visit, desk)
    approved = review(client, visit, "demo-reviewer-community", "approve", on=on_screen)
    assert approved.json()["review_level"] == 2
    again = review(client, visit, "demo-reviewer-community", "approve", on=on_screen)
    assert again.status_code == 200, again.text
    assert again.json() == approved.json()
    rejected = review(client, visit, "demo-reviewer-community", "reject", "不符合条件")
    assert (rejected.status_code, rejected.json()["error"]["code"]) == (403, "not_your_review_level")

    timeline = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=worker).json()
    assert [t["action"] for t in timeline].count("approve") == 1
    assert [t["action"] for t in timeline].count("return") == 1
    decided = [r.action for r in audit_rows(client) if r.entity_id == visit["id"]]
    assert (decided.count("visit.approve"), decided.count("visit.return")) == (1, 1)


def test_a_decision_on_a_visit_changed_since_the_reviewer_read_it_is_refused(client: Client) -> None:
    """A reviewer returns a file, the team corrects an answer and resubmits, and the reviewer approves
    from the screen they had: the approval was taken on answers they never read. It is refused, naming
    what changed, and nothing moves until they look again."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    reviewer = "demo-reviewer-community"
    returned = review(client, visit, reviewer, "return", "邻居访谈记录不清楚，请补充")
    assert returned.status_code == 200, returned.text
    on_screen = seen(client, visit, login(client, reviewer, device="desk"))
    assert on_screen["version"] == returned.json()["version"]
    fix = next(a for a in complete_answers(client, visit, worker) if a.item == "neighbours.who_lives_here")
    post_answers(client, visit, worker, [Filled(fix.template, fix.item, fix.row_id, "户主一人独居 (alone)")])
    resubmitted = submit(client, visit, worker)
    assert resubmitted.status_code == 200, resubmitted.text

    stale = review(client, visit, reviewer, "approve", on=on_screen)
    assert stale.status_code == 409, stale.text
    error = stale.json()["error"]
    assert error["code"] == "visit_changed"
    assert error["details"]["version"] == {"seen": on_screen["version"], "now": resubmitted.json()["version"]}
    now = client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()
    assert (now["status"], now["review_level"], now["version"]) == (
        "in_review",
        1,
        resubmitted.json()["version"],
    )
    assert [r for r in audit_rows(client, "visit.approve") if r.entity_id == visit["id"]] == []

    unversioned = client.post(
        f"/api/v1/visits/{visit['id']}/review",
        json={"decision": "approve", "reason": PLACEHOLDER_PHOTOS, "accept_missing_evidence": True},
        headers=login(client, reviewer, device="desk"),
    )
    assert unversioned.status_code == 422, unversioned.text
    assert unversioned.json()["error"]["code"] == "validation_error"
    assert review(client, visit, reviewer, "approve").json()["review_level"] == 2  # read again: decided


def test_a_county_visit_stated_where_none_was_required_is_checked_too(client: Client) -> None:
    """The approver may state the county's home visit on a file that did not require it, and the day goes
    into the file's timeline. Only a required day was checked: tomorrow's went into the record."""
    plain = _recheck_at_the_last_level(client, "DB-C01-0003", [])
    desk = login(client, "demo-approver-district", device="desk")
    tomorrow = (today() + dt.timedelta(days=1)).isoformat()
    body = {"decision": "approve", "reason": PLACEHOLDER_PHOTOS, "accept_missing_evidence": True}
    refused = client.post(
        f"/api/v1/visits/{plain['id']}/review",
        json=body | seen(client, plain, desk) | {"county_home_visit_on": tomorrow},
        headers=desk,
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "validation_error"), refused.text
    assert refused.json()["error"]["details"][0]["field"] == "county_home_visit_on"
    approved = review(client, plain, "demo-approver-district", "approve")  # today's: stated and shown
    assert approved.status_code == 200, approved.text
    events = client.get(f"/api/v1/visits/{plain['id']}/timeline", headers=desk).json()
    assert events[-1]["county_home_visit_on"] == today().isoformat()


def test_someone_who_decides_at_no_level_hears_so_whatever_version_they_read(client: Client) -> None:
    """A field worker or an administrator never decides a review. Sent with a view of the file from
    before it changed, their decision was answered 409 visit_changed, as if reading it again would let
    them decide; it is not theirs, and they hear 403 not_your_review_level. A reviewer of the chain who
    read it before it changed is still told to read it again: it may have just reached their level (or
    left it)."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    before = {
        name: seen(client, visit, login(client, name, device="desk"))
        for name in ("demo-worker-1", "demo-admin", "demo-reviewer-subdistrict")
    }
    assert review(client, visit, "demo-reviewer-community", "approve").status_code == 200  # now at level 2

    for name in ("demo-worker-1", "demo-admin"):
        refused = review(client, visit, name, "approve", on=before[name])
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "not_your_review_level")
    stale = review(
        client, visit, "demo-reviewer-subdistrict", "approve", on=before["demo-reviewer-subdistrict"]
    )
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "visit_changed")
    read_again = review(client, visit, "demo-reviewer-subdistrict", "approve")
    assert read_again.status_code == 200 and read_again.json()["review_level"] == 3, read_again.text


def _recheck_at_the_last_level(client: Client, registry_no: str, extra: list[Filled]) -> dict[str, Any]:
    """A re-check answered in full plus `extra`, submitted and approved up to the last level."""
    visit = assign(client, registry_no, purpose="scheduled_recheck")
    worker = login(client, TEAM[0])
    post_answers(client, visit, worker, [*complete_answers(client, visit, worker), *extra])
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for reviewer in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        assert review(client, visit, reviewer, "approve", county_visit=False).status_code == 200
    return visit


def test_the_county_confirms_a_resubmitted_file_on_the_home_visit_it_made_before_returning_it(
    client: Client,
) -> None:
    """The county visits the household while deciding a complained-about file, returns it for what it
    found, and confirms the resubmitted file on that visit. The day was refused as before the (latest)
    submission, so the approver had to state a day they did not visit."""
    approver = "demo-approver-district"
    visit = _recheck_at_the_last_level(
        client, "DB-C01-0005", [Filled("form.recheck", "recheck_reason", None, "tip_off")]
    )

    async def submitted_days_ago(session: AsyncSession) -> None:
        earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        visit_id = uuid.UUID(visit["id"])
        await session.execute(update(Visit).where(Visit.id == visit_id).values(submitted_at=earlier))
        await session.execute(
            update(VisitTransition)
            .where(VisitTransition.visit_id == visit_id, VisitTransition.action == "submit")
            .values(at=earlier)
        )
        await session.commit()

    run_db(client, submitted_days_ago)
    visited = today() - dt.timedelta(days=2)
    assert review(client, visit, approver, "return", "户主之子已就业，请补充收入材料").status_code == 200
    worker = login(client, TEAM[0])
    assert submit(client, visit, worker).status_code == 200
    for reviewer in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        assert review(client, visit, reviewer, "approve", county_visit=False).status_code == 200
    desk = login(client, approver, device="desk")
    body = {"decision": "approve", "reason": PLACEHOLDER_PHOTOS, "accept_missing_evidence": True}
    body |= seen(client, visit, desk)
    for day, status in [(today() - dt.timedelta(days=4), 422), (visited, 200)]:
        decided = client.post(
            f"/api/v1/visits/{visit['id']}/review",
            json=body | {"county_home_visit_on": day.isoformat()},
            headers=desk,
        )
        assert decided.status_code == status, (day, decided.text)  # not before the file was first sent up
    assert decided.json()["status"] == "approved"


def test_the_county_visits_a_file_filed_separately_or_complained_about_itself(client: Client) -> None:
    """The county confirms most files on the papers, but makes its own home visit for a case filed
    separately (a member is a near relative of dibao staff) and for one with complaints (2021 办法 Art 20;
    research.md §2 steps 2a and 5). The approver confirmed both from the desk like any other."""
    approver = "demo-approver-district"
    plain = _recheck_at_the_last_level(client, "DB-C01-0003", [])
    assert review(client, plain, approver, "approve", county_visit=False).status_code == 200

    near_relative = [
        Filled("step.check", "near_relative_declared", None, True),
        Filled(
            "step.check", "near_relative_details", None, "户主之妹为社区低保专干 (her sister handles dibao)"
        ),
        Filled("step.check", "near_relative_filed_separately", None, True),
    ]
    tip_off = [Filled("form.recheck", "recheck_reason", None, "tip_off")]
    for registry_no, trigger, why in [
        ("DB-C01-0004", near_relative, "step.check:near_relative_declared"),
        ("DB-C01-0005", tip_off, "form.recheck:recheck_reason"),
    ]:
        visit = _recheck_at_the_last_level(client, registry_no, trigger)
        for decision, reason in [("approve", None), ("reject", "收入超过低保标准")]:
            refused = review(client, visit, approver, decision, reason, county_visit=False)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "county_visit_required"
            assert (
                error["details"][0]["field"] == "county_home_visit_on"
                and why in error["details"][0]["message"]
            )
        desk = login(client, approver, device="desk")
        tomorrow = {"decision": "approve", "reason": PLACEHOLDER_PHOTOS, "accept_missing_evidence": True}
        tomorrow |= seen(client, visit, desk) | {
            "county_home_visit_on": (today() + dt.timedelta(days=1)).isoformat()
        }
        future = client.post(f"/api/v1/visits/{visit['id']}/review", json=tomorrow, headers=desk)
        assert (future.status_code, future.json()["error"]["code"]) == (422, "validation_error"), future.text
        assert client.get(f"/api/v1/visits/{visit['id']}", headers=desk).json()["status"] == "in_review"

        visited = review(client, visit, approver, "approve")  # the county's home visit made today
        assert visited.status_code == 200 and visited.json()["status"] == "approved", visited.text
        (row,) = [
            r
            for r in audit_rows(client, "visit.approve")
            if r.entity_id == visit["id"] and r.changes["level"] == 3
        ]
        assert row.changes["county_home_visit_on"] == today().isoformat()
        worker = login(client, TEAM[0])
        events = client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=worker).json()
        assert [(e["action"], e["level"], e["county_home_visit_on"]) for e in events[-3:]] == [
            ("approve", 1, None),  # the levels below decide on the papers
            ("approve", 2, None),
            ("approve", 3, today().isoformat()),  # the file shows the county went, and when
        ]

    objected, worker = completed_visit(client, "DB-C01-0006")  # the filler's objection, settled, and tip-off
    propose(client, objected, worker)
    assert submit(client, objected, worker).status_code == 200
    for reviewer in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
        assert review(client, objected, reviewer, "approve", county_visit=False).status_code == 200
    refused = review(client, objected, approver, "approve", county_visit=False)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "county_visit_required"
    assert (
        "step.publicize:objections, step.publicize:tip_offs"
        in refused.json()["error"]["details"][0]["message"]
    )


def _benefit_set_at_a_desk(client: Client, registry_no: str, fen: int) -> None:
    """A supervisor corrects the household's monthly benefit (a guarded field) through the API."""
    desk = login(client, "demo-reviewer-community", device="desk")
    url = f"/api/v1/households/{household_id(registry_no)}"
    version = client.get(url, headers=desk).json()["version"]
    edited = client.patch(url, json={"version": version, "monthly_benefit_fen": fen}, headers=desk)
    assert edited.status_code == 200, edited.text


def _benefit(client: Client, registry_no: str) -> int:
    desk = login(client, "demo-reviewer-community", device="desk")
    household = client.get(f"/api/v1/households/{household_id(registry_no)}", headers=desk).json()
    return int(household["monthly_benefit_fen"])


def test_the_last_level_refuses_a_proposal_the_household_has_outgrown(client: Client) -> None:
    """A raise is checked against the household's benefit when proposed. When the benefit rose past it
    before the county approved (a supervisor's correction, another visit approved), the approval still
    carried the "raise" out, cutting the household's benefit under the name of a raise."""
    before = _benefit(client, "DB-C01-0002")
    raised = before + 20000
    visit = recheck_decided(client, "DB-C01-0002", "increase", "raise", raised)
    _benefit_set_at_a_desk(client, "DB-C01-0002", before + 30000)

    refused = review(client, visit, "demo-approver-district", "approve")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "proposal_outdated"
    assert error["details"] == {
        "proposal": {"outcome": "raise", "amount_fen": raised},
        "monthly_benefit_fen": before + 30000,
    }
    assert _benefit(client, "DB-C01-0002") == before + 30000  # nothing carried out
    desk = login(client, "demo-approver-district", device="desk")
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=desk).json()["status"] == "in_review"
    returned = review(client, visit, "demo-approver-district", "return", "请按现发放金额重新提出意见")
    assert returned.status_code == 200, returned.text  # the way out: the team proposes again


def test_the_last_level_refuses_a_raise_for_a_household_stopped_meanwhile(client: Client) -> None:
    """Two re-checks of one household are open at once (a scheduled one, one after a tip-off). The county
    stops the benefit on one, then approves the other's raise: the raise set the amount again on a
    household still marked exited, which every device showed as exited and paid."""
    before = _benefit(client, "DB-C01-0002")
    raised = before + 20000
    raise_visit = recheck_decided(client, "DB-C01-0002", "increase", "raise", raised)
    stop_visit = recheck_decided(client, "DB-C01-0002", "stop", "stop", None)
    assert review(client, stop_visit, "demo-approver-district", "approve").status_code == 200
    assert _benefit(client, "DB-C01-0002") == 0

    refused = review(client, raise_visit, "demo-approver-district", "approve")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "proposal_outdated"
    desk = login(client, "demo-reviewer-community", device="desk")
    household = client.get(f"/api/v1/households/{household_id('DB-C01-0002')}", headers=desk).json()
    assert (household["status"], household["monthly_benefit_fen"]) == ("exited", 0)


def test_an_amended_revision_of_an_applied_outcome_is_approved_again(client: Client) -> None:
    """An amended revision carries its approved proposal over, already in effect on the household: its
    re-approval changes nothing and is no outdated proposal. Once the benefit moved on, it is one."""
    before = _benefit(client, "DB-C01-0002")
    visit = recheck_decided(client, "DB-C01-0002", "increase", "raise", before + 20000)
    assert review(client, visit, "demo-approver-district", "approve").status_code == 200
    assert _benefit(client, "DB-C01-0002") == before + 20000
    worker = login(client, TEAM[0])

    for outcome_moved_on in (False, True):
        revision = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker).json()
        assert revision["proposal"]["outcome"] == "raise"
        assert submit(client, revision, worker).status_code == 200
        for reviewer in ("demo-reviewer-community", "demo-reviewer-subdistrict"):
            assert review(client, revision, reviewer, "approve").status_code == 200
        if outcome_moved_on:
            _benefit_set_at_a_desk(client, "DB-C01-0002", before + 25000)
        decided = review(client, revision, "demo-approver-district", "approve")
        if outcome_moved_on:
            assert decided.status_code == 409 and decided.json()["error"]["code"] == "proposal_outdated"
            assert _benefit(client, "DB-C01-0002") == before + 25000
        else:
            assert decided.status_code == 200 and decided.json()["status"] == "approved", decided.text
            assert _benefit(client, "DB-C01-0002") == before + 20000
        visit = revision


def test_only_the_last_level_refuses_a_file(client: Client) -> None:
    """Refusal (不予确认) is the county's decision (2021 办法 Art 21; research.md §2 step 6b): the community
    evaluation group and the subdistrict give an opinion and pass the file on, or return it to the team.
    A refusal at their level locked the visit for good, and the county never saw the file."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    refused = review(client, visit, "demo-reviewer-community", "reject", "收入超过低保标准")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "reject_at_last_level_only")
    assert client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["status"] == "in_review"

    assert review(client, visit, "demo-reviewer-community", "approve").status_code == 200
    refused = review(client, visit, "demo-reviewer-subdistrict", "reject", "收入超过低保标准")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "reject_at_last_level_only")

    assert review(client, visit, "demo-reviewer-subdistrict", "approve").status_code == 200
    rejected = review(client, visit, "demo-approver-district", "reject", "收入超过低保标准")
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["locked_at"] is not None) == ("rejected", True)


DELEGATED_RULES = """
code: delegated
version: 1
calendars: [cn-2025, cn-2026]
review_levels:
  - {code: community_evaluation, label: {zh: 社区评议小组, en: Community evaluation group},
     role: reviewer, node_level: community, deadline_working_days: 3}
  - {code: subdistrict_confirmation, label: {zh: 街道审核确认, en: Subdistrict confirmation},
     role: reviewer, node_level: subdistrict, deadline_working_days: 10, after_publicity: true}
visit_due_working_days: {new_application: 3, scheduled_recheck: 10, tip: 5, data_match: 5}
templates:
  new_application: [step.check, step.visit, step.ask, step.look, step.publicize, form.home_visit,
                    form.employment_income, form.schooling]
  scheduled_recheck: [step.check, step.visit, step.ask, step.look, form.recheck, form.employment_income]
  tip: [step.check, step.visit, step.ask, step.look, form.recheck]
  data_match: [step.check, step.visit, step.ask, step.look, form.recheck]
"""


def test_a_file_waiting_past_a_new_rule_packs_last_level_waits_at_its_last(
    client: Client, app_settings: Settings, tmp_path: Path
) -> None:
    """A deployment that delegates confirmation to the subdistrict (research.md §2: 20 working days when
    delegated) replaces the three-level pack with a two-level one. A file already waiting at level 3 made
    every read of it, and every visit list holding it, a 500; nobody could decide it. It now waits at the
    new pack's last level, the confirming one, and is decided there under the new pack."""
    visit, worker = completed_visit(client)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    review(client, visit, "demo-reviewer-community", "approve")
    assert review(client, visit, "demo-reviewer-subdistrict", "approve").json()["review_level"] == 3
    rules = tmp_path / "delegated.yaml"
    rules.write_text(DELEGATED_RULES)
    delegated = msgspec.structs.replace(app_settings, rules_file=str(rules))
    with started(delegated) as after:
        seen = after.get(f"/api/v1/visits/{visit['id']}", headers=login(after, TEAM[0]))
        assert seen.status_code == 200, seen.text
        assert (seen.json()["review_level"], seen.json()["review_level_code"]) == (
            2,
            "subdistrict_confirmation",
        )
        listed = after.get("/api/v1/visits", headers=login(after, "demo-reviewer-subdistrict"))
        assert listed.status_code == 200, listed.text
        assert visit["id"] in {v["id"] for v in listed.json()["items"]}
        # In the very words of its level-2 approval, the last step on the timeline: no retry of it, since
        # that approval moved the file on and this one finds it still waiting at the level it decides.
        decided = review(after, visit, "demo-reviewer-subdistrict", "approve")
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "approved"
        timeline = after.get(f"/api/v1/visits/{visit['id']}/timeline", headers=login(after, TEAM[0])).json()
        assert (timeline[-1]["level"], timeline[-1]["level_code"], timeline[-1]["rules"]) == (
            2,
            "subdistrict_confirmation",
            "delegated@1",
        )


def test_a_purpose_the_rule_pack_leaves_out_is_a_422(
    client: Client, app_settings: Settings, tmp_path: Path
) -> None:
    """A locality's pack may list only the purposes it runs (no data-match visits without a data feed,
    research.md §11). Assigning a visit of another purpose answered 500."""
    rules = tmp_path / "no-data-match.yaml"
    rules.write_text(
        DELEGATED_RULES.replace(", data_match: 5", "").replace(
            "  data_match: [step.check, step.visit, step.ask, step.look, form.recheck]\n", ""
        )
    )
    with started(msgspec.structs.replace(app_settings, rules_file=str(rules))) as local:
        body = assignment(local, "DB-C01-0002", purpose="data_match")
        refused = local.post("/api/v1/visits", json=body, headers=login(local, "demo-reviewer-community"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "purpose_not_in_rules"
        assert refused.json()["error"]["details"][0]["field"] == "purpose"
        tip = local.post(
            "/api/v1/visits",
            json=body | {"purpose": "tip"},
            headers=login(local, "demo-reviewer-community"),
        )
        assert tip.status_code == 201, tip.text
