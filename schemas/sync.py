"""The device sync protocol (docs/sync-protocol.md): pull changes by cursor, push numbered mutations.

Mutations are named and versioned (`household.update.v1`); a changed shape gets a new name and the old
one stays accepted for as long as devices may hold it. They decode as one msgspec tagged union on `op`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec

from schemas.households import HouseholdIn, MemberIn
from schemas.times import DeviceTime, require_utc_instants
from schemas.visits import ObservationIn, Proposal

SCHEMA_VERSION = 1
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
"""A mutation's place in its client's queue; at most what the log's BIGINT holds."""
Version = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
"""A record's version as the device last confirmed it (0: it had none); at most what the version
columns (INTEGER) hold, so a larger one is malformed rather than a database error."""


# -- pull ----------------------------------------------------------------------------------------


class PullRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    client_id: uuid.UUID
    cursor: str | None = None
    """Opaque; null for a first sync (or after reset_required)."""
    schema_version: int
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000
    device_now: DeviceTime | None = None
    """The device's clock, only to measure its skew; never used to order anything."""


class Change(msgspec.Struct, kw_only=True, omit_defaults=True):
    entity: str
    """household | member | visit | observation | visit_event | template | conflict (more may come: a
    client ignores entities it does not know)."""
    id: str
    op: Literal["upsert", "delete", "drop"]
    """upsert: store `data`. delete: a tombstone (the record was deleted). drop: the record left your scope;
    forget it (and, for a household, its members, visits and their observations)."""
    seq: int
    version: int = 0
    data: dict[str, Any] | None = None


class PullResponse(msgspec.Struct, kw_only=True):
    cursor: str
    has_more: bool
    last_mutation_seq: int
    """This client's last applied mutation, read in the same snapshot as the changes."""
    changes: list[Change]
    reset_required: bool = False
    reason: str | None = None


# -- push ----------------------------------------------------------------------------------------


class FieldChange(msgspec.Struct, forbid_unknown_fields=True):
    old: Any
    """The value the device saw at base_version (for the three-way display)."""
    new: Any


class MutationBase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="op"):
    seq: Seq
    """Per client, gapless from 1, assigned in the same local transaction as the edit."""
    mutation_id: uuid.UUID
    device_time: DeviceTime | None = None

    def __post_init__(self) -> None:
        require_utc_instants(self.device_time)


class HouseholdCreateV1(MutationBase, tag="household.create.v1"):
    household: HouseholdIn


class HouseholdUpdateV1(MutationBase, tag="household.update.v1"):
    household_id: uuid.UUID
    base_version: Version
    changes: dict[str, FieldChange]


class HouseholdArchiveV1(MutationBase, tag="household.archive.v1"):
    household_id: uuid.UUID
    base_version: Version
    reason: str


class MemberCreateV1(MutationBase, tag="member.create.v1"):
    household_id: uuid.UUID
    member: MemberIn


class MemberUpdateV1(MutationBase, tag="member.update.v1"):
    member_id: uuid.UUID
    base_version: Version
    changes: dict[str, FieldChange]


class MemberRemoveV1(MutationBase, tag="member.remove.v1"):
    member_id: uuid.UUID
    base_version: Version
    reason: str


class VisitAnswerV1(MutationBase, tag="visit.answer.v1"):
    visit_id: uuid.UUID
    observations: Annotated[list[ObservationIn], msgspec.Meta(min_length=1, max_length=500)]


class VisitProposeV1(MutationBase, tag="visit.propose.v1"):
    visit_id: uuid.UUID
    proposal: Proposal


class VisitSubmitV1(MutationBase, tag="visit.submit.v1"):
    visit_id: uuid.UUID


class ConflictResolveV1(MutationBase, tag="conflict.resolve.v1"):
    conflict_id: uuid.UUID
    decision: Literal["keep_server", "take_client", "set_value", "dismiss"]
    value: Any = None
    """For set_value: the value the supervisor decided on."""


Mutation = (
    HouseholdCreateV1
    | HouseholdUpdateV1
    | HouseholdArchiveV1
    | MemberCreateV1
    | MemberUpdateV1
    | MemberRemoveV1
    | VisitAnswerV1
    | VisitProposeV1
    | VisitSubmitV1
    | ConflictResolveV1
)


class PushRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    client_id: uuid.UUID
    schema_version: int
    mutations: Annotated[list[Mutation], msgspec.Meta(max_length=500)]
    device_now: DeviceTime | None = None


class PushEnvelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A PushRequest as the server first reads it: each mutation is then decoded on its own, so one that
    does not match its op's shape is quarantined like any refused mutation instead of refusing the batch."""

    client_id: uuid.UUID
    schema_version: int
    mutations: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=500)]
    device_now: DeviceTime | None = None


class HandoverRequest(PushRequest, kw_only=True):
    """A handover (docs/sync-protocol.md, "Handing a tablet over"): the previous user's queue as a push
    sends it, and who that user was, for a client the server never saw (its user worked offline from
    their first sign-in); ignored for a client it knows, whose user it has on record."""

    author_id: uuid.UUID | None = None


class HandoverEnvelope(PushEnvelope, kw_only=True):
    """A HandoverRequest as the server first reads it (PushEnvelope)."""

    author_id: uuid.UUID | None = None


class MutationHead(msgspec.Struct, kw_only=True):
    """What must be readable of any mutation to give it its place in the client's queue."""

    seq: Seq
    mutation_id: uuid.UUID
    op: Any = ""
    """Anything: an op that is not even text still leaves the mutation its place (and its quarantine)."""


class MalformedMutation(msgspec.Struct, kw_only=True):
    """A mutation whose place (seq, mutation_id) can be read but not the rest: kept whole, with what the
    decoder said, in a quarantined conflict for a supervisor."""

    seq: int
    mutation_id: uuid.UUID
    op: str
    body: Any
    """The mutation as sent."""
    error: str
    device_time: None = None


TARGETS = (("household_id", "household"), ("member_id", "member"), ("visit_id", "visit"))
"""Where a mutation names the record it aims at, and what that record is."""


def target_named(body: Any) -> tuple[str, uuid.UUID] | None:
    """The record a mutation kept whole (a MalformedMutation's `body`) names, if an id of it reads as
    one: its content (a proposed address, a member's name) belongs where that record is, and goes with
    it when its household moves."""
    if not isinstance(body, dict):
        return None
    for attribute, entity in TARGETS:
        if isinstance(value := body.get(attribute), str):
            try:
                return entity, uuid.UUID(value)
            except ValueError:
                continue
    return None


Status = Literal["applied", "applied_with_conflict", "already_applied", "rejected"]


class MutationResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    seq: int
    status: Status
    conflict_ids: list[uuid.UUID] = []
    code: str | None = None
    """Why a mutation was rejected (validation_error, forbidden, not_found, visit_locked, ...)."""


class PushResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    results: list[MutationResult]
    last_mutation_seq: int
    stopped: Literal["out_of_order", "transient"] | None = None
    expected_seq: int | None = None
