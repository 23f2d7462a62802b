"""Complete, valid answers for a template: what a careful investigator would record when nothing is wrong.

The demo seed, the tests and the benchmarks use it to drive visits through the whole workflow without
hand-writing hundreds of answers. Every value passes `answers.check_value`, and together they pass
`answers.completeness` for the given team and household.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from schemas.checklists import (
    Date,
    Gps,
    Integer,
    Item,
    Money,
    MultiChoice,
    Photo,
    Repeat,
    Signature,
    SingleChoice,
    Template,
    Text,
    YesNo,
)
from server.domain.answers import Context

NAMESPACE = uuid.UUID("0b7f4f5c-55c5-4d0e-8d7b-9f1e2a3c4d5e")
SETTLED = {"objections.outcome": "not_upheld"}
"""Choices whose first option is not "nothing wrong": an objection still `pending` holds the file back
at district approval, so the filler records it as settled."""
DAYS_LATER = {"notice_removed_on": 7}
"""Dates that follow `day` by rule: a publicity notice comes down once its 7 days (公示) have run, not the
day it went up."""


@dataclass(frozen=True)
class Filled:
    template: str
    item: str
    row_id: uuid.UUID | None
    value: Any


def fake_sha256(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def fill(
    template: Template, context: Context, *, day: dt.date, where: tuple[float, float], seed: str
) -> list[Filled]:
    """Answers for every item (optional ones too), `day` for dates, `where` for GPS fixes."""
    out: list[Filled] = []
    for section in template.sections:
        for item in section.items:
            out += _fill(template.code, item, item.code, None, context, day, where, seed)
    return out


def _fill(
    code: str,
    item: Item,
    path: str,
    row: uuid.UUID | None,
    context: Context,
    day: dt.date,
    where: tuple[float, float],
    seed: str,
) -> list[Filled]:
    if isinstance(item, Repeat):
        rows = max(item.min_rows, 1)
        return [
            answer
            for n in range(rows)
            for child in item.items
            for answer in _fill(
                code,
                child,
                f"{path}.{child.code}",
                uuid.uuid5(NAMESPACE, f"{seed}:{path}:{n}"),
                context,
                day,
                where,
                seed,
            )
        ]
    return [Filled(code, path, row, _value(item, path, context, day, where, seed))]


def _value(
    item: Item, path: str, context: Context, day: dt.date, where: tuple[float, float], seed: str
) -> Any:
    match item:
        case YesNo():
            return False  # no red flag seen
        case Integer():
            return max(item.min or 0, 1) if item.max is None else min(max(item.min or 0, 1), item.max)
        case Money():
            return max(item.min, 0)  # declared and verified agree: no difference to explain
        case Text():
            return "无异常 (nothing notable)"[: item.max_length]
        case SingleChoice():
            return SETTLED.get(path, item.options[0].value)
        case MultiChoice():
            return [o.value for o in item.options[: max(item.min_selected, 1)]]
        case Date():
            return (day + dt.timedelta(days=DAYS_LATER.get(path, 0))).isoformat()
        case Photo():
            return _photos(item, path, seed)
        case Gps():
            return {"lat": where[0], "lon": where[1], "accuracy_m": 8.0}
        case Signature():
            return _signatures(item, path, context, seed)
    raise TypeError(f"no filler for {type(item).__name__}")  # pragma: no cover


def _photos(item: Photo, path: str, seed: str) -> dict[str, Any]:
    views: list[str | None] = [v.code for v in item.views]
    while len(views) < item.min_count:
        views.append(views[0] if views else None)
    return {"photos": [{"sha256": fake_sha256(seed, path, n), "view": v} for n, v in enumerate(views)]}


def _signatures(item: Signature, path: str, context: Context, seed: str) -> dict[str, Any]:
    def entries() -> Iterator[dict[str, Any]]:
        if item.signers in ("investigators", "any"):
            for uid, name in context.investigators.items():
                yield {"signer_name": name, "user_id": uid, "sha256": fake_sha256(seed, path, uid)}
        if item.signers in ("members_present", "any"):
            for mid, name in context.members.items():
                yield {"signer_name": name, "member_id": mid, "sha256": fake_sha256(seed, path, mid)}

    return {"signatures": list(entries())}
