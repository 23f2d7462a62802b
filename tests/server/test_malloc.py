"""The server caps glibc's malloc arenas and fixes its thresholds unless the operator chose, and gives freed memory back."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from server.malloc import fix_thresholds, give_back_free_memory, limit_arenas


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


_AFTER_A_BIG_BLOCK = """
import ctypes, threading
from pathlib import Path
from server.malloc import {setup}
from server.security.passwords import hash_password, verify_password

{setup}()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.free(libc.malloc(20 << 20))  # any block over 16 MB freed: glibc would raise its mmap threshold past it
stored = hash_password("a long enough password")

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def check():  # as a sign-in does, in a worker thread; no malloc_trim after it
    assert verify_password("a long enough password", stored)

before = rss_mb()
for _ in range(3):
    worker = threading.Thread(target=check)
    worker.start()
    worker.join()
print(rss_mb() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_password_checks_scratch_memory_is_unmapped_when_freed() -> None:
    """scrypt takes 16 MB a check. Left to glibc, it comes from a heap arena once any bigger block was
    freed, and freed at the top of a worker thread's arena not even malloc_trim gives it back: a sign-in
    could leave the server 16 MB larger for good (the CLI's sign-in memory test saw it 1 run in 6)."""
    code = _AFTER_A_BIG_BLOCK.format(setup="limit_arenas")  # what `fivestep serve` set up before
    kept_without = _run(code)
    code = _AFTER_A_BIG_BLOCK.format(setup="configure")
    kept_with = _run(code)
    assert kept_without > 12  # the case itself: without the thresholds the 16 MB stays
    assert kept_with < 4


def _run(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def test_an_operators_malloc_thresholds_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert fix_thresholds() is False
