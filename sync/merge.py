"""Three-way, per-field merge of an offline edit into the server's current record.

A device edits against the version it last confirmed (`base_version`) and sends, per field, the value it
saw and the value it wants. The server keeps, per field, the record version at which the field last
changed (`field_versions`), which makes the merge three-way without shipping base snapshots:

- a field nobody else changed since the base takes the device's value;
- a field changed concurrently to the same value has converged;
- a field changed concurrently to another value is a hard conflict: a provisional winner is chosen
  (a supervisor's value beats a worker's; between equals the later arrival wins, as the server orders
  arrivals) and the losing value is kept in the conflict record, so nothing is lost;
- a guarded field (identity, ID number, status, benefit amount) never changes silently: a field
  worker's change goes to a supervisor as a hard conflict and is not applied; one the field worker sees
  only masked (the ID number) goes there even when it equals the current value, since "converged" would
  confirm a guess;
- if others changed the record since the base and it all merged, it gets a soft "parallel update" flag;
- a device's own earlier edits are never "concurrent" with its later ones (it made them on top).

Device clocks play no part. Pure functions: no database, no framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Provisional = Literal["server", "client"]


@dataclass(frozen=True, slots=True)
class FieldConflict:
    field: str
    kind: Literal["field_conflict", "guarded_change"]
    base_value: Any
    server_value: Any
    client_value: Any
    provisional: Provisional


@dataclass(slots=True)
class MergeResult:
    applied: dict[str, Any] = field(default_factory=dict)
    hard: list[FieldConflict] = field(default_factory=list)
    soft: bool = False
    """Merged with concurrent changes to other fields (or converged): worth a supervisor's glance."""


Writer = tuple[int, str | None]
"""Who wrote a field: (rank, sync client id or None for a direct edit)."""


@dataclass(frozen=True, slots=True)
class Record:
    values: Mapping[str, Any]
    version: int
    field_versions: Mapping[str, int]
    writers: Mapping[str, Writer]
    """Per field, who last wrote it: their rank (see `rank`) and their sync client."""

    def changed_by_others(self, name: str, base_version: int, client: str | None) -> bool:
        """Changed since the base by anyone but this client: a device's own later edits, made on top of
        its earlier ones while offline, are not concurrent with them. `base_version` must not exceed
        `version` (the caller refuses such a base): above it, nothing would count as changed since."""
        if self.field_versions.get(name, 0) <= base_version:
            return False
        writer = self.writers.get(name)
        return client is None or writer is None or writer[1] != client


def rank(role: str) -> int:
    """Precedence between concurrent writers of one field: supervisors over field workers."""
    return 1 if role in ("reviewer", "approver", "admin") else 0


def merge(
    record: Record,
    base_version: int,
    changes: Mapping[str, tuple[Any, Any]],
    *,
    author: Writer,
    guarded: frozenset[str],
    hidden: frozenset[str] = frozenset(),
) -> MergeResult:
    """Merge `changes` ({field: (old, new)}) made against `base_version` into `record`; `hidden`: the
    guarded fields a field worker sees only masked."""
    result = MergeResult()
    author_rank, client = author
    for name, (old, new) in changes.items():
        current = record.values.get(name)
        changed_since = record.changed_by_others(name, base_version, client)
        if name in guarded and author_rank == 0:
            if new != current or name in hidden:
                result.hard.append(FieldConflict(name, "guarded_change", old, current, new, "server"))
            continue
        if not changed_since:
            if new != current:
                result.applied[name] = new
            continue
        if new == current:
            continue  # converged
        if name in guarded:
            result.hard.append(FieldConflict(name, "field_conflict", old, current, new, "server"))
            continue
        client_wins = author_rank >= record.writers.get(name, (0, None))[0]
        if client_wins:
            result.applied[name] = new
        result.hard.append(
            FieldConflict(name, "field_conflict", old, current, new, "client" if client_wins else "server")
        )
    others = any(record.changed_by_others(name, base_version, client) for name in record.field_versions)
    result.soft = not result.hard and others
    return result


def delete_blocked_by(record: Record, base_version: int, client: str | None) -> list[str]:
    """Fields others changed since the base: an archive made without seeing them is a conflict."""
    return sorted(f for f in record.field_versions if record.changed_by_others(f, base_version, client))
