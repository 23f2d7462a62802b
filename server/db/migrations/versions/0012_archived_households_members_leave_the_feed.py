"""an archived household's members leave the feed: devices forget them, new devices never receive them

Since this revision archiving a household stamps its members as deleted (server.db.feed, restoring it
stamps them back). Members of households archived before kept live rows, so every new tablet received
them. Those rows become tombstones under one new sequence number: devices with a cursor delete the
members on their next pull, a first sync no longer sends them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_changes = sa.table(
    "sync_changes",
    sa.column("entity", sa.String()),
    sa.column("entity_id", sa.String()),
    sa.column("seq", sa.BigInteger()),
    sa.column("deleted", sa.Boolean()),
)


def upgrade() -> None:
    bind = op.get_bind()
    live = {
        key
        for (key,) in bind.execute(
            sa.select(_changes.c.entity_id).where(
                _changes.c.entity == "member", _changes.c.deleted.is_(False)
            )
        )
    }
    gone = sorted(live & set(_members_of_archived_households(bind)))
    if not gone:
        return
    state = sa.table("sync_state", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()))
    seq = bind.execute(sa.select(state.c.seq).where(state.c.id == 1)).scalar_one() + 1
    bind.execute(state.update().where(state.c.id == 1).values(seq=seq))
    for start in range(0, len(gone), 500):
        bind.execute(
            _changes.update()
            .where(_changes.c.entity == "member", _changes.c.entity_id.in_(gone[start : start + 500]))
            .values(deleted=True, seq=seq)
        )


def _members_of_archived_households(bind: sa.Connection) -> list[str]:
    # Read through Uuid-typed columns: SQLite stores UUIDs as bare hex, the feed's ids are str(uuid).
    members = sa.table("members", sa.column("id", sa.Uuid()), sa.column("household_id", sa.Uuid()))
    households = sa.table("households", sa.column("id", sa.Uuid()), sa.column("deleted_at", sa.DateTime()))
    query = (
        sa.select(members.c.id)
        .join(households, households.c.id == members.c.household_id)
        .where(households.c.deleted_at.is_not(None))
    )
    return [str(member_id) for (member_id,) in bind.execute(query)]


def downgrade() -> None:
    # The tombstones stay: the code of 0011 reads them as it reads any removed member's, and making them
    # live again would send archived households' members to new devices once more.
    pass
