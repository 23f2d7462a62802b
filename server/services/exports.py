"""CSV and GeoJSON exports of visits and observations, streamed a page at a time.

No export carries an ID number, a member's name or an address: visits are identified by registry
number and located by the household's registered point, signers by their ids, and the answers to
address items (Form A's hukou and actual address, the re-check's new address) are left out. Other
free-text answers are exported as the investigators wrote them. Each export is audited with its
filters, since it is a bulk read of evidence about poor households.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, tuple_

from schemas.visits import VisitStatus
from server.db.engine import Database
from server.db.models import Household, Jurisdiction, Observation, User, Visit
from server.domain import id_numbers
from server.errors import Forbidden
from server.services import audit
from server.services.actor import Actor
from server.services.visits import filtered

PAGE = 500
EXPORT_ROLES = frozenset({"reviewer", "approver", "admin"})
VISIT_COLUMNS = [
    "visit_id",
    "registry_no",
    "community",
    "purpose",
    "status",
    "review_level",
    "due_date",
    "review_due",
    "outcome",
    "outcome_amount_fen",
    "revision",
    "submitted_at",
    "locked_at",
    "lat",
    "lon",
]
OBSERVATION_COLUMNS = [
    "observation_id",
    "visit_id",
    "registry_no",
    "template",
    "template_version",
    "item",
    "row_id",
    "value",
    "note",
    "lat",
    "lon",
    "accuracy_m",
    "fix_time",
    "provider",
    "mock_location",
    "device_time",
    "received_at",
    "author",
]


@dataclass(frozen=True)
class Filters:
    community_id: uuid.UUID | None = None
    status: VisitStatus | None = None
    review_level: int | None = None
    due_from: Any = None
    due_to: Any = None


async def start(db: Database, actor: Actor, kind: str, fmt: str, filters: Filters) -> None:
    """Check the caller may export, and audit the export, before the first byte is streamed."""
    if actor.role not in EXPORT_ROLES:
        raise Forbidden("Exports are for reviewers, approvers and administrators.")
    async with db.write_session() as session:
        audit.record(
            session,
            actor,
            "export",
            kind,
            fmt,
            {k: str(v) for k, v in vars(filters).items() if v is not None},
        )
        await session.commit()


def _listed(actor: Actor, filters: Filters) -> Select[Visit, Household]:
    """The visits the visit list shows the actor with these filters: an archived household's too, as the list
    shows them (they are the record of why it was archived)."""
    return filtered(
        actor,
        filters.community_id,
        filters.status,
        filters.review_level,
        filters.due_from,
        filters.due_to,
        False,
    )


async def visit_rows(db: Database, actor: Actor, filters: Filters) -> AsyncIterator[dict[str, Any]]:
    after: tuple[Any, uuid.UUID] | None = None
    while True:
        query = _listed(actor, filters)
        query = query.add_columns(Jurisdiction.code).join(
            Jurisdiction, Jurisdiction.id == Household.community_id
        )
        if after:
            query = query.where(tuple_(Visit.due_date, Visit.id) > tuple_(*after))
        async with db.read_session() as session:
            rows: Sequence[Any] = (
                await session.execute(query.order_by(Visit.due_date, Visit.id).limit(PAGE))
            ).all()
        for visit, household, community in rows:
            yield _visit_row(visit, household, community)
        if len(rows) < PAGE:
            return
        after = (rows[-1][0].due_date, rows[-1][0].id)


def _visit_row(v: Visit, h: Household, community: str) -> dict[str, Any]:
    return {
        "visit_id": str(v.id),
        "registry_no": h.registry_no,
        "community": community,
        "purpose": v.purpose,
        "status": v.status,
        "review_level": v.review_level,
        "due_date": v.due_date.isoformat(),
        "review_due": v.review_due.isoformat() if v.review_due else None,
        "outcome": v.outcome,
        "outcome_amount_fen": v.outcome_amount_fen,
        "revision": v.revision,
        "submitted_at": v.submitted_at.isoformat() if v.submitted_at else None,
        "locked_at": v.locked_at.isoformat() if v.locked_at else None,
        "lat": h.lat,
        "lon": h.lon,
    }


async def observation_rows(db: Database, actor: Actor, filters: Filters) -> AsyncIterator[dict[str, Any]]:
    # The ids the visit list would show: selected from the filtered query itself. (Selecting Visit.id
    # "from" it joined the whole visits table in beside it, so every visit's answers went out.)
    chosen = _listed(actor, filters).subquery()
    visit_ids = select(chosen.c.id)
    after: tuple[uuid.UUID, int] | None = None
    while True:
        query = (
            select(Observation, Household.registry_no, User.username)
            .join(Visit, Visit.id == Observation.visit_id)
            .join(Household, Household.id == Visit.household_id)
            .join(User, User.id == Observation.author_id)
            .where(Observation.visit_id.in_(visit_ids))
        )
        if after:
            query = query.where(tuple_(Observation.visit_id, Observation.ordinal) > tuple_(*after))
        async with db.read_session() as session:
            rows = (
                await session.execute(query.order_by(Observation.visit_id, Observation.ordinal).limit(PAGE))
            ).all()
        for obs, registry_no, author in rows:
            yield _observation_row(obs, registry_no, author)
        if len(rows) < PAGE:
            return
        after = (rows[-1][0].visit_id, rows[-1][0].ordinal)


def _redacted(value: Any) -> Any:
    """Signature answers name who signed; an export keeps only their ids and the image hash."""
    if isinstance(value, dict) and isinstance(value.get("signatures"), list):
        return {
            "signatures": [{k: v for k, v in e.items() if k != "signer_name"} for e in value["signatures"]]
        }
    return value


def _holds_an_address(o: Observation) -> bool:
    """A text answer to an item named for an address (``hukou_address``, ``actual_address``,
    ``new_address``): where the household lives, typed in full; or one cleared (null), whose note says
    why, often with the address it moved to. A yes/no such as ``lives_at_hukou_address`` holds none."""
    return o.item.endswith("address") and (o.value is None or isinstance(o.value, str))


def _observation_row(o: Observation, registry_no: str, author: str) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    # The row stays (the item was answered); the address, and a note beside it, do not.
    withheld = _holds_an_address(o)
    return {
        "observation_id": str(o.id),
        "visit_id": str(o.visit_id),
        "registry_no": registry_no,
        "template": o.template_code,
        "template_version": o.template_version,
        "item": o.item,
        "row_id": str(o.row_id) if o.row_id else None,
        "value": json.dumps(
            None if withheld else _redacted(id_numbers.mask_within(o.value)), ensure_ascii=False
        ),
        "note": None if withheld or o.note is None else id_numbers.mask_text(o.note),
        "lat": o.lat,
        "lon": o.lon,
        "accuracy_m": o.accuracy_m,
        "fix_time": iso(o.fix_time),
        "provider": o.provider,
        "mock_location": o.mock_location,
        "device_time": iso(o.device_time),
        "received_at": iso(o.received_at),
        "author": author,
    }


async def as_csv(rows: AsyncIterator[dict[str, Any]], columns: Sequence[str]) -> AsyncIterator[bytes]:
    yield b"\xef\xbb\xbf"  # a BOM, so spreadsheet programs read the Chinese text as UTF-8
    yield _csv_line(columns)
    async for row in rows:
        yield _csv_line([_cell(row[c]) for c in columns])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ (or a tab or carriage return before one, OWASP's list) would run as a
    # formula in a spreadsheet: defuse it.
    return "'" + text if text[:1] in _FORMULA_STARTS and not _is_number(text) else text


_FORMULA_STARTS = frozenset({"=", "+", "-", "@", "\t", "\r"})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_line(cells: Sequence[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue().encode()


async def as_geojson(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """A FeatureCollection of Points; rows without a location are left out."""
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for row in rows:
        if row.get("lat") is None or row.get("lon") is None:
            continue
        properties = {k: v for k, v in row.items() if k not in ("lat", "lon")}
        feature = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
            "properties": properties,
        }
        yield (b"" if first else b",") + json.dumps(feature, ensure_ascii=False).encode()
        first = False
    yield b"]}"
