"""sync_conflicts.handed_over_by: who handed in the tablet a quarantined edit came from

A deactivated worker's queue, handed in by the tablet's next user, is kept as quarantined conflicts under
its author; until now only the audit log named the sender (each conflict's `mutation.quarantine` row, and
the `sync.handover` row), so a supervisor reviewing the conflict could not see it. The conflicts a handover
kept before this revision are those whose `mutation.quarantine` row names someone else than their author:
they name that sender now, and are stamped anew in the feed so that devices pull them with it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (nullable, so SQLite needs no table copy).
    op.add_column("sync_conflicts", sa.Column("handed_over_by", sa.Uuid(), nullable=True))
    bind = op.get_bind()
    handed = _handed_in_before(bind)
    if not handed:
        return
    conflicts = sa.table("sync_conflicts", sa.column("id", sa.Uuid()), sa.column("handed_over_by", sa.Uuid()))
    for conflict_id, sender in handed.items():
        bind.execute(conflicts.update().where(conflicts.c.id == conflict_id).values(handed_over_by=sender))
    _stamp_conflicts(bind, sorted(str(i) for i in handed))


def _handed_in_before(bind: sa.Connection) -> dict[uuid.UUID, uuid.UUID]:
    """Each quarantined conflict whose quarantine was audited as someone else's doing than its author's
    (a handover's sender: a push's quarantine is audited as its author's), with that sender."""
    audit = sa.table(
        "audit_events",
        sa.column("actor_id", sa.Uuid()),
        sa.column("action", sa.String()),
        sa.column("entity_type", sa.String()),
        sa.column("entity_id", sa.String()),
    )
    senders = {
        entity_id: actor_id
        for actor_id, entity_id in bind.execute(
            sa.select(audit.c.actor_id, audit.c.entity_id).where(
                audit.c.action == "mutation.quarantine", audit.c.entity_type == "conflict"
            )
        )
    }
    conflicts = sa.table(
        "sync_conflicts",
        sa.column("id", sa.Uuid()),
        sa.column("kind", sa.String()),
        sa.column("author_id", sa.Uuid()),
    )
    quarantined = sa.select(conflicts.c.id, conflicts.c.author_id).where(conflicts.c.kind == "quarantined")
    handed: dict[uuid.UUID, uuid.UUID] = {}
    for conflict_id, author_id in bind.execute(quarantined):
        sender = senders.get(str(conflict_id))
        if sender is not None and sender != author_id:
            handed[conflict_id] = sender
    return handed


def _stamp_conflicts(bind: sa.Connection, ids: list[str]) -> None:
    """One new feed number for the conflicts that now name their sender: devices pull them again."""
    changes = sa.table(
        "sync_changes",
        sa.column("entity", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("seq", sa.BigInteger()),
    )
    state = sa.table("sync_state", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()))
    seq = bind.execute(sa.select(state.c.seq).where(state.c.id == 1)).scalar_one() + 1
    bind.execute(state.update().where(state.c.id == 1).values(seq=seq))
    bind.execute(
        changes.update().where(changes.c.entity == "conflict", changes.c.entity_id.in_(ids)).values(seq=seq)
    )


def downgrade() -> None:
    op.drop_column("sync_conflicts", "handed_over_by")
