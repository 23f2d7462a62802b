"""The change feed: every flush that touches a synced record stamps it into `sync_changes`.

It runs as a SQLAlchemy `before_flush` hook on every session, so no code path (REST, sync push, the
CLI, the demo seed) can change a synced record without the feed knowing.

Sequence numbers follow commit order. While a transaction works, its stamps wait in the session
(`_staged`: which record, its community, whether devices are to drop it), undone with any savepoint
rolled back. When the transaction commits, it takes the next number from `sync_state.seq` with an UPDATE,
whose row lock (PostgreSQL) or single-writer lock (SQLite) lasts until the commit is done, and writes its
stamps with that number. Numbers are therefore handed out in commit order: a pull that has seen N will
never later meet an N-1 committed behind its back. Taking the number last keeps the lock short:
concurrent pushes serialise only on their numbering and commit, not on their whole work. On PostgreSQL
the numbering runs inside the COMMIT itself (a deferred trigger fired by one `sync_numbering` row that
carries the stamps, migrations 0017 and 0019), so the lock never waits on a round trip to this process;
on SQLite the server runs the same statements just before COMMIT. Each stamp is written once, with its
number: writing it with a stand-in first and renumbering it at COMMIT cost PostgreSQL twice the work.

Scope exits (a record leaving a community) are rare and written as rows while the transaction works,
with a stand-in number of the transaction's own (negative, so never committed: `_placeholder`) that the
COMMIT replaces.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any, cast

from sqlalchemy import Table, delete, event, insert, inspect, select, union_all, update
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from schemas.sync import target_named
from server.db.bulk_insert import BulkInsert
from server.db.models import (
    ChecklistTemplate,
    Household,
    Jurisdiction,
    Member,
    Observation,
    Photo,
    PhotoRef,
    PhotoRefusal,
    ScopeExit,
    SyncChange,
    SyncConflict,
    SyncNumbering,
    SyncState,
    TemplateStatus,
    Visit,
    VisitTeamMember,
    VisitTransition,
)
from server.domain import tree_paths

ENTITY = {
    Household: "household",
    Member: "member",
    Visit: "visit",
    Observation: "observation",
    VisitTransition: "visit_event",
    ChecklistTemplate: "template",
    SyncConflict: "conflict",
}
EVERYONE = "*"
_PENDING, _SCOPES = "fivestep_feed_placeholder", "fivestep_feed_scopes"


def take_seq(session: Session) -> int:
    """The next sequence number; its row lock is held until this transaction ends."""
    statement = (
        update(SyncState).where(SyncState.id == 1).values(seq=SyncState.seq + 1).returning(SyncState.seq)
    )
    return int(session.execute(statement).scalar_one())


def _placeholder(session: Session, *scopes: str) -> int:
    """This transaction's stand-in for its sequence number, noting the scopes of the scope exits written
    with it (renumbered at COMMIT)."""
    placeholder: int | None = session.info.get(_PENDING)
    if placeholder is None:
        placeholder = -1 - secrets.randbits(62)
        session.info[_PENDING] = placeholder
        session.info[_SCOPES] = set()
    session.info[_SCOPES].update(scopes)
    return placeholder


Key = tuple[str, str]
"""A stamp's record: (entity, entity_id)."""
Stamp = tuple[str, bool] | None
"""Where the record's stamp goes: (community, whether devices drop it); None takes the stamp out of the
feed altogether (a photo leaving a community, `_move_photos`)."""
_STAGED, _SAVED, _KEPT = "fivestep_feed_staged", "fivestep_feed_saved", "fivestep_feed_kept"


def _staged(session: Session) -> dict[Key, Stamp]:
    """This transaction's stamps, written at COMMIT."""
    staged: dict[Key, Stamp] = session.info.setdefault(_STAGED, {})
    return staged


def _stage(session: Session, stamps: dict[Key, Stamp]) -> None:
    _staged(session).update(stamps)


def _savepoint_began(session: Session, transaction: SessionTransaction) -> None:
    # The stamps as they were when a savepoint began, given back if it is rolled back: the rows it wrote
    # are undone by the database, and their stamps must be too (a create refused would otherwise be
    # announced to devices).
    if transaction.nested:
        session.info.setdefault(_SAVED, {})[transaction] = dict(session.info.get(_STAGED, {}))


def _savepoint_committed(session: Session) -> None:
    # SQLAlchemy calls this for a savepoint released as well as for the whole transaction, before it
    # closes either; which one it was is told by the savepoint still being the session's current one.
    released = session.get_nested_transaction()
    if released is not None:
        session.info.setdefault(_KEPT, set()).add(released)


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _forget(session)
        return
    if not transaction.nested:
        return  # a flush's own subtransaction: its savepoint, if any, decides
    before = session.info.get(_SAVED, {}).pop(transaction, None)
    kept: set[SessionTransaction] = session.info.get(_KEPT, set())
    if transaction in kept:
        kept.discard(transaction)
    elif before is not None:
        session.info[_STAGED] = before
        # A stand-in number taken inside it stays: rows written with it are undone anyway, and at worst
        # the transaction takes a number for nothing.


def _forget(session: Session) -> None:
    for key in (_PENDING, _SCOPES, _STAGED, _SAVED, _KEPT):
        session.info.pop(key, None)


def _number_stamps(session: Session) -> None:
    """Before COMMIT: take the number and write this transaction's stamps with it."""
    # A savepoint: one number for the whole transaction, taken when it commits. The hook cannot tell this
    # from committing the whole transaction while a savepoint is still open (SQLAlchemy then commits the
    # savepoint after this hook), so code that opens savepoints closes them before committing: the push
    # does, and nothing else opens any.
    if session.in_nested_transaction():
        return
    session.flush()  # whatever is still pending gets stamped first
    staged = sorted(session.info.get(_STAGED, {}).items())  # in key order: rows are locked in one order
    if not staged and _PENDING not in session.info:
        return
    placeholder = _placeholder(session)
    scopes = sorted(session.info[_SCOPES])  # of the scope exits written with the placeholder
    _forget(session)
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL does the rest inside the COMMIT (a deferred trigger, migrations 0017 and 0019): the
        # lock on `sync_state` is then never held across a round trip through this busy event loop.
        request = {"placeholder": placeholder, "scopes": ",".join(scopes), **_as_arrays(staged)}
        session.execute(_ASK_FOR_NUMBER, request)
        return
    seq = take_seq(session)
    for (entity, entity_id), stamp in staged:
        if stamp is None:
            session.execute(
                delete(SyncChange).where(SyncChange.entity == entity, SyncChange.entity_id == entity_id)
            )
    rows = [_row(e, i, stamp[0], seq, stamp[1]) for (e, i), stamp in staged if stamp is not None]
    if rows:
        _UPSERT.run(session, rows)
    if scopes:
        session.execute(
            update(ScopeExit)
            .where(ScopeExit.scope.in_(scopes), ScopeExit.seq == placeholder)
            .values(seq=seq)
            .execution_options(synchronize_session=False)
        )


def _as_arrays(staged: list[tuple[Key, Stamp]]) -> dict[str, list[Any]]:
    """The stamps as `sync_numbering`'s columns: one array per field, a dropped stamp's scope NULL."""
    return {
        "entities": [entity for (entity, _), _ in staged],
        "entity_ids": [entity_id for (_, entity_id), _ in staged],
        "stamp_scopes": [None if stamp is None else stamp[0] for _, stamp in staged],
        "stamps_deleted": [stamp is not None and stamp[1] for _, stamp in staged],
    }


def _before_flush(session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
    # session.dirty is rebuilt on every access: read it once, not once per new record.
    touched = [o for o in session.new if _synced(o)]
    touched += [o for o in session.dirty if _synced(o) and session.is_modified(o)]
    visits_of_team = {o.visit_id for o in session.new if isinstance(o, VisitTeamMember)}
    photos = [o for o in session.new if isinstance(o, Photo | PhotoRef | PhotoRefusal)]
    if not touched and not visits_of_team and not photos:
        return
    with session.no_autoflush:
        scopes = _Scopes(session)
        stamps: dict[Key, Stamp] = {}
        for obj in touched:
            scope = scopes.of(obj)
            stamps[(ENTITY[type(obj)], str(obj.id))] = (scope, scopes.gone(obj))
            if isinstance(obj, Household):
                _household_moved(session, obj)
                _household_archived(session, obj, scope, stamps)
        for visit_id in visits_of_team:
            stamps.setdefault(("visit", str(visit_id)), (scopes.of_visit(visit_id), False))
        for photo in photos:
            _stamp_photo(session, scopes, photo, stamps)
        # Staged after a move's own (which carries earlier stamps along): this flush knows better.
        # Nothing staged (a photo no visit names yet) takes no number at commit, and never waits on
        # `sync_state`'s row lock, which every writer of the feed queues for.
        _stage(session, stamps)


def stamp_written(
    session: Session, observations: list[tuple[uuid.UUID, uuid.UUID]], refs: list[tuple[str, uuid.UUID]]
) -> None:
    """Stamp observations (id, visit id) and photo references (SHA-256, visit id) written as plain rows
    (server/db/observation_rows.py), which the hook above never sees, as it stamps their ORM objects:
    each in the community of its visit, a photo under its key there (`_stamp_photo`)."""
    scopes = _Scopes(session)
    staged = _staged(session)
    for observation_id, visit_id in observations:
        staged[("observation", str(observation_id))] = (scopes.of_visit(visit_id), False)
    for sha256, visit_id in refs:
        scope = scopes.of_visit(visit_id)
        staged[("photo", photo_key(sha256, scope))] = (scope, False)


def photo_key(sha256: str, scope: str) -> str:
    """A photo's key in the feed: one per community that has a visit naming it, so that each community's
    devices receive it (the same photo can be evidence in two communities: that is what the reused-photo
    check looks for). Devices never see this key; a pulled photo's id is its SHA-256."""
    return f"{sha256}/{scope}"


def photo_sha(key: str) -> str:
    return key.partition("/")[0]


def _stamp_photo(
    session: Session,
    scopes: _Scopes,
    photo: Photo | PhotoRef | PhotoRefusal,
    stamps: dict[Key, Stamp],
) -> None:
    """A photo record goes to the community of a visit that references it when the reference arrives
    (expected), and to every community with a visit referencing it when the bytes do (present) or are
    refused (refused)."""
    if isinstance(photo, PhotoRef):
        communities = [scopes.of_visit(photo.visit_id)]
    else:
        communities = _communities_referencing(session, photo.sha256)
    for scope in communities:
        stamps[("photo", photo_key(photo.sha256, scope))] = (scope, False)


def _communities_referencing(session: Session, sha256: str) -> list[str]:
    query = (
        select(Household.community_id)
        .join(Visit, Visit.household_id == Household.id)
        .join(PhotoRef, PhotoRef.visit_id == Visit.id)
        .where(PhotoRef.sha256 == sha256)
        .distinct()
    )
    return sorted(str(c) for c in session.execute(query).scalars())


def _synced(obj: object) -> bool:
    if type(obj) not in ENTITY:
        return False
    return not (isinstance(obj, ChecklistTemplate) and obj.status == TemplateStatus.draft)


def _row(entity: str, entity_id: object, scope: str, seq: int, deleted: bool) -> dict[str, Any]:
    return {"entity": entity, "entity_id": str(entity_id), "scope": scope, "seq": seq, "deleted": deleted}


class _Scopes:
    """The community each record belongs to, looked up once per flush."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # Records created in this very flush are not in the database yet: learn them first.
        pending = [*session.new, *session.dirty]
        self.households = {o.id: o for o in pending if isinstance(o, Household)}
        self.household_scope = {i: str(h.community_id) for i, h in self.households.items()}
        self.visit_household = {o.id: o.household_id for o in pending if isinstance(o, Visit)}

    def of(self, obj: object) -> str:
        match obj:
            case Household():
                return str(obj.community_id)
            case Member():
                return self.of_household(obj.household_id)
            case Visit():
                return self.of_household(obj.household_id)
            case Observation() | VisitTransition():
                return self.of_visit(obj.visit_id)
            case SyncConflict():
                return obj.scope
        return EVERYONE

    def of_household(self, household_id: uuid.UUID) -> str:
        if household_id not in self.household_scope:
            self.household_scope[household_id] = str(self._household(household_id).community_id)
        return self.household_scope[household_id]

    def gone(self, obj: object) -> bool:
        """Whether devices are to forget the record: it is a tombstone, or a member of an archived
        household (which nobody reads as a member any more, as REST does not)."""
        if getattr(obj, "deleted_at", None) is not None:
            return True
        return isinstance(obj, Member) and self._household(obj.household_id).deleted_at is not None

    def _household(self, household_id: uuid.UUID) -> Household:
        if household_id not in self.households:
            household = self.session.get(Household, household_id)
            assert household is not None, f"household {household_id} vanished mid-flush"
            self.households[household_id] = household
        return self.households[household_id]

    def of_visit(self, visit_id: uuid.UUID) -> str:
        if visit_id not in self.visit_household:
            visit = self.session.get(Visit, visit_id)
            assert visit is not None, f"visit {visit_id} vanished mid-flush"
            self.visit_household[visit_id] = visit.household_id
        return self.of_household(self.visit_household[visit_id])


def _household_moved(session: Session, household: Household) -> None:
    """A household changed community: devices of the old one drop it, the new one gets it whole."""
    history = inspect(household).attrs.community_id.history
    if not history.deleted or household in session.new:
        return
    old, new = str(history.deleted[0]), str(household.community_id)
    seq = _placeholder(session, old)
    session.add(ScopeExit(entity="household", entity_id=str(household.id), scope=old, seq=seq))
    children = _children_of(session, household.id)
    _carry(session, children, old, new)
    _move_conflicts(session, [str(household.id), *children], old, new, seq)
    _move_photos(session, household, old, new, seq)


def _carry(session: Session, entity_ids: list[str], old: str, new: str, entity: str | None = None) -> None:
    """Stamp these records anew in community `new`, those stamped in `old`: committed stamps as they
    stand, and this transaction's own."""
    staged = _staged(session)
    ids = set(entity_ids)
    for key, stamp in list(staged.items()):
        if key[1] in ids and stamp is not None and stamp[0] == old and entity in (None, key[0]):
            staged[key] = (new, stamp[1])
    if not ids:
        return
    committed = select(SyncChange.entity, SyncChange.entity_id, SyncChange.deleted).where(
        SyncChange.entity_id.in_(entity_ids), SyncChange.scope == old
    )
    if entity is not None:
        committed = committed.where(SyncChange.entity == entity)
    for found, entity_id, deleted in session.execute(committed):
        staged.setdefault((found, entity_id), (new, deleted))  # one staged already is newer


def _household_archived(session: Session, household: Household, scope: str, stamps: dict[Key, Stamp]) -> None:
    """Archiving a household takes its members off the devices with it; restoring it brings back those
    not removed on their own. (Its visits stay, as they do for REST.)"""
    if not inspect(household).attrs.deleted_at.history.has_changes() or household in session.new:
        return
    archived = household.deleted_at is not None
    members = select(Member.id, Member.deleted_at).where(Member.household_id == household.id)
    for member_id, deleted_at in session.execute(members):
        # A member changed in this very flush has its own row already, which knows its state better.
        stamps.setdefault(("member", str(member_id)), (scope, archived or deleted_at is not None))


def _move_conflicts(session: Session, entity_ids: list[str], old: str, new: str, seq: int) -> None:
    """Conflicts about the household and what hangs under it go with it: the new community's reviewers
    decide them and its devices receive them; the old community's devices drop them. Those kept at a node
    over the old community but not over the new one (an edit whose sender had moved to another community:
    sync_push._quarantine_scope) go to the node over both, and that node's devices drop them."""
    for source, target in _conflict_moves(session, old, new):
        _move_conflicts_from(session, entity_ids, source, target, seq)


def _conflict_moves(session: Session, old: str, new: str) -> list[tuple[str, str]]:
    """(from, to) scopes of the conflicts of a household moving from community `old` to `new`."""
    moves = [(old, new)]
    query = select(Jurisdiction.id, Jurisdiction.path).where(
        Jurisdiction.id.in_([uuid.UUID(old), uuid.UUID(new)])
    )
    paths = {str(node): path for node, path in session.execute(query)}
    if old not in paths or new not in paths:
        return moves
    shared = tree_paths.shared_path(paths[old], paths[new])
    left = [p for p in tree_paths.paths_above(paths[old]) if not paths[new].startswith(p)]
    if not left:
        return moves
    nodes = select(Jurisdiction.path, Jurisdiction.id).where(Jurisdiction.path.in_([*left, shared]))
    found = {path: str(node) for path, node in session.execute(nodes)}
    if shared not in found:
        return moves
    return moves + [(found[p], found[shared]) for p in left if p in found]


def _move_conflicts_from(session: Session, entity_ids: list[str], old: str, new: str, seq: int) -> None:
    moving = select(SyncConflict.id).where(SyncConflict.entity_id.in_(entity_ids), SyncConflict.scope == old)
    ids = [str(i) for i in session.execute(moving).scalars()]
    ids += _kept_whole_aimed_at(session, entity_ids, old)
    if not ids:
        return
    _placeholder(session, old)
    session.execute(
        update(SyncConflict)
        .where(SyncConflict.id.in_([uuid.UUID(i) for i in ids]))
        .values(scope=new)
        .execution_options(synchronize_session="fetch")
    )
    _carry(session, ids, old, new, entity="conflict")
    session.add_all(ScopeExit(entity="conflict", entity_id=i, scope=old, seq=seq) for i in ids)


def _kept_whole_aimed_at(session: Session, entity_ids: list[str], scope: str) -> list[str]:
    """The quarantines in `scope` of mutations kept whole (entity `mutation`, the mutation as sent in
    `client_value.body`) that name one of these records. Read in Python, with the push's own reading of
    a body: such mutations are rare, households move rarely, and a JSON path would differ by database."""
    kept = select(SyncConflict.id, SyncConflict.client_value).where(
        SyncConflict.entity == "mutation", SyncConflict.scope == scope
    )
    aimed = set(entity_ids)
    return [
        str(conflict_id)
        for conflict_id, value in session.execute(kept)
        if isinstance(value, dict)
        and (named := target_named(value.get("body"))) is not None
        and str(named[1]) in aimed
    ]


def _move_photos(session: Session, household: Household, old: str, new: str, seq: int) -> None:
    """The household's photos go with it; the old community keeps those that another of its visits names,
    stamped anew: their visits there no longer include this household's."""
    of_household = (
        select(PhotoRef.sha256)
        .join(Visit, Visit.id == PhotoRef.visit_id)
        .where(Visit.household_id == household.id)
    )
    shas = set(session.execute(of_household).scalars())
    if not shas:
        return
    named_elsewhere = (
        select(PhotoRef.sha256)
        .join(Visit, Visit.id == PhotoRef.visit_id)
        .join(Household, Household.id == Visit.household_id)
        .where(
            PhotoRef.sha256.in_(shas),
            Household.community_id == uuid.UUID(old),  # the others' rows: this household's is not written yet
            Household.id != household.id,
        )
    )
    staying = set(session.execute(named_elsewhere).scalars())
    leaving = sorted(shas - staying)
    stamps: dict[Key, Stamp] = {("photo", photo_key(sha, new)): (new, False) for sha in shas}
    stamps |= {("photo", photo_key(sha, old)): (old, False) for sha in staying}
    # The old community's key of a photo leaving it goes at COMMIT with the rest (None), so that this
    # transaction never holds a lock on the feed while it queues for the number.
    stamps |= {("photo", photo_key(sha, old)): None for sha in leaving}
    _stage(session, stamps)
    if leaving:
        _placeholder(session, old)
        session.add_all(
            ScopeExit(entity="photo", entity_id=photo_key(sha, old), scope=old, seq=seq) for sha in leaving
        )


def _children_of(session: Session, household_id: uuid.UUID) -> list[str]:
    visits = select(Visit.id).where(Visit.household_id == household_id)
    ids = union_all(
        select(Member.id).where(Member.household_id == household_id),
        visits,
        select(Observation.id).where(Observation.visit_id.in_(visits)),
        select(VisitTransition.id).where(VisitTransition.visit_id.in_(visits)),
    )
    return [str(i) for (i,) in session.execute(ids)]


# SQLite: one statement for all of a transaction's stamps (bulk_insert.py); rows are unique by key, as a
# dict builds them.
_UPSERT = BulkInsert(
    cast(Table, SyncChange.__table__),
    ["entity", "entity_id", "scope", "seq", "deleted"],
    upsert_on=["entity", "entity_id"],
)
# PostgreSQL: on the table, not the mapped class, as for the upsert: a single plain INSERT.
_ASK_FOR_NUMBER = insert(cast(Table, SyncNumbering.__table__))


def install() -> None:
    """Hook the feed into every session (idempotent)."""
    if not event.contains(Session, "before_flush", _before_flush):
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "before_commit", _number_stamps)
        event.listen(Session, "after_transaction_create", _savepoint_began)
        event.listen(Session, "after_commit", _savepoint_committed)
        event.listen(Session, "after_transaction_end", _transaction_ended)
