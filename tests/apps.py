"""Apps for tests: built once, started again on each test's settings.

Building the app (registering its 126 routes) costs 0.1-0.3 s, and the suite starts an app a thousand
times; starting a built one on a new database costs a few milliseconds. An app is lent to one test at a
time, and one whose test failed inside it is not lent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from litestar import Litestar
from litestar.testing import TestClient

from schemas.config import Settings
from server.app import Start, create_app, start_next_on

_idle: list[Litestar] = []


@contextmanager
def started(settings: Settings) -> Iterator[TestClient[Litestar]]:
    """A test client on an app started with `settings`, stopped when the block ends."""
    app = _idle.pop() if _idle else create_app(settings)
    start_next_on(app, Start(settings))
    with TestClient(app) as test_client:
        yield test_client
    _idle.append(app)
