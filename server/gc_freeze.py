"""Keep CPython's garbage collector off the objects a server process holds for its whole life.

A pull page builds thousands of small dicts and tuples, and every so often the collector then walks every
object the process holds: the imported modules, SQLAlchemy's mappers, Litestar's routes, hundreds of
thousands of objects that never become garbage. `gc.freeze()` once the app is built moves them out of the
collector's sight; new objects are collected as before. Measured on a first sync of 53,745 changes: 1.9 s
instead of 2.3-2.6 s, the same as with the collector switched off (docs/performance.md).
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect what is already garbage, then freeze the rest; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
