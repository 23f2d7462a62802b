"""The integrity checks beside a visit's evidence: a reused or copied photo, a photo older than the visit
or taken elsewhere than its answer says, a look-step answer recorded away from the home, a mocked fix.

Read-only and computed on each reading of the evidence, from what the server holds; thresholds and
arithmetic in server/domain/integrity.py, the flags' meaning in schemas/photos.py (`IntegrityFlag`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from media import phash
from schemas.photos import IntegrityFlag
from server.db.id_lists import among_ints, among_text
from server.db.models import Household, Observation, Photo, PhotoRef, RecordVersion, Visit
from server.domain import integrity
from server.domain.answers import in_removed_row
from server.domain.evidence import Reference, references
from server.services import visits
from server.services.actor import Actor, communities_in_scope
from sync import answer_merge

Wanted = tuple[str, str, str | None, Reference]
"""An evidence item: template, item, row, and the file its answer names."""


class _Where(TypedDict):
    """Which answer (and file) a flag is about."""

    template: str
    item: str
    row_id: str | None
    sha256: NotRequired[str]


@dataclass
class _Others:
    """The other visits naming a file: those the caller may see, and how many more there are."""

    mine: list[uuid.UUID] = field(default_factory=list)
    elsewhere: int = 0
    same_household: bool = False


async def checks(
    session: AsyncSession,
    actor: Actor,
    visit: Visit,
    household: Household,
    arrived: list[Observation],
    fold: tuple[visits.VisitAnswers, visits.Holders],
    wanted: list[Wanted],
    stored: dict[str, Photo],
) -> list[IntegrityFlag]:
    """Every flag for the visit (`arrived`: its observations in arrival order; `fold`: them folded, as
    `visits.folded_holding` gives them; `wanted`: its evidence items; `stored`: the photo rows of those
    received), the fixes' first, then the photos' in evidence order."""
    flags = _fix_flags(_current(*fold), household)
    revisions = await _revisions(session, visit)
    flags += await _relocated(session, visit, household, revisions)
    photos = [w for w in wanted if w[3].kind == "photo"]
    if photos:
        flags += await _photo_flags(
            session, actor, visit, household, photos, stored, _naming(arrived), revisions
        )
    return flags


async def _relocated(
    session: AsyncSession, visit: Visit, household: Household, revisions: _Revisions
) -> list[IntegrityFlag]:
    """The household's location changed by the visit's own team since it was first assigned: a team could
    otherwise move the home to where it answered from, and far_from_home would measure against that."""
    team = {member.user_id for member in visit.team}
    query = select(RecordVersion.changed, RecordVersion.author_id, RecordVersion.at).where(
        RecordVersion.entity == "household",
        RecordVersion.entity_id == str(household.id),
        RecordVersion.at >= revisions.assigned,
    )
    moves = [
        at
        for changed, author, at in await session.execute(query)
        if author in team and {"lat", "lon"} & set(changed)
    ]
    if not moves:
        return []
    when = max(moves).date().isoformat()
    return [
        IntegrityFlag(
            check="home_relocated_by_team",
            template="household",
            item="location",
            row_id=None,
            message=f"The household's recorded location was changed by this visit's team (last on {when}): "
            "far_from_home measures against it.",
        )
    ]


@dataclass
class _Revisions:
    """A visit and its other revisions: an amendment starts from the approved visit's answers, so their
    photos are named by every revision, as its own."""

    ids: set[uuid.UUID]
    assigned: dt.datetime
    """When the first revision was assigned: when anyone was first sent to look."""


async def _revisions(session: AsyncSession, visit: Visit) -> _Revisions:
    ids, assigned, previous = {visit.id}, visit.created_at, visit.previous_id
    while previous is not None:
        older = select(Visit.created_at, Visit.previous_id).where(Visit.id == previous)
        ids.add(previous)
        assigned, previous = (await session.execute(older)).one()
    newer = [visit.id]
    while newer:
        newer = list((await session.execute(select(Visit.id).where(Visit.previous_id.in_(newer)))).scalars())
        ids.update(newer)
    return _Revisions(ids, assigned)


def _current(answers: visits.VisitAnswers, holding: visits.Holders) -> list[Observation]:
    """The observations holding each current answer (not cleared, not in a removed row), in arrival order:
    the latest for its item and row, and each earlier one merged into it whose entries the answer still
    keeps: their fixes are the answer's too."""
    held = []
    for (template, item, row), observations in holding.items():
        step = answers.get(template, {})
        if (item, row) not in step or in_removed_row(step, item, row):
            continue
        kept = answer_merge.identities(step[(item, row)])
        *earlier, latest = observations
        held += [o for o in earlier if answer_merge.identities(o.value) & kept] + [latest]
    return sorted(held, key=lambda o: o.ordinal)


def _naming(arrived: list[Observation]) -> dict[str, Observation]:
    """The first observation naming each file: the fix recorded when the file was attached, which is
    where it should have been taken. An answer sent again later (a note added at the office, another
    photo beside it) names the file again with the fix of wherever that was done; measured against
    such a fix, every photo of an answer corrected at the desk would look taken elsewhere."""
    named: dict[str, Observation] = {}
    for obs in arrived:
        for ref in references(obs.value):
            named.setdefault(ref.sha256, obs)
    return named


def _fix_flags(current: Iterable[Observation], household: Household) -> list[IntegrityFlag]:
    flags = []
    mocked: set[tuple[str, str, str | None]] = set()  # once for an answer merged from two mocked fixes
    for obs in current:
        where = _Where(
            template=obs.template_code, item=obs.item, row_id=str(obs.row_id) if obs.row_id else None
        )
        if obs.mock_location and (key := (obs.template_code, obs.item, where["row_id"])) not in mocked:
            mocked.add(key)
            flags.append(
                IntegrityFlag(check="mock_location", message="The device said this fix was mocked.", **where)
            )
        if flag := _far_from_home(obs, household, where):
            flags.append(flag)
    return flags


def _far_from_home(obs: Observation, household: Household, where: _Where) -> IntegrityFlag | None:
    if obs.template_code != integrity.LOOK_STEP or obs.lat is None or obs.lon is None:
        return None
    if household.lat is None or household.lon is None:
        return None
    distance = integrity.distance_m(obs.lat, obs.lon, household.lat, household.lon)
    if not integrity.beyond(distance, obs.accuracy_m, integrity.FAR_FROM_HOME_M):
        return None
    return IntegrityFlag(
        check="far_from_home",
        distance_m=round(distance),
        message=f"Answered {round(distance)} m from the household's recorded location, inside the home by "
        "the checklist.",
        **where,
    )


async def _photo_flags(
    session: AsyncSession,
    actor: Actor,
    visit: Visit,
    household: Household,
    photos: list[Wanted],
    stored: dict[str, Photo],
    named_by: dict[str, Observation],
    revisions: _Revisions,
) -> list[IntegrityFlag]:
    shas = {ref.sha256 for *_, ref in photos}
    copies = await _near_duplicates(session, [stored[s] for s in shas if s in stored])
    named = await _other_visits(
        session, actor, revisions.ids, shas | {c for found in copies.values() for c, _ in found}
    )
    flags = []
    for template, item, row, ref in photos:
        where = _Where(template=template, item=item, row_id=row, sha256=ref.sha256)
        if reused := _summary(named.get(ref.sha256, []), visit, household, template):
            flags.append(_reused(reused, where))
        for copy, bits in copies.get(ref.sha256, []):
            if copied := _summary(named.get(copy, []), visit, household, template):
                flags.append(_copied(copied, bits, where))
        photo = stored.get(ref.sha256)
        if photo is not None:
            flags += _file_claims(photo, revisions.assigned, named_by.get(ref.sha256), where)
    return flags


def _reused(others: _Others, where: _Where) -> IntegrityFlag:
    home = " of this household" if others.same_household else ""
    return IntegrityFlag(
        check="photo_reused",
        same_household=others.same_household,
        other_visits=others.mine,
        elsewhere=others.elsewhere,
        message=f"The same file is named by {_counted(others)}{home}{_outside(others)}",
        **where,
    )


def _copied(others: _Others, bits: int, where: _Where) -> IntegrityFlag:
    return IntegrityFlag(
        check="photo_near_duplicate",
        bits=bits,
        same_household=others.same_household,
        other_visits=others.mine,
        elsewhere=others.elsewhere,
        message=f"A copy of this photo ({bits} of 64 hash bits differ) is named by {_counted(others)}"
        f"{_outside(others)}",
        **where,
    )


def _counted(others: _Others) -> str:
    return f"{len(others.mine) + others.elsewhere} other visit(s)"


def _outside(others: _Others) -> str:
    return f", {others.elsewhere} outside your area." if others.elsewhere else "."


def _file_claims(
    photo: Photo, assigned: dt.datetime, fix: Observation | None, where: _Where
) -> list[IntegrityFlag]:
    """What the file says of itself against the visit (first `assigned`): its shutter time, and its position
    against `fix`, the observation naming it."""
    flags = []
    taken = integrity.shutter_time(photo.captured_at, photo.captured_has_offset)
    if taken is not None and taken < assigned - integrity.TAKEN_BEFORE_VISIT:
        days = (assigned - taken).days
        flags.append(
            IntegrityFlag(
                check="photo_taken_before_visit",
                message=f"The file says it was taken {days} day(s) before the visit was assigned.",
                **where,
            )
        )
    if photo.gps_lat is None or photo.gps_lon is None or fix is None or fix.lat is None or fix.lon is None:
        return flags
    distance = integrity.distance_m(photo.gps_lat, photo.gps_lon, fix.lat, fix.lon)
    if integrity.beyond(distance, fix.accuracy_m, integrity.PHOTO_GPS_FAR_M):
        flags.append(
            IntegrityFlag(
                check="photo_gps_far_from_fix",
                distance_m=round(distance),
                message=f"The file's own GPS lies {round(distance)} m from where the app recorded the answer.",
                **where,
            )
        )
    return flags


async def _near_duplicates(session: AsyncSession, photos: list[Photo]) -> dict[str, list[tuple[str, int]]]:
    """For each photo, the other stored photos (files some answer names as a photo) whose dHash is within
    NEAR_DUPLICATE_BITS of its own (not the same file: that is a reuse). Only the hashes sharing a 16-bit
    band within 2 bits of one of these photos' are read (multi-index hashing, media/phash.py) and
    compared bit by bit: under 1% of those stored for each photo of the visit (a sixth for a visit of
    20), where every stored hash was read and compared before (`python -m bench near-duplicates`)."""
    if not photos:
        return {}
    mine = [(p.sha256, int(p.dhash, 16)) for p in photos]
    near_bands: list[set[int]] = [set() for _ in range(phash.BANDS)]
    for _, own in mine:
        for wanted, band in zip(near_bands, phash.bands(own), strict=True):
            wanted.update(phash.band_neighbours(band))
    band_columns = (Photo.dhash_b0, Photo.dhash_b1, Photo.dhash_b2, Photo.dhash_b3)
    candidates = select(Photo.sha256, Photo.dhash).where(
        or_(*(among_ints(session, c, v) for c, v in zip(band_columns, near_bands, strict=True))),
        Photo.sha256.not_in([sha for sha, _ in mine]),
    )
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for other, dhash in await session.execute(candidates):
        theirs = int(dhash, 16)
        for sha, own in mine:
            bits = (own ^ theirs).bit_count()
            if bits <= integrity.NEAR_DUPLICATE_BITS:
                found[sha].append((other, bits))
    if not found:
        return {}
    # Photos only: a signature image (a member's cross, say) differs from a blank photo in a few bits.
    # Asked of the few near ones only, by key: as a join it read every reference stored.
    near = {other for nears in found.values() for other, _ in nears}
    named = select(PhotoRef.sha256).where(
        among_text(session, PhotoRef.sha256, near), PhotoRef.kind == "photo"
    )
    as_photo = set((await session.execute(named)).scalars())
    return {sha: kept for sha, nears in found.items() if (kept := [n for n in nears if n[0] in as_photo])}


@dataclass(frozen=True)
class _Naming:
    """Another visit naming a file: whose household, in which community, and whether the caller sees it."""

    visit_id: uuid.UUID
    household_id: uuid.UUID
    community_id: uuid.UUID
    visible: bool


SHARED_IN_A_COMMUNITY = frozenset({"step.publicize"})
"""Steps whose photos several households of one community share honestly: one notice on the board and
one appraisal meeting cover several files. Their photos are flagged as reused only by visits of another
community, or of the same household."""


def _summary(named: list[_Naming], visit: Visit, household: Household, template: str) -> _Others | None:
    """The other visits naming a file, as the flag gives them; None when none counts."""
    if template in SHARED_IN_A_COMMUNITY:
        named = [
            n
            for n in named
            if n.community_id != household.community_id or n.household_id == visit.household_id
        ]
    if not named:
        return None
    others = _Others(same_household=any(n.household_id == visit.household_id for n in named))
    for n in named:
        if n.visible:
            others.mine.append(n.visit_id)
        else:
            others.elsewhere += 1
    return others


async def _other_visits(
    session: AsyncSession, actor: Actor, revisions: set[uuid.UUID], shas: set[str]
) -> dict[str, list[_Naming]]:
    """For each file, the visits other than this one (and its `revisions`) whose answers named it (now or
    before)."""
    if not shas:
        return {}
    named = (
        select(PhotoRef.sha256, Visit.id, Visit.household_id, Household.community_id)
        .join(Visit, Visit.id == PhotoRef.visit_id)
        .join(Household, Household.id == Visit.household_id)
        .where(PhotoRef.sha256.in_(shas), PhotoRef.visit_id.not_in(revisions))
        .distinct()
    )
    rows = list(await session.execute(named))
    if not rows:
        return {}
    visible = select(Visit.id).join(Household, Household.id == Visit.household_id)
    in_area = visible.where(Visit.id.in_({r[1] for r in rows}), communities_in_scope(actor))
    mine = set((await session.execute(in_area)).scalars().all())
    found: dict[str, list[_Naming]] = defaultdict(list)
    for sha, visit_id, household_id, community_id in sorted(rows, key=lambda r: (r[0], str(r[1]))):
        found[sha].append(_Naming(visit_id, household_id, community_id, visit_id in mine))
    return dict(found)
