"""A household's job referrals across visits: the third unjustified refusal of a member (Art 45)."""

from __future__ import annotations

import uuid
from typing import Any

from server.domain import id_numbers
from server.domain.filled import Filled
from tests.helpers import Client, household_id, login
from tests.visit_flow import LEVELS, TEAM, completed_visit, post_answers, propose, review, submit

FORM = "form.employment_income"
ID = "110101199003074258"


def _referral(member: str, day: str, job: str, response: str, reason: str | None = None) -> list[Filled]:
    row = uuid.uuid4()
    values = {"member_ref": member, "referred_on": day, "job": job, "response": response}
    if reason is not None:
        values["refusal_reason"] = reason
    return [Filled(FORM, f"job_referrals.{item}", row, value) for item, value in values.items()]


def _visit_with_referrals(client: Client, rows: list[list[Filled]]) -> tuple[dict[str, Any], dict[str, str]]:
    """A completed visit of DB-C01-0001 whose Form B lists exactly ``rows`` as its job referrals."""
    visit, worker = completed_visit(client, drop=lambda a: a.item.startswith("job_referrals"))
    post_answers(client, visit, worker, [answer for row in rows for answer in row])
    return visit, worker


def _approved(client: Client, visit: dict[str, Any], worker: dict[str, str]) -> None:
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for username in LEVELS:
        assert review(client, visit, username, "approve").status_code == 200


def _referrals(client: Client, username: str = "demo-reviewer-community") -> Any:
    response = client.get(
        f"/api/v1/households/{household_id('DB-C01-0001')}/job-referrals", headers=login(client, username)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _member(client: Client) -> str:
    admin = login(client, "demo-admin", device="members")
    household = client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=admin).json()
    return str(household["members"][0]["id"])


def test_the_third_unjustified_refusal_counts_once_approved_and_a_referral_recorded_twice_counts_once(
    client: Client,
) -> None:
    member = _member(client)
    first, worker = _visit_with_referrals(
        client,
        [
            _referral(member, "2026-03-01", "保洁员", "refused_unjustified", "不想去"),
            _referral(member, "2026-04-01", "保安", "refused_justified", "需照顾卧床老人"),
        ],
    )
    _approved(client, first, worker)
    # The re-check copies the first refusal (other spacing, a new row) and records two more.
    second, worker = _visit_with_referrals(
        client,
        [
            _referral(member, "2026-03-01", " 保洁员 ", "refused_unjustified", "不想去"),
            _referral(member, "2026-05-01", "快递员", "refused_unjustified", "嫌远"),
            _referral(member, "2026-06-01", "仓库管理", "refused_unjustified", "无"),
        ],
    )

    pending = _referrals(client)
    assert pending["refusals_that_reduce_or_stop"] == 3
    [counted] = pending["members"]
    assert counted["member_id"] == member
    assert [(r["referred_on"], r["response"], r["confirmed"]) for r in counted["referrals"]] == [
        ("2026-03-01", "refused_unjustified", True),
        ("2026-04-01", "refused_justified", True),
        ("2026-05-01", "refused_unjustified", False),
        ("2026-06-01", "refused_unjustified", False),
    ]
    assert counted["referrals"][2]["visit_id"] == second["id"]
    assert (counted["unjustified_refusals"], counted["confirmed_unjustified_refusals"]) == (3, 1)
    assert counted["reduce_or_stop_due"] is False  # the third is recorded, not yet checked by a reviewer

    _approved(client, second, worker)
    [counted] = _referrals(client)["members"]
    assert (counted["unjustified_refusals"], counted["confirmed_unjustified_refusals"]) == (3, 3)
    assert counted["reduce_or_stop_due"] is True


def test_a_removed_referral_row_does_not_count_and_a_correction_in_a_later_visit_wins(client: Client) -> None:
    member = _member(client)
    mistaken = _referral(member, "2026-03-01", "保洁员", "refused_unjustified")
    first, worker = _visit_with_referrals(
        client, [mistaken, _referral(member, "2026-04-01", "保安", "accepted")]
    )
    # The worker removes the row typed by mistake before submitting.
    post_answers(
        client, first, worker, [Filled(FORM, "job_referrals", mistaken[0].row_id, {"removed": True})]
    )
    _approved(client, first, worker)
    # A later visit corrects the accepted referral: it was refused after all, with a good reason.
    _visit_with_referrals(client, [_referral(member, "2026-04-01", "保安", "refused_justified", "腿伤未愈")])

    [counted] = _referrals(client)["members"]
    assert [(r["referred_on"], r["response"], r["confirmed"]) for r in counted["referrals"]] == [
        ("2026-04-01", "refused_justified", False)
    ]
    assert counted["referrals"][0]["refusal_reason"] == "腿伤未愈"
    assert counted["unjustified_refusals"] == 0


def test_referrals_are_read_within_jurisdiction_with_id_numbers_masked(client: Client) -> None:
    member = _member(client)
    _visit_with_referrals(
        client, [_referral(member, "2026-03-01", "保洁员", "refused_unjustified", f"身份证{ID}丢了")]
    )
    reason = _referrals(client, TEAM[0])["members"][0]["referrals"][0]["refusal_reason"]
    assert reason == f"身份证{id_numbers.mask(ID)}丢了" and ID not in reason
    elsewhere = client.get(
        f"/api/v1/households/{household_id('DB-C01-0001')}/job-referrals",
        headers=login(client, "demo-worker-3"),
    )
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"
