"""An item's current answer, folded from its observations in arrival order, merging collections.

Observations are append-only: every answer a device sends is kept as sent. An item's *current* answer
follows from them in the server's arrival order. For most items the latest answer wins. But two team
members often work the same item side by side, offline: both photograph the home for `step.look`, each
on their own tablet, and each sends the item's whole photo list as their tablet saw it. Latest-wins
would hide the first one's photos from the reviewer.

So an observation may carry `base`: the item's value as the device showed it when the answer was made.
With a base, the answer is merged three-way into the current value instead of replacing it:

- a list (multiple choice, or the `photos` / `signatures` of an answer) keeps every entry the current
  value has, less the entries this answer removed from its base, plus the entries it added; an entry
  is known by its `sha256` when it has one, else by its whole content;
- a dict merges key by key: a key this answer left as in its base keeps its current value, a key only
  this answer changed takes the answer's value, a key both changed merges when both are lists and
  otherwise takes the answer's (the later arrival; the earlier value stays in the history);
- anything else replaces the current value: an answer without a base, an answer that clears the item
  (`null`), and any answer to an item that is unanswered or was cleared.

The server and the reference device client both fold with this module, so a device shows the answer a
reviewer will see. Pure functions: no database, no framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

_CANONICAL = msgspec.json.Encoder(order="sorted")


def current(answers: Iterable[tuple[Any, Any]]) -> Any:
    """The current value after `(value, base)` answers, oldest first (None when unanswered or cleared)."""
    value: Any = None
    for answer, base in answers:
        value = merged(value, answer, base)
    return value


def merged(current: Any, answer: Any, base: Any) -> Any:
    """The item's value after `answer`, made on top of `base`, arrives while the value is `current`."""
    if answer is None or base is None or current is None or current == base:
        return answer  # nothing else to keep: the answer is exactly what its author saw
    if isinstance(answer, list) and isinstance(base, list):
        return _merge_lists(current if isinstance(current, list) else [], answer, base)
    if isinstance(answer, dict) and isinstance(base, dict):
        return _merge_dicts(current if isinstance(current, dict) else {}, answer, base)
    return answer


def _merge_dicts(current: dict[str, Any], answer: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in {**current, **base, **answer}:  # insertion order: current's keys first
        mine, theirs, was = answer.get(key), current.get(key), base.get(key)
        if mine == was:
            value = theirs
        elif theirs == was:
            value = mine
        elif isinstance(mine, list) and isinstance(was, list | None):
            value = _merge_lists(theirs if isinstance(theirs, list) else [], mine, was or [])
        else:
            value = mine
        if value is not None:
            result[key] = value
    return result


def _merge_lists(current: list[Any], answer: list[Any], base: list[Any]) -> list[Any]:
    was = {_identity(e): e for e in base}
    mine = {_identity(e): e for e in answer}
    removed = was.keys() - mine.keys()
    result: dict[str, Any] = {}
    for entry in current:
        key = _identity(entry)
        if key in removed or key in result:
            continue
        edited = key in mine and key in was and mine[key] != was[key]
        result[key] = mine[key] if edited else entry
    for key, entry in mine.items():
        if key not in was:  # added by this answer; one in its base but not current was removed since
            result.setdefault(key, entry)
    return list(result.values())


def _identity(entry: Any) -> str:
    """Photos and signatures are known by their file; anything else by its whole content."""
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    if isinstance(sha, str):
        return "sha256:" + sha
    return _CANONICAL.encode(entry).decode()
