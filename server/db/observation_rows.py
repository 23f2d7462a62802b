"""New answers written as plain rows: one INSERT of a flush's observations, not one ORM object each.

A completed visit is 20 observations. As ORM objects they cost the server more than anything else a push
does: building each (attribute events), the unit of work's bookkeeping, and the change feed's hook
walking them. `visits.add_answers` hands them here instead; a `before_flush` hook, run before every other
one, writes whatever was handed in since the last flush, with what the ORM hooks would have made of
them: their photo references (`models.photos.photo_ref_rows`) and their feed stamps
(`feed.stamp_written`). Those two stay the single source of truth for both ways in.

Rows handed in are written at the next flush, which comes before any read of the session (autoflush)
and before its commit: `add_answers` changes the visit with them, so the session has something to
flush. Rows of a transaction or savepoint rolled back before that are dropped with it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, event
from sqlalchemy.orm import Session, SessionTransaction

from server.db.bulk_insert import BulkInsert
from server.db.feed import stamp_written
from server.db.models import Observation, PhotoRef
from server.db.models.photos import photo_ref_rows

_PENDING = "fivestep_observation_rows"


@dataclass(slots=True)
class ObservationRow:
    """An observation as written: the columns of `observations`, readable as an `Observation` is."""

    id: uuid.UUID
    visit_id: uuid.UUID
    ordinal: int
    template_code: str
    template_version: int
    item: str
    row_id: uuid.UUID | None
    value: Any
    base: Any
    note: str | None
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    fix_time: dt.datetime | None
    provider: str | None
    mock_location: bool | None
    device_time: dt.datetime | None
    received_at: dt.datetime
    author_id: uuid.UUID
    device_id: uuid.UUID | None


# On the tables, not through the ORM's bulk-insert machinery: one statement for a flush's rows.
_INSERT_OBSERVATIONS = BulkInsert(cast(Table, Observation.__table__), ObservationRow.__slots__)
_INSERT_REFS = BulkInsert(cast(Table, PhotoRef.__table__), ["observation_id", "sha256", "visit_id", "kind"])


def append(session: Session, row: ObservationRow) -> None:
    """Write `row` at the session's next flush, in its transaction."""
    session.info.setdefault(_PENDING, []).append(row)


def _write(session: Session, _ctx: Any, _instances: Any) -> None:
    rows: list[ObservationRow] | None = session.info.pop(_PENDING, None)
    if not rows:
        return
    _INSERT_OBSERVATIONS.run_objects(session, rows)
    refs = [ref for r in rows for ref in photo_ref_rows(r.id, r.visit_id, r.value)]
    _INSERT_REFS.run(session, refs)
    stamp_written(
        session, [(r.id, r.visit_id) for r in rows], [(ref["sha256"], ref["visit_id"]) for ref in refs]
    )


def _transaction_ended(session: Session, _transaction: SessionTransaction) -> None:
    # Committed, the rows were flushed before; rolled back, they go with it. (A savepoint begins with a
    # flush, so what was handed in before it never waits for its end.)
    session.info.pop(_PENDING, None)


# On import, as models/photos.py's hook: whatever appends rows has imported this module, so no session
# can hold rows nobody writes. Ahead of the other flush hooks: the change feed's reads (a household
# moving community carries its visits' observations along) must see these rows.
event.listen(Session, "before_flush", _write, insert=True)
event.listen(Session, "after_transaction_end", _transaction_ended)
