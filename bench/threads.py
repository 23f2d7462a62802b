"""Concurrent devices in the benchmarks: a thread each, all started together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def seconds_all_at_once(calls: list[Callable[[], object]]) -> float:
    """Seconds from starting every call, each in a thread of its own, to the last one's end."""
    threads = [threading.Thread(target=call) for call in calls]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
