"""photo feed per community: a photo is stamped once for each community with a visit naming it

Before, the feed kept one row per photo (keyed by its SHA-256), in the community of the first visit that
named it: a photo that is evidence in two communities reached the devices of only one. Rows are now keyed
"sha256/community" (server.db.feed.photo_key). Existing rows are renamed in place (same sequence: devices
already hold them), and the communities that were missed get a row under a new sequence number, so devices
with a cursor receive them on their next pull.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_changes = sa.table(
    "sync_changes",
    sa.column("entity", sa.String()),
    sa.column("entity_id", sa.String()),
    sa.column("scope", sa.String()),
    sa.column("seq", sa.BigInteger()),
    sa.column("deleted", sa.Boolean()),
)


def upgrade() -> None:
    for table in ("sync_changes", "sync_scope_exits"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                "entity_id", type_=sa.String(length=128), existing_type=sa.String(length=64)
            )
    bind = op.get_bind()
    bind.execute(
        _changes.update()
        .where(_changes.c.entity == "photo")
        .values(entity_id=_changes.c.entity_id + "/" + _changes.c.scope)
    )
    stamped = {
        key for (key,) in bind.execute(sa.select(_changes.c.entity_id).where(_changes.c.entity == "photo"))
    }
    missing = sorted(
        {f"{sha}/{community}" for sha, community in _named_by_community(bind)} - stamped,
    )
    if not missing:
        return
    state = sa.table("sync_state", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()))
    seq = bind.execute(sa.select(state.c.seq).where(state.c.id == 1)).scalar_one() + 1
    bind.execute(state.update().where(state.c.id == 1).values(seq=seq))
    rows = [
        {"entity": "photo", "entity_id": key, "scope": key.partition("/")[2], "seq": seq, "deleted": False}
        for key in missing
    ]
    bind.execute(_changes.insert(), rows)


def _named_by_community(bind: sa.Connection) -> list[tuple[str, str]]:
    # Read through Uuid-typed columns: SQLite stores UUIDs as bare hex, the feed's scopes are str(uuid).
    refs = sa.table("photo_refs", sa.column("sha256", sa.String()), sa.column("visit_id", sa.Uuid()))
    visits = sa.table("visits", sa.column("id", sa.Uuid()), sa.column("household_id", sa.Uuid()))
    households = sa.table("households", sa.column("id", sa.Uuid()), sa.column("community_id", sa.Uuid()))
    query = (
        sa.select(refs.c.sha256, households.c.community_id)
        .join(visits, visits.c.id == refs.c.visit_id)
        .join(households, households.c.id == visits.c.household_id)
        .distinct()
    )
    return [(sha, str(community)) for sha, community in bind.execute(query)]


def downgrade() -> None:
    bind = op.get_bind()
    keys = [
        key for (key,) in bind.execute(sa.select(_changes.c.entity_id).where(_changes.c.entity == "photo"))
    ]
    kept: set[str] = set()
    for key in sorted(keys):  # one row per photo again: the first community's
        sha = key.partition("/")[0]
        if sha in kept:
            bind.execute(_changes.delete().where(_changes.c.entity == "photo", _changes.c.entity_id == key))
        else:
            kept.add(sha)
            bind.execute(
                _changes.update()
                .where(_changes.c.entity == "photo", _changes.c.entity_id == key)
                .values(entity_id=sha)
            )
