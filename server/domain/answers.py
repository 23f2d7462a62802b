"""Answers against a checklist template: one function for a single value, one for a whole submission.

The API, the sync mutation handlers and the tests all call these, so a rule is checked the same way
whichever door an answer comes in by. `completeness` returns every problem at once, each with the
template and item code, and the guard of the "four no-let-go" rules (四个不放过) it belongs to.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from schemas.checklists import (
    Condition,
    Date,
    Gps,
    GpsAnswer,
    Integer,
    Item,
    Money,
    MultiChoice,
    Photo,
    PhotoAnswer,
    Repeat,
    RowRemoved,
    Signature,
    SignatureAnswer,
    SingleChoice,
    Template,
    Text,
    YesNo,
)
from server.domain import id_numbers

Answers = Mapping[tuple[str, str | None], Any]
"""Current answers of one template: (item path, row id or None) -> value."""


@dataclass(frozen=True, slots=True)
class Problem:
    guard: str
    """unanswered | too_few_rows | too_many_rows | too_few_neighbours | too_few_photos | photo_view_missing |
    signature_missing | income_unexplained | outcome_missing"""
    item: str
    """`template_code:item.path`"""
    row: str | None
    message: str


def check_value(item: Item, value: Any) -> str | None:
    """Why `value` cannot answer `item` (None when it can). `None` (clearing an answer) is always fine."""
    if value is None:
        return None
    try:
        return _check(item, value)
    except msgspec.ValidationError as exc:
        return str(exc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(item: Item, value: Any) -> str | None:
    match item:
        case YesNo():
            return None if isinstance(value, bool) else "expected true or false"
        case Integer() | Money():
            if not _is_int(value):
                return "expected a whole number" + (" of fen" if isinstance(item, Money) else "")
            if abs(value) >= id_numbers.ID_SIZED:  # an ID number typed into the wrong field, likely
                return "a number of 15 digits or more is no count or amount"
            low, high = item.min, item.max
            if (low is not None and value < low) or (high is not None and value > high):
                return f"must be between {low} and {high}"
            return None
        case Text():
            ok = isinstance(value, str) and len(value) <= item.max_length
            return None if ok else f"expected text of at most {item.max_length} characters"
        case SingleChoice():
            ok = isinstance(value, str) and value in {o.value for o in item.options}
            return None if ok else "not one of the options"
        case MultiChoice():
            ok = (
                isinstance(value, list)
                and all(isinstance(v, str) for v in value)  # unhashable values would fail the set below
                and len(set(value)) == len(value)
                and set(value) <= {o.value for o in item.options}
            )
            return None if ok else "expected distinct values from the options"
        case Date():
            return None if isinstance(value, str) and _date(value) else "expected a date YYYY-MM-DD"
        case Photo():
            photo = msgspec.convert(value, PhotoAnswer)
            views = {v.code for v in item.views}
            if views and any(p.view not in views for p in photo.photos):
                return f"each photo's view must be one of {sorted(views)}"
            if len({p.sha256 for p in photo.photos}) != len(photo.photos):
                return "the same photo (sha256) appears twice: each view needs a photo of its own"
            return None
        case Gps():
            return _gps_problem(item, msgspec.convert(value, GpsAnswer))
        case Signature():
            for entry in msgspec.convert(value, SignatureAnswer).signatures:
                if not (entry.sha256 or stated(entry.not_signed_reason)):
                    return "each signature needs an image or a reason it was not given"
            return None
        case Repeat():
            msgspec.convert(value, RowRemoved)
            return None
    return "unknown item type"  # pragma: no cover - the union is exhaustive


def _gps_problem(item: Gps, fix: GpsAnswer) -> str | None:
    """A fix coarser than the item's `max_accuracy_m` cannot place the home (a cell-tower fix is off by
    kilometres), and one without an accuracy cannot show it is not."""
    limit = item.max_accuracy_m
    if limit is None:
        return None
    if fix.accuracy_m is None:
        return f"needs accuracy_m: this item takes fixes accurate to {limit:g} m"
    if fix.accuracy_m > limit:
        return (
            f"accuracy {fix.accuracy_m:g} m is coarser than the {limit:g} m this item allows (max_accuracy_m)"
        )
    return None


_YYYY_MM_DD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(value: str) -> dt.date | None:
    """Only the YYYY-MM-DD form: `date.fromisoformat` also takes `20250105` and `2025W015`, which the
    devices, the exports and the reviewers would not read as the same day."""
    if not _YYYY_MM_DD.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def stated(reason: str | None) -> bool:
    """A reason that says something: spaces waive no photo and excuse no signature."""
    return bool(reason and reason.strip())


def _answered(value: Any) -> bool:
    if value is None or value == "" or value == []:
        return False
    if isinstance(value, dict) and "photos" in value:
        return bool(value.get("photos")) or stated(value.get("not_taken_reason"))
    return True


def rows_of(answers: Answers, group_path: str) -> list[str]:
    """Row ids of a repeat group that have any answer and were not removed, in first-seen order."""
    removed = {row for (path, row), v in answers.items() if path == group_path and v and v.get("removed")}
    seen: dict[str, None] = {}
    for path, row in answers:
        if row is not None and path.startswith(group_path + ".") and row not in removed:
            seen.setdefault(row)
    return list(seen)


def in_removed_row(answers: Answers, path: str, row: str | None) -> bool:
    """Whether the answer at ``path`` belongs to a row of a repeat group that was removed since: its
    answers stay stored (the removal is an answer of its own, to the group's code) but no longer count."""
    if row is None:
        return False
    segments = path.split(".")
    groups = (".".join(segments[:end]) for end in range(1, len(segments)))
    return any(_is_removal(answers.get((group, row))) for group in groups)


def _is_removal(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("removed"))


@dataclass(frozen=True)
class Context:
    """What the guards need beyond the answers: who must sign."""

    investigators: Mapping[str, str]
    """user id -> name of every team member"""
    members: Mapping[str, str]
    """member id -> name of every household member"""


def completeness(template: Template, answers: Answers, context: Context) -> list[Problem]:
    """Every problem that blocks submitting these answers, in template order."""
    found: list[Problem] = []
    for section in template.sections:
        for item in section.items:
            found += _item_problems(template.code, item, item.code, None, answers, context)
    return found


def _item_problems(
    code: str, item: Item, path: str, row: str | None, answers: Answers, context: Context
) -> list[Problem]:
    if isinstance(item, Repeat):
        return _repeat_problems(code, item, path, answers, context)
    value = answers.get((path, row))
    if not _answered(value):
        if _is_required(item, path, row, answers):
            guard = (
                "income_unexplained" if item.required_if and item.required_if.differs_from else "unanswered"
            )
            return [Problem(guard, f"{code}:{path}", row, f"{item.label.en} ({item.label.zh}) is required")]
        return []
    if isinstance(item, Photo):
        return _photo_problems(code, item, path, row, value)
    if isinstance(item, Signature):
        return _signature_problems(code, item, path, row, value, context)
    return []


def _is_required(item: Item, path: str, row: str | None, answers: Answers) -> bool:
    if item.required_if is None:
        return item.required
    return _condition_holds(
        item.required_if, path.rsplit(".", 1)[0] + "." if "." in path else "", row, answers
    )


def _condition_holds(cond: Condition, scope: str, row: str | None, answers: Answers) -> bool:
    other = answers.get((scope + cond.item, row))
    if cond.differs_from is not None:
        baseline = answers.get((scope + cond.differs_from, row))
        return other is not None and baseline is not None and other != baseline
    if cond.one_of is not None:
        return other in cond.one_of
    return other is not None and other == cond.equals


def _repeat_problems(code: str, item: Repeat, path: str, answers: Answers, context: Context) -> list[Problem]:
    rows = rows_of(answers, path)
    found: list[Problem] = []
    if len(rows) < item.min_rows and (item.required or item.min_rows):
        guard = "too_few_neighbours" if item.code == "neighbours" else "too_few_rows"
        message = f"{item.label.en} ({item.label.zh}): at least {item.min_rows} needed, {len(rows)} given"
        found.append(Problem(guard, f"{code}:{path}", None, message))
    if item.max_rows is not None and len(rows) > item.max_rows:
        message = f"{item.label.en} ({item.label.zh}): at most {item.max_rows}, {len(rows)} given"
        found.append(Problem("too_many_rows", f"{code}:{path}", None, message))
    for row in rows:
        for child in item.items:
            found += _item_problems(code, child, f"{path}.{child.code}", row, answers, context)
    return found


def _photo_problems(code: str, item: Photo, path: str, row: str | None, value: Any) -> list[Problem]:
    photo = msgspec.convert(value, PhotoAnswer)
    if stated(photo.not_taken_reason):
        return []  # "not taken (reason)" is an answer; reviewers see the reason
    where = f"{code}:{path}"
    distinct = _distinct_photos(photo)
    taken = set(distinct.values())
    found = [
        Problem("photo_view_missing", where, row, f"photo view '{v.label.en}' ({v.label.zh}) is missing")
        for v in item.views
        if v.required and v.code not in taken
    ]
    if len(distinct) < item.min_count:
        found.append(Problem("too_few_photos", where, row, f"at least {item.min_count} photos needed"))
    return found


def _distinct_photos(photo: PhotoAnswer) -> dict[str, str | None]:
    """sha256 -> view of each image, counted once: one picture is not the kitchen and the bedroom too.
    `check_value` refuses a repeat within one answer, but answers merged from two tablets may hold one."""
    distinct: dict[str, str | None] = {}
    for p in photo.photos:
        distinct.setdefault(p.sha256, p.view)
    return distinct


def _signature_problems(
    code: str, item: Signature, path: str, row: str | None, value: Any, context: Context
) -> list[Problem]:
    entries = msgspec.convert(value, SignatureAnswer).signatures
    where = f"{code}:{path}"
    if item.signers == "investigators":
        signed = {e.user_id for e in entries if e.sha256}
        return [
            Problem("signature_missing", where, row, f"investigator {name} has not signed")
            for uid, name in context.investigators.items()
            if uid not in signed
        ]
    if item.signers == "members_present":
        accounted = {e.member_id for e in entries if e.sha256 or stated(e.not_signed_reason)}
        return [
            Problem(
                "signature_missing", where, row, f"member {name}: a signature or the reason it is missing"
            )
            for mid, name in context.members.items()
            if mid not in accounted
        ]
    return []
