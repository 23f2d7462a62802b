"""Every request gives its database connection back when it ends, whatever ended it.

Found by fuzzing the API with schemathesis: requests refused while signing in (a bad token's 401) left
their session to the garbage collector. On SQLite a write request's session holds the database's one
write lock from its first statement, so until the collector ran every other write waited out the busy
timeout and failed with 503; on PostgreSQL each such request kept a pooled connection.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from tests.helpers import Client, login

BAD = {"Authorization": "Bearer fs_not-a-token"}


@pytest.fixture
def no_collector() -> Iterator[None]:
    """What the garbage collector would free is exactly what must not be left to it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _checked_out(client: Client, settle_seconds: float = 5.0) -> int:
    """Pooled connections in use, once whatever else the app runs has had time to give its own back: the
    uploads' cleanup makes its first pass as the app starts, beside the test's first requests. A leaked
    connection, left to the (disabled) collector, stays out however long this waits."""
    pool = client.app.state.db.engine.pool
    deadline = time.monotonic() + settle_seconds
    while pool.checkedout() and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(pool.checkedout())


def test_requests_refused_at_sign_in_give_their_connection_back(client: Client, no_collector: None) -> None:
    refused = [
        client.post("/api/v1/templates", json={"code": "x"}, headers=BAD),
        client.post("/api/v1/sync/push", json={"client_id": "x", "mutations": []}, headers=BAD),
        client.post("/api/v1/sync/pull", content=b"not json", headers=BAD),
        client.patch("/api/v1/households/00000000-0000-0000-0000-000000000000", json={}, headers=BAD),
        client.get("/api/v1/auth/me", headers=BAD),
        client.post("/api/v1/uploads", headers=BAD | {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}),
        client.post("/api/v1/uploads/direct", json={}, headers=BAD),
    ]
    for response in refused:
        assert response.status_code in (400, 401), response.text  # a body that is not JSON: 400 first
        assert _checked_out(client) == 0, response.request.url

    # And writes go on at once: signing in writes a session row.
    worker = login(client, "demo-worker-1")
    assert client.get("/api/v1/auth/me", headers=worker).status_code == 200
    assert _checked_out(client) == 0


def test_requests_refused_after_sign_in_give_their_connection_back(
    client: Client, no_collector: None
) -> None:
    worker = login(client, "demo-worker-1")
    refused = [
        client.post("/api/v1/templates", json={"code": "x"}, headers=worker),  # not theirs to write
        client.post("/api/v1/sync/push", content=b"{", headers=worker),
        client.patch("/api/v1/households/00000000-0000-0000-0000-000000000000", json={}, headers=worker),
    ]
    for response in refused:
        assert 400 <= response.status_code < 500, response.text
        assert _checked_out(client) == 0, response.request.url
