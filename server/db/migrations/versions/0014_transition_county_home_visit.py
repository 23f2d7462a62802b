"""visit_transitions.county_home_visit_on: the confirming level's own home visit, on the timeline

Before this revision the day the county visited the household itself (2021 办法 Art 20) was kept in the
decision's audit row only, which neither the timeline nor the devices read. Days already on record there
are copied to their decision (a visit is approved or rejected at the last level once: it locks), and those
timeline rows are stamped anew so that devices pull them with the day.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 10:10:00
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

from server.db.types import JSONType

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_LOCKING = {"visit.approve": ("approve", "approved"), "visit.reject": ("reject", "rejected")}
"""A decision's audit action: its timeline action and the status it locks the visit in."""


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (nullable, so SQLite needs no table copy).
    op.add_column("visit_transitions", sa.Column("county_home_visit_on", sa.Date(), nullable=True))
    bind = op.get_bind()
    copied = [_copy(bind, *found) for found in _days_audited(bind)]
    _stamp_events(bind, [str(i) for i in copied if i is not None])


def _days_audited(bind: sa.Connection) -> list[tuple[uuid.UUID, str, dt.date]]:
    """(visit id, audit action, day) of every locking decision whose audit row holds the day."""
    audit = sa.table(
        "audit_events",
        sa.column("action", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("changes", JSONType),
    )
    rows = bind.execute(
        sa.select(audit.c.entity_id, audit.c.action, audit.c.changes).where(audit.c.action.in_(_LOCKING))
    )
    return [
        (uuid.UUID(entity_id), action, dt.date.fromisoformat(changes["county_home_visit_on"]))
        for entity_id, action, changes in rows
        if isinstance(changes, dict) and changes.get("county_home_visit_on")
    ]


def _copy(bind: sa.Connection, visit_id: uuid.UUID, action: str, day: dt.date) -> uuid.UUID | None:
    """The day onto the decision that locked the visit; returns that timeline row's id."""
    transitions = _transitions()
    step, status = _LOCKING[action]
    where = sa.and_(
        transitions.c.visit_id == visit_id, transitions.c.action == step, transitions.c.to_status == status
    )
    found = bind.execute(sa.select(transitions.c.id).where(where)).scalars().first()
    if found is not None:
        bind.execute(transitions.update().where(transitions.c.id == found).values(county_home_visit_on=day))
    return found


def _transitions() -> sa.TableClause:
    return sa.table(
        "visit_transitions",
        sa.column("id", sa.Uuid()),
        sa.column("visit_id", sa.Uuid()),
        sa.column("action", sa.String()),
        sa.column("to_status", sa.String()),
        sa.column("county_home_visit_on", sa.Date()),
    )


def _stamp_events(bind: sa.Connection, event_ids: list[str]) -> None:
    """The timeline rows given the day get one new sequence number: devices pull them again, with it."""
    if not event_ids:
        return
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
        changes.update()
        .where(changes.c.entity == "visit_event", changes.c.entity_id.in_(event_ids))
        .values(seq=seq)
    )


def downgrade() -> None:
    # The days stay in the decisions' audit rows, where they were before this revision.
    op.drop_column("visit_transitions", "county_home_visit_on")
