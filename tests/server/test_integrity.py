"""The integrity checks beside a visit's evidence: what a supervisor sees flagged, and what is not.

Both databases; real JPEGs made with Pillow, uploaded through tus, named by look-step answers.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from typing import Any, get_args

from PIL import Image, ImageDraw
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.photos import IntegrityCheck
from server.db.models import Household
from server.domain.calendar import china_today
from server.domain.integrity import distance_m
from tests.helpers import Client, household_id, login, node_id, run_db
from tests.images import jpeg_with_gps
from tests.media.images import encode, evidence_exif, photo_like
from tests.tus import sha256, upload
from tests.visit_flow import (
    GPS,
    LEVELS,
    TEAM,
    assign,
    complete_answers,
    completed_visit,
    propose,
    review,
    submit,
)

Headers = dict[str, str]


def answer(
    client: Client,
    visit: dict[str, Any],
    worker: Headers,
    item: str,
    value: Any,
    gps: dict[str, Any],
    base: Any = None,
    template: str = "step.look",
) -> None:
    body = {
        "id": str(uuid.uuid4()),
        "template": template,
        "item": item,
        "value": value,
        "gps": gps,
        "device_time": "2026-11-30T08:00:00Z",
    } | ({"base": base} if base is not None else {})
    response = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [body]}, headers=worker
    )
    assert response.status_code == 200, response.text


def photographed(
    client: Client, registry_no: str, worker: Headers, photo: bytes, gps: dict[str, Any] = GPS
) -> Any:
    """A visit of the household whose kitchen photo is `photo`, uploaded."""
    visit = assign(client, registry_no)
    assert upload(client, worker, photo).status_code in (201, 204)
    answer(
        client, visit, worker, "home_photos", {"photos": [{"sha256": sha256(photo), "view": "kitchen"}]}, gps
    )
    return visit


def flags(client: Client, visit: dict[str, Any], headers: Headers, *checks: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=headers)
    assert response.status_code == 200, response.text
    return [f for f in response.json()["checks"] if f["check"] in checks]


def reencoded(photo: bytes) -> bytes:
    """The same photo saved again at a lower quality, its EXIF kept: another file, the same picture."""
    image = Image.open(io.BytesIO(photo))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=60, exif=image.info["exif"])
    return out.getvalue()


def test_a_photo_named_by_another_households_visit_is_flagged_with_what_the_reviewer_may_see(
    client: Client,
) -> None:
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    kitchen, other = jpeg_with_gps(seed=21), jpeg_with_gps(seed=22)
    first = photographed(client, "DB-C01-0001", worker, kitchen)
    again = photographed(client, "DB-C01-0002", worker, kitchen)  # the same file for another home
    copied = photographed(client, "DB-C01-0003", worker, reencoded(kitchen))  # a copy of it
    honest = photographed(client, "DB-C01-0004", worker, other)

    (reused,) = flags(client, again, reviewer, "photo_reused")
    assert (reused["sha256"], reused["other_visits"], reused["elsewhere"]) == (
        sha256(kitchen),
        [first["id"]],
        0,
    )
    assert reused["same_household"] is False and (reused["template"], reused["item"]) == (
        "step.look",
        "home_photos",
    )
    (copy,) = flags(client, copied, reviewer, "photo_reused", "photo_near_duplicate")
    assert copy["check"] == "photo_near_duplicate" and copy["bits"] <= 10
    assert sorted(copy["other_visits"]) == sorted([first["id"], again["id"]])
    assert flags(client, honest, reviewer, "photo_reused", "photo_near_duplicate") == []

    # The copy's household moves to another community: the reviewer of this one is told of a visit
    # elsewhere naming a copy, never which.
    move_to_another_community(client, "DB-C01-0003")
    (near,) = flags(client, first, reviewer, "photo_near_duplicate")
    assert (near["other_visits"], near["elsewhere"]) == ([], 1)
    assert str(copied["id"]) not in str(flags(client, first, reviewer, *CHECKS))


CHECKS = get_args(IntegrityCheck)


def move_to_another_community(client: Client, registry_no: str) -> None:
    """The household now belongs to C02, whose files a C01 reviewer does not see."""

    async def move(session: AsyncSession) -> None:
        moved = update(Household).where(Household.id == household_id(registry_no))
        await session.execute(moved.values(community_id=node_id("C02")))
        await session.commit()

    run_db(client, move)


PHOTO_CHECKS = tuple(c for c in CHECKS if c.startswith("photo_"))


def test_the_same_households_old_photo_is_flagged_as_its_own(client: Client) -> None:
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    kitchen = jpeg_with_gps(seed=23)
    photographed(client, "DB-C01-0001", worker, kitchen)
    later = photographed(client, "DB-C01-0001", worker, kitchen)
    (reused,) = flags(client, later, reviewer, "photo_reused")
    assert reused["same_household"] is True and "of this household" in reused["message"]


def test_a_photo_older_than_the_visit_or_taken_elsewhere_than_its_answer_is_flagged(client: Client) -> None:
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    # The tests' camera JPEG: taken 2026-03-14 in Sydney; the answer's fix is in Shijiazhuang.
    old_and_far = photographed(client, "DB-C01-0001", worker, jpeg_with_gps(seed=24))
    (old,) = flags(client, old_and_far, reviewer, "photo_taken_before_visit")
    assert "day(s) before the visit was assigned" in old["message"]
    (far,) = flags(client, old_and_far, reviewer, "photo_gps_far_from_fix")
    assert far["distance_m"] > 5_000_000 and "-33.8" not in str(far)  # a distance, never the position

    taken_today = china_today().strftime("%Y:%m:%d 09:00:00")
    here_and_now = evidence_exif(
        latitude=GPS["lat"] + 0.001, longitude=GPS["lon"], taken=taken_today, offset=None
    )
    honest = encode(photo_like((640, 480), 25), "JPEG", quality=90, exif=here_and_now)
    fresh = photographed(client, "DB-C01-0002", worker, honest)  # 111 m from its fix, taken today
    assert flags(client, fresh, reviewer, "photo_taken_before_visit", "photo_gps_far_from_fix") == []


def test_a_photo_answer_sent_again_from_the_office_is_measured_where_the_photo_was_attached(
    client: Client,
) -> None:
    """Back at the office the worker corrects a photo answer (the picture was of the living room, not the
    kitchen): the answer's new fix is 20 km from the home. The file was taken and attached at the home,
    so its own GPS is not flagged; the answer made at the desk is (far_from_home)."""
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    taken_today = china_today().strftime("%Y:%m:%d 09:00:00")
    here_and_now = evidence_exif(latitude=GPS["lat"], longitude=GPS["lon"], taken=taken_today, offset=None)
    photo = encode(photo_like((640, 480), 26), "JPEG", quality=90, exif=here_and_now)
    visit = photographed(client, "DB-C01-0006", worker, photo)
    office = GPS | {"lat": GPS["lat"] + 0.18}  # 20 km north
    value = {"photos": [{"sha256": sha256(photo), "view": "living_room"}]}
    answer(client, visit, worker, "home_photos", value, office)
    assert flags(client, visit, reviewer, "photo_gps_far_from_fix") == []
    (desk,) = flags(client, visit, reviewer, "far_from_home")
    assert desk["item"] == "home_photos" and desk["distance_m"] > 15_000


def test_a_look_step_answered_away_from_the_home_or_with_a_mocked_fix_is_flagged(client: Client) -> None:
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    home = client.get(f"/api/v1/households/{household_id('DB-C01-0005')}", headers=worker).json()
    visit = assign(client, "DB-C01-0005")
    at_home = GPS | {"lat": home["lat"], "lon": home["lon"], "accuracy_m": 20.0}
    away = at_home | {"lat": home["lat"] + 0.01}  # 1.1 km north
    answer(client, visit, worker, "rooms", 3, at_home)
    answer(client, visit, worker, "air_conditioners", 1, away)
    answer(client, visit, worker, "large_tvs", 0, at_home | {"mock": True})
    answer(client, visit, worker, "computers", 1, at_home | {"lat": home["lat"] + 0.0015})  # 167 m, ±20 m
    found = flags(client, visit, reviewer, "far_from_home", "mock_location")
    assert [(f["check"], f["item"]) for f in found] == [
        ("far_from_home", "air_conditioners"),
        ("mock_location", "large_tvs"),
    ]
    expected = distance_m(away["lat"], away["lon"], home["lat"], home["lon"])
    assert abs(found[0]["distance_m"] - expected) <= 1 and 1100 < expected < 1125

    # Answered again from the home: the flag goes with the answer it was about.
    answer(client, visit, worker, "air_conditioners", 1, at_home)
    assert [f["item"] for f in flags(client, visit, reviewer, "far_from_home")] == []

    # A household with no recorded location: nothing to measure against, and the evidence says so.
    async def unlocate(session: AsyncSession) -> None:
        await session.execute(
            update(Household).where(Household.id == household_id("DB-C01-0005")).values(lat=None, lon=None)
        )
        await session.commit()

    answer(client, visit, worker, "air_conditioners", 1, away)
    run_db(client, unlocate)
    response = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=reviewer).json()
    assert response["household_located"] is False
    assert [f["check"] for f in response["checks"]] == ["mock_location"]


def test_an_amended_visit_carries_its_photos_without_being_flagged_against_itself(client: Client) -> None:
    """A revision starts from the approved visit's answers: its photos are that visit's own, taken when
    it was made, not a reuse of another visit's nor older than the visit."""
    # The tests' fixes are not at the household: only the photo checks are looked at.
    visit, worker = completed_visit(client)  # assigned 10 days ago
    reviewer = login(client, "demo-reviewer-community")
    taken = (china_today() - dt.timedelta(days=5)).strftime("%Y:%m:%d 10:00:00")
    at_home = evidence_exif(latitude=GPS["lat"], longitude=GPS["lon"], taken=taken, offset=None)
    kitchen = encode(photo_like((640, 480), 26), "JPEG", quality=90, exif=at_home)
    assert upload(client, worker, kitchen).status_code in (201, 204)
    (photos,) = [a.value for a in complete_answers(client, visit, worker) if a.item == "home_photos"]
    mine = {"sha256": sha256(kitchen), "view": "kitchen"}
    answer(client, visit, worker, "home_photos", {"photos": [mine, *photos["photos"]]}, GPS)
    propose(client, visit, worker)
    assert submit(client, visit, worker).status_code == 200
    for username in LEVELS:
        assert review(client, visit, username, "approve").status_code == 200
    assert flags(client, visit, reviewer, *PHOTO_CHECKS) == []

    amended = client.post(f"/api/v1/visits/{visit['id']}/amend", headers=worker)
    assert amended.status_code == 201, amended.text
    revision = amended.json()
    assert flags(client, revision, reviewer, *PHOTO_CHECKS) == []
    assert flags(client, visit, reviewer, *PHOTO_CHECKS) == []

    # Another visit naming the file is still flagged, on both revisions, and counted once each.
    again = photographed(client, "DB-C01-0002", worker, kitchen)
    for flagged in (revision, visit):
        (reused,) = flags(client, flagged, reviewer, "photo_reused")
        assert reused["other_visits"] == [again["id"]]
    (reused,) = flags(client, again, reviewer, "photo_reused")
    assert sorted(reused["other_visits"]) == sorted([visit["id"], revision["id"]])


def test_a_teammates_fix_is_checked_while_the_answer_keeps_what_it_added(client: Client) -> None:
    """Two tablets photograph the home side by side: the second's answer, made on a base without the
    first's photo, merges into it. Both photos stand, so both fixes are the answer's."""
    first, second = login(client, TEAM[0]), login(client, TEAM[1], device="tablet-2")
    reviewer = login(client, "demo-reviewer-community")
    home = client.get(f"/api/v1/households/{household_id('DB-C01-0006')}", headers=first).json()
    at_home = GPS | {"lat": home["lat"], "lon": home["lon"], "accuracy_m": 10.0}
    desk = at_home | {"lat": home["lat"] + 0.02, "mock": True}  # 2.2 km away, and mocked
    visit = assign(client, "DB-C01-0006")
    a, b = jpeg_with_gps(seed=27), jpeg_with_gps(seed=28)
    empty: dict[str, Any] = {"photos": []}
    answer(
        client,
        visit,
        first,
        "home_photos",
        {"photos": [{"sha256": sha256(a), "view": "kitchen"}]},
        desk,
        empty,
    )
    answer(
        client,
        visit,
        second,
        "home_photos",
        {"photos": [{"sha256": sha256(b), "view": "bedroom"}]},
        at_home,
        empty,
    )
    evidence = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=reviewer).json()
    assert {i["sha256"] for i in evidence["items"]} == {sha256(a), sha256(b)}  # merged: both stand
    found = flags(client, visit, reviewer, "far_from_home", "mock_location")
    assert sorted((f["check"], f["item"]) for f in found) == [
        ("far_from_home", "home_photos"),
        ("mock_location", "home_photos"),
    ]

    # The first tablet takes its photo out again, from the home, on its own view (without the teammate's
    # photo, which stays): its first fix holds nothing of the answer any more.
    mine = {"photos": [{"sha256": sha256(a), "view": "kitchen"}]}
    answer(client, visit, first, "home_photos", None, at_home, mine)
    evidence = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=reviewer).json()
    assert [i["sha256"] for i in evidence["items"]] == [sha256(b)]
    assert flags(client, visit, reviewer, "far_from_home", "mock_location") == []


def test_a_photo_is_compared_with_photos_only_not_with_signature_images(client: Client) -> None:
    """A mark for a signature (a member who cannot write makes a cross) differs from a blank photo in a few
    hash bits, as signatures do from one another: they are no copies of a photo."""
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    cross = Image.new("RGBA", (600, 200), (0, 0, 0, 0))  # a signature pad's transparent canvas
    pen = ImageDraw.Draw(cross)
    pen.line([(280, 80), (320, 120)], fill=(0, 0, 0, 255), width=6)
    pen.line([(320, 80), (280, 120)], fill=(0, 0, 0, 255), width=6)
    mark = encode(cross, "PNG")
    signed = assign(client, "DB-C01-0001")
    assert upload(client, worker, mark).status_code in (201, 204)
    signature = {"signer_name": "王秀英", "sha256": sha256(mark)}
    answer(client, signed, worker, "investigator_signatures", {"signatures": [signature]}, GPS)
    blank = encode(Image.new("RGB", (640, 480), (255, 255, 255)), "JPEG", quality=90)  # overexposed
    visit = photographed(client, "DB-C01-0002", worker, blank)
    assert flags(client, visit, reviewer, "photo_reused", "photo_near_duplicate") == []


def test_one_notice_photographed_for_several_households_of_a_community_is_not_a_reuse(client: Client) -> None:
    """One notice on the board, and one appraisal meeting, cover several households: their photo stands in
    each file honestly. The same photo in another community's file is still flagged."""
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    notice = jpeg_with_gps(seed=26)
    assert upload(client, worker, notice).status_code in (201, 204)
    posted = {"photos": [{"sha256": sha256(notice), "view": "posted_notice"}]}
    visits = [assign(client, registry_no) for registry_no in ("DB-C01-0001", "DB-C01-0002", "DB-C01-0003")]
    for visit in visits:
        answer(client, visit, worker, "notice_photo", posted, GPS, template="step.publicize")
    for visit in visits:
        assert flags(client, visit, reviewer, "photo_reused", "photo_near_duplicate") == []

    move_to_another_community(client, "DB-C01-0003")
    (reused,) = flags(client, visits[0], reviewer, "photo_reused")
    assert (reused["other_visits"], reused["elsewhere"], reused["item"]) == ([], 1, "notice_photo")


def test_the_households_location_moved_by_the_visits_own_team_is_flagged(client: Client) -> None:
    """far_from_home measures against the recorded location: a team moving it to where it answered from
    is told to the reviewer. A move by anyone else (an administrator correcting the record) is not."""
    worker, reviewer = login(client, TEAM[0]), login(client, "demo-reviewer-community")
    admin = login(client, "demo-admin", device="desk")
    url = f"/api/v1/households/{household_id('DB-C01-0006')}"
    visit = assign(client, "DB-C01-0006")
    answer(client, visit, worker, "rooms", 3, GPS)

    def move(headers: Headers, lat: float) -> None:
        version = client.get(url, headers=headers).json()["version"]
        moved = client.patch(url, json={"version": version, "lat": lat, "lon": GPS["lon"]}, headers=headers)
        assert moved.status_code == 200, moved.text

    move(admin, GPS["lat"] + 0.002)
    assert flags(client, visit, reviewer, "home_relocated_by_team") == []
    move(worker, GPS["lat"])  # to where the look step was answered: far_from_home goes quiet
    assert flags(client, visit, reviewer, "far_from_home") == []
    (relocated,) = flags(client, visit, reviewer, "home_relocated_by_team")
    assert (relocated["template"], relocated["item"]) == ("household", "location")
