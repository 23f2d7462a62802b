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
  worker's change goes to a supervisor as a hard conflict and is not applied;
- if anything was merged across concurrent changes, the record gets a soft "parallel update" flag.

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


@dataclass(frozen=True, slots=True)
class Record:
    values: Mapping[str, Any]
    version: int
    field_versions: Mapping[str, int]
    last_writer_rank: Mapping[str, int]
    """Per field, the rank of who last wrote it (see `rank`)."""


def rank(role: str) -> int:
    """Precedence between concurrent writers of one field: supervisors over field workers."""
    return 1 if role in ("reviewer", "approver", "admin") else 0


def merge(
    record: Record,
    base_version: int,
    changes: Mapping[str, tuple[Any, Any]],
    *,
    author_rank: int,
    guarded: frozenset[str],
) -> MergeResult:
    """Merge `changes` ({field: (old, new)}) made against `base_version` into `record`."""
    result = MergeResult()
    concurrent = False
    for name, (old, new) in changes.items():
        current = record.values.get(name)
        changed_since = record.field_versions.get(name, 0) > base_version
        if name in guarded and author_rank == 0:
            if new != current:
                result.hard.append(FieldConflict(name, "guarded_change", old, current, new, "server"))
            continue
        if not changed_since:
            if new != current:
                result.applied[name] = new
            continue
        concurrent = True
        if new == current:
            continue  # converged
        if name in guarded:
            result.hard.append(FieldConflict(name, "field_conflict", old, current, new, "server"))
            continue
        client_wins = author_rank >= record.last_writer_rank.get(name, 0)
        if client_wins:
            result.applied[name] = new
        result.hard.append(
            FieldConflict(name, "field_conflict", old, current, new, "client" if client_wins else "server")
        )
    result.soft = not result.hard and base_version < record.version and (concurrent or bool(result.applied))
    return result


def delete_blocked_by(record: Record, base_version: int) -> list[str]:
    """Fields changed since the base: an archive/removal made without seeing them is a conflict."""
    return sorted(f for f, v in record.field_versions.items() if v > base_version)
