"""Push: apply a device's numbered mutations exactly once, in order (docs/sync-protocol.md).

The push holds the client's row lock for its whole batch, so two deliveries of one batch never race.
Each mutation runs in a savepoint together with its log row and the advance of the client's
last_mutation_seq: the three commit together or not at all. The batch commits once, before the answer
goes out, so "applied" is never said of anything that could still be lost.

- seq below the next expected: a replay; the stored result is returned, nothing runs twice.
- seq above it: a gap; the batch stops and says which seq is expected.
- a permanent failure (invalid, forbidden, not found, locked, a value the database refuses): the
  mutation is quarantined for a supervisor, logged as rejected, and the queue moves on; nothing a device
  sent is ever dropped.
- a transient failure (a lost connection, a serialisation failure, a lock; an injected fault): that
  mutation is undone, what came before it commits, and the batch stops; the device sends the rest again.
- a unique key (a record's id) another push took meanwhile: a race, not a refusal. The mutation is
  undone and applied again, and then gets the answer it gets arriving after that push (the same create
  converges); see _apply_one_safely.

A mutation that does not even match its op's shape (an unknown op, a wrong type, an over-long note) is
such a permanent failure too: `decode` reads each mutation on its own, and one whose seq and id can be
read is quarantined whole (`malformed_mutation`) instead of refusing the batch, which would block the
device's queue for good. Only a mutation without a readable seq or id refuses the batch (422).
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import msgspec
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.rules import RulePack
from schemas.sync import (
    TARGETS,
    HandoverEnvelope,
    MalformedMutation,
    Mutation,
    MutationHead,
    MutationResult,
    PushEnvelope,
    PushResponse,
    Status,
    target_named,
)
from server.db.bulk_insert import BulkInsert
from server.db.models import (
    Household,
    Jurisdiction,
    Member,
    MutationLog,
    SyncClient,
    SyncConflict,
    SyncState,
    User,
    Visit,
)
from server.db.types import utcnow
from server.domain.tree_paths import shared_path
from server.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, field_problem
from server.services import audit, sync_apply, sync_clients, sync_preload, transaction
from server.services.actor import Actor
from server.services.auth import actor_of
from server.services.sync_clients import claim
from server.services.sync_pull import check_schema


class TransientFault(Exception):
    """Raised by a fault hook (tests): behaves like a database that went away mid-batch."""


AnyMutation = Mutation | MalformedMutation

fault_hook: Callable[[AnyMutation], None] | None = None
"""Tests set this to abort a mutation as a crashed transaction would."""

_ENVELOPE = msgspec.json.Decoder(PushEnvelope)
_HANDOVER_ENVELOPE = msgspec.json.Decoder(HandoverEnvelope)
_E = TypeVar("_E", bound=PushEnvelope)
_MUTATION = msgspec.json.Decoder(Mutation)


def _number_as_sent(text: str) -> float | str:
    """A JSON number beyond a float's range (`1e400`) stays the text it was sent as: msgspec refuses to
    read it (and no JSON column could store infinity), yet the mutation around it must still be kept."""
    value = float(text)
    return value if math.isfinite(value) else text


_HEAD = msgspec.json.Decoder(MutationHead, float_hook=_number_as_sent)
_AS_SENT = msgspec.json.Decoder(float_hook=_number_as_sent)


def decode(body: bytes) -> tuple[PushEnvelope, list[AnyMutation]]:
    """The push request, each mutation decoded on its own (see the module's docstring)."""
    envelope = _envelope(_ENVELOPE, body)
    return envelope, _mutations(envelope)


def decode_handover(body: bytes) -> tuple[HandoverEnvelope, list[AnyMutation]]:
    """A handover's request: a push's, and who the previous user was (HandoverRequest)."""
    envelope = _envelope(_HANDOVER_ENVELOPE, body)
    return envelope, _mutations(envelope)


def _envelope(decoder: msgspec.json.Decoder[_E], body: bytes) -> _E:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, "") from None
    except msgspec.DecodeError:
        raise DomainError("The request body is not valid JSON.", code="malformed_json") from None


def _mutations(envelope: PushEnvelope) -> list[AnyMutation]:
    mutations: list[AnyMutation] = []
    for index, raw in enumerate(envelope.mutations):
        try:
            mutations.append(_MUTATION.decode(raw))
        except msgspec.ValidationError as exc:
            mutations.append(_malformed(raw, exc, index))
    return mutations


def _malformed(raw: msgspec.Raw, error: msgspec.ValidationError, index: int) -> MalformedMutation:
    try:
        head = _HEAD.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, f".mutations[{index}]") from None
    return MalformedMutation(
        seq=head.seq,
        mutation_id=head.mutation_id,
        # The log's column holds 40 characters of text; the whole mutation is kept in `body`.
        op=head.op[:40] if isinstance(head.op, str) else "",
        body=_AS_SENT.decode(raw),
        error=str(error),
    )


def _invalid(exc: msgspec.ValidationError, prefix: str) -> Invalid:
    """The API's usual 422; ``prefix`` places a mutation's own paths (`$.seq`) in the request."""
    problem = field_problem(
        str(exc).replace(" - at `$", f" - at `${prefix}", 1), prefix.lstrip(".") or "body"
    )
    return Invalid(f"{problem.field}: {problem.message}", details=[problem])


async def push(
    session: AsyncSession, actor: Actor, request: PushEnvelope, mutations: list[AnyMutation], rules: RulePack
) -> PushResponse:
    check_schema(request.schema_version)
    arrived = utcnow()  # the device's clock is compared with ours as it sent the batch, not as it ends
    client, epoch = await claim(session, actor, request.client_id, request.schema_version)
    if client.epoch != epoch:
        _after_restore(session, actor, client, epoch, mutations)
        await session.flush()  # the client row's changes: a savepoint rolled back later must not undo them
    delivered = await _delivered_before(session, actor, mutations)
    with transaction.held_by_push(session, str(client.client_id)):
        well_formed = [m for m in mutations if not isinstance(m, MalformedMutation)]
        pre = await sync_preload.preload(session, actor, well_formed)
        applied = await _fast_pass(session, actor, _Batch(client, delivered), mutations, rules, pre)
        if applied is None:
            applied = await _apply_all(session, actor, _Batch(client, delivered), mutations, rules)
    batch, results, stopped = applied
    # Written with the batch's last seq: one UPDATE of the client's row, at the end.
    sync_clients.measure_clock(client, request.device_now, at=arrived)
    await batch.write(session, actor)
    await session.commit()
    return _answer(client, results, stopped)


async def hand_over(
    session: AsyncSession, actor: Actor, request: HandoverEnvelope, mutations: list[AnyMutation]
) -> PushResponse:
    """The queue of a user who can no longer sign in (deactivated), sent by whoever the tablet was handed
    to: kept whole for a supervisor instead of dying with the tablet (docs/sync-protocol.md, "Handing a
    tablet over"). Nothing is applied: a mutation is authorised as its author's, who may no longer write.
    Each is quarantined (`author_inactive`) under its author and logged on the author's client in seq
    order, as a push is, so a handover sent again is answered as a push replayed (nothing twice)."""
    check_schema(request.schema_version)
    client, registered = await _client_handed_over(session, actor, request)
    author = await _inactive_author(session, actor, client)
    epoch = (await session.execute(select(SyncState.epoch).where(SyncState.id == 1))).scalar_one()
    # The first since a restore, as a push's: the seqs the backup lost are recorded. So for a client this
    # handover registered: a tablet drops only what a pull of this server confirmed, so a queue resuming
    # above seq 1 means a restore from before its first sync (a handover sends no cursor to say so).
    if client.epoch != epoch or registered:
        _after_restore(session, author, client, epoch, mutations)
    batch = _Batch(client, await _delivered_before(session, author, mutations))
    refusal = Forbidden(
        f"{author.username} can no longer sign in; the tablet's next user, {actor.username}, sent this "
        "edit for a supervisor to see.",
        code="author_inactive",
    )
    sender = Sender(actor)

    async def keep(mutation: AnyMutation) -> MutationResult:
        earlier = await _already_delivered(session, author, batch, mutation, by=sender)
        return earlier or await _quarantine(session, author, batch, mutation, refusal, by=sender)

    _, results, stopped = await _in_seq_order(session, author, batch, mutations, keep, by=sender)
    await batch.write(session, author)
    earlier = await _name_the_sender_on_earlier_quarantines(session, actor, author, client)
    # Every conflict this handover kept in the author's name (author_inactive, and a push's seq_reused or
    # mutation_id_reused), and the author's own earlier ones that now name the sender: the audit row
    # names its sender. A handover sent again as it was changes none.
    handed = sorted(sender.kept)
    if handed or earlier or registered:
        changes: dict[str, Any] = {"author_id": str(author.user_id), "quarantined_seqs": handed}
        if earlier:
            changes["earlier_conflict_ids"] = earlier
        if registered:
            changes["client_registered"] = True
        audit.record(session, actor, "sync.handover", "client", client.client_id, changes)
    await session.commit()
    return _answer(client, results, stopped)


async def _name_the_sender_on_earlier_quarantines(
    session: AsyncSession, sender: Actor, author: Actor, client: SyncClient
) -> list[str]:
    """The author's edits from this tablet that the server refused before it was handed in, each kept
    as a quarantined conflict: the tablet may still hold their photo files (held, never sent), which it
    sends under the sender's sign-in. The conflicts name the sender, as those the handover keeps do, so
    that their supervisors see those files beside them (photos.visible) and know who brought them."""
    sent_from_the_tablet = select(MutationLog.mutation_id).where(
        MutationLog.client_id == client.client_id,
        MutationLog.user_id == author.user_id,
        MutationLog.status == "rejected",
    )
    query = (
        select(SyncConflict)
        .where(
            SyncConflict.kind == "quarantined",
            SyncConflict.author_id == author.user_id,
            SyncConflict.handed_over_by.is_(None),
            SyncConflict.mutation_id.in_(sent_from_the_tablet),
        )
        .order_by(SyncConflict.id)
        .with_for_update()
    )
    named = list((await session.execute(query)).scalars())
    for conflict in named:
        conflict.handed_over_by = sender.user_id
    return [str(conflict.id) for conflict in named]


@dataclass
class Sender:
    """Who sent a handover (not the author of what it keeps), and the seqs it kept conflicts for."""

    actor: Actor
    kept: list[int] = field(default_factory=list)


async def _client_handed_over(
    session: AsyncSession, actor: Actor, request: HandoverEnvelope
) -> tuple[SyncClient, bool]:
    """The client's row, locked as a push locks it, and another user's; whether this handover registered
    it, for the user it names (`author_id`), the client never having synced here (its user worked
    offline from their first sign-in). Without a name, an unknown client is refused as before."""
    query = select(SyncClient).where(SyncClient.client_id == request.client_id).with_for_update()
    client = (await session.execute(query)).scalar_one_or_none()
    registered = False
    if client is None:
        if request.author_id is None:
            raise NotFound("No client with this id ever synced here.", code="client_unknown")
        registered = await _register_for_author(session, actor, request, request.author_id)
        client = (await session.execute(query.execution_options(populate_existing=True))).scalar_one()
    if client.user_id == actor.user_id:
        raise Conflict("This client id is your own: push its queue.", code="client_is_yours")
    return client, registered


async def _register_for_author(
    session: AsyncSession, actor: Actor, request: HandoverEnvelope, author_id: uuid.UUID
) -> bool:
    """Record a client the server never saw as the named user's, placed at their node (nothing says where
    else the tablet worked), once that user is checked as a known client's would be: within the sender's
    area first, refused naming nobody (a user who does not exist is refused the same way), then unable
    to sign in. Nothing is written when refused. Whether this request inserted it (two may race)."""
    user = await session.get(User, author_id)
    node = None if user is None else await session.get(Jurisdiction, user.jurisdiction_id)
    if user is None or node is None or not node.path.startswith(actor.jurisdiction_path):
        raise Forbidden("This tablet worked outside your area.", code="beyond_jurisdiction")
    if user.id == actor.user_id:
        raise Conflict("This client id is your own: push its queue.", code="client_is_yours")
    if user.active:
        raise Conflict(
            f"{user.username} can still sign in: they sign in on this tablet and sync.", code="author_active"
        )
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    current = select(SyncState.epoch).where(SyncState.id == 1)
    added = await session.execute(
        insert(SyncClient)
        .values(
            client_id=request.client_id,
            user_id=user.id,
            device_id=actor.device_id,  # the tablet, as its next user signed it in
            scope_path=node.path,
            last_mutation_seq=0,
            epoch=current.scalar_subquery(),
            schema_version=request.schema_version,
        )
        .on_conflict_do_nothing(index_elements=["client_id"])
    )
    return bool(getattr(added, "rowcount", 0) == 1)


async def _inactive_author(session: AsyncSession, actor: Actor, client: SyncClient) -> Actor:
    """The client's user, as the author of what is quarantined, placed where the tablet worked: the node
    whose records the client held when it last synced (its scope), which must lie within the sender's.
    That is checked first, and refused naming nobody: outside their area, who the author is and whether
    they can still sign in are none of the sender's business. Then refused while the author can still
    sign in (their queue is theirs to send)."""
    if not client.scope_path.startswith(actor.jurisdiction_path):
        raise Forbidden("This tablet worked outside your area.", code="beyond_jurisdiction")
    user = await session.get_one(User, client.user_id)
    if user.active:
        raise Conflict(
            f"{user.username} can still sign in: they sign in on this tablet and sync.", code="author_active"
        )
    author = actor_of(user, client.scope_path, actor.device_id, None, actor.request_id)
    # A worker moved before leaving made these edits where the tablet worked, not at their last node: a
    # quarantine goes where that node's supervisors see it (_quarantine_scope).
    node = select(Jurisdiction.id).where(Jurisdiction.path == client.scope_path)
    worked_at = (await session.execute(node)).scalar()
    if worked_at is None:  # no longer a node: where the author was bound last
        last = select(Jurisdiction.path).where(Jurisdiction.id == user.jurisdiction_id)
        return replace(author, jurisdiction_path=(await session.execute(last)).scalar_one())
    return replace(author, jurisdiction_id=worked_at)


def _answer(client: SyncClient, results: list[MutationResult], stopped: str | None) -> PushResponse:
    """The answer to a batch that committed: where the client's queue stands, and why it stopped."""
    return PushResponse(
        results=results,
        last_mutation_seq=client.last_mutation_seq,
        stopped=stopped,  # type: ignore[arg-type]
        expected_seq=client.last_mutation_seq + 1 if stopped else None,
    )


Applied = tuple["_Batch", list[MutationResult], str | None]


async def _fast_pass(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutations: list[AnyMutation],
    rules: RulePack,
    pre: sync_preload.Preloaded,
) -> Applied | None:
    """The whole batch in one savepoint and one flush, from the preloaded records.

    This is the common case (nothing refused, nothing failing) at a fraction of the slow pass's cost: no
    savepoint, read or flush per mutation. Anything going wrong (a refusal, a fault, the flush failing)
    undoes the pass entirely and returns None; the slow pass then applies the batch again mutation by
    mutation and decides each one's fate. Both passes go through the same handlers, so they agree.
    """
    savepoint = await session.begin_nested()
    try:
        applied = await _apply_all(session, actor, batch, mutations, rules, pre)
        await session.flush()
    except Exception as exc:  # whatever it was, the slow pass meets it again and handles it
        _raise_if_connection_lost(exc)
        await savepoint.rollback()
        return None
    await savepoint.commit()
    return applied


def _raise_if_connection_lost(exc: Exception) -> None:
    """The transaction went with the connection: no savepoint to return to, no other pass to try, nothing
    of the batch to commit. The loss answers 503 (errors.py) and the device sends the batch again."""
    if (lost := transaction.lost_connection(exc)) is not None:
        raise lost


async def _apply_all(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutations: list[AnyMutation],
    rules: RulePack,
    pre: sync_preload.Preloaded | None = None,
) -> Applied:
    """Apply the batch in seq order; `pre` set means the fast pass (errors propagate, see _fast_pass)."""

    async def apply(mutation: AnyMutation) -> MutationResult | None:
        if pre is not None:
            return await _apply_one(session, actor, batch, mutation, rules, pre)
        return await _apply_one_safely(session, actor, batch, mutation, rules)

    return await _in_seq_order(session, actor, batch, mutations, apply)


NextMutation = Callable[["AnyMutation"], Awaitable["MutationResult | None"]]
"""What becomes of the mutation at the client's next seq: its result, or None for a transient failure."""


async def _in_seq_order(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutations: list[AnyMutation],
    next_one: NextMutation,
    *,
    by: Sender | None = None,
) -> Applied:
    """The batch in seq order, as a push and a handover both take it: a seq already processed is a replay,
    one beyond the next stops the batch (`out_of_order`), the next one goes to `next_one`."""
    results: list[MutationResult] = []
    for mutation in mutations:
        expected = batch.last_seq + 1
        if mutation.seq < expected:
            results.append(await _replayed(session, actor, batch, mutation, by=by))
            continue
        if mutation.seq > expected:
            return batch, results, "out_of_order"
        result = await next_one(mutation)
        if result is None:
            return batch, results, "transient"
        results.append(result)
    return batch, results, None


def _after_restore(
    session: AsyncSession, actor: Actor, client: SyncClient, epoch: uuid.UUID, mutations: list[AnyMutation]
) -> None:
    """The first push since the database was restored from a backup (a new epoch). Mutations the device
    saw confirmed after that backup was taken are gone from the server, and gone from the device too (it
    drops what a pull confirms): waiting for them would stop its queue for good. The seqs they held are
    recorded as lost for a supervisor, and the queue resumes with what the device sends. Within one
    epoch a gap only means a lost request, and stops the batch as always. An empty push says nothing of
    where the device's queue resumes: the client stays of the old epoch until one that does."""
    first = min((m.seq for m in mutations), default=None)
    if first is None:
        return
    if client.epoch is not None and first > client.last_mutation_seq + 1:
        lost = {"from_seq": client.last_mutation_seq + 1, "to_seq": first - 1, "device_id": client.device_id}
        session.add(
            SyncConflict(
                id=uuid.uuid4(),
                entity="client",
                entity_id=str(client.client_id),
                kind="lost_in_restore",
                level="hard",
                client_value=msgspec.to_builtins(lost),
                code="lost_in_restore",
                author_id=client.user_id,
                scope=str(actor.jurisdiction_id),
                status="open",
            )
        )
        client.last_mutation_seq = first - 1
    client.epoch = epoch


async def _replayed(
    session: AsyncSession, actor: Actor, batch: _Batch, mutation: AnyMutation, *, by: Sender | None = None
) -> MutationResult:
    """A seq already processed, by an earlier push or earlier in this batch (logged only at its end)."""
    earlier = batch.logged_at.get(mutation.seq)
    if earlier is None:
        logged = await session.get(MutationLog, (batch.client.client_id, mutation.seq))
        if logged is not None:
            earlier = logged.mutation_id, msgspec.convert(logged.result, MutationResult)
    if earlier is None or earlier[0] != mutation.mutation_id:
        return await _reused_seq(session, actor, mutation, by=by)
    return _as_replay(mutation.seq, earlier[1])


def _as_replay(seq: int, stored: MutationResult) -> MutationResult:
    """The answer to an edit sent again: its stored result, a rejection staying one."""
    if stored.status == "rejected":
        return MutationResult(seq=seq, status="rejected", conflict_ids=stored.conflict_ids, code=stored.code)
    return MutationResult(seq=seq, status="already_applied", conflict_ids=stored.conflict_ids)


async def _reused_seq(
    session: AsyncSession, actor: Actor, mutation: AnyMutation, *, by: Sender | None = None
) -> MutationResult:
    """Another edit at a seq the client already used. The device drops it once a pull passes that seq, so
    it is kept for a supervisor (once, however often it is sent); the seq keeps its own mutation."""
    code = "seq_reused"
    query = select(SyncConflict.id).where(
        SyncConflict.mutation_id == mutation.mutation_id,
        SyncConflict.code == code,
        SyncConflict.author_id == actor.user_id,
    )
    conflict_id = (await session.execute(query.limit(1))).scalar()
    if conflict_id is None:
        refusal = Conflict(f"seq {mutation.seq} already holds another mutation of this client.", code=code)
        conflict_id = (await _keep(session, actor, mutation, refusal, by=by)).id
    return MutationResult(seq=mutation.seq, status="rejected", conflict_ids=[conflict_id], code=code)


class _Batch:
    """What a batch has processed so far. The log rows and the client's last_mutation_seq are written
    once, at the end, in the batch's transaction: they commit with the effects or not at all."""

    def __init__(self, client: SyncClient, delivered: dict[uuid.UUID, Delivered]) -> None:
        self.client = client
        self.delivered = dict(delivered)  # grows with the batch; a pass undone must not leave its part
        self.last_seq = client.last_mutation_seq
        self.logs: list[tuple[AnyMutation, MutationResult, str]] = []
        self.logged_at: dict[int, tuple[uuid.UUID, MutationResult]] = {}

    def log(self, mutation: AnyMutation, result: MutationResult, status: str) -> None:
        self.logs.append((mutation, result, status))
        self.logged_at[mutation.seq] = mutation.mutation_id, result
        self.last_seq = mutation.seq
        if result.code != "mutation_id_reused":  # the id keeps naming the edit it was first sent with
            # The mutation itself: turned into an edit only if its id comes again, off the hot path.
            self.delivered.setdefault(mutation.mutation_id, (result, mutation))

    async def write(self, session: AsyncSession, actor: Actor) -> None:
        received = utcnow()
        rows = [
            {
                "client_id": self.client.client_id,
                "seq": mutation.seq,
                "mutation_id": mutation.mutation_id,
                "op": _op(mutation),
                "args": msgspec.to_builtins(mutation),
                "status": status,
                "result": msgspec.to_builtins(result),
                "user_id": actor.user_id,
                "device_time": mutation.device_time,
                "received_at": received,
            }
            for mutation, result, status in self.logs
        ]
        await session.run_sync(_WRITE_LOG.run, rows)
        self.client.last_mutation_seq = self.last_seq


# The batch's log rows in one statement (server/db/bulk_insert.py) instead of an ORM object each.
_WRITE_LOG = BulkInsert(cast(Table, MutationLog.__table__), [c.name for c in MutationLog.__table__.columns])


def _op(mutation: AnyMutation) -> str:
    return (
        mutation.op if isinstance(mutation, MalformedMutation) else str(type(mutation).__struct_config__.tag)
    )


async def _apply_one(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutation: AnyMutation,
    rules: RulePack,
    pre: sync_preload.Preloaded,
) -> MutationResult:
    """One mutation of the fast pass: whatever goes wrong propagates and undoes the pass."""
    if (earlier := await _already_delivered(session, actor, batch, mutation)) is not None:
        return earlier
    return _logged(batch, mutation, await _run(session, actor, mutation, rules, pre))


async def _apply_one_safely(
    session: AsyncSession, actor: Actor, batch: _Batch, mutation: AnyMutation, rules: RulePack
) -> MutationResult | None:
    """One mutation in its own savepoint: quarantined if refused, None if it failed transiently.

    A mutation that ran into a unique key another transaction committed meanwhile (two clients pushing
    the same create at once) is applied again in a fresh savepoint, up to _RACE_RETRIES times: it then
    reads the other's record and gets the answer it gets arriving after it (the same create converges;
    other content under the id is `created_otherwise`), not a refusal of the race itself."""
    if (earlier := await _already_delivered(session, actor, batch, mutation)) is not None:
        return earlier
    for retries_left in reversed(range(_RACE_RETRIES + 1)):
        outcome = await _attempt(session, actor, batch, mutation, rules, may_retry=retries_left > 0)
        if outcome is not _Retry.KEY_TAKEN:
            return outcome
    raise AssertionError("the last attempt quarantines a key taken")


_RACE_RETRIES = 2
"""Attempts after a unique key was found taken. One suffices against one other push: PostgreSQL makes
our insert wait for its uncommitted one and fails it only once that committed, and the push's
transaction is READ COMMITTED, so the next attempt's reads see its record. A key taken again means a
third writer, or a key taken for good (a registry number in use), whose refusal is the same every time."""


class _Retry(enum.Enum):
    KEY_TAKEN = "key_taken"


async def _attempt(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutation: AnyMutation,
    rules: RulePack,
    *,
    may_retry: bool,
) -> MutationResult | _Retry | None:
    savepoint = await session.begin_nested()
    try:
        conflict_ids = await _run(session, actor, mutation, rules, None)
        await session.flush()
        await savepoint.commit()
    except (DomainError, IntegrityError) as exc:
        await savepoint.rollback()
        if may_retry and transaction.unique_key_taken(exc):
            return _Retry.KEY_TAKEN
        return await _quarantine(session, actor, batch, mutation, exc)
    except Exception as exc:
        _raise_if_connection_lost(exc)
        await savepoint.rollback()
        if _refused_by_the_database(exc):
            refusal = Invalid(
                f"The database cannot store a value of this mutation: {exc}", code="unstorable_value"
            )
            return await _quarantine(session, actor, batch, mutation, refusal)
        if isinstance(exc, (TransientFault, DBAPIError)):
            return None
        raise
    except BaseException:
        # Never leave a savepoint open: the change feed numbers a transaction's stamps only when none is.
        await savepoint.rollback()
        raise
    return _logged(batch, mutation, conflict_ids)


# SQLSTATE classes of a value the database cannot hold: data exception (out of range, too long, not
# representable) and program limit exceeded (a text too large for its index).
_VALUE_REFUSED = ("22", "54")


def _refused_by_the_database(exc: Exception) -> bool:
    """A value of the mutation the database refuses: the same every time it is sent, so a refusal to
    quarantine like a validation error. Anything else from the database (a lost connection, a
    serialisation failure or deadlock, a lock wait) may pass: the batch stops there and is retried."""
    if isinstance(exc, (DataError, OverflowError)):
        return True  # OverflowError: sqlite3's "Python int too large to convert to SQLite INTEGER"
    if not isinstance(exc, StatementError) or exc.orig is None:
        return False
    cause = exc.orig
    sqlstate = str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")
    # asyncpg checks a value against its column's type before sending it (its DataError, a ValueError);
    # SQLAlchemy wraps what a column type's own conversion raises as it is.
    client_side = isinstance(cause, (ValueError, OverflowError)) or isinstance(cause.__cause__, ValueError)
    return sqlstate[:2] in _VALUE_REFUSED or client_side


async def _run(
    session: AsyncSession,
    actor: Actor,
    mutation: AnyMutation,
    rules: RulePack,
    pre: sync_preload.Preloaded | None,
) -> list[uuid.UUID]:
    if fault_hook is not None:
        fault_hook(mutation)
    if isinstance(mutation, MalformedMutation):
        raise Invalid(mutation.error, code="malformed_mutation")
    return await sync_apply.apply(session, actor, mutation, rules, pre)


async def _already_delivered(
    session: AsyncSession, actor: Actor, batch: _Batch, mutation: AnyMutation, *, by: Sender | None = None
) -> MutationResult | None:
    """The answer to a mutation_id this user delivered before (a re-registered device resending what
    another of its client ids sent, or the same edit twice in one batch); None for a new one."""
    earlier = batch.delivered.get(mutation.mutation_id)
    if earlier is None:
        return None
    stored, edit = earlier
    if _edit_of(_args(edit)) != _edit_of(msgspec.to_builtins(mutation)):
        # Not a resend: answering already_applied would drop this edit unseen.
        refusal = Conflict("This mutation_id already names another edit.", code="mutation_id_reused")
        return await _quarantine(session, actor, batch, mutation, refusal, by=by)
    result = _as_replay(mutation.seq, stored)
    batch.log(mutation, result, result.status)
    return result


def _args(sent: AnyMutation | dict[str, Any]) -> dict[str, Any]:
    return sent if isinstance(sent, dict) else msgspec.to_builtins(sent)


def _edit_of(args: dict[str, Any]) -> dict[str, Any]:
    """A mutation as sent (or as logged) without its place in the queue: the same edit resent under
    another client id has another seq."""
    edit = {name: value for name, value in args.items() if name != "seq"}
    if isinstance(edit.get("body"), dict):  # a malformed mutation, kept as sent
        edit["body"] = _edit_of(edit["body"])
    return edit


def _logged(batch: _Batch, mutation: AnyMutation, conflict_ids: list[uuid.UUID]) -> MutationResult:
    status: Status = "applied_with_conflict" if conflict_ids else "applied"
    result = MutationResult(seq=mutation.seq, status=status, conflict_ids=conflict_ids)
    batch.log(mutation, result, status)
    return result


Delivered = tuple[MutationResult, "AnyMutation | dict[str, Any]"]
"""A mutation_id's first delivery: its result, and what was sent (as logged, or the mutation itself)."""


async def _delivered_before(
    session: AsyncSession, actor: Actor, mutations: list[AnyMutation]
) -> dict[uuid.UUID, Delivered]:
    """Mutations of this batch the same user already delivered, from any of their client ids (one query
    for the whole batch). Another user's mutation_id names nothing of this user's."""
    ids = [m.mutation_id for m in mutations]
    query = (
        select(MutationLog.mutation_id, MutationLog.result, MutationLog.args)
        .where(MutationLog.mutation_id.in_(ids), MutationLog.user_id == actor.user_id)
        .order_by(MutationLog.received_at, MutationLog.seq)
    )
    delivered: dict[uuid.UUID, Delivered] = {}
    for mutation_id, stored, args in await session.execute(query):
        result = msgspec.convert(stored, MutationResult)
        if result.code != "mutation_id_reused":
            delivered.setdefault(mutation_id, (result, args))
    return delivered


async def _quarantine(
    session: AsyncSession,
    actor: Actor,
    batch: _Batch,
    mutation: AnyMutation,
    exc: Exception,
    *,
    by: Sender | None = None,
) -> MutationResult:
    """Keep a refused mutation whole for a supervisor; the device's queue moves on. `by`: who sent it,
    when not its author (a handover)."""
    conflict = await _keep(session, actor, mutation, exc, by=by)
    result = MutationResult(
        seq=mutation.seq, status="rejected", conflict_ids=[conflict.id], code=conflict.code
    )
    batch.log(mutation, result, "rejected")
    return result


async def _keep(
    session: AsyncSession, actor: Actor, mutation: AnyMutation, exc: Exception, *, by: Sender | None = None
) -> SyncConflict:
    """The quarantined conflict that keeps a refused mutation whole, under its author (`actor`); the
    audit row names who sent it (`by`, the author unless handed over)."""
    code = exc.code if isinstance(exc, DomainError) else "integrity_error"
    entity, entity_id, scope = await _target(session, actor, mutation)
    conflict = SyncConflict(
        id=uuid.uuid4(),
        entity=entity,
        entity_id=entity_id,
        kind="quarantined",
        level="hard",
        client_value=msgspec.to_builtins(mutation),
        code=code,
        mutation_id=mutation.mutation_id,
        author_id=actor.user_id,
        handed_over_by=by.actor.user_id if by is not None else None,
        scope=scope,
        status="open",
    )
    session.add(conflict)
    if by is not None:
        by.kept.append(mutation.seq)
    audit.record(
        session,
        by.actor if by is not None else actor,
        "mutation.quarantine",
        "conflict",
        conflict.id,
        {"op": conflict.client_value.get("op"), "code": code},
    )
    return conflict


async def _target(session: AsyncSession, actor: Actor, mutation: AnyMutation) -> tuple[str, str, str]:
    """The record a mutation aimed at, and the community whose supervisors must see its quarantine."""
    entity, entity_id, community = await _aimed_at(session, mutation)
    return entity, entity_id, await _quarantine_scope(session, actor, community)


async def _aimed_at(session: AsyncSession, mutation: AnyMutation) -> tuple[str, str, uuid.UUID | None]:
    """The record, and its community as stored (or, for a household not yet created, as sent)."""
    if isinstance(mutation, MalformedMutation):
        # Kept under its own id (what it names may not exist), but in the community of the record it
        # names: that community's supervisors must see it, and it moves with the household (feed.py).
        named = target_named(mutation.body)
        community = None if named is None else await _community_of(session, *named)
        return "mutation", str(mutation.mutation_id), community
    for attribute, entity in TARGETS:
        target = getattr(mutation, attribute, None)
        if target is not None:
            return entity, str(target), await _community_of(session, entity, target)
    household = getattr(mutation, "household", None)
    if household is not None and household.id is not None:
        return "household", str(household.id), household.community_id
    conflict_id = getattr(mutation, "conflict_id", None)
    if conflict_id is not None:  # a decision: kept where its conflict is (the value may be a member's name)
        return "mutation", str(mutation.mutation_id), await _place_of_conflict(session, conflict_id)
    return "mutation", str(mutation.mutation_id), None


async def _place_of_conflict(session: AsyncSession, conflict_id: uuid.UUID) -> uuid.UUID | None:
    scope = (await session.execute(select(SyncConflict.scope).where(SyncConflict.id == conflict_id))).scalar()
    try:
        return None if scope is None else uuid.UUID(scope)
    except ValueError:
        return None


async def _quarantine_scope(session: AsyncSession, actor: Actor, place: uuid.UUID | None) -> str:
    """Where a quarantine is kept: the node of what it aimed at (a record's community, a decision's
    conflict's node) when that lies under the actor's; else the deepest node over both (a worker moved from
    C01 to C02: their subdistrict); else, naming no node that exists, the actor's own. A device may name
    any community: its content must neither vanish from every supervisor's view nor land in another
    community's. Nor in the sender's own when it is about a record elsewhere: it holds that record as the
    tablet showed it (a member's health), which the sender's colleagues may not see."""
    path = None
    if place is not None:
        path = (await session.execute(select(Jurisdiction.path).where(Jurisdiction.id == place))).scalar()
    if path is None:
        return str(actor.jurisdiction_id)
    if path.startswith(actor.jurisdiction_path):
        return str(place)
    shared = select(Jurisdiction.id).where(Jurisdiction.path == shared_path(path, actor.jurisdiction_path))
    return str((await session.execute(shared)).scalar() or actor.jurisdiction_id)


async def _community_of(session: AsyncSession, entity: str, target: uuid.UUID) -> uuid.UUID | None:
    household_id: uuid.UUID | None = target
    if entity == "member":
        household_id = (
            await session.execute(select(Member.household_id).where(Member.id == target))
        ).scalar()
    elif entity == "visit":
        household_id = (await session.execute(select(Visit.household_id).where(Visit.id == target))).scalar()
    if household_id is None:
        return None
    query = select(Household.community_id).where(Household.id == household_id)
    return (await session.execute(query)).scalar()
