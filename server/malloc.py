"""glibc malloc settings of the server process: at most two arenas, fixed thresholds, freed memory handed back.

glibc gives each thread that allocates under contention its own heap arena (up to 8 per core), and each
arena keeps freed memory for reuse. The image workers decode 12 MP photos in threads, so every worker ends
up with an arena holding tens of MB it never returns: measured, 216 MB peak while ingesting 20 photos at
once with the default, 192 MB with two arenas, at the same throughput (docs/performance.md). Setting
MALLOC_ARENA_MAX in the environment does the same; an operator's own setting wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# From glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8

_MAPPED_FROM = 16 * 1024 * 1024 + 1024
"""Blocks from this size up get a mapping of their own, unmapped when freed. A password check's scrypt
scratch memory (16 MiB and 3 KiB) is one; Pillow's image blocks, at most 16 MiB (its default block size),
stay on the heap, where they are reused from one photo to the next."""
_TRIM_FROM = 16 * 1024 * 1024
"""Free memory beyond this at the top of a heap goes back at once. One photo's largest buffer (12 MB, a
12 MP photo decoded at half size) stays for the next photo; what two photos decoded side by side leave
does not wait for malloc_trim, which cannot trim a worker thread's heap. Measured against glibc's own
thresholds, alternating (docs/performance.md): peak 167-170 against 172-174 MB while ingesting 20 photos at
once, photos per second within the noise; at twice this the peak was 188 MB in two runs of four."""


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


# Both are glibc's own: elsewhere (musl, macOS) there is nothing to tune.
_LIBC = _libc()
_mallopt = getattr(_LIBC, "mallopt", None)
_malloc_trim = getattr(_LIBC, "malloc_trim", None)


def configure() -> None:
    """The server process's settings, before its threads start allocating."""
    limit_arenas()
    fix_thresholds()


def fix_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds, unless the operator set either; True when they were set.

    Left alone, glibc raises its mmap threshold to the size of any mapped block freed (up to 32 MiB), and
    scrypt's 16 MiB then come from a heap arena. Freed at the top of a worker thread's arena, not even
    malloc_trim returns them (it trims only the main arena's top), so a sign-in could leave the server
    16 MB larger for good. Fixing one threshold stops glibc adjusting the other, so both are set.
    """
    chosen = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if any(name in os.environ for name in chosen) or _mallopt is None:
        return False
    return bool(_mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)) and bool(_mallopt(_M_TRIM_THRESHOLD, _TRIM_FROM))


def limit_arenas(count: int = 2) -> bool:
    """Cap the arenas if this is glibc and nobody chose otherwise; True when the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ or _mallopt is None:
        return False
    return bool(_mallopt(_M_ARENA_MAX, count))


def give_back_free_memory() -> None:
    """Return the heap memory freed so far to the OS (glibc's malloc_trim; nothing elsewhere).

    Called after each photo: a decoded image's buffers are freed when it is done, but glibc keeps freed
    heap memory for reuse, so with photos processed side by side the heap's high-water mark only grows."""
    if _malloc_trim is not None:
        _malloc_trim(0)
