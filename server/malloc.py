"""glibc malloc settings of the server process: at most two arenas, and freed memory handed back.

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

_M_ARENA_MAX = -8  # from glibc's malloc.h


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
