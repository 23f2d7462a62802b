"""Households and members: read within scope, create, change against a version, reveal an ID number."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from sqlalchemy import Select, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from schemas.households import (
    HouseholdIn,
    HouseholdOut,
    HouseholdPage,
    HouseholdPatch,
    MemberIn,
    MemberOut,
    MemberPatch,
    RecordVersionOut,
)
from server.db.models import Household, HouseholdStatus, Jurisdiction, Level, Member, SyncConflict
from server.domain import id_numbers
from server.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    created_otherwise,
    id_in_use,
    stated_reason,
)
from server.services import audit, cursors, edits, lock_order, transaction
from server.services.actor import Actor, communities_in_scope, under
from sync.merge import rank

WRITER_ROLES = frozenset({"field_worker", "reviewer", "admin"})


def member_out(m: Member) -> MemberOut:
    return MemberOut(
        id=m.id,
        household_id=m.household_id,
        name=id_numbers.mask_text(m.name),
        relation=id_numbers.mask_text(m.relation),
        id_number_masked=id_numbers.mask(m.id_number),
        sex=m.sex,
        birth_date=m.birth_date,
        health=_free_text(m.health),
        disability=_free_text(m.disability),
        work_capacity=m.work_capacity,
        employment=_free_text(m.employment),
        version=m.version,
    )


def _free_text(text: str | None) -> str | None:
    """A member's detail as typed on a tablet: an ID number written into it leaves masked."""
    return None if text is None else id_numbers.mask_text(text)


def household_out(h: Household) -> HouseholdOut:
    return HouseholdOut(
        id=h.id,
        registry_no=h.registry_no,
        community_id=h.community_id,
        address=id_numbers.mask_text(h.address),  # free text: an ID number typed in leaves masked
        lat=h.lat,
        lon=h.lon,
        status=h.status,
        recheck_class=h.recheck_class,
        monthly_benefit_fen=h.monthly_benefit_fen,
        version=h.version,
        created_at=h.created_at,
        updated_at=h.updated_at,
        members=[member_out(m) for m in h.members if m.deleted_at is None],
        archived_at=h.deleted_at,
    )


def _scoped(actor: Actor, *, archived: bool = False, members: bool = True) -> Select[Household]:
    query = select(Household).where(communities_in_scope(actor))
    if members:
        query = query.options(selectinload(Household.members))
    return query if archived else query.where(Household.deleted_at.is_(None))


async def get(
    session: AsyncSession,
    actor: Actor,
    household_id: uuid.UUID,
    *,
    lock: bool = False,
    archived: bool = False,
    members: bool = True,
) -> Household:
    """A household in the caller's scope; archived ones only when asked for (sync merges into them)."""
    query = _scoped(actor, archived=archived, members=members).where(Household.id == household_id)
    if lock:
        query = query.with_for_update(of=Household)
    household = (await session.execute(query)).scalar_one_or_none()
    if household is None:
        raise NotFound("No such household.")
    return household


async def list_page(
    session: AsyncSession,
    actor: Actor,
    *,
    community_id: uuid.UUID | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> HouseholdPage:
    """Keyset pagination on (registry_no, id): stable under inserts, no OFFSET scans."""
    query = _scoped(actor).order_by(Household.registry_no, Household.id).limit(limit + 1)
    if community_id is not None:
        query = query.where(Household.community_id == community_id)
    if status is not None:
        query = query.where(Household.status == status)
    if cursor:
        after = cursors.decode(cursor)
        query = query.where(tuple_(Household.registry_no, Household.id) > tuple_(after[0], after[1]))
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = cursors.encode(rows[-1].registry_no, rows[-1].id) if more else None
    return HouseholdPage(items=[household_out(h) for h in rows], next_cursor=next_cursor)


def require_writer(actor: Actor) -> None:
    if actor.role not in WRITER_ROLES:
        raise Forbidden(f"A {actor.role} cannot change households.")


async def _community(session: AsyncSession, actor: Actor, community_id: uuid.UUID) -> Jurisdiction:
    node = (
        await session.execute(select(Jurisdiction).where(Jurisdiction.id == community_id, under(actor)))
    ).scalar_one_or_none()
    if node is None or node.level != Level.community:
        raise Invalid(
            "community_id must name a community in your jurisdiction.",
            details=[{"field": "community_id", "message": "not a community in your jurisdiction"}],
        )
    return node


def _check_members(members: list[MemberIn], prefix: str = "members") -> None:
    problems = [
        {"field": f"{prefix}[{i}].id_number", "message": why}
        for i, m in enumerate(members)
        if (why := id_numbers.problem(m.id_number))
    ]
    ids = [m.id for m in members]
    problems += [
        {"field": f"{prefix}[{i}].id", "message": "another member of this household has the same id"}
        for i, id_ in enumerate(ids)
        if id_ is not None and id_ in ids[:i]
    ]
    if problems:
        raise Invalid("; ".join(f"{p['field']}: {p['message']}" for p in problems), details=problems)
    _require_agreement(
        [
            (f"{prefix}[{i}]", id_numbers.contradictions(m.id_number, sex=m.sex, born=m.birth_date))
            for i, m in enumerate(members)
        ]
    )


def _require_agreement(found: list[tuple[str, dict[str, str]]]) -> None:
    """Refuse a sex or birth date that contradicts the member's own (valid) ID number: one of them is a
    typo, and eligibility rules (age, pension) read the birth date."""
    details = [
        {"field": f"{where}.{field}", "message": why} for where, bad in found for field, why in bad.items()
    ]
    if details:
        raise Invalid(
            "; ".join(f"{d['field']}: {d['message']}" for d in details),
            code="id_number_mismatch",
            details=details,
        )


def _new_member(household_id: uuid.UUID, m: MemberIn) -> Member:
    return Member(
        id=m.id or uuid.uuid4(),
        household_id=household_id,
        name=m.name,
        relation=m.relation,
        id_number=id_numbers.normalise(m.id_number),
        sex=m.sex,
        birth_date=m.birth_date,
        health=m.health,
        disability=m.disability,
        work_capacity=m.work_capacity,
        employment=m.employment,
    )


def _changed_audit(record: Household | Member, changed: list[str]) -> dict[str, Any]:
    """What an edit's audit row keeps: the fields it wrote and the version it made, never their values.

    An audit row can never be corrected nor deleted, and outlives every retention rule: a copy of an
    address, a name, a diagnosis in it would outlast the record itself. The values are in the record's
    history (`record_versions`, the same version number), shown only to those who may see the record."""
    return {"changed": sorted(changed), "version": record.version}


APPLICATION: dict[str, Any] = {"status": "applicant", "monthly_benefit_fen": 0}
"""A new household's status and benefit amount as a field worker registers it: an application's. The
status and the amount are decided in review and approval (a visit's outcome proposal, `admit` with its
amount, docs/workflow.md), not at the door."""


def proposal(actor: Actor, data: HouseholdIn) -> dict[str, Any]:
    """The guarded values a create sets otherwise than an application, when a field worker sends it:
    like a field worker's change of them, they wait for a supervisor."""
    if rank(actor.role) > 0:
        return {}
    return {f: getattr(data, f) for f, value in APPLICATION.items() if getattr(data, f) != value}


def _as_application(data: HouseholdIn, proposed: dict[str, Any]) -> HouseholdIn:
    return msgspec.structs.replace(data, **{f: APPLICATION[f] for f in proposed})


async def create(session: AsyncSession, actor: Actor, data: HouseholdIn) -> HouseholdOut:
    """REST: a field worker's create setting a status or an amount is refused (403 guarded_field), as a
    PATCH of them is."""
    created, _ = await _create(session, actor, data, mutation_id=None)
    return created


async def create_offline(
    session: AsyncSession, actor: Actor, data: HouseholdIn, mutation_id: uuid.UUID
) -> list[uuid.UUID]:
    """Sync: a field worker's create setting a status or an amount is stored as an application, and each
    value it proposes kept in a guarded_change conflict for a supervisor, as an offline edit of them is
    (refusing the create would also refuse every later edit of the household in the device's queue).
    The conflicts' ids."""
    _, conflict_ids = await _create(session, actor, data, mutation_id=mutation_id)
    return conflict_ids


async def _create(
    session: AsyncSession, actor: Actor, data: HouseholdIn, *, mutation_id: uuid.UUID | None
) -> tuple[HouseholdOut, list[uuid.UUID]]:
    require_writer(actor)
    await _community(session, actor, data.community_id)
    _check_registry_no(data.registry_no)
    _check_members(data.members)
    if (sent_before := await _answer_if_sent_before(session, actor, data)) is not None:
        return sent_before
    proposed = proposal(actor, data)
    if proposed and mutation_id is None:
        raise Forbidden(
            f"A field worker cannot set {', '.join(sorted(proposed))}: a household is registered as an "
            "applicant, and its status and amount are decided in review and approval.",
            code="guarded_field",
        )
    stored = _as_application(data, proposed)
    household = Household(
        id=data.id or uuid.uuid4(),
        registry_no=stored.registry_no,
        community_id=stored.community_id,
        address=stored.address,
        lat=stored.lat,
        lon=stored.lon,
        status=stored.status,
        recheck_class=stored.recheck_class,
        monthly_benefit_fen=stored.monthly_benefit_fen,
    )
    members = [_new_member(household.id, m) for m in data.members]
    session.add(household)
    session.add_all(members)
    edits.stamp_created(session, actor, [household, *members])
    conflicts = [
        _proposed_at_creation(household, f, value, actor, mutation_id) for f, value in proposed.items()
    ]
    session.add_all(conflicts)
    made: dict[str, object] = {
        "community_id": household.community_id,
        "members": [m.id for m in members],
        "version": 1,
    }
    if proposed:  # the fields only: the values are kept in the conflicts, as an edit's are in its history
        made["proposed"] = {"fields": sorted(proposed), "conflicts": [c.id for c in conflicts]}
    audit.record(session, actor, "household.create", "household", household.id, made)
    try:
        await transaction.commit(session)
    except IntegrityError as exc:
        await transaction.rollback(session)
        # On PostgreSQL another request may have stored one of its ids since the check above (both found
        # it free): answered as if this one came second. What is left taken is the registry number.
        if (
            transaction.lost_race(session, exc)
            and (sent_before := await _answer_if_sent_before(session, actor, data)) is not None
        ):
            return sent_before
        raise Conflict(f"Registry number {data.registry_no!r} is already in use.", code="duplicate") from None
    return await get_out(session, actor, household.id), [c.id for c in conflicts]


def _check_registry_no(registry_no: str) -> None:
    """A registry number is shown as typed wherever its household is, to everyone who sees it: it is the
    household's key (lists sort and page by it), so unlike an address it cannot leave masked. One holding
    an ID number (a file numbered by the applicant's, as some localities do) is refused, not echoed."""
    if id_numbers.mask_text(registry_no) != registry_no:
        raise Invalid(
            "A registry number must not hold an identity number: it is shown in full to everyone who sees "
            "the household. Number the file another way.",
            details=[{"field": "registry_no", "message": "holds an identity number"}],
        )


def _proposed_at_creation(
    household: Household, field: str, value: Any, actor: Actor, mutation_id: uuid.UUID | None
) -> SyncConflict:
    """A guarded value a field worker's create proposed: no base version (there was no record before)."""
    conflict = edits.new_conflict(
        household,
        "guarded_change",
        field,
        None,
        edits.wire(APPLICATION[field]),
        edits.wire(value),
        actor,
        mutation_id,
        str(household.community_id),
    )
    conflict.provisional = "server"
    return conflict


async def _answer_if_sent_before(
    session: AsyncSession, actor: Actor, data: HouseholdIn
) -> tuple[HouseholdOut, list[uuid.UUID]] | None:
    """The answer to a create whose household already exists under its id: the household as it stands
    if it is the same create sent again (with the conflicts that keep what it proposed), else a refusal
    (see require_same_create). A member id another member has is refused too. None when none of its ids
    is taken: it may be stored."""
    if data.id is not None and (earlier := await session.get(Household, data.id)) is not None:
        kept = await require_same_create(session, actor, earlier, data)
        # As it stands, archived since or not: the same create answers as the first did.
        return household_out(await get(session, actor, earlier.id, archived=True)), kept
    await _member_ids_unused(session, [m.id for m in data.members if m.id is not None])
    return None


async def get_out(session: AsyncSession, actor: Actor, household_id: uuid.UUID) -> HouseholdOut:
    return household_out(await get(session, actor, household_id))


async def patch(
    session: AsyncSession, actor: Actor, household_id: uuid.UUID, data: HouseholdPatch
) -> HouseholdOut:
    require_writer(actor)
    household = await get(session, actor, household_id, lock=True)
    _require_version(household, data.version)
    values = _present(data)
    changed = edits.change_now(session, actor, household, values)
    if changed:
        audit.record(
            session, actor, "household.update", "household", household.id, _changed_audit(household, changed)
        )
    await transaction.commit(session)
    return household_out(household)


def _present(patch: HouseholdPatch | MemberPatch) -> dict[str, Any]:
    """The fields a PATCH body sets (its `version` aside)."""
    return {
        f: v for f, v in msgspec.structs.asdict(patch).items() if f != "version" and v is not msgspec.UNSET
    }


def _require_version(record: Household | Member, version: int) -> None:
    if record.version != version:
        raise Conflict(
            f"The record changed since version {version}; it is at {record.version}.",
            code="stale_version",
            details={"current_version": record.version},
        )


async def add_member(
    session: AsyncSession, actor: Actor, household_id: uuid.UUID, data: MemberIn
) -> MemberOut:
    require_writer(actor)
    # Archived ones too: a create sent again after the household was archived answers as the first did.
    household = await get(session, actor, household_id, lock=True, archived=True)
    _check_members([data], prefix="body")
    if data.id is not None and (earlier := await session.get(Member, data.id)) is not None:
        await require_same_member_create(session, actor, earlier, household.id, data)
        return member_out(earlier)  # the same create sent again
    if household.deleted_at is not None:
        raise NotFound("No such household.")
    member = _new_member(household.id, data)
    session.add(member)
    edits.stamp_created(session, actor, [member])
    made = {"household_id": household.id, "version": 1}
    audit.record(session, actor, "member.create", "member", member.id, made)
    try:
        await transaction.commit(session)
    except IntegrityError:  # the same id created meanwhile by another request
        await transaction.rollback(session)
        raise id_in_use("member", member.id) from None
    return member_out(member)


async def require_same_create(
    session: AsyncSession, actor: Actor, household: Household, data: HouseholdIn
) -> list[uuid.UUID]:
    """A create naming an existing household's id is the same create sent again (a retry, or a device
    that queued it twice) only if it carries nothing the creation did not store: compared with version 1,
    not the current state, so a create delivered after later edits still matches. Anything else is
    refused, never merged silently: its values would be lost.

    Only the user who created a record can send its create again. From anyone else the comparison would
    answer whether a guessed ID number is a member's (201 or 409, nothing audited): a worker who sees it
    masked could find it in a few hundred tries.

    A field worker's create stored as an application (see create_offline) is the same create if what it
    proposed is kept in the conflicts its creation opened; their ids are returned, the answer it got."""
    if (household.registry_no, household.community_id) != (data.registry_no, data.community_id):
        raise id_in_use("household", household.id)
    created = await edits.first_versions(session, "household", [household.id], by=actor.user_id)
    if str(household.id) not in created:
        raise _not_creator("household", household.id)
    kept = await _proposals_kept(session, actor, household, data, created[str(household.id)])
    member_ids = list(
        (await session.execute(select(Member.id).where(Member.household_id == household.id))).scalars()
    )
    # Members someone else added are not this user's to match, whatever the create says of them.
    unmatched = await edits.first_versions(session, "member", member_ids, by=actor.user_id)
    for m in data.members:
        as_sent = edits.snapshot(_new_member(household.id, m))
        key = str(m.id) if m.id is not None else _key_of(unmatched, as_sent)
        if key is None or unmatched.pop(key, None) != as_sent:
            raise created_otherwise("household", household.id)
    return kept


async def _proposals_kept(
    session: AsyncSession, actor: Actor, household: Household, data: HouseholdIn, created: dict[str, Any]
) -> list[uuid.UUID]:
    """The conflicts keeping the guarded values a create proposed when it was stored (none if it was
    stored as sent); created_otherwise if the create is not the one stored."""
    if created == edits.snapshot_as(edits.HOUSEHOLD, data):
        return []  # stored as sent: a supervisor's, or one from before field workers' were applications
    proposed = proposal(actor, data)
    if not proposed or created != edits.snapshot_as(edits.HOUSEHOLD, _as_application(data, proposed)):
        raise created_otherwise("household", household.id)
    query = select(SyncConflict.id, SyncConflict.field, SyncConflict.client_value).where(
        SyncConflict.entity == "household",
        SyncConflict.entity_id == str(household.id),
        SyncConflict.kind == "guarded_change",
        SyncConflict.base_version.is_(None),  # proposed at creation, not by a later edit
        SyncConflict.author_id == actor.user_id,
    )
    found = {
        field: id_
        for id_, field, value in await session.execute(query)
        if field in proposed and value == edits.wire(proposed[field])
    }
    if set(found) != set(proposed):
        raise created_otherwise("household", household.id)
    return [found[f] for f in sorted(found)]


async def require_same_member_create(
    session: AsyncSession, actor: Actor, member: Member, household_id: uuid.UUID, data: MemberIn
) -> None:
    """As require_same_create, for a member created on its own (by this user only)."""
    if member.household_id != household_id:
        raise id_in_use("member", member.id)
    created = await edits.first_versions(session, "member", [member.id], by=actor.user_id)
    if str(member.id) not in created:
        raise _not_creator("member", member.id)
    if created[str(member.id)] != edits.snapshot(_new_member(household_id, data)):
        raise created_otherwise("member", member.id)


def _not_creator(kind: str, id_: uuid.UUID) -> Conflict:
    """The answer to a create sent under the id of a record someone else created, whatever it holds."""
    return Conflict(
        f"The {kind} {id_} was created by someone else; only its creator can send its create again.",
        code="created_otherwise",
    )


def _key_of(versions: dict[str, dict[str, Any]], wanted: dict[str, Any]) -> str | None:
    return next((key for key, data in versions.items() if data == wanted), None)


async def _member_ids_unused(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids and (taken := (await session.execute(select(Member.id).where(Member.id.in_(ids)))).scalar()):
        raise id_in_use("member", taken)


async def get_member(
    session: AsyncSession, actor: Actor, member_id: uuid.UUID, *, lock: bool = False, archived: bool = False
) -> Member:
    query = (
        select(Member)
        .join(Household, Household.id == Member.household_id)
        .where(Member.id == member_id, communities_in_scope(actor))
    )
    if not archived:
        query = query.where(Member.deleted_at.is_(None), Household.deleted_at.is_(None))
    if lock:
        # The household too (see visits.get), and first: the order all writes lock in (lock_order).
        await lock_order.lock_household_of_member(session, member_id)
        query = query.with_for_update(of=(Member, Household))
    member = (await session.execute(query)).scalar_one_or_none()
    if member is None:
        raise NotFound("No such member.")
    return member


async def patch_member(
    session: AsyncSession, actor: Actor, member_id: uuid.UUID, data: MemberPatch
) -> MemberOut:
    require_writer(actor)
    member = await get_member(session, actor, member_id, lock=True)
    _require_version(member, data.version)
    values = edits.validate(edits.MEMBER, _present(data), where="body")
    require_agreement(member, values)
    changed = edits.change_now(session, actor, member, values)
    if changed:
        audit.record(session, actor, "member.update", "member", member.id, _changed_audit(member, changed))
    await transaction.commit(session)
    return member_out(member)


def require_agreement(
    member: Member, values: dict[str, Any], where: str = "body", *, number_typed: bool = True
) -> None:
    """Refuse new values that leave the member's sex or birth date contradicting their ID number.
    `number_typed`: whether the caller typed the ID number in `values` (a supervisor taking a device's
    sees it masked, so is not told what it says)."""
    _require_agreement([(where, _contradictions_after(member, values, number_typed))])


def _contradictions_after(member: Member, values: dict[str, Any], number_typed: bool) -> dict[str, str]:
    """What the member would hold after a patch touching its ID number, sex or birth date and that
    contradicts the ID number (a stored number that does not parse, from before checks, is left alone)."""
    if not values.keys() & {"id_number", "sex", "birth_date"}:
        return {}
    after = {f: values.get(f, getattr(member, f)) for f in ("id_number", "sex", "birth_date")}
    if id_numbers.problem(after["id_number"]):
        return {}
    found = id_numbers.contradictions(after["id_number"], sex=after["sex"], born=after["birth_date"])
    if "id_number" in values and number_typed:
        return found  # the caller sent the number: what it says is no news to them
    # A number the caller sees masked: say that it disagrees, not what it holds (its birth date is
    # digits 7-14, which the mask hides).
    return {field: "does not agree with the member's ID number" for field in found}


async def history(
    session: AsyncSession, actor: Actor, entity: str, entity_id: uuid.UUID
) -> list[RecordVersionOut]:
    """Every version of a household (incl. its re-check class history) or member, ID numbers masked."""
    if entity == "household":
        await get(session, actor, entity_id, archived=True)
    else:
        await get_member(session, actor, entity_id, archived=True)
    return [
        RecordVersionOut(
            version=v.version,
            data={k: id_numbers.mask_field(k, x) for k, x in v.data.items()},  # in an address too
            changed=v.changed,
            author_id=v.author_id,
            mutation_id=v.mutation_id,
            at=v.at,
            note=None if v.note is None else id_numbers.mask_text(v.note),  # a device's removal reason
        )
        for v in await edits.history(session, entity, entity_id)
    ]


async def reveal_id_number(
    session: AsyncSession, actor: Actor, member_id: uuid.UUID, reason: str, reveal_roles: tuple[str, ...]
) -> str:
    """The full ID number, for a role allowed to see it; the reading itself is audited with its reason,
    and so is each refusal (`member.reveal_id_refused`)."""
    try:
        member = await get_member(session, actor, member_id, archived=True)
        if actor.role not in reveal_roles:
            raise Forbidden(f"A {actor.role} may not see full ID numbers.", code="reveal_forbidden")
        stated = stated_reason(reason, audit.REVEAL_REASON_MIN_LENGTH, "Say why you need the full ID number.")
    except DomainError as refused:
        await audit.record_refused(
            session, actor, "member.reveal_id_refused", "member", member_id, refused, reason
        )
        raise
    audit.record(
        session,
        actor,
        "member.reveal_id",
        "member",
        member.id,
        {"household_id": member.household_id},
        reason=stated,
    )
    await transaction.commit(session)
    return member.id_number


OUTCOME_STATUS = {
    "admit": HouseholdStatus.active,
    "stop": HouseholdStatus.exited,
    "phase_out": HouseholdStatus.phase_out,
}
"""The household's status after an approved outcome that changes it (research.md §8: Approved → Active,
Stopping → Exited, PhaseOut); the other outcomes keep the status."""


def outcome_values(outcome: str, amount_fen: int | None) -> dict[str, Any]:
    """What an approved outcome sets on the household: the amount the county set (a stop pays nothing; an
    outcome without an amount keeps it) and the status it leads to."""
    values: dict[str, Any] = {}
    if outcome == "stop":
        values["monthly_benefit_fen"] = 0
    elif amount_fen is not None:
        values["monthly_benefit_fen"] = amount_fen
    if outcome in OUTCOME_STATUS:
        values["status"] = OUTCOME_STATUS[outcome].value
    return values


def put_outcome_into_effect(
    session: AsyncSession,
    actor: Actor,
    household: Household,
    visit_id: uuid.UUID,
    outcome: str,
    amount_fen: int | None,
    decided_on: dt.date,
) -> list[str]:
    """The confirming level approved the visit's outcome: the household's benefit and status become what
    was decided (2021 办法 Art 21: the county sets the amount; Art 31: raise, reduce, stop), as a new
    version written by the approver (guarded fields: no field worker's edit could), in the history and
    the audit, and in the sync feed for the devices. Payment follows from the next month, which the
    version's note records. An archived household is a tombstone and stays as it is. Returns the fields
    changed."""
    if household.deleted_at is not None:
        return []
    values = outcome_values(outcome, amount_fen)
    before = {f: getattr(household, f) for f in values}
    paid_from = (decided_on.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    note = f"visit {visit_id} approved: {outcome}, paid from {paid_from:%Y-%m}"
    changed = edits.change_now(session, actor, household, values, note=note)
    if changed:
        changes = {f: {"old": before[f], "new": values[f]} for f in changed}
        audit.record(session, actor, "household.update", "household", household.id, changes, reason=note)
    return changed
