"""ID numbers stay masked wherever they hide: in a refused member edit's {"old", "new"}, in the value a
supervisor sets when resolving, as a JSON number, or typed into a free-text answer or note; in REST, in
the sync pull and in the exports alike, for anyone without a reveal. Both databases."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from server.domain.id_numbers import mask, mask_json_text, mask_text, mask_within
from tests.helpers import Client, audit_rows, household_id, login
from tests.server.test_households import new_household, valid_id
from tests.sync.test_sync_protocol import member_update_mutation
from tests.visit_flow import GPS, assign, completed_visit, review, submit

H1 = str(household_id("DB-C01-0001"))


def push(client: Client, headers: dict[str, str], mutations: list[dict[str, Any]]) -> Any:
    body = {"client_id": str(uuid.uuid4()), "schema_version": 1, "mutations": mutations}
    response = client.post("/api/v1/sync/push", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def pull_all(client: Client, headers: dict[str, str]) -> str:
    body = {"client_id": str(uuid.uuid4()), "schema_version": 1, "cursor": None, "limit": 5000}
    text = ""
    while True:
        response = client.post("/api/v1/sync/pull", json=body, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        text += response.text
        if not page["has_more"]:
            return text
        body["cursor"] = page["cursor"]


def a_member_of_h1(client: Client) -> dict[str, Any]:
    household = client.get(f"/api/v1/households/{H1}", headers=login(client, "demo-worker-1")).json()
    return dict(household["members"][0])


def id_number_edit(member: dict[str, Any], new: str) -> dict[str, Any]:
    return member_update_mutation(1, member, id_number=(member["id_number_masked"], new))


def test_a_refused_member_edit_keeps_the_typed_id_number_masked(client: Client) -> None:
    """A member.update.v1 carries changes.id_number = {"old", "new"}: one level below the key."""
    member = a_member_of_h1(client)
    typed = valid_id("13010219751224553")
    typo = typed[:17] + ("0" if typed[17] != "0" else "1")  # one wrong check digit: refused, quarantined
    result = push(client, login(client, "demo-worker-1"), [id_number_edit(member, typo)])
    assert result["results"][0]["status"] == "rejected"

    colleague = login(client, "demo-worker-2", device="other-tablet")  # a field worker: no reveal right
    listed = client.get("/api/v1/conflicts", headers=colleague).text
    assert typo not in listed and mask(typo) in listed
    pulled = pull_all(client, colleague)
    assert typo not in pulled and mask(typo) in pulled


def test_the_id_number_a_supervisor_sets_is_masked_in_the_resolution(client: Client) -> None:
    member = a_member_of_h1(client)
    proposed = valid_id("13010219751224553")
    result = push(client, login(client, "demo-worker-1"), [id_number_edit(member, proposed)])
    assert result["results"][0]["status"] == "applied_with_conflict"  # guarded: waits for a supervisor
    (conflict_id,) = result["results"][0]["conflict_ids"]

    # One that agrees with the member's sex and birth date, as any ID number written must.
    born, sex_digit = member["birth_date"].replace("-", ""), "3" if member["sex"] == "male" else "4"
    corrected = valid_id(f"130102{born}55{sex_digit}")
    reviewer = login(client, "demo-reviewer-community", device="desk")
    done = client.post(
        f"/api/v1/conflicts/{conflict_id}/resolve",
        json={"decision": "set_value", "value": corrected},
        headers=reviewer,
    )
    assert done.status_code == 200, done.text
    assert corrected not in done.text

    colleague = login(client, "demo-worker-2", device="other-tablet")
    listed = client.get("/api/v1/conflicts?status=resolved", headers=colleague)
    assert listed.status_code == 200
    assert corrected not in listed.text and mask(corrected) in listed.text
    assert corrected not in pull_all(client, colleague)


@pytest.mark.parametrize(
    "separator",
    [None, " ", "-", "\u3000"],
    ids=["whole", "spaced-6-8-4", "hyphenated", "full-width-spaced"],
)
def test_an_id_number_typed_into_an_answer_or_a_note_leaves_masked(
    client: Client, separator: str | None
) -> None:
    """Typed whole, or in the groups a card prints it in (area, birth date, sequence and check)."""
    visit = assign(client)
    worker1 = login(client, "demo-worker-1")
    number = valid_id("13010219800101123")
    full = separator.join((number[:6], number[6:14], number[14:])) if separator else number
    obs = {
        "id": str(uuid.uuid4()),
        "template": "form.home_visit",
        "item": "remote_reason",  # free text (an address item's answer stays out of exports altogether)
        "row_id": None,
        "value": f"户主住院 (身份证 {full})，电话访谈",
        "note": f"户主身份证号 {full}",
        "gps": GPS,
        "device_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    stored = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [obs]}, headers=worker1
    )
    assert stored.status_code == 200, stored.text

    colleague = login(client, "demo-worker-2", device="other-tablet")  # field worker, not a reveal role
    seen = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=colleague).text
    assert full not in seen and seen.count(mask(full)) == 2
    pulled = pull_all(client, colleague)
    assert full not in pulled and mask(full) in pulled

    reviewer = login(client, "demo-reviewer-community", device="desk")
    export = client.get("/api/v1/exports/observations.csv", headers=reviewer)
    assert export.status_code == 200
    assert full not in export.text and mask(full) in export.text
    assert audit_rows(client, "member.reveal_id") == []


def test_an_id_number_sent_as_a_json_number_is_kept_masked(
    client: Client,
) -> None:
    """mask_within masks only str values: a client bug sending the number as a JSON number keeps it whole."""
    full = valid_id("13010219800101123")
    assert full[-1] != "X"
    worker1 = login(client, "demo-worker-1")
    mutation = {
        "op": "member.create.v1",
        "seq": 1,
        "mutation_id": str(uuid.uuid4()),
        "household_id": H1,
        "member": {"id": str(uuid.uuid4()), "name": "张三", "relation": "child", "id_number": int(full)},
    }
    result = push(client, worker1, [mutation])
    assert result["results"][0]["code"] == "malformed_mutation"
    colleague = login(client, "demo-worker-2", device="other-tablet")
    listed = client.get("/api/v1/conflicts", headers=colleague).text
    assert full not in listed and mask(full) in listed


def test_masking_text_finds_numbers_standing_alone_in_any_digits() -> None:
    full = valid_id("13010219800101123")
    wide = full.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    assert mask_text(f"身份证{wide}。") == f"身份证{wide[:3]}{'*' * 15}。"
    assert mask_text(f"号码 {full[:15]} 旧证") == f"号码 {mask(full[:15])} 旧证"  # the old 15-digit form
    spaced, old = f"{full[:6]} {full[6:14]} {full[14:]}", f"{full[:6]}-{full[6:12]}-{full[12:15]}"
    assert mask_text(f"身份证 {spaced}。") == f"身份证 {mask(spaced)}。"  # as a card prints it
    assert mask_text(f"旧证{old}") == f"旧证{mask(old)}"
    wide_spaced = f"{wide[:6]}\u3000{wide[6:14]}\u3000{wide[14:]}"  # a stored answer, read as JSON text
    assert (
        mask_json_text(json.dumps(f"号 {wide_spaced}", ensure_ascii=False).encode())
        == json.dumps(f"号 {mask(wide_spaced)}", ensure_ascii=False, separators=(",", ":")).encode()
    )
    # Groups that are not an ID number's: a phone number, two separators of different kinds.
    for kept in ("电话 138 0013 8000", f"{full[:6]} {full[6:14]}-{full[14:]}"):
        assert mask_text(kept) == kept
    for kept in ("电话 13800138000", f"订单 {full}9", "sha " + "ab" * 32, "门牌 3 号"):
        assert mask_text(kept) == kept
    # Letters glued to it: a label typed without a space (身份证 in pinyin initials), a unit after it.
    for glued in (f"ID{full}", f"sfz{full}号", f"{full}hao"):
        assert full not in mask_text(glued) and mask(full) in mask_text(glued), glued
    # Long runs of digits in a hexadecimal word (a photo's SHA-256 written into a note) are no ID number.
    for kept in (
        "sha256 9f86d081884c7d659a2f" + full[:17] + "0e4f1b2b0b822cd15d6c15b0f00a08",
        f"ad{full[:17]}0",
    ):
        assert mask_text(kept) == kept
    assert mask_within(
        {"a": [f"x {full}"], "id_number": {"new": int(full[:17])}, "lat": 38.1234567890123456}
    ) == {
        "a": [f"x {mask(full)}"],
        "id_number": {"new": mask(full[:17])},
        "lat": 38.1234567890123456,
    }


def test_an_id_number_typed_into_an_amount_is_refused_and_one_stored_before_leaves_masked(
    client: Client,
) -> None:
    """A numeric keyboard takes an ID number as readily as an amount: refused when answered, and one
    already stored (answered before the check, or kept in a quarantined mutation) goes out masked."""
    visit = assign(client)
    worker1 = login(client, "demo-worker-1")
    full = valid_id("13010219800101123")
    assert full[-1] != "X"
    obs = {
        "id": str(uuid.uuid4()),
        "template": "step.check",
        "item": "utilities_fen",
        "row_id": None,
        "value": int(full),
        "gps": GPS,
        "device_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    refused = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [obs]}, headers=worker1
    )
    assert refused.status_code == 422, refused.text
    assert "15 digits" in refused.text and full not in refused.text
    amount = obs | {"id": str(uuid.uuid4()), "value": 99_999_999_999_999}  # 14 digits: a (huge) amount
    assert (
        client.post(
            f"/api/v1/visits/{visit['id']}/observations", json={"observations": [amount]}, headers=worker1
        ).status_code
        == 200
    )

    assert mask_within({full: "x", "fen": int(full), "old": -int(full[:15]), "n": 99_999_999_999_999}) == {
        mask(full): "x",
        "fen": mask(full),
        "old": mask(f"-{full[:15]}"),
        "n": 99_999_999_999_999,
    }


def test_an_id_number_typed_into_a_removal_reason_leaves_the_history_masked(client: Client) -> None:
    """A member removed through sync keeps the device's reason as its version's note: free text."""
    member = a_member_of_h1(client)
    typed = valid_id("13010219751224553")
    removal = {
        "op": "member.remove.v1",
        "seq": 1,
        "mutation_id": str(uuid.uuid4()),
        "member_id": member["id"],
        "base_version": member["version"],
        "reason": f"已迁出，身份证 {typed}",
    }
    assert push(client, login(client, "demo-worker-1"), [removal])["results"][0]["status"] == "applied"
    history = client.get(f"/api/v1/members/{member['id']}/history", headers=login(client, "demo-worker-2"))
    assert history.status_code == 200
    assert history.json()[-1]["note"] == f"已迁出，身份证 {mask(typed)}"
    assert typed not in history.text


def test_an_id_number_typed_into_a_proposal_or_a_review_reason_leaves_masked(client: Client) -> None:
    visit, worker = completed_visit(client)
    full = valid_id("13010219800101123")
    proposed = client.put(
        f"/api/v1/visits/{visit['id']}/proposal",
        json={"outcome": "no_change", "reason": f"户主 {full} 情况无变化"},
        headers=worker,
    )
    assert proposed.status_code == 200, proposed.text
    assert full not in proposed.text and mask(full) in proposed.text
    assert submit(client, visit, worker).status_code == 200
    returned = review(client, visit, "demo-reviewer-community", "return", f"请核对 {full} 的签名")
    assert returned.status_code == 200, returned.text

    colleague = login(client, "demo-worker-2", device="other-tablet")
    for shown in (
        client.get(f"/api/v1/visits/{visit['id']}", headers=colleague).text,
        client.get(f"/api/v1/visits/{visit['id']}/timeline", headers=colleague).text,
        pull_all(client, colleague),
    ):
        assert full not in shown and mask(full) in shown


def test_an_id_number_typed_into_an_address_or_a_members_details_leaves_masked(client: Client) -> None:
    """The address and a member's health, disability and employment are free text on the tablet: a
    number typed there leaves masked in the record, the list, the history and the pull."""
    full = valid_id("13010219800101123")
    worker1 = login(client, "demo-worker-1")
    household = client.get(f"/api/v1/households/{H1}", headers=worker1).json()
    moved = client.patch(
        f"/api/v1/households/{H1}",
        json={"version": household["version"], "address": f"解放街3号 户主身份证 {full}"},
        headers=worker1,
    )
    assert moved.status_code == 200, moved.text
    assert full not in moved.text and moved.json()["address"] == f"解放街3号 户主身份证 {mask(full)}"
    member = household["members"][0]
    details = {"health": f"病历{full}"[:32], "disability": f"残疾证 {full}", "employment": full}
    edited = client.patch(
        f"/api/v1/members/{member['id']}", json={"version": member["version"], **details}, headers=worker1
    )
    assert edited.status_code == 200, edited.text
    assert full not in edited.text and edited.json()["employment"] == mask(full)

    colleague = login(client, "demo-worker-2", device="other-tablet")
    for path in (
        f"/api/v1/households/{H1}",
        "/api/v1/households",
        f"/api/v1/households/{H1}/history",
        f"/api/v1/members/{member['id']}/history",
    ):
        shown = client.get(path, headers=colleague)
        assert shown.status_code == 200, shown.text
        assert full not in shown.text and mask(full) in shown.text, path
    pulled = pull_all(client, colleague)
    assert full not in pulled and pulled.count(mask(full)) >= 4


def test_an_id_number_typed_as_a_registry_number_is_refused_and_never_reaches_a_tablet(
    client: Client,
) -> None:
    """A registry number is shown as typed wherever its household is (lists sort and page by it), so
    unlike an address it cannot leave masked: an ID number given as one (a file numbered by the
    applicant's ID number) is refused through REST and sync alike, without echoing it."""
    full = valid_id("13010219800101123")
    worker1 = login(client, "demo-worker-1")
    for registry_no in (full, f"档案{full}"):
        refused = client.post("/api/v1/households", json=new_household(registry_no), headers=worker1)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "registry_no" and full not in refused.text
    household = new_household(full) | {"id": str(uuid.uuid4())}
    create = {"op": "household.create.v1", "seq": 1, "mutation_id": str(uuid.uuid4()), "household": household}
    (result,) = push(client, worker1, [create])["results"]
    assert (result["status"], result["code"]) == ("rejected", "validation_error")
    colleague = login(client, "demo-worker-2", device="other-tablet")
    assert full not in pull_all(client, colleague)
    assert full not in client.get("/api/v1/households?limit=500", headers=colleague).text


def test_a_disability_certificate_number_holding_an_id_number_leaves_masked(client: Client) -> None:
    """A second-generation disability certificate's number is the holder's ID number followed by the
    category (1-7) and the grade (1-4): typed into a member's disability or a note, it gives the whole ID
    number away unless masked too. Other runs of 19 or 20 digits (an order number) stay as written."""
    full = valid_id("13010219800101123")
    certificate = f"{full}42"  # limbs (4), grade 2
    assert mask_text(f"残疾证号{certificate}。") == f"残疾证号{mask(certificate)}。"
    assert mask_text(f"证 {full[:17]}X42") == f"证 {mask(full[:17] + 'X42')}"  # a check character X
    for kept in (f"订单 {full}9", f"订单 {full}95", f"订单 {full}421"):
        assert mask_text(kept) == kept

    member = a_member_of_h1(client)
    worker1 = login(client, "demo-worker-1")
    edited = client.patch(
        f"/api/v1/members/{member['id']}",
        json={"version": member["version"], "disability": f"肢体二级 {certificate}"},
        headers=worker1,
    )
    assert edited.status_code == 200, edited.text
    colleague = login(client, "demo-worker-2", device="other-tablet")
    shown = client.get(f"/api/v1/households/{H1}", headers=colleague).text
    assert full not in shown and mask(certificate) in shown
    assert full not in pull_all(client, colleague)


def test_a_create_sent_again_by_a_colleague_does_not_confirm_a_guessed_id_number(client: Client) -> None:
    """A member's history shows what its creation stored, the ID number masked. Sending that creation
    again with a guessed number answered 201 for the right guess and 409 for a wrong one, nothing
    audited: a field worker found a colleague's member's full number in a few hundred requests. Only
    the record's creator can send its create again; anyone else gets the same 409 whatever they guess."""
    worker1, worker2 = login(client, "demo-worker-1"), login(client, "demo-worker-2", device="other-tablet")
    full = valid_id("13010219800101123")
    member = {"id": str(uuid.uuid4()), "name": "李四", "relation": "child", "id_number": full}
    url = f"/api/v1/households/{H1}/members"
    assert client.post(url, json=member, headers=worker1).status_code == 201
    assert client.post(url, json=member, headers=worker1).status_code == 201  # the creator's retry
    wrong = member | {"id_number": valid_id("13010219800101124")}
    assert client.post(url, json=wrong, headers=worker1).json()["error"]["code"] == "created_otherwise"

    right, guessed = (client.post(url, json=m, headers=worker2) for m in (member, wrong))
    assert right.status_code == guessed.status_code == 409
    assert right.json() == guessed.json() and right.json()["error"]["code"] == "created_otherwise"

    household = client.get(f"/api/v1/households/{H1}", headers=worker2).json()
    v1 = client.get(f"/api/v1/households/{H1}/history", headers=worker2).json()[0]["data"]
    again = {k: v1[k] for k in ("registry_no", "community_id", "address", "lat", "lon", "status")}
    again |= {"recheck_class": v1["recheck_class"], "monthly_benefit_fen": v1["monthly_benefit_fen"]}
    for members in ([member], [wrong], [{k: v for k, v in member.items() if k != "id"}]):
        sent = client.post("/api/v1/households", json=again | {"id": H1, "members": members}, headers=worker1)
        assert sent.status_code == 409 and sent.json()["error"]["code"] == "created_otherwise", sent.text
    after = client.get(f"/api/v1/households/{H1}", headers=worker2).json()
    assert (after["version"], after["members"]) == (household["version"], household["members"])  # untouched

    pushed = push(
        client,
        worker2,
        [
            {
                "op": "member.create.v1",
                "seq": seq,
                "mutation_id": str(uuid.uuid4()),
                "household_id": H1,
                "member": m,
            }
            for seq, m in ((1, member), (2, wrong))
        ],
    )
    assert [r["code"] for r in pushed["results"]] == ["created_otherwise", "created_otherwise"]


def test_a_field_workers_proposed_id_number_goes_to_a_supervisor_even_when_it_is_the_stored_one(
    client: Client,
) -> None:
    """A field worker's change of an ID number waits for a supervisor. Answered `applied` with no
    conflict when the proposed number was the stored one, and `applied_with_conflict` otherwise, it told
    them whether a guess was right; now either kind of proposal waits for a supervisor alike."""
    member = a_member_of_h1(client)
    reviewer = login(client, "demo-reviewer-community", device="desk")
    stored = client.post(
        f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "test fixture"}, headers=reviewer
    ).json()["id_number"]
    wrong = valid_id(stored[:14] + ("0" if stored[14] != "0" else "1") + stored[15:17])
    worker2 = login(client, "demo-worker-2", device="other-tablet")
    results = push(
        client, worker2, [id_number_edit(member, stored), id_number_edit(member, wrong) | {"seq": 2}]
    )["results"]
    assert [r["status"] for r in results] == ["applied_with_conflict", "applied_with_conflict"], results
    assert all(len(r["conflict_ids"]) == 1 for r in results)
    shown = client.get(f"/api/v1/households/{H1}", headers=worker2).json()["members"][0]
    assert (shown["id_number_masked"], shown["version"]) == (mask(stored), member["version"])


def test_a_refused_birth_date_does_not_say_what_the_masked_id_number_holds(client: Client) -> None:
    """Digits 7-14 of an ID number are its holder's birth date, and the mask hides them. A member stored
    without a birth date showed it in the refusal of a wrong one ("the ID number says born ..."), and
    with the region and the check digit the mask leaves, that is the whole number."""
    worker1 = login(client, "demo-worker-1")
    full = valid_id("13010219800101123")
    member = {"name": "王五", "relation": "child", "id_number": full}
    added = client.post(f"/api/v1/households/{H1}/members", json=member, headers=worker1)
    assert added.status_code == 201, added.text
    assert added.json()["birth_date"] is None

    colleague = login(client, "demo-worker-2", device="other-tablet")
    refused = client.patch(
        f"/api/v1/members/{added.json()['id']}",
        json={"version": 1, "birth_date": "1990-06-15"},
        headers=colleague,
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "id_number_mismatch"
    assert [d["field"] for d in refused.json()["error"]["details"]] == ["body.birth_date"]
    assert "1980" not in refused.text and "19800101" not in refused.text


def numbers_fitting(masked: str, region: str, born: str, sex: str) -> list[str]:
    """Every valid ID number a colleague could write down from what the record shows: the masked number,
    the birth date and sex beside it, and the region code (the county's, known from the address)."""
    from server.domain.id_numbers import problem, sex_of

    known = region + born.replace("-", "")
    hidden = [i for i in range(len(known), 18) if masked[i] == "*"]
    found = []
    for n in range(10 ** len(hidden)):
        chars = list(known + masked[len(known) :])
        for i, digit in zip(hidden, f"{n:0{len(hidden)}d}", strict=True):
            chars[i] = digit
        for check in "0123456789X" if 17 in hidden else chars[17]:
            number = "".join(chars[:17]) + check
            if problem(number) is None and sex_of(number) == sex:
                found.append(number)
    return found


def test_the_mask_leaves_the_number_unguessable_next_to_the_birth_date(client: Client) -> None:
    """The mask showed the last three characters, the check digit among them. Next to the birth date the
    record shows, and the county code the address gives away, one digit of the number was hidden, and
    the check digit gave it back: anyone who saw the member's record had the full number. Now none of the
    sequence number (digits 15-17) nor the check digit shows: hundreds of numbers fit what is shown."""
    worker = login(client, "demo-worker-1")
    member = client.get(f"/api/v1/households/{H1}", headers=worker).json()["members"][0]
    reviewer = login(client, "demo-reviewer-community", device="desk")
    full = client.post(
        f"/api/v1/members/{member['id']}/reveal-id", json={"reason": "核对掩码强度"}, headers=reviewer
    ).json()["id_number"]
    fitting = numbers_fitting(member["id_number_masked"], full[:6], member["birth_date"], member["sex"])
    assert full in fitting and len(fitting) >= 100, member["id_number_masked"]
