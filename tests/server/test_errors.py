"""Every failure is a JSON error with a machine-readable code; bad input names its field."""

from __future__ import annotations

import socket
from typing import Any

import msgspec
import pytest
from sqlalchemy import text as sql

from server.db.engine import Database
from tests.helpers import Client, household_id, login, run_db


def test_malformed_json_is_a_400_with_its_own_code(client: Client) -> None:
    response = client.post(
        "/api/v1/auth/login", content=b'{"username": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_wrong_type_is_a_422_naming_the_field(client: Client) -> None:
    response = client.post("/api/v1/auth/login", json={"username": 7, "password": "x", "device_id": "t"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "username"


def test_missing_and_unknown_fields_are_named(client: Client) -> None:
    missing = client.post("/api/v1/auth/login", json={"username": "a", "password": "x"}).json()["error"]
    assert "device_id" in {d["field"] for d in missing["details"]} or "device_id" in missing["message"]
    extra = client.post(
        "/api/v1/auth/login", json={"username": "a", "password": "x", "device_id": "t", "admin": True}
    ).json()["error"]
    assert "admin" in extra["message"]


def test_nested_field_path_is_reported(client: Client) -> None:
    admin = login(client, "demo-admin")
    body = {
        "registry_no": "N-1",
        "community_id": "4d5c1f52-0000-0000-0000-000000000000",
        "address": "x",
        "members": [{"name": "a", "relation": "applicant", "id_number": 5}],
    }
    error = client.post("/api/v1/households", json=body, headers=admin).json()["error"]
    assert error["details"][0]["field"] == "members[0].id_number"


def test_bad_query_parameter_is_a_4xx_naming_it(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    response = client.get("/api/v1/households?limit=abc", headers=worker)
    assert response.status_code in (400, 422)
    assert "limit" in response.text


def test_unknown_route_and_wrong_method_answer_in_json(client: Client) -> None:
    assert client.get("/api/v1/nothing-here").json()["error"]["code"] == "not_found"
    assert client.delete("/api/v1/auth/login").json()["error"]["code"] == "method_not_allowed"


def test_request_id_is_echoed_or_made(client: Client) -> None:
    given = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/health")
    assert len(made.headers["x-request-id"]) == 32


def test_a_nul_character_is_refused_with_its_own_code_and_nothing_changes(client: Client) -> None:
    """PostgreSQL text cannot hold U+0000: refused at the edge, the same on both databases."""
    worker = login(client, "demo-worker-1")
    household = f"/api/v1/households/{household_id('DB-C01-0001')}"
    before = client.get(household, headers=worker).json()
    nul_body = msgspec.json.encode({"version": before["version"], "address": "解放街\x001号"})
    refused = [
        client.patch(
            household, json={"version": before["version"], "address": "解放街\x001号"}, headers=worker
        ),
        # Litestar decodes JSON whatever the Content-Type says: so does the guard.
        client.patch(household, content=nul_body, headers=worker | {"Content-Type": "text/plain"}),
        client.patch(household, content=nul_body, headers=worker),
        client.get("/api/v1/households?status=active%00", headers=worker),
        client.get("/api/v1/templates/step.look%00/1", headers=worker),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "nul_character"
    assert client.get(household, headers=worker).json() == before

    # A backslash followed by "u0000" is ordinary text, not the escape.
    literal = "C:\\u0000\\\\u0000"
    saved = client.patch(household, json={"version": before["version"], "address": literal}, headers=worker)
    assert saved.status_code == 200, saved.text
    assert client.get(household, headers=worker).json()["address"] == literal


def test_the_nul_guard_reads_no_body_its_route_would_not_read(client: Client) -> None:
    """tus creation streams its body after signing in: an anonymous JSON body there is not read at all."""
    big = b'{"x": "' + b"\\u0000" * 1_000_000 + b'"}'
    response = client.post(
        "/api/v1/uploads", content=big, headers={"Content-Type": "application/json", "Tus-Resumable": "1.0.0"}
    )
    assert response.status_code == 401, response.text


def test_the_api_document_describes_errors_as_they_are_sent(client: Client) -> None:
    """A client generated from /schema/openapi.json must parse the errors it will get: every operation
    documents its 4xx and 5xx answers as ErrorBody, and no error entry in Litestar's own shape is left."""
    document = client.get("/schema/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values() if "responses" in op]
    assert len(operations) > 40
    for operation in operations:
        errors = {s: r for s, r in operation["responses"].items() if s[:1] in ("4", "5")}
        assert sorted(errors) == ["4XX", "5XX"], operation.get("operationId")
        for answer in errors.values():
            assert answer["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    info = document["components"]["schemas"]["ErrorInfo"]
    refused = client.post("/api/v1/auth/login", json={"username": 7, "password": "x", "device_id": "t"})
    assert refused.status_code == 422 and set(refused.json()) == {"error"}
    assert set(info["required"]) <= set(refused.json()["error"]) <= set(info["properties"])
    assert "status_code" not in client.get("/schema/swagger").text  # the page's inline copy too


# What a trigger on households does to a REST edit on PostgreSQL, each a failure a retry gets past.
_MID_REQUEST_FAILURES = {
    # PostgreSQL rolls a deadlocked transaction back and asks for a retry; asyncpg's error for it is no
    # OperationalError, and the REST write and the sync push that met one answered 500.
    "deadlock": "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';",
    # The database server restarting, or a network cut between us and it, drops the connection under
    # the request: its transaction goes with it, and SQLAlchemy's error for it answered 500.
    "connection_lost": "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW;",
    # What PostgreSQL says while it starts up or shuts down, and of a connection failing (class 08).
    "starting_up": "RAISE EXCEPTION 'starting up' USING ERRCODE = 'cannot_connect_now';",
    "shutting_down": "RAISE EXCEPTION 'shutting down' USING ERRCODE = 'admin_shutdown';",
    "connection_failure": "RAISE EXCEPTION 'connection failure' USING ERRCODE = 'connection_failure';",
}


@pytest.mark.parametrize("failure", sorted(_MID_REQUEST_FAILURES))
def test_a_write_the_database_fails_mid_request_is_a_503_to_retry_and_changes_nothing(
    client: Client, failure: str
) -> None:
    if client.app.state.db.is_sqlite:
        pytest.skip("SQLite reports a busy database as an OperationalError (tested elsewhere)")
    hid = household_id("DB-C01-0001")
    body = _MID_REQUEST_FAILURES[failure]
    ddl = [
        f"CREATE FUNCTION fail_once() RETURNS trigger AS $$ BEGIN {body} END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_once BEFORE UPDATE ON households FOR EACH ROW EXECUTE FUNCTION fail_once()",
    ]

    def execute(statements: list[str]) -> None:
        async def run(session: Any) -> None:
            for statement in statements:
                await session.execute(sql(statement))

        run_db(client, run)

    worker = login(client, "demo-worker-1")
    version = client.get(f"/api/v1/households/{hid}", headers=worker).json()["version"]
    execute(ddl)
    edit = {"version": version, "address": "解放街3号"}
    refused = client.patch(f"/api/v1/households/{hid}", json=edit, headers=worker)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable" and refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["details"] == {"retry_after_seconds": 2}  # for clients blind to headers
    execute(["DROP TRIGGER fail_once ON households", "DROP FUNCTION fail_once()"])
    assert client.get(f"/api/v1/households/{hid}", headers=worker).json()["version"] == version
    retried = client.patch(f"/api/v1/households/{hid}", json=edit, headers=worker)
    assert retried.status_code == 200, retried.text


def test_a_database_that_cannot_be_reached_is_a_503_to_retry(client: Client) -> None:
    """PostgreSQL down for a restart refuses new connections: the requests meanwhile hear 503 with
    Retry-After (the tablets retry), not 500, and the server answers again once it is back."""
    if client.app.state.db.is_sqlite:
        pytest.skip("SQLite is a file in our own process: there is no server to be down")
    worker = login(client, "demo-worker-1")
    hid = household_id("DB-C01-0001")
    running = client.app.state.db
    with socket.socket() as closed:  # a port nobody listens on: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = Database(running.engine.url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False))
    client.app.state.db = down
    try:
        refused = client.get(f"/api/v1/households/{hid}", headers=worker)
    finally:
        client.app.state.db = running
        client.blocking_portal.call(down.dispose)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable" and refused.headers["retry-after"] == "2"
    assert client.get(f"/api/v1/households/{hid}", headers=worker).status_code == 200
