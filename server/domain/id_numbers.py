"""Resident identity numbers (GB 11643-1999): 17 digits and a check character, masked for display."""

from __future__ import annotations

import datetime as dt
from typing import Any

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"


def check_character(first17: str) -> str:
    return CHECK[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]


def problem(id_number: str) -> str | None:
    """Why the number is not valid, or None when it is."""
    value = id_number.upper()
    if len(value) != 18 or not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        return "must be 17 digits and a check digit (0-9 or X)"
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "has no valid birth date in positions 7-14"
    if check_character(value[:17]) != value[17]:
        return "check digit does not match"
    return None


def normalise(id_number: str) -> str:
    return id_number.strip().upper()


def mask(id_number: str) -> str:
    """`110101199003071234` -> `110************234`: region prefix and last three only."""
    if len(id_number) < 7:
        return "*" * len(id_number)
    return id_number[:3] + "*" * (len(id_number) - 6) + id_number[-3:]


def mask_within(value: Any) -> Any:
    """`value` with every `id_number` found in it (nested dicts and lists too) masked."""
    if isinstance(value, dict):
        return {
            k: mask(v) if k == "id_number" and isinstance(v, str) else mask_within(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_within(v) for v in value]
    return value


def birth_date(id_number: str) -> dt.date:
    return dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
