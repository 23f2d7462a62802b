"""What the publicize step leaves owed: feedback to real-name objectors and reporters, petition deadlines."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from server.domain.filled import Filled
from server.services.rules import today
from tests.helpers import Client, login, node_id
from tests.visit_flow import LEVELS, TEAM, assign, completed_visit, post_answers, propose, review, submit

STEP = "step.publicize"


def _row(group: str, **values: Any) -> list[Filled]:
    row = uuid.uuid4()
    return [Filled(STEP, f"{group}.{item}", row, value) for item, value in values.items()]


def _days_ago(days: int) -> str:
    return (today() - dt.timedelta(days=days)).isoformat()


def _follow_ups(client: Client, username: str = "demo-reviewer-community", **query: str) -> list[Any]:
    response = client.get("/api/v1/visits/follow-ups", params=query, headers=login(client, username))
    assert response.status_code == 200, response.text
    return list(response.json())


def _objection(real_name: bool, outcome: str, feedback_given_on: str | None = None) -> list[Filled]:
    values = {
        "received_on": _days_ago(8),
        "channel": "in_person",
        "real_name": real_name,
        "content": "他家开了店",
    }
    values |= {"action": "reinvestigate", "outcome": outcome}
    if outcome != "pending":
        values["outcome_details"] = "经重新调查，店铺为亲戚所开"
    if feedback_given_on:
        values["feedback_given_on"] = feedback_given_on
    return _row("objections", **values)


def test_feedback_owed_to_real_name_objectors_and_reporters_and_petition_deadlines(client: Client) -> None:
    visit = assign(client)
    worker = login(client, TEAM[0])
    owed_objection = _objection(True, "not_upheld")
    tip_off = _row(
        "tip_offs", received_on=_days_ago(30), channel="tip_box", real_name=True, content="x", verified=True
    )
    late_petition = _row("petitions", received_on=_days_ago(20), content="低保金发放")
    answered_petition = _row(
        "petitions",
        received_on=_days_ago(70),
        content="y",
        acceptance_notified_on=_days_ago(65),
        concluded_on=_days_ago(5),
    )
    rows = [
        owed_objection,
        _objection(False, "upheld"),  # anonymous: nobody to tell
        _objection(True, "pending"),  # no outcome to tell yet
        _objection(True, "upheld", feedback_given_on=_days_ago(1)),  # told already
        tip_off,
        _row(
            "tip_offs", received_on=_days_ago(3), channel="phone", real_name=True, content="z", verified=False
        ),
        late_petition,
        answered_petition,
    ]
    post_answers(client, visit, worker, [answer for row in rows for answer in row])

    listed = _follow_ups(client)
    assert [(f["kind"], f["row_id"], f["due"], f["days_overdue"]) for f in listed] == [
        ("petition_acceptance", str(late_petition[0].row_id), _days_ago(5), 5),
        (
            "petition_conclusion",
            str(late_petition[0].row_id),
            (today() + dt.timedelta(days=40)).isoformat(),
            -40,
        ),
        ("tip_off_feedback", str(tip_off[0].row_id), None, None),  # received 30 days ago
        ("objection_feedback", str(owed_objection[0].row_id), None, None),  # 8 days ago
    ]
    assert {(f["visit_id"], f["registry_no"]) for f in listed} == {(visit["id"], "DB-C01-0001")}
    assert _follow_ups(client, TEAM[1]) == listed  # the team sees what they owe

    # The acceptance notice goes out and the objector is told: those leave the list; the petition's
    # conclusion is now due 60 days from its acceptance.
    row, objection_row = late_petition[0].row_id, owed_objection[0].row_id
    post_answers(
        client,
        visit,
        worker,
        [
            Filled(STEP, "petitions.acceptance_notified_on", row, _days_ago(2)),
            Filled(STEP, "objections.feedback_given_on", objection_row, _days_ago(0)),
        ],
    )
    assert [(f["kind"], f["due"]) for f in _follow_ups(client)] == [
        ("petition_conclusion", (today() + dt.timedelta(days=58)).isoformat()),
        ("tip_off_feedback", None),
    ]
    # A tip-off row removed (typed into the wrong visit) is owed nothing.
    post_answers(client, visit, worker, [Filled(STEP, "tip_offs", tip_off[0].row_id, {"removed": True})])
    assert [f["kind"] for f in _follow_ups(client)] == ["petition_conclusion"]


def test_follow_ups_stay_within_jurisdiction(client: Client) -> None:
    visit = assign(client)
    post_answers(client, visit, login(client, TEAM[0]), _objection(True, "upheld"))
    assert len(_follow_ups(client, "demo-reviewer-subdistrict")) == 1
    assert _follow_ups(client, "demo-worker-3") == []  # another community's worker
    other_community = str(node_id("C03"))
    assert _follow_ups(client, "demo-reviewer-subdistrict", community_id=other_community) == []


def test_an_amended_visit_owes_through_its_revision_only(client: Client) -> None:
    visit, worker = completed_visit(client)
    objection = _objection(True, "not_upheld")
    post_answers(client, visit, worker, objection)
    propose(client, visit, worker)
    submitted = submit(client, visit, worker)
    assert submitted.status_code == 200, submitted.text
    for username in LEVELS:
        assert review(client, visit, username, "approve").status_code == 200
    revision = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker).json()

    owed = [f for f in _follow_ups(client) if f["row_id"] == str(objection[0].row_id)]
    assert [f["visit_id"] for f in owed] == [revision["id"]]
