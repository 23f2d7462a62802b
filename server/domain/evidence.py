"""Which blobs an answer references: photos (``{"photos": [{"sha256", "view"}]}``) and signature images
(``{"signatures": [{"sha256", ...}]}``), wherever they sit in the value."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

SHA256 = re.compile(r"[0-9a-f]{64}")
Kind = Literal["photo", "signature"]
_KINDS: dict[str, Kind] = {"photos": "photo", "signatures": "signature"}


class Reference(msgspec.Struct, frozen=True):
    sha256: str
    kind: Kind
    view: str | None = None


def references(value: Any) -> list[Reference]:
    """Every blob the answer ``value`` names, first mention first, each SHA-256 once."""
    found: dict[str, Reference] = {}
    _walk(value, found)
    return list(found.values())


def _walk(value: Any, found: dict[str, Reference]) -> None:
    if isinstance(value, list):
        for element in value:
            _walk(element, found)
        return
    if not isinstance(value, dict):
        return
    for key, entries in value.items():
        kind = _KINDS.get(key)
        if kind is not None and isinstance(entries, list):
            for entry in entries:
                _add(entry, kind, found)
        else:
            _walk(entries, found)


def _add(entry: Any, kind: Kind, found: dict[str, Reference]) -> None:
    if not isinstance(entry, dict):
        return
    sha = entry.get("sha256")
    if isinstance(sha, str) and SHA256.fullmatch(sha) and sha not in found:
        view = entry.get("view")
        found[sha] = Reference(sha, kind, view if isinstance(view, str) else None)
