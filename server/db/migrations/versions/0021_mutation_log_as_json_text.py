"""sync_mutations.args and .result as json text on PostgreSQL, not jsonb

Every push writes a log row a mutation, and a visit's answers make its `args` about 7 KB. `jsonb`
parses each value into its binary form on the way in: for such a row that took PostgreSQL about twice
the time of storing the text (measured alone: 145-177 µs a row against 75-78). The log is read back
whole, and only when an edit comes again; nothing queries inside it, so nothing needs the binary form.
SQLite stores JSON as text already.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 05:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

COLUMNS = ("args", "result")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")


def _retype(sql_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.execute(
            f"ALTER TABLE sync_mutations ALTER COLUMN {column} TYPE {sql_type} USING {column}::{sql_type}"
        )
