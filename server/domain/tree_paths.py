"""Materialised paths of the jurisdiction tree (`/D01/S01/C01/`): the nodes over a node, and over two."""

from __future__ import annotations


def codes(path: str) -> list[str]:
    return [code for code in path.split("/") if code]


def path_of(node_codes: list[str]) -> str:
    return "/" + "".join(f"{code}/" for code in node_codes)


def shared_path(one: str, other: str) -> str:
    """The deepest node over both: `/D01/S01/C01/` and `/D01/S01/C02/` -> `/D01/S01/` (`/`, which no node
    has, when they share none)."""
    common = []
    for a, b in zip(codes(one), codes(other), strict=False):
        if a != b:
            break
        common.append(a)
    return path_of(common)


def paths_above(path: str) -> list[str]:
    """The nodes over this one, the top first: `/D01/S01/C01/` -> `/D01/`, `/D01/S01/`."""
    parts = codes(path)
    return [path_of(parts[:n]) for n in range(1, len(parts))]
