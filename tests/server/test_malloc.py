"""The server caps glibc's malloc arenas unless the operator chose a number, and gives freed memory back."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from server.malloc import give_back_free_memory, limit_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_capped_on_glibc() -> None:
    assert limit_arenas(2) is True


def test_an_operators_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_arenas(2) is False


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    # 200 MB in pieces small enough for the heap, then one kept piece on top, so that freeing the rest
    # leaves a hole glibc would keep for reuse, as it does between two photos.
    pieces = [bytearray(100_000) for _ in range(2_000)]
    for piece in pieces:
        piece[::4096] = b"x" * len(piece[::4096])  # touch every page
    kept = bytearray(100_000)
    del pieces
    before = _rss_mb()
    give_back_free_memory()
    assert before - _rss_mb() > 100
    del kept  # only now: it kept the freed pieces below it from being trimmed off the heap's top
