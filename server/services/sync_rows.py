"""What a pulled change carries: the current row of each synced record, as a device stores it.

Rows are read with plain Core SELECTs of table columns: a first sync ships tens of thousands of them and
must stay close to the cost of SELECT + encode. (Selecting the ORM attributes instead would run every
row through the ORM's loading machinery, a third of a first sync's time.) ID numbers leave masked, as
everywhere.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from typing import Any

import msgspec
from sqlalchemy import JSON, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import KeyedColumnElement

from server.db.feed import EVERYONE
from server.db.id_lists import among, among_text
from server.db.models import (
    ChecklistTemplate,
    Household,
    Member,
    Observation,
    Photo,
    PhotoRef,
    PhotoRefusal,
    SyncConflict,
    Visit,
    VisitTeamMember,
    VisitTransition,
)
from server.db.types import raw_json
from server.domain import id_numbers
from server.services.conflicts import conflict_values, resolution_shown

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Shape:
    """What a pulled record carries: its table's columns by name (JSON ones as their stored text unless the
    row is looked into first), where its version is, and what masks it."""

    model: type[Any]
    names: InitVar[str]
    version: str | None = "version"
    finish: Callable[[Row], None] | None = None
    json_as_text: InitVar[bool] = True
    columns: tuple[KeyedColumnElement[Any], ...] = field(init=False)

    def __post_init__(self, names: str, json_as_text: bool) -> None:
        table = self.model.__table__.c
        columns = [table[name] for name in names.split()]
        as_text = [
            raw_json(c).label(c.name) if json_as_text and isinstance(c.type, JSON) else c for c in columns
        ]
        object.__setattr__(self, "columns", tuple(as_text))

    @property
    def id_column(self) -> KeyedColumnElement[Any]:
        return self.model.__table__.c.id  # type: ignore[no-any-return]


def _mask_conflict(row: Row) -> None:
    row["server_value"], row["client_value"] = conflict_values(
        row["field"], row["server_value"], row["client_value"]
    )
    row["resolution"] = resolution_shown(row["field"], row["resolution"])


def _mask_observation(row: Row) -> None:
    """An ID number typed into an answer or a note leaves masked (the answer stays undecoded text unless
    it may hold one)."""
    for key in ("value", "base"):
        if row[key] is not None:
            row[key] = msgspec.Raw(id_numbers.mask_json_text(bytes(row[key])))
    if row["note"]:
        row["note"] = id_numbers.mask_text(row["note"])


def _mask_text(*keys: str) -> Callable[[Row], None]:
    """Text typed by a person (a proposal's or a transition's reason, an address, a member's details)
    leaves with any ID number in it masked."""

    def mask(row: Row) -> None:
        for key in keys:
            if row[key]:
                row[key] = id_numbers.mask_text(row[key])

    return mask


_mask_member_details = _mask_text("name", "relation", "health", "disability", "employment")


def _mask_member(row: Row) -> None:
    row["id_number_masked"] = id_numbers.mask(row.pop("id_number"))
    _mask_member_details(row)


SHAPES: dict[str, Shape] = {
    "household": Shape(
        Household,
        "id registry_no community_id address lat lon status recheck_class monthly_benefit_fen version updated_at",
        finish=_mask_text("address"),
    ),
    "member": Shape(
        Member,
        "id household_id name relation id_number sex birth_date health disability work_capacity employment version",
        finish=_mask_member,
    ),
    "visit": Shape(
        Visit,
        "id household_id purpose status due_date review_level review_due templates outcome outcome_amount_fen "
        "outcome_reason revision previous_id answer_count submitted_at locked_at version updated_at",
        finish=_mask_text("outcome_reason"),
    ),
    "observation": Shape(
        Observation,
        "id visit_id ordinal template_code template_version item row_id value base note lat lon accuracy_m fix_time "
        "provider mock_location device_time received_at author_id device_id",
        version=None,
        finish=_mask_observation,
    ),
    "visit_event": Shape(
        VisitTransition,
        "id visit_id at actor_id action from_status to_status level level_code reason county_home_visit_on",
        version=None,
        finish=_mask_text("reason"),
    ),
    "template": Shape(ChecklistTemplate, "id code version kind status body etag", version=None),
    "conflict": Shape(
        SyncConflict,
        "id entity entity_id field kind level base_version server_value client_value provisional code "
        "mutation_id author_id handed_over_by status resolution resolved_by resolved_at created_at",
        version=None,
        finish=_mask_conflict,
        json_as_text=False,  # the values are masked by field first
    ),
}
_PHOTO = Shape(Photo, "sha256 format width height captured_at dhash", version=None)


def version_of(entity: str, row: Row) -> int:
    shape = SHAPES.get(entity)  # photos are content-addressed: they never change, so carry no version
    key = shape.version if shape else None
    return int(row[key]) if key else 0


async def load(
    session: AsyncSession, wanted: Iterable[tuple[str, str]], scopes: list[str]
) -> dict[tuple[str, str], Row]:
    """The current rows of (entity, id) pairs, a few IN queries per page, as a caller whose scopes are
    ``scopes`` may see them."""
    by_entity: dict[str, list[str]] = defaultdict(list)
    for entity, entity_id in wanted:
        by_entity[entity].append(entity_id)
    found: dict[tuple[str, str], Row] = {}
    for entity, ids in by_entity.items():
        if entity == "photo":
            found.update({("photo", r["sha256"]): r for r in await _photos(session, ids, scopes)})
            continue
        for row in await _rows(session, entity, ids):
            found[(entity, str(row["id"]))] = row
    return found


async def _photos(session: AsyncSession, shas: list[str], scopes: list[str]) -> list[Row]:
    """A photo as a device needs it: expected until the bytes arrive, then its size and hash (refused, with
    the refusal's code, when the file sent for it was refused), and the visits in the caller's scopes that
    name it (another community's are none of its business).
    The EXIF GPS claim stays on the server (it is the household's location)."""
    photo, ref = Photo.__table__.c, PhotoRef.__table__.c
    visit, household = Visit.__table__, Household.__table__
    found = await session.execute(select(*_PHOTO.columns).where(among_text(session, photo.sha256, shas)))
    present = {r.sha256: dict(r._mapping) for r in found}
    refs: dict[str, list[str]] = defaultdict(list)
    communities = [uuid.UUID(s) for s in scopes if s != EVERYONE]
    query = (
        select(ref.sha256, ref.visit_id)
        .join(visit, visit.c.id == ref.visit_id)
        .join(household, household.c.id == visit.c.household_id)
        .where(among_text(session, ref.sha256, shas), among(session, household.c.community_id, communities))
        .distinct()
    )
    for sha, visit_id in await session.execute(query):
        refs[sha].append(str(visit_id))
    refused = await _refusals(session, set(shas) - set(present))
    return [
        {
            **present.get(sha, {"sha256": sha}),
            "state": "present" if sha in present else "refused" if sha in refused else "expected",
            "visits": refs[sha],
            **({"refusal": refused[sha]} if sha in refused else {}),
        }
        for sha in shas
    ]


async def _refusals(session: AsyncSession, absent: set[str]) -> dict[str, str]:
    """SHA-256 -> refusal code, of those photos not stored (none to ask about when all of a page's are)."""
    if not absent:
        return {}
    refusals = PhotoRefusal.__table__.c
    query = select(refusals.sha256, refusals.code).where(among_text(session, refusals.sha256, absent))
    return {sha: code for sha, code in await session.execute(query)}


async def _rows(session: AsyncSession, entity: str, ids: list[str]) -> list[Row]:
    shape = SHAPES[entity]
    result = await session.execute(select(*shape.columns).where(among(session, shape.id_column, ids)))
    keys = list(result.keys())  # once, not per row as Row._mapping would
    rows = [dict(zip(keys, r, strict=True)) for r in result]
    if shape.finish is not None:
        for row in rows:
            shape.finish(row)
    if entity == "visit":
        await _add_teams(session, rows)
    return rows


async def _add_teams(session: AsyncSession, rows: list[Row]) -> None:
    teams: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    team = VisitTeamMember.__table__.c
    query = (
        select(team.visit_id, team.user_id)
        .where(among(session, team.visit_id, [r["id"] for r in rows]))
        .order_by(team.visit_id, team.position)
    )
    for visit_id, user_id in await session.execute(query):
        teams[visit_id].append(user_id)
    for row in rows:
        row["team"] = teams[row["id"]]
