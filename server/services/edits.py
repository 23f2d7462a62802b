"""Versioned edits of mutable records (households, members), whichever door they come in by.

Every change bumps the record's version, stamps the changed fields with it (`field_versions`, what makes
an offline edit's merge three-way) and keeps the new version in `record_versions`. An offline edit made
against an older version goes through `sync.merge`; whatever cannot be merged silently becomes a
`sync_conflicts` row holding the losing value, so no acknowledged value is ever lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.households import HouseholdPatch, MemberPatch
from server.db.models import Household, Member, RecordVersion, SyncConflict
from server.db.types import utcnow
from server.domain import id_numbers
from server.errors import Forbidden, Invalid
from server.services.actor import Actor
from sync.merge import Record, delete_blocked_by, merge, rank

Editable = Household | Member


@dataclass(frozen=True, slots=True)
class Kind:
    entity: str
    patch: type[msgspec.Struct]
    fields: tuple[str, ...]
    """What an edit may change."""
    snapshot: tuple[str, ...]
    """What a version records."""
    guarded: frozenset[str]
    """Identity and eligibility: a field worker's change waits for a supervisor."""
    hidden: frozenset[str] = frozenset()
    """Guarded fields a field worker sees masked: their change waits for a supervisor even when it is
    the stored value, or the answer would tell whether a guess was right."""


HOUSEHOLD = Kind(
    "household",
    HouseholdPatch,
    ("address", "lat", "lon", "status", "recheck_class", "monthly_benefit_fen"),
    (
        "registry_no",
        "community_id",
        "address",
        "lat",
        "lon",
        "status",
        "recheck_class",
        "monthly_benefit_fen",
    ),
    frozenset({"status", "monthly_benefit_fen", "registry_no", "community_id"}),
)
_MEMBER_FIELDS = (
    "name",
    "relation",
    "id_number",
    "sex",
    "birth_date",
    "health",
    "disability",
    "work_capacity",
    "employment",
)
MEMBER = Kind(
    "member",
    MemberPatch,
    _MEMBER_FIELDS,
    ("household_id", *_MEMBER_FIELDS),
    frozenset({"name", "id_number"}),
    frozenset({"id_number"}),
)


def kind_of(obj: Editable) -> Kind:
    return HOUSEHOLD if isinstance(obj, Household) else MEMBER


@dataclass(slots=True)
class Outcome:
    applied: list[str] = field(default_factory=list)
    conflict_ids: list[uuid.UUID] = field(default_factory=list)


def wire(value: Any) -> Any:
    """The JSON form of a value: how values are compared, stored in history and shipped."""
    return msgspec.to_builtins(value)


def validate(kind: Kind, changes: Mapping[str, Any], *, where: str = "changes") -> dict[str, Any]:
    """Check new values against the record's patch schema; return them as Python values (ID numbers
    checked and normalised)."""
    unknown = sorted(set(changes) - set(kind.fields))
    if unknown:
        raise Invalid(
            f"These fields cannot be changed: {', '.join(unknown)}.",
            details=[{"field": f"{where}.{f}", "message": "not a changeable field"} for f in unknown],
        )
    try:
        patch = msgspec.convert({**changes, "version": 0}, kind.patch)
    except msgspec.ValidationError as exc:
        raise Invalid(f"{where}: {exc}", details=[{"field": where, "message": str(exc)}]) from None
    values = {name: getattr(patch, name) for name in changes}
    if "id_number" in values:
        if why := id_numbers.problem(values["id_number"]):
            raise Invalid(f"id_number: {why}", details=[{"field": f"{where}.id_number", "message": why}])
        values["id_number"] = id_numbers.normalise(values["id_number"])
    return values


def snapshot(obj: Editable) -> dict[str, Any]:
    return snapshot_as(kind_of(obj), obj)


def snapshot_as(kind: Kind, source: object) -> dict[str, Any]:
    """What a version of a `kind` records, read from a record or from a create's payload."""
    return {name: wire(getattr(source, name)) for name in kind.snapshot}


def stamp(
    session: AsyncSession,
    actor: Actor,
    obj: Editable,
    changed: list[str],
    *,
    mutation_id: uuid.UUID | None = None,
    note: str | None = None,
    new_record: bool = False,
    client: str | None = None,
) -> None:
    """Record a new version of `obj` in which `changed` fields were written by `actor`."""
    # Column defaults apply only at INSERT: a record made in this transaction has none yet.
    obj.version = (obj.version or 1) if new_record else obj.version + 1
    obj.field_versions = {**(obj.field_versions or {}), **dict.fromkeys(changed, obj.version)}
    obj.last_writers = {**(obj.last_writers or {}), **{name: [rank(actor.role), client] for name in changed}}
    session.add(
        RecordVersion(
            entity=kind_of(obj).entity,
            entity_id=str(obj.id),
            version=obj.version,
            data=snapshot(obj),
            changed=sorted(changed),
            mutation_id=mutation_id,
            author_id=actor.user_id,
            note=note,
        )
    )


def stamp_created(session: AsyncSession, actor: Actor, records: Sequence[Editable]) -> None:
    """Version 1 of new records goes into the history too: later edits supersede it, never erase it."""
    for record in records:
        stamp(session, actor, record, list(kind_of(record).snapshot), new_record=True)


def change_now(
    session: AsyncSession, actor: Actor, obj: Editable, values: Mapping[str, Any], *, note: str | None = None
) -> list[str]:
    """A direct edit against the current version (REST, a supervisor's decision): no merge needed. `note`
    goes into the new version's history (what the edit carries out)."""
    kind = kind_of(obj)
    if actor.role == "field_worker" and (guarded := sorted(kind.guarded & set(values))):
        raise Forbidden(
            f"A field worker cannot change {', '.join(guarded)}: propose it through sync for a supervisor.",
            code="guarded_field",
        )
    changed = [name for name, value in values.items() if wire(getattr(obj, name)) != wire(value)]
    for name in changed:
        setattr(obj, name, values[name])
    if changed:
        stamp(session, actor, obj, changed, note=note)
    return changed


def merge_offline(
    session: AsyncSession,
    actor: Actor,
    obj: Editable,
    base_version: int,
    changes: Mapping[str, tuple[Any, Any]],
    *,
    mutation_id: uuid.UUID,
    scope: str,
    client: str,
    household_archived: bool = False,
) -> Outcome:
    """Merge an offline edit ({field: (old, new)}, new already validated) made against `base_version`.
    A member of an archived household counts as deleted with it: nobody reads it as a member any more."""
    require_known_base(obj, base_version)
    kind = kind_of(obj)
    if obj.deleted_at is not None or household_archived:
        proposed = {name: wire(new) for name, (_, new) in changes.items()}
        conflict = new_conflict(
            obj, "update_after_delete", None, base_version, None, proposed, actor, mutation_id, scope
        )
        session.add(conflict)
        return Outcome(conflict_ids=[conflict.id])
    record = Record(
        values={name: wire(getattr(obj, name)) for name in changes},
        version=obj.version,
        field_versions=obj.field_versions,
        writers=_writers(obj),
    )
    wired = {name: (wire(old), wire(new)) for name, (old, new) in changes.items()}
    author = (rank(actor.role), client)
    result = merge(record, base_version, wired, author=author, guarded=kind.guarded, hidden=kind.hidden)
    outcome = Outcome(applied=sorted(result.applied))
    for name in outcome.applied:
        setattr(obj, name, changes[name][1])
    conflicts = [
        new_conflict(
            obj, c.kind, c.field, base_version, c.server_value, c.client_value, actor, mutation_id, scope
        )
        for c in result.hard
    ]
    for conflict, found in zip(conflicts, result.hard, strict=True):
        conflict.provisional = found.provisional
    if result.soft:
        conflicts.append(
            new_conflict(
                obj,
                "parallel_update",
                None,
                base_version,
                None,
                wired_new(changes),
                actor,
                mutation_id,
                scope,
            )
        )
    if outcome.applied:
        stamp(session, actor, obj, outcome.applied, mutation_id=mutation_id, client=client)
    session.add_all(conflicts)
    outcome.conflict_ids = [c.id for c in conflicts]
    return outcome


def require_known_base(obj: Editable, base_version: int) -> None:
    """Refuse a base above the record's version. The merge reads "changed since the base" as a field
    version above it, so such a base would make every change made since look older than the device's
    view and be overwritten unseen. No device was ever shown that version: the edit cannot be merged."""
    if base_version > obj.version:
        raise Invalid(
            f"base_version {base_version} is above the record's version {obj.version}: "
            "no such version was ever sent to a device.",
            code="unknown_base_version",
            details=[{"field": "base_version", "message": f"above the record's version {obj.version}"}],
        )


def wired_new(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    return {name: wire(new) for name, (_, new) in changes.items()}


def archive_offline(
    session: AsyncSession,
    actor: Actor,
    obj: Editable,
    base_version: int,
    reason: str,
    *,
    mutation_id: uuid.UUID,
    scope: str,
    client: str,
) -> Outcome:
    """Archive (tombstone) a record, unless it changed since the device last saw it."""
    require_known_base(obj, base_version)
    if obj.deleted_at is not None:
        return Outcome()  # already archived: the same intent, converged
    record = Record({}, obj.version, obj.field_versions, _writers(obj))
    if changed := delete_blocked_by(record, base_version, client):
        proposed = {"archive": reason, "changed_since_base": changed}
        conflict = new_conflict(
            obj, "delete_after_update", None, base_version, None, proposed, actor, mutation_id, scope
        )
        session.add(conflict)
        return Outcome(conflict_ids=[conflict.id])
    archive_now(session, actor, obj, reason, mutation_id=mutation_id, client=client)
    return Outcome(applied=["deleted_at"])


def _writers(obj: Editable) -> dict[str, tuple[int, str | None]]:
    return {name: (int(w[0]), w[1]) for name, w in (obj.last_writers or {}).items()}


def archive_now(
    session: AsyncSession,
    actor: Actor,
    obj: Editable,
    reason: str,
    *,
    mutation_id: uuid.UUID | None = None,
    client: str | None = None,
) -> None:
    obj.deleted_at = utcnow()
    stamp(session, actor, obj, ["deleted_at"], mutation_id=mutation_id, note=reason, client=client)


def new_conflict(
    obj: Editable,
    kind: str,
    field_name: str | None,
    base_version: int | None,
    server_value: Any,
    client_value: Any,
    actor: Actor,
    mutation_id: uuid.UUID | None,
    scope: str,
) -> SyncConflict:
    return SyncConflict(
        id=uuid.uuid4(),
        entity=kind_of(obj).entity,
        entity_id=str(obj.id),
        field=field_name,
        kind=kind,
        level="soft" if kind == "parallel_update" else "hard",
        base_version=base_version,
        server_value=server_value,
        client_value=client_value,
        mutation_id=mutation_id,
        author_id=actor.user_id,
        scope=scope,
        status="open",
    )


async def first_versions(
    session: AsyncSession, entity: str, ids: Sequence[uuid.UUID], *, by: uuid.UUID
) -> dict[str, dict[str, Any]]:
    """Each record's version 1 as created (its snapshot), by id: of the records user ``by`` created."""
    query = select(RecordVersion.entity_id, RecordVersion.data).where(
        RecordVersion.entity == entity,
        RecordVersion.entity_id.in_([str(i) for i in ids]),
        RecordVersion.version == 1,
        RecordVersion.author_id == by,
    )
    return {entity_id: data for entity_id, data in (await session.execute(query)).all()}


async def history(session: AsyncSession, entity: str, entity_id: uuid.UUID) -> list[RecordVersion]:
    rows = await session.execute(
        select(RecordVersion)
        .where(RecordVersion.entity == entity, RecordVersion.entity_id == str(entity_id))
        .order_by(RecordVersion.version)
    )
    return list(rows.scalars())
