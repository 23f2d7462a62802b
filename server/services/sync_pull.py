"""Pull: the changes in the caller's scope after their cursor, in commit order (docs/sync-protocol.md).

One read snapshot per page (REPEATABLE READ on PostgreSQL; one WAL read transaction on SQLite): the
client's last_mutation_seq, the sequence watermark and the rows all come from the same instant, so a
client that sees its mutation as applied also receives every effect of it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Select, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.sync import SCHEMA_VERSION, Change, PullRequest, PullResponse
from server.db.engine import Database
from server.db.feed import EVERYONE, photo_sha
from server.db.models import Jurisdiction, ScopeExit, SyncChange, SyncClient, SyncState
from server.errors import Invalid
from server.services import sync_clients, sync_rows
from server.services.actor import Actor, under
from sync.cursor import BadCursor, Cursor, decode, encode

ChangeRow = Row[str, str, int, bool]


async def pull(db: Database, actor: Actor, request: PullRequest) -> PullResponse:
    check_schema(request.schema_version)
    cursor = _decode(request.cursor)
    if cursor is None:
        await _rebuilding(db, actor, request)
    async with db.read_session() as session:
        if db.engine.dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        page, client = await _page(session, actor, request, cursor)
    if page.reason == "epoch_changed" and cursor is not None:
        async with db.write_session() as session:
            await sync_clients.note_past_epoch(
                session, actor, request.client_id, request.schema_version, cursor
            )
            await session.commit()
    device_now = request.device_now
    if device_now is not None and client is not None and sync_clients.clock_is_news(client, device_now):
        async with db.write_session() as session:
            await sync_clients.note_clock(session, client.client_id, device_now)
            await session.commit()
    return page


def check_schema(version: int) -> None:
    if version > SCHEMA_VERSION or version < 1:
        raise Invalid(
            f"schema_version {version} is not served; this server speaks 1 to {SCHEMA_VERSION}.",
            code="unsupported_schema_version",
            details=[{"field": "schema_version", "message": f"supported: 1..{SCHEMA_VERSION}"}],
        )


def _decode(text: str | None) -> Cursor | None:
    if text is None:
        return None
    try:
        return decode(text)
    except BadCursor:
        raise Invalid(
            "The cursor is not one this server handed out.",
            code="bad_cursor",
            details=[{"field": "cursor", "message": "unknown cursor"}],
        ) from None


async def _rebuilding(db: Database, actor: Actor, request: PullRequest) -> None:
    """A client starting from nothing is registered, and adopts the caller's current node as its scope."""
    async with db.write_session() as session:
        client, _ = await sync_clients.claim(session, actor, request.client_id, request.schema_version)
        client.scope_path = actor.jurisdiction_path
        sync_clients.measure_clock(client, request.device_now)
        await session.commit()


async def _page(
    session: AsyncSession, actor: Actor, request: PullRequest, cursor: Cursor | None
) -> tuple[PullResponse, SyncClient | None]:
    """The page, and the caller's client as it was read with it."""
    state = (await session.execute(select(SyncState).where(SyncState.id == 1))).scalar_one()
    client = await sync_clients.find(session, actor, request.client_id)
    lmid = client.last_mutation_seq if client else 0
    if reason := _reset_reason(state, client, actor, cursor):
        reset = PullResponse(
            cursor="", has_more=False, last_mutation_seq=lmid, changes=[], reset_required=True, reason=reason
        )
        return reset, client
    since = cursor.seq if cursor else 0
    scopes = await _scopes(session, actor)
    rows, more = await _change_rows(session, scopes, since, request.limit, fresh=cursor is None)
    upto = rows[-1].seq if more else state.seq
    changes = await _changes(session, rows, scopes)
    if cursor is not None:
        changes = _merge_by_seq(changes, await _exits(session, scopes, since, upto))
    page = PullResponse(
        cursor=encode(Cursor(state.epoch, max(upto, since), state.tombstone_floor)),
        has_more=more,
        last_mutation_seq=lmid,
        changes=changes,
    )
    return page, client


def _reset_reason(
    state: SyncState, client: SyncClient | None, actor: Actor, cursor: Cursor | None
) -> str | None:
    if cursor is None:
        return None
    if cursor.epoch != state.epoch:
        return "epoch_changed"
    if cursor.seq < state.tombstone_floor and cursor.floor < state.tombstone_floor:
        return "behind_tombstone_horizon"
    if client is not None and client.scope_path != actor.jurisdiction_path:
        return "scope_changed"
    if cursor.seq > state.seq:
        return "cursor_from_the_future"  # a restore that kept the epoch: never trust such a cursor
    return None


async def _scopes(session: AsyncSession, actor: Actor) -> list[str]:
    """Every node under the caller's (conflicts may sit on a subdistrict), plus what everyone gets."""
    ids = await session.execute(select(Jurisdiction.id).where(under(actor)))
    return [str(i) for (i,) in ids] + [EVERYONE]


async def _change_rows(
    session: AsyncSession, scopes: list[str], since: int, limit: int, *, fresh: bool
) -> tuple[list[ChangeRow], bool]:
    """Up to `limit` rows after `since`, cut at a sequence boundary: a page never splits a transaction."""
    rows = list((await session.execute(_first_rows(scopes, since, limit + 1, fresh=fresh))).all())
    if len(rows) <= limit:
        return rows, False
    last = rows[limit - 1].seq
    if rows[limit].seq != last:
        return rows[:limit], True
    whole = [r for r in rows[:limit] if r.seq < last]
    if whole:
        return whole, True
    # One transaction larger than a page: it goes out whole, however big.
    group = _feed_rows(_FEED.scope.in_(scopes), _FEED.seq == last, fresh=fresh)
    return list((await session.execute(group)).all()), True


UNION_SCOPES = 64
"""Up to this many scopes a page is one union of per-scope reads; a supervisor over more (a whole city)
gets one sorted query instead, which reads more rows but keeps the statement small (SQLite also caps a
compound SELECT at 500 parts). Such a supervisor's scope holds most rows anyway."""

_FEED = SyncChange.__table__.c  # Core columns: tens of thousands of rows skip the ORM's row loading
_COLUMNS = (_FEED.entity, _FEED.entity_id, _FEED.seq, _FEED.deleted)
_ORDER = (_FEED.seq, _FEED.entity, _FEED.entity_id)


def _first_rows(scopes: list[str], since: int, n: int, *, fresh: bool) -> Select[Any]:
    """The first `n` feed rows after `since` over all of `scopes`, in feed order.

    Each scope's first `n` rows are read straight off the page index, then the union's first `n` taken:
    a row among the first `n` overall is among the first `n` of its own scope, so this is exact. One query
    over all scopes (`scope IN (...) ORDER BY seq`) would instead read and sort every row after the cursor
    on every page, which made a first sync quadratic in the size of the scope.
    """
    if len(scopes) > UNION_SCOPES:
        return _feed_rows(_FEED.scope.in_(scopes), _FEED.seq > since, fresh=fresh).limit(n)
    per_scope = [
        _feed_rows(_FEED.scope == scope, _FEED.seq > since, fresh=fresh).limit(n).subquery().select()
        for scope in scopes
    ]
    union = union_all(*per_scope).subquery()
    return select(*union.c).order_by(*(union.c[c.name] for c in _ORDER)).limit(n)


def _feed_rows(*where: Any, fresh: bool) -> Select[Any]:
    if fresh:
        where = (*where, _FEED.deleted.is_(False))  # a new replica needs no tombstones
    return select(*_COLUMNS).where(*where).order_by(*_ORDER)


async def _changes(session: AsyncSession, rows: list[ChangeRow], scopes: list[str]) -> list[Change]:
    # Rows unpacked as tuples: reading a Row's fields by name costs more than the rest of this loop.
    current = await sync_rows.load(
        session, [(e, _record_id(e, i)) for e, i, _, deleted in rows if not deleted], scopes
    )
    changes = []
    for entity, key, seq, deleted in rows:
        entity_id = _record_id(entity, key)
        data = current.get((entity, entity_id))
        if deleted or data is None:
            changes.append(Change(entity=entity, id=entity_id, op="delete", seq=seq))
        else:
            version = sync_rows.version_of(entity, data)
            changes.append(
                Change(entity=entity, id=entity_id, op="upsert", seq=seq, version=version, data=data)
            )
    return changes


async def _exits(session: AsyncSession, scopes: list[str], since: int, upto: int) -> list[Change]:
    """Records that left the caller's scope: drop them (unless they moved within it)."""
    exits = await _exit_rows(session, scopes, since, upto)
    photos = await sync_rows.load(session, [(e, i) for e, i, _ in exits if e == "photo"], scopes)
    changes = []
    for entity, entity_id, seq in exits:
        photo = photos.get((entity, entity_id))
        if photo is not None and photo["visits"]:
            # A photo is keyed per community, but a caller over several holds it while any visit of
            # theirs names it: one community's key leaving only narrows its visits.
            changes.append(Change(entity=entity, id=entity_id, op="upsert", seq=seq, version=0, data=photo))
        else:
            changes.append(Change(entity=entity, id=entity_id, op="drop", seq=seq))
    return changes


async def _exit_rows(
    session: AsyncSession, scopes: list[str], since: int, upto: int
) -> list[tuple[str, str, int]]:
    """(entity, id, seq) of the records that left one of the caller's scopes within (since, upto] and are
    in none of them now."""
    still_here = select(SyncChange.entity_id).where(
        SyncChange.entity == ScopeExit.entity,
        SyncChange.entity_id == ScopeExit.entity_id,
        SyncChange.scope.in_(scopes),
    )
    query = (
        select(ScopeExit.entity, ScopeExit.entity_id, ScopeExit.seq)
        .where(
            ScopeExit.scope.in_(scopes), ScopeExit.seq > since, ScopeExit.seq <= upto, ~still_here.exists()
        )
        .order_by(ScopeExit.seq, ScopeExit.id)
    )
    return [(entity, _record_id(entity, key), seq) for entity, key, seq in await session.execute(query)]


def _record_id(entity: str, key: str) -> str:
    # The feed keys a photo once per community (feed.photo_key); devices know it by its SHA-256.
    return photo_sha(key) if entity == "photo" else key


def _merge_by_seq(changes: list[Change], drops: list[Change]) -> list[Change]:
    if not drops:
        return changes
    # Within one sequence, drops come first: a record can leave and its old scope's children follow.
    return sorted([*drops, *changes], key=lambda c: (c.seq, c.op != "drop"))
