"""photo_refusals: content the pipeline refused, by SHA-256, so a visit's evidence shows it refused

Before this revision a refused photo showed as expected for good (the refused upload, which held the
code, is removed when it expires). Refusals still on record in `uploads` are carried over, and the photo
records of their SHA-256 are stamped anew so that devices pull them as refused.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The pipeline's refusals (media.formats.RejectCode): the SHA-256 was verified before them.
_CONTENT_CODES = ("not_an_image", "unsupported_format", "truncated", "too_many_pixels")


def upgrade() -> None:
    refusals = op.create_table(
        "photo_refusals",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("refused_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_photo_refusals")),
    )
    bind = op.get_bind()
    uploads = sa.table(
        "uploads",
        sa.column("sha256", sa.String()),
        sa.column("state", sa.String()),
        sa.column("failure_code", sa.String()),
        sa.column("updated_at", UTCDateTime()),
    )
    refused: dict[str, tuple[str, object]] = {}
    query = sa.select(uploads.c.sha256, uploads.c.failure_code, uploads.c.updated_at).where(
        uploads.c.state == "failed", uploads.c.failure_code.in_(_CONTENT_CODES)
    )
    for sha, code, at in bind.execute(query):
        refused.setdefault(sha, (code, at))
    if not refused:
        return
    bind.execute(
        refusals.insert(),
        [{"sha256": sha, "code": code, "refused_at": at} for sha, (code, at) in sorted(refused.items())],
    )
    _stamp_photo_records(bind, sorted(refused))


def _stamp_photo_records(bind: sa.Connection, shas: list[str]) -> None:
    """The feed keys a photo `sha256/community` (server.db.feed.photo_key): those of refused content get
    one new sequence number, so devices pull them again, now refused."""
    changes = sa.table(
        "sync_changes",
        sa.column("entity", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("seq", sa.BigInteger()),
    )
    state = sa.table("sync_state", sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()))
    seq = bind.execute(sa.select(state.c.seq).where(state.c.id == 1)).scalar_one() + 1
    bind.execute(state.update().where(state.c.id == 1).values(seq=seq))
    for sha in shas:
        bind.execute(
            changes.update()
            .where(changes.c.entity == "photo", changes.c.entity_id.like(f"{sha}/%"))
            .values(seq=seq)
        )


def downgrade() -> None:
    op.drop_table("photo_refusals")
