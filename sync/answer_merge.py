"""An item's current answer, folded from its observations in arrival order, merging collections.

Observations are append-only: every answer a device sends is kept as sent. An item's *current* answer
follows from them in the server's arrival order. For most items the latest answer wins. But two team
members often work the same item side by side, offline: both photograph the home for `step.look`, each
on their own tablet, and each sends the item's whole photo list as their tablet saw it. Latest-wins
would hide the first one's photos from the reviewer.

So an observation may carry `base`: the item's value as the device showed it when the answer was made.
With a base, a collection answer is merged three-way into the current value instead of replacing it:

- a multiple-choice answer (a list) keeps every entry the current value has, less the entries this answer
  removed from its base, plus the entries it added;
- a photo or signature answer (a dict with a `photos` or `signatures` list) merges that list the same
  way, a missing list counting as empty; its other keys (`not_taken_reason`) take this answer's value if
  it changed them from its base, else keep the current one;
- an entry is known by what it stands for: a photo by its `sha256`, a signature by its signer
  (`user_id`, `member_id`, else `signer_name`), a choice by its value. An entry this answer added or
  changed wins over the current one (this answer arrived later);
- clearing the item (`null`) with a base removes the entries the device saw, so an entry another tablet
  added meanwhile stays; an item left with no entry and nothing else is unanswered again (`null`);
- anything else replaces the current value: an answer without a base, and any other kind of answer (a
  GPS fix, a number, a text), whose fields belong together.

The server and the reference device client both fold with this module, so a device shows the answer a
reviewer will see. Pure functions: no database, no framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

_CANONICAL = msgspec.json.Encoder(order="sorted")
_LISTS = ("photos", "signatures")
"""The list keys of the dict answers that merge (photo and signature items)."""


def current(answers: Iterable[tuple[Any, Any]]) -> Any:
    """The current value after `(value, base)` answers, oldest first (None when unanswered or cleared)."""
    value: Any = None
    for answer, base in answers:
        value = merged(value, answer, base)
    return value


def merged(current: Any, answer: Any, base: Any) -> Any:
    """The item's value after `answer`, made on top of `base`, arrives while the value is `current`."""
    if base is None or current == base:
        return answer  # no base, or nothing arrived since it: the answer is exactly what its author saw
    if isinstance(base, list) and isinstance(answer, list | None) and isinstance(current, list | None):
        result = _merge_lists(current or [], answer or [], base)
        return result if result or answer is not None else None
    if _is_collection(base) and isinstance(answer, dict | None) and isinstance(current, dict | None):
        result_dict = _merge_dicts(current or {}, answer or {}, base)
        return result_dict if any(result_dict.values()) or answer is not None else None
    return answer


def _is_collection(value: Any) -> bool:
    """A photo or signature answer (a GPS fix, the other kind of dict, has none of these keys)."""
    return isinstance(value, dict) and any(key in value for key in (*_LISTS, "not_taken_reason"))


def _merge_dicts(current: dict[str, Any], answer: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in {**current, **base, **answer}:  # insertion order: current's keys first
        mine, theirs, was = answer.get(key), current.get(key), base.get(key)
        if key in _LISTS:
            value: Any = _merge_lists(theirs or [], mine or [], was or [])
        elif mine == was:
            value = theirs
        else:
            value = mine
        if value is not None:
            result[key] = value
    return result


def _merge_lists(current: list[Any], answer: list[Any], base: list[Any]) -> list[Any]:
    was = {_identity(e): e for e in base}
    mine = {_identity(e): e for e in answer}
    result: dict[str, Any] = {}
    for entry in current:
        key = _identity(entry)
        if key in result or (key in was and key not in mine):  # this answer removed it
            continue
        touched = key in mine and mine[key] != was.get(key)  # added or changed by this answer
        result[key] = mine[key] if touched else entry
    for key, entry in mine.items():
        if key not in was:  # added by this answer; one in its base but not current was removed since
            result.setdefault(key, entry)
    return list(result.values())


def identities(value: Any) -> set[str]:
    """What the entries of a list answer, or of a photo or signature answer's lists, stand for (empty for
    any other answer): which of them a merged value still keeps."""
    if isinstance(value, list):
        return {_identity(e) for e in value}
    if isinstance(value, dict):
        return {_identity(e) for key in _LISTS if isinstance(value.get(key), list) for e in value[key]}
    return set()


def _identity(entry: Any) -> str:
    """What an entry stands for: a photo its file, a signature its signer, anything else its content."""
    if isinstance(entry, dict):
        for field in ("user_id", "member_id", "signer_name"):  # a signature: one entry per signer
            if isinstance(entry.get(field), str):
                return f"{field}:{entry[field]}"
        if isinstance(entry.get("sha256"), str):
            return f"sha256:{entry['sha256']}"
    return _CANONICAL.encode(entry).decode()
