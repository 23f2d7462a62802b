"""Photos through the API: the pipeline after a tus upload, refusals, scope, originals, a visit's evidence.

Both databases and both blob stores; derivatives are fetched through their signed URLs and read back.
"""

from __future__ import annotations

import io
import os
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from server.domain.evidence import references
from server.domain.filled import Filled
from tests.helpers import Client, audit_rows, login
from tests.images import SIZE, jpeg_with_gps
from tests.media.images import BLUE, RED, encode, photo_like, png_bomb
from tests.tus import create, patch, sha256, stored_keys, upload
from tests.visit_flow import TEAM, completed_visit, observation, propose, review, seen, submit


@pytest.fixture(scope="module")
def photo() -> bytes:
    return jpeg_with_gps(seed=11)


def fetch(client: Client, url: str) -> bytes:
    """Read a signed URL: our own blob route (local store) or the S3 server's presigned URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.path.startswith("/api/v1/blobs/"):
        response = client.get(f"{parts.path}?{parts.query}")
    else:
        response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return bytes(response.content)


def near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel, colour, strict=True))


def test_a_camera_jpeg_comes_out_upright_with_its_claims_and_no_exif_in_the_copies(
    tus_client: Client, photo: bytes
) -> None:
    worker = login(tus_client, "demo-worker-1")
    assert upload(tus_client, worker, photo).status_code == 204
    response = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=worker)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == SIZE
    assert body["format"] == "jpeg"
    assert body["byte_size"] == len(photo)
    assert len(body["dhash"]) == 16
    exif = body["exif"]
    # The position the file claims is the household's: for the roles that may read originals only.
    assert (exif["latitude"], exif["longitude"], exif["altitude"], exif["gps_withheld"]) == (
        None,
        None,
        None,
        True,
    )
    visit, worker = completed_visit(tus_client)
    answer_with(tus_client, visit, worker, sha256(photo))  # so that the community's reviewer may see it
    reviewer = login(tus_client, "demo-reviewer-community")
    claims = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=reviewer).json()["exif"]
    assert claims["latitude"] == pytest.approx(-33.856784, abs=1e-5)
    assert claims["longitude"] == pytest.approx(151.215297, abs=1e-5)
    assert claims["altitude"] == pytest.approx(42.5)
    assert claims["gps_withheld"] is False
    assert (exif["make"], exif["model"], exif["software"]) == ("Acme", "FieldTab 9", "FieldCam 2.1")
    assert exif["orientation"] == 6
    assert exif["captured_at"] == "2026-03-14T09:26:53+11:00"
    assert exif["captured_has_offset"] is True
    assert body["visits"] == []
    for name, long_side in (("display", SIZE[0]), ("thumbnail", 320)):
        copy = Image.open(io.BytesIO(fetch(tus_client, body[name]["url"])))
        assert copy.format == "JPEG"
        assert max(copy.size) == long_side
        assert copy.width > copy.height  # upright: the stored pixels were portrait
        assert (copy.width, copy.height) == (body[name]["width"], body[name]["height"])
        assert not copy.getexif()
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(copy.info)
        rgb = copy.convert("RGB")
        assert near(rgb.getpixel((2, 2)), RED)
        assert near(rgb.getpixel((copy.width - 3, copy.height - 3)), BLUE)


REFUSALS: dict[str, Callable[[], bytes]] = {
    "too_many_pixels": lambda: png_bomb(20_000, 20_000),
    "truncated": lambda: jpeg_with_gps(seed=3)[:20_000],
    # Cut short, then given an end-of-image marker: libjpeg decodes the rest as grey and only warns.
    "truncated (end marker after the cut)": lambda: jpeg_with_gps(seed=4)[:20_000] + b"\xff\xd9",
    "not_an_image": lambda: os.urandom(30_000),  # random bytes, named photo.jpg by the metadata
    "not_an_image (PDF)": lambda: b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\n" + os.urandom(5000),
}


def test_what_is_not_an_acceptable_photo_is_refused_and_nothing_half_stored_remains(
    tus_client: Client,
) -> None:
    worker = login(tus_client, "demo-worker-1")
    for case, make in REFUSALS.items():
        code = case.split()[0]
        data = make()
        response = upload(tus_client, worker, data)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["error"]["code"] == code, case
        assert response.headers["tus-resumable"] == "1.0.0"
        assert tus_client.get(f"/api/v1/photos/{sha256(data)}", headers=worker).status_code == 404
        assert stored_keys(tus_client) == [], case
    codes = [r.changes["code"] for r in audit_rows(tus_client, "upload.refuse")]
    assert codes == [case.split()[0] for case in REFUSALS]
    assert audit_rows(tus_client, "photo.create") == []


def answer_with(client: Client, visit: dict[str, Any], headers: dict[str, str], *shas: str) -> None:
    """Answer the visit's first photo item again, its first photos now being ``shas``."""
    stored = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=headers).json()
    first = next(o for o in stored if isinstance(o["value"], dict) and o["value"].get("photos"))
    photos = first["value"]["photos"]
    replaced = [(photos[i] if i < len(photos) else photos[0]) | {"sha256": sha} for i, sha in enumerate(shas)]
    value = first["value"] | {"photos": [*replaced, *photos[len(shas) :]]}
    again = observation_like(first, value)
    response = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [again]}, headers=headers
    )
    assert response.status_code == 200, response.text


def observation_like(stored: dict[str, Any], value: Any) -> dict[str, Any]:
    row_id = uuid.UUID(stored["row_id"]) if stored["row_id"] else None
    return observation(Filled(stored["template"], stored["item"], row_id, value))


def evidence(client: Client, visit: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_evidence_shows_referenced_photos_expected_until_their_bytes_arrive(
    tus_client: Client, photo: bytes
) -> None:
    visit, worker = completed_visit(tus_client)
    before = evidence(tus_client, visit, worker)
    assert before["present"] == 0
    assert before["expected"] == len(before["items"]) > 0
    assert all(i["status"] == "expected" and i["thumbnail_url"] is None for i in before["items"])

    answer_with(tus_client, visit, worker, sha256(photo))  # referenced before the bytes arrive
    mine = [i for i in evidence(tus_client, visit, worker)["items"] if i["sha256"] == sha256(photo)]
    assert [i["status"] for i in mine] == ["expected"]

    assert upload(tus_client, worker, photo).status_code == 204
    after = evidence(tus_client, visit, worker)
    (present,) = [i for i in after["items"] if i["status"] == "present"]
    assert present["sha256"] == sha256(photo)
    assert present["kind"] == "photo"
    thumb = Image.open(io.BytesIO(fetch(tus_client, present["thumbnail_url"])))
    assert max(thumb.size) == 320
    assert after["present"] == 1
    assert len(after["items"]) == len(before["items"])  # the photo it replaced is no longer wanted
    assert after["expected"] == before["expected"] - 1

    # A colleague of the community sees it through the visit; a worker elsewhere does not.
    colleague = login(tus_client, TEAM[1])
    seen = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=colleague)
    assert seen.status_code == 200, seen.text
    assert seen.json()["visits"] == [visit["id"]]
    elsewhere = login(tus_client, "demo-worker-3")
    assert tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=elsewhere).status_code == 404
    assert tus_client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=elsewhere).status_code == 404


def test_originals_only_for_allowed_roles_with_a_reason_and_audited(tus_client: Client, photo: bytes) -> None:
    visit, worker = completed_visit(tus_client)
    answer_with(tus_client, visit, worker, sha256(photo))
    assert upload(tus_client, worker, photo).status_code == 204
    url = f"/api/v1/photos/{sha256(photo)}/original"

    refused = tus_client.get(url, params={"reason": "curious"}, headers=worker)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "original_forbidden"

    reviewer = login(tus_client, "demo-reviewer-community")
    no_reason = tus_client.get(url, headers=reviewer)
    assert no_reason.status_code == 422
    assert no_reason.json()["error"]["code"] == "reason_required"
    says_nothing = tus_client.get(url, params={"reason": " x . "}, headers=reviewer)
    assert says_nothing.status_code == 422 and says_nothing.json()["error"]["code"] == "reason_required"
    assert audit_rows(tus_client, "photo.original") == []
    # Each refusal is a row of its own (a worker's 403 used to leave none): who asked, why, what they got.
    refusals = audit_rows(tus_client, "photo.original_refused")
    assert [(r.entity_id, r.changes["code"], r.reason) for r in refusals] == [
        (sha256(photo), "original_forbidden", "curious"),
        (sha256(photo), "reason_required", None),
        (sha256(photo), "reason_required", "x ."),
    ]

    got = tus_client.get(url, params={"reason": "GPS check for review"}, headers=reviewer)
    assert got.status_code == 200, got.text
    assert got.content == photo
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["cache-control"] == "no-store"
    (row,) = audit_rows(tus_client, "photo.original")
    assert (row.entity_id, row.reason) == (sha256(photo), "GPS check for review")

    other_district = login(tus_client, "demo-worker-3")
    assert tus_client.get(url, params={"reason": "x"}, headers=other_district).status_code == 404


def test_a_photo_nobody_in_scope_references_is_seen_only_by_its_uploader(
    tus_client: Client, photo: bytes
) -> None:
    worker = login(tus_client, "demo-worker-1")
    assert upload(tus_client, worker, photo).status_code == 204
    for user in ("demo-worker-2", "demo-reviewer-community", "demo-admin"):
        response = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=login(tus_client, user))
        assert response.status_code == 404, user
    missing = tus_client.get(f"/api/v1/photos/{'0' * 64}", headers=worker)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def with_real_images(client: Client, visit: dict[str, Any], headers: dict[str, str]) -> dict[str, bytes]:
    """Answer again every answer naming a photo or signature image, each now naming a small real JPEG
    instead of the filler's made-up hash; those JPEGs by SHA-256, not uploaded yet."""
    images: dict[str, bytes] = {}

    def real(value: Any) -> Any:
        if isinstance(value, list):
            return [real(v) for v in value]
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("sha256"), str):
            data = encode(photo_like((48, 32), seed=len(images)), "JPEG")
            images[sha256(data)] = data
            return value | {"sha256": sha256(data)}
        return {key: real(v) for key, v in value.items()}

    stored = client.get(f"/api/v1/visits/{visit['id']}/observations", headers=headers).json()
    again = [observation_like(o, real(o["value"])) for o in stored if "sha256" in str(o["value"])]
    response = client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": again}, headers=headers
    )
    assert response.status_code == 200, response.text
    return images


@pytest.mark.parametrize("store_kind", ["local"])  # the store plays no part in the decision
def test_a_visit_is_approved_once_its_evidence_arrived_or_with_a_reason_to_go_without_it(
    tus_client: Client,
) -> None:
    visit, worker = completed_visit(tus_client)
    images = with_real_images(tus_client, visit, worker)
    assert len(images) > 2
    (late_sha, late), *others = images.items()
    for _, data in others:
        assert upload(tus_client, worker, data).status_code == 204
    propose(tus_client, visit, worker)
    submit(tus_client, visit, worker)
    community, subdistrict = "demo-reviewer-community", "demo-reviewer-subdistrict"

    refused = review(tus_client, visit, community, "approve", accept_missing_evidence=False)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "evidence_missing"
    assert [m["sha256"] for m in error["details"]["missing"]] == [late_sha]
    unexplained = review(tus_client, visit, community, "approve", "  ", accept_missing_evidence=True)
    assert unexplained.status_code == 422 and unexplained.json()["error"]["code"] == "reason_required"
    assert tus_client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["review_level"] == 1

    accepted = review(
        tus_client, visit, community, "approve", "签名照片随平板遗失", accept_missing_evidence=True
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["review_level"] == 2
    (approval,) = [r for r in audit_rows(tus_client, "visit.approve") if r.entity_id == visit["id"]]
    assert approval.changes["missing_evidence"] == [late_sha]
    assert approval.reason == "签名照片随平板遗失"

    # The next level is not covered by the first one's acceptance; once the bytes come, nothing is missing.
    still = review(tus_client, visit, subdistrict, "approve", accept_missing_evidence=False)
    assert still.status_code == 409 and still.json()["error"]["code"] == "evidence_missing"
    assert upload(tus_client, worker, late).status_code == 204
    approved = review(tus_client, visit, subdistrict, "approve", accept_missing_evidence=False)
    assert approved.status_code == 200, approved.text
    assert approved.json()["review_level"] == 3
    assert "missing_evidence" not in audit_rows(tus_client, "visit.approve")[-1].changes


@pytest.mark.parametrize("store_kind", ["local"])  # the store plays no part in the decision
def test_a_decision_taken_before_a_photo_arrived_is_refused(tus_client: Client) -> None:
    """The reviewer reads the evidence with one photo still expected, the tablet uploads it meanwhile, and
    the reviewer approves without it "on purpose": the photo they accepted to go without is there, unseen.
    The decision is refused until they look again."""
    visit, worker = completed_visit(tus_client)
    (late_sha, late), *others = with_real_images(tus_client, visit, worker).items()
    for _, data in others:
        assert upload(tus_client, worker, data).status_code == 204
    propose(tus_client, visit, worker)
    assert submit(tus_client, visit, worker).status_code == 200
    community = "demo-reviewer-community"
    on_screen = seen(tus_client, visit, login(tus_client, community, device="desk"))

    assert upload(tus_client, worker, late).status_code == 204
    stale = review(tus_client, visit, community, "approve", "签名照片随平板遗失", on=on_screen)
    assert stale.status_code == 409, stale.text
    error = stale.json()["error"]
    assert error["code"] == "visit_changed"
    present = on_screen["evidence_present"]
    assert error["details"]["evidence_present"] == {"seen": present, "now": present + 1}
    assert tus_client.get(f"/api/v1/visits/{visit['id']}", headers=worker).json()["review_level"] == 1

    looked_again = review(tus_client, visit, community, "approve", accept_missing_evidence=False)
    assert looked_again.status_code == 200, looked_again.text
    assert looked_again.json()["review_level"] == 2
    assert late_sha in {i["sha256"] for i in evidence(tus_client, visit, worker)["items"]}


@pytest.mark.parametrize("store_kind", ["local"])  # the store plays no part in it
def test_a_refused_photo_shows_as_refused_with_its_code_not_as_expected(tus_client: Client) -> None:
    """A reviewer waiting for a photo the server refused would wait forever: the evidence says refused."""
    visit, worker = completed_visit(tus_client)
    cut = jpeg_with_gps(seed=5)[:20_000]
    answer_with(tus_client, visit, worker, sha256(cut))
    assert upload(tus_client, worker, cut).status_code == 422

    shown = evidence(tus_client, visit, worker)
    (item,) = [i for i in shown["items"] if i["sha256"] == sha256(cut)]
    assert (item["status"], item["refusal"], item["thumbnail_url"]) == ("refused", "truncated", None)
    assert shown["refused"] == 1
    assert shown["expected"] == sum(1 for i in shown["items"] if i["status"] == "expected")
    assert all(i["refusal"] is None for i in shown["items"] if i["status"] != "refused")

    # A refusal of the content itself only: a file that did not match its announced SHA-256 says nothing
    # about the photo that has that SHA-256, which stays expected.
    other = jpeg_with_gps(seed=6)
    answer_with(tus_client, visit, worker, sha256(cut), sha256(other))
    damaged = other[:-1] + bytes([other[-1] ^ 1])
    created = create(tus_client, worker, damaged, sha=sha256(other))
    assert created.status_code == 201, created.text
    mismatch = patch(tus_client, worker, created.headers["location"], 0, damaged)
    assert mismatch.json()["error"]["code"] == "sha256_mismatch"
    statuses = {i["sha256"]: i["status"] for i in evidence(tus_client, visit, worker)["items"]}
    assert statuses[sha256(other)] == "expected"

    # Still missing evidence for an approval, listed with its refusal.
    propose(tus_client, visit, worker)
    submit(tus_client, visit, worker)
    refused = review(tus_client, visit, "demo-reviewer-community", "approve", accept_missing_evidence=False)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "evidence_missing"
    missing = {m["sha256"]: m for m in refused.json()["error"]["details"]["missing"]}
    assert (missing[sha256(cut)]["status"], missing[sha256(cut)]["refusal"]) == ("refused", "truncated")
    assert missing[sha256(other)]["status"] == "expected"


@pytest.mark.parametrize("store_kind", ["local"])  # the store plays no part in it
def test_the_photos_of_a_removed_row_are_no_longer_evidence(tus_client: Client) -> None:
    # A worker who deletes a row of a repeat group (a letter sent for evidence, say) deletes its photo with
    # it, as the tablet shows; the server's checks skip removed rows, and so must the evidence: a photo of a
    # removed row that never arrives (refused, or dropped with the row) must not hold up the approval.
    visit, worker = completed_visit(tus_client)
    stored = tus_client.get(f"/api/v1/visits/{visit['id']}/observations", headers=worker).json()
    in_a_row = next(o for o in stored if o["row_id"] and "sha256" in str(o["value"]))
    gone = {ref.sha256 for ref in references(in_a_row["value"])}
    assert gone
    group = in_a_row["item"].rsplit(".", 1)[0]
    removal = observation_like(in_a_row | {"item": group}, {"removed": True})
    response = tus_client.post(
        f"/api/v1/visits/{visit['id']}/observations", json={"observations": [removal]}, headers=worker
    )
    assert response.status_code == 200, response.text

    items = evidence(tus_client, visit, worker)["items"]
    assert items and not gone & {i["sha256"] for i in items}
    assert not [i for i in items if i["row_id"] == in_a_row["row_id"] and i["item"].startswith(group + ".")]


def test_a_photos_visits_keep_one_whose_answer_no_longer_names_it(tus_client: Client, photo: bytes) -> None:
    """What a reviewer looking for a reused photo reads in `visits`: every visit in scope whose answers
    named the photo, an answer since replaced included (a photo attached to the wrong household and taken
    back), while that visit's evidence, which follows its current answers, no longer lists it."""
    wrong, worker = completed_visit(tus_client, "DB-C01-0002")
    answer_with(tus_client, wrong, worker, sha256(photo))
    retaken = encode(photo_like((48, 32), seed=99), "JPEG")
    answer_with(tus_client, wrong, worker, sha256(retaken))  # taken back: another photo in its place
    right, worker = completed_visit(tus_client, "DB-C01-0001")
    answer_with(tus_client, right, worker, sha256(photo))
    assert upload(tus_client, worker, photo).status_code == 204

    reviewer = login(tus_client, "demo-reviewer-community")
    seen = tus_client.get(f"/api/v1/photos/{sha256(photo)}", headers=reviewer).json()
    assert seen["visits"] == sorted([wrong["id"], right["id"]])
    assert sha256(photo) not in {i["sha256"] for i in evidence(tus_client, wrong, reviewer)["items"]}
    assert sha256(photo) in {i["sha256"] for i in evidence(tus_client, right, reviewer)["items"]}
